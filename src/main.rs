//! The `wgunet` command line: parses arguments and hands each command to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use wgunet::data::split::DEFAULT_TRAIN_FRACTION;
use wgunet::data::{intensity::IntensityPreset, synth, Normalisation, NormaliseKind};
use wgunet::graph::Loss;
use wgunet::infer::tiling::Blend;
use wgunet::infer::{self, EvalData, EvalOptions, InferOptions};
use wgunet::model::{Activation, Arch, ModelConfig};
use wgunet::ops::augment::AugmentPreset;
use wgunet::plan::duration::parse_duration;
use wgunet::train::{self, TrainOptions};
use wgunet::{bench, device, selftest, DeviceChoice, Gpu, KernelVariant};

mod commands;

use commands::{
    apply_plan, at_least_one, clock_seed, dropout_probability, export, learning_rate, percentage, plan_command,
    print_info, score_run_as_eval, train_fraction, train_options, write_shift, write_split, PlannedRun,
};

/// The seed notebook's image side, batch size and seed: the defaults of every command.
const DEFAULT_SIZE: usize = 128;
const DEFAULT_BATCH: usize = 8;
const DEFAULT_SEED: u64 = 42;

#[derive(Parser)]
#[command(
    name = "wgunet",
    version,
    about = "Train, evaluate and apply U-Net segmentation models on any GPU (wgpu + WGSL)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Kernel variant: auto (from the adapter type), cpu (for software adapters such as
    /// lavapipe) or gpu (workgroup tiles, for GPUs). Wins over WGUNET_KERNELS. `selftest`
    /// checks every variant unless one is forced.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    kernels: KernelsArg,
}

/// `--kernels`: a variant, or `auto`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum KernelsArg {
    Auto,
    Cpu,
    Gpu,
}

#[derive(Args, Clone)]
struct DeviceArg {
    /// gpu | cpu | auto | an adapter index or part of its name (see `wgunet devices`)
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Architecture.
    #[arg(long, value_enum, default_value = "unet")]
    arch: Arch,
    /// Input side in pixels, a multiple of 16; images are resized to it.
    #[arg(long, default_value_t = DEFAULT_SIZE)]
    size: usize,
    /// Base filters F (encoder F, 2F, 4F, 8F; bridge 16F).
    #[arg(long, default_value_t = 32)]
    filters: usize,
    /// Dropout probability (resunet).
    #[arg(long, default_value_t = wgunet::model::DEFAULT_DROPOUT, value_parser = dropout_probability)]
    dropout: f32,
    /// 1: binary masks, one sigmoid output. K (2 to 255): masks whose pixel values are class
    /// ids 0..K, K outputs and a softmax.
    #[arg(long, default_value_t = 1)]
    classes: usize,
    /// The conv blocks' nonlinearity.
    #[arg(long, value_enum, default_value = "relu")]
    activation: Activation,
}

impl ModelArgs {
    /// The model these flags describe, for `channels` input channels.
    fn model(&self, channels: usize) -> ModelConfig {
        ModelConfig {
            arch: self.arch,
            size: self.size,
            channels,
            filters: self.filters,
            dropout: self.dropout,
            classes: self.classes,
            activation: self.activation,
            // Fitted to the training images once they are loaded.
            normalise: Normalisation::Unit,
        }
    }

    /// [`ModelArgs::model`], validated.
    fn config(&self, channels: usize) -> Result<ModelConfig> {
        let cfg = self.model(channels);
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter wgpu finds, with the limits and features that matter to wgunet.
    Devices,
    /// Run every kernel (forward and backward) against its CPU reference on this adapter.
    Selftest {
        #[command(flatten)]
        device: DeviceArg,
        /// Seed for the random inputs (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Print a model's layers, parameter count, FLOPs per image and planned memory.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        /// Input channels.
        #[arg(long, default_value_t = 1)]
        channels: usize,
        /// Batch size the memory plan is made for.
        #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = at_least_one)]
        batch: usize,
    },
    /// Pair images with masks in DIR and write reproducible train/test lists (no copying).
    Split {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = DEFAULT_TRAIN_FRACTION, value_parser = train_fraction)]
        train: f64,
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// Use at most this many pairs.
        #[arg(long, value_parser = at_least_one)]
        max_images: Option<usize>,
        /// Folder for train.txt and test.txt.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the built-in synthetic MRI-like dataset as PNG pairs (DIR/images, DIR/masks).
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        count: usize,
        #[arg(long, default_value_t = DEFAULT_SIZE)]
        size: usize,
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// 1: 0/255 tumour masks. 2 to 4: class-id masks (1 tumour, 2 ventricles, 3 skull).
        #[arg(long, default_value_t = 1)]
        classes: usize,
        /// Small lesions: each tumour one ellipse of MIN to MAX percent of the slice's area
        /// (log-uniform), e.g. 0.1-1. Default: a few pixels to a third of the brain.
        #[arg(long, value_name = "MIN-MAX")]
        lesion_size: Option<synth::Lesions>,
    },
    /// Write a dataset's pairs with the images as another scanner might record them (gamma,
    /// contrast, a smooth bias field) and the masks unchanged: `eval --data OUT` then shows what
    /// such a change costs a model.
    Shift {
        /// A dataset folder (every pair), or with --list the pairs of a list (e.g. a run's test.txt).
        #[arg(long, required_unless_present = "list")]
        data: Option<PathBuf>,
        #[arg(long, conflicts_with = "data")]
        list: Option<PathBuf>,
        /// v ↦ v^GAMMA (v in [0, 1]).
        #[arg(long, default_value_t = 1.0)]
        gamma: f32,
        /// Scale about mid-gray: v ↦ (v − ½)·CONTRAST + ½.
        #[arg(long, default_value_t = 1.0)]
        contrast: f32,
        /// A linear multiplicative field from 1 − BIAS (top left) to 1 + BIAS (bottom right).
        #[arg(long, default_value_t = 0.0)]
        bias: f32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Read every pair of a dataset once, print its fingerprint (sizes, intensities, foreground,
    /// structure sizes) and choose whole slices or patches, the loss and the normalisation; then
    /// time training steps on the device and predict the run's time.
    Plan(PlanArgs),
    /// Train a model (with no --data: on the built-in synthetic dataset).
    Train {
        #[command(flatten)]
        args: TrainArgs,
        /// Continue the run in this folder (its --out) from its last checkpoint, with the options
        /// it was started with; --epochs may be raised.
        #[arg(long, value_name = "RUN", conflicts_with = "out")]
        resume: Option<PathBuf>,
    },
    /// Train several architectures on the same split with the same seed and tabulate them.
    Compare {
        /// Comma-separated architectures.
        #[arg(long, value_delimiter = ',', default_value = "unet,unet-upsample,resunet,attention-unet")]
        archs: Vec<Arch>,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Evaluate a trained run: its own test split, another dataset (--data) or a list (--list).
    /// Scores at the model's size and at each image's own size (`native`); writes a per-image
    /// CSV and panels of the best and worst images.
    Eval {
        /// Run folder written by `wgunet train`.
        #[arg(long)]
        model: PathBuf,
        /// A dataset folder in any layout `wgunet split` accepts (e.g. the Pratheepan photos);
        /// colour and size may differ from the training data.
        #[arg(long, conflicts_with = "list")]
        data: Option<PathBuf>,
        /// A list of image/mask pairs, like test.txt from `wgunet split`.
        #[arg(long)]
        list: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        infer: InferArgs,
        /// Panels to draw: the best half and the worst half by Dice (0: none).
        #[arg(long, default_value_t = wgunet::infer::DEFAULT_PANELS)]
        panels: usize,
        /// Folder for per_image.csv and panels/ (default: MODEL/eval).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to write the metrics as JSON (default: OUT/eval.json with --out, else MODEL/eval.json).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Segment images: one mask PNG per image, at its own size, named by its stem: 0/255, or
    /// class ids for a model trained with --classes.
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// An image or a folder of images.
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        infer: InferArgs,
    },
    /// Write a trained run as an ONNX model (opset 13, dynamic batch axis, probabilities out;
    /// the preprocessing and model.json in its metadata) for ONNX Runtime and other runtimes.
    Export {
        /// Run folder written by `wgunet train`.
        #[arg(long)]
        model: PathBuf,
        /// The .onnx file to write.
        #[arg(long)]
        onnx: PathBuf,
    },
    /// Time training steps and inference after warm-up: images/s, ms/step, GFLOP/s.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 3)]
        channels: usize,
        #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = at_least_one)]
        batch: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        steps: usize,
        /// Also time every kernel of a training step on its own.
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        device: DeviceArg,
    },
}

/// How `eval` and `predict` turn images into masks.
#[derive(Args, Clone)]
struct InferArgs {
    /// Images (or tiles) per GPU batch.
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = at_least_one)]
    batch: usize,
    /// Segment each image at its own size in overlapping tiles of the model's size (sliding
    /// window) instead of resizing it; smaller images are padded by reflection.
    #[arg(long)]
    tile: bool,
    /// Fraction of a tile shared with its neighbour (with --tile).
    #[arg(long, default_value_t = 0.25, requires = "tile")]
    overlap: f64,
    /// Weighting of overlapping tiles (with --tile).
    #[arg(long, value_enum, default_value = "gaussian", requires = "tile")]
    blend: Blend,
    /// Average the probabilities over horizontal, vertical and both flips (the default for a
    /// run trained with the plan or --tta: its model.json says `"tta": true`).
    #[arg(long, conflicts_with = "no_tta")]
    tta: bool,
    /// Do not average over flips, though the run's model.json asks for it.
    #[arg(long)]
    no_tta: bool,
    /// Keep only the largest 8-connected component of each mask.
    #[arg(long)]
    keep_largest: bool,
    /// Drop 8-connected components smaller than PERCENT of the image's area (binary masks),
    /// e.g. 0.05: the specks a model marks where there is nothing.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0, value_parser = percentage)]
    min_component: f64,
    /// Stop at the first image or pair that cannot be used instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// More runs (RUN,RUN,…) whose probabilities are averaged with --model's: an ensemble, e.g.
    /// of the folds of `train --folds`. They must read images alike (size, channels, classes,
    /// normalisation).
    #[arg(long, value_delimiter = ',', value_name = "RUNS")]
    ensemble: Vec<PathBuf>,
}

impl InferArgs {
    fn options(&self) -> InferOptions {
        InferOptions {
            batch: self.batch,
            tile: self.tile,
            overlap: self.overlap,
            blend: self.blend,
            tta: match (self.tta, self.no_tta) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            keep_largest: self.keep_largest,
            min_component: self.min_component,
            strict: self.strict,
        }
    }
}

/// `wgunet plan`: the dataset, and the run to time as `train` would start it.
#[derive(Args)]
struct PlanArgs {
    #[arg(long)]
    data: PathBuf,
    /// As for train: 1 for binary masks, K for class-id masks.
    #[arg(long, default_value_t = 1)]
    classes: usize,
    #[command(flatten)]
    device: DeviceArg,
    #[arg(long, value_enum, default_value = "unet")]
    arch: Arch,
    /// As for train; --time-budget chooses them unless given.
    #[arg(long, default_value_t = 32)]
    filters: usize,
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = at_least_one)]
    batch: usize,
    /// The epochs the run is predicted for (--time-budget chooses them unless given).
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    epochs: usize,
    /// The largest side, filters and epochs predicted to fit, e.g. 90s, 20m, 1h30m or 2h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    time_budget: Option<Duration>,
}

#[derive(Args)]
struct TrainArgs {
    /// Dataset folder (image/mask pairs in any supported layout). Omit for the built-in data.
    #[arg(long, conflicts_with_all = ["train_list", "test_list"])]
    data: Option<PathBuf>,
    /// train.txt from `wgunet split` (with --test-list).
    #[arg(long, requires = "test_list")]
    train_list: Option<PathBuf>,
    #[arg(long, requires = "train_list")]
    test_list: Option<PathBuf>,
    /// Fraction of pairs (or synthetic slices) used for training (the rest is the test split).
    #[arg(long, default_value_t = DEFAULT_TRAIN_FRACTION, value_parser = train_fraction)]
    train: f64,
    #[arg(long, value_parser = at_least_one)]
    max_images: Option<usize>,
    /// Number of built-in synthetic slices when no --data is given.
    #[arg(long, default_value_t = 600)]
    synth_count: usize,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    model: ModelArgs,
    /// Input channels (default: from the data; grayscale stays grayscale).
    #[arg(long)]
    channels: Option<usize>,
    /// Intensity normalisation, stored with the model and applied by eval and predict: unit
    /// ([0, 1]); zscore (per image and channel; MRI); percentile (clip to the training set's
    /// 0.5-99.5 percentiles, then its mean and standard deviation; CT).
    #[arg(long, value_enum, default_value = "unit")]
    normalise: NormaliseKind,
    /// Train on random P×P patches of the images at their own size (a third centred on
    /// foreground) instead of whole images resized to --size: for structures a few pixels
    /// across. P is the model's input side (a multiple of 16); eval and predict then segment
    /// in overlapping tiles at the images' own size.
    #[arg(long, value_name = "P", conflicts_with = "size")]
    patch: Option<usize>,
    /// Fit the recipe to the data first (what `wgunet plan` prints): whole slices or patches
    /// and their size, the loss, the normalisation, the intensity augmentation, early stopping,
    /// the learning-rate schedule and flip TTA, each unless given on the command line. The default with --data (with
    /// --init only when asked for).
    #[arg(long, requires = "data", conflicts_with = "no_plan")]
    plan: bool,
    /// Train the seed notebook's recipe instead of the plan: whole slices resized to --size,
    /// [0, 1] intensities, BCE, no intensity augmentation, EarlyStopping, one pass at inference
    /// (each still set by its option).
    #[arg(long)]
    no_plan: bool,
    /// Plan the run (as --plan) to the largest input side, filters and epochs whose predicted
    /// time fits, each unless given, e.g. 90s, 20m, 1h30m or 2h.
    #[arg(long, value_name = "DURATION", requires = "data", conflicts_with = "no_plan", value_parser = parse_duration)]
    time_budget: Option<Duration>,
    /// K-fold cross-validation: the training part of the split cut into K folds, one run per
    /// fold (OUT/fold-i, trained on the others), each and their ensemble scored on the test
    /// split (OUT/folds.md).
    #[arg(long, value_name = "K", requires = "data")]
    folds: Option<usize>,
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    epochs: usize,
    /// Epochs without a lower training loss before the learning rate is halved
    /// (ReduceLROnPlateau).
    #[arg(long, default_value_t = train::PLATEAU_PATIENCE, value_parser = at_least_one)]
    plateau_patience: usize,
    /// Epochs without a lower training loss before training stops (EarlyStopping; the best
    /// epoch's weights are kept); 0 never stops (the plan's choice).
    #[arg(long, default_value_t = train::EARLY_STOPPING_PATIENCE)]
    early_stopping_patience: usize,
    /// How the learning rate changes: plateau (the seed's halvings on a plateau of the training
    /// loss) or poly (nnU-Net's decay to near 0 at the last epoch).
    #[arg(long, value_enum, default_value = "plateau")]
    lr_schedule: train::LrSchedule,
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = at_least_one)]
    batch: usize,
    /// Adam learning rate (Keras' default).
    #[arg(long, default_value_t = 1e-3, value_parser = learning_rate)]
    lr: f32,
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Loss (default: bce; ce with --classes K).
    #[arg(long, value_enum)]
    loss: Option<Loss>,
    /// Training augmentation, on the GPU: none; flips (as the seed); dihedral (flips and quarter
    /// turns); full (dihedral, ±15° rotation, ±10 % scaling, elastic deformation).
    #[arg(long, value_enum, default_value = "dihedral")]
    augment: AugmentPreset,
    /// Also change the training images' intensities at random, for models that must survive
    /// another scanner: nnunet (the default of a bare --intensity: gamma 0.7–1.5, contrast and
    /// brightness ×0.75–1.25, each with probability 0.3, nnU-Net's ranges); scanner (gamma and
    /// contrast ×½–2 with values saturating at the range's ends, plus noise, blur and a smooth
    /// bias field); none.
    #[arg(long, value_enum, num_args = 0..=1, default_value = "none", default_missing_value = "nnunet")]
    intensity: IntensityPreset,
    /// Same as --augment none.
    #[arg(long)]
    no_augment: bool,
    /// Segment with flip TTA by default (recorded in model.json): eval, predict and the final
    /// scoring of the test split average the four mirrorings (the plan's choice).
    #[arg(long)]
    tta: bool,
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Run folder for the model, metrics and lists.
    #[arg(long, default_value = "runs/unet")]
    out: PathBuf,
    /// Stop on the first dataset file that cannot be used, instead of skipping it (skipped
    /// files are listed in OUT/skipped.txt).
    #[arg(long)]
    strict: bool,
    /// Start from the weights of this run folder (best, else last) instead of a random
    /// initialisation: fine-tuning. Same --arch, --filters, channels and --classes.
    #[arg(long)]
    init: Option<PathBuf>,
    /// With --init: start the head (the final 1×1 convolution) from scratch, e.g. for other
    /// --classes.
    #[arg(long, requires = "init")]
    init_skip_head: bool,
}

fn main() -> ExitCode {
    bench::mark_process_start();
    let _runtime_dir = give_driver_a_runtime_dir();
    // Help, version and usage errors return from main rather than exit() inside clap, so that
    // the runtime folder's guard still removes it.
    let parsed = Cli::command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<train::Interrupted>() {
            Some(interrupted) => {
                eprintln!("{interrupted}");
                // 128 + SIGINT, as a shell reports a program ended by Ctrl-C.
                ExitCode::from(130)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Ctrl-C and SIGTERM ask training to stop after its current step (and write nothing half);
/// a second one ends the process at once.
fn stop_on_interrupt() -> Result<()> {
    ctrlc::set_handler(|| {
        if train::STOP_REQUESTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current step (press Ctrl-C again to stop at once)");
    })?;
    Ok(())
}

/// `wgunet train`: planned unless resumed (see [`planned_data`]), one run or `--folds` runs,
/// then scored as `eval` scores it and the plan added to its report. `flags` were given on the
/// command line.
fn train_command(args: TrainArgs, resume: Option<PathBuf>, flags: &[String]) -> Result<()> {
    stop_on_interrupt()?;
    let folds = args.folds;
    let (options, planned) =
        if resume.is_some() { (train_options(args)?, None) } else { planned_options(args, flags, folds)? };
    if let Some(k) = folds {
        anyhow::ensure!(resume.is_none(), "--folds with --resume: resume one fold's run (OUT/fold-i) instead");
        wgunet::folds::train_folds(&options, k)?;
        return planned.map_or(Ok(()), |p| p.finish(&options.out, true));
    }
    let run = match resume {
        Some(dir) => train::resume(&dir, &options, flags).map(|_| dir)?,
        None => train::train(&options).map(|_| options.out.clone())?,
    };
    score_run_as_eval(&run, &options.device)?;
    planned.map_or(Ok(()), |p| p.finish(&run, false))
}

/// The training options `args` ask for, with the plan applied when they plan (see
/// [`planned_data`]; `folds` for its time estimate).
fn planned_options(
    args: TrainArgs,
    flags: &[String],
    folds: Option<usize>,
) -> Result<(TrainOptions, Option<PlannedRun>)> {
    let (data, budget) = (planned_data(&args), args.time_budget);
    let mut options = train_options(args)?;
    let planned = data.map(|data| apply_plan(&mut options, &data, flags, budget, folds)).transpose()?;
    Ok((options, planned))
}

/// The dataset folder `train` plans for: `--data`, unless `--no-plan`, and with `--init` only
/// when `--plan` or `--time-budget` asks (fine-tuning keeps the recipe of the run it starts
/// from).
fn planned_data(a: &TrainArgs) -> Option<PathBuf> {
    let wanted = !a.no_plan && (a.init.is_none() || a.plan || a.time_budget.is_some());
    a.data.clone().filter(|_| wanted)
}

/// The options typed on the command line of `subcommand` (e.g. `--size`), not left at their defaults.
fn flags_given(matches: &ArgMatches, subcommand: &str) -> Vec<String> {
    let Some(m) = matches.subcommand_matches(subcommand) else { return Vec::new() };
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| format!("--{}", id.as_str().replace('_', "-")))
        .collect()
}

/// Mesa's Vulkan drivers print `error: XDG_RUNTIME_DIR is invalid or not set` (several times)
/// when the variable is unset or names no folder, as on servers and in containers. Before any
/// thread starts or the instance opens, point it at a private (0700) folder of our own, which
/// goes when the returned guard does (at the end of `main`).
fn give_driver_a_runtime_dir() -> Option<RuntimeDir> {
    let valid = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir());
    if valid {
        return None;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    // A folder per process: a shared name could belong to another user of the machine.
    let dir = std::env::temp_dir().join(format!("wgunet-runtime-{}", std::process::id()));
    if builder.create(&dir).is_ok() || dir.is_dir() {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
        return Some(RuntimeDir(dir));
    }
    None
}

/// The folder [`give_driver_a_runtime_dir`] made; removed on drop, so that runs leave nothing in
/// the temporary directory.
struct RuntimeDir(std::path::PathBuf);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    match cli.kernels {
        KernelsArg::Auto => {}
        KernelsArg::Cpu => KernelVariant::force(KernelVariant::Cpu),
        KernelsArg::Gpu => KernelVariant::force(KernelVariant::Gpu),
    }
    match cli.command {
        Command::Devices => device::print_devices(),
        Command::Selftest { device, seed } => {
            let failed = selftest::run_variants(Gpu::open(&device.device)?, seed.unwrap_or_else(clock_seed))?;
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Info { model, channels, batch } => {
            let cfg = model.config(channels)?;
            print_info(&cfg, batch);
        }
        Command::Split { data, train, seed, max_images, out } => write_split(&data, train, seed, max_images, &out)?,
        Command::Synth { out, count, size, seed, classes, lesion_size } => {
            let n = synth::write_dataset_with(&out, count, seed, size, classes, lesion_size.unwrap_or_default())?;
            println!("wrote {n} synthetic image/mask pairs to {}", out.display());
        }
        Command::Shift { data, list, gamma, contrast, bias, out } => {
            let shift = wgunet::data::shift::Shift { gamma, contrast, bias };
            write_shift(data.as_deref(), list.as_deref(), shift, &out)?
        }
        Command::Plan(args) => plan_command(args, &flags_given(matches, "plan"))?,
        Command::Train { args, resume } => train_command(args, resume, &flags_given(matches, "train"))?,
        Command::Compare { archs, train } => {
            stop_on_interrupt()?;
            // Every architecture trains the recipe planned (and timed) for the first.
            let (options, _) = planned_options(train, &flags_given(matches, "compare"), None)?;
            wgunet::compare::compare(&options, &archs)?;
        }
        Command::Eval { model, data, list, device, infer, panels, out, json } => {
            let data = match (data, list) {
                (Some(d), _) => EvalData::Folder(d),
                (None, Some(l)) => EvalData::List(l),
                (None, None) => EvalData::RunTestSplit,
            };
            let (infer_options, ensemble) = (infer.options(), infer.ensemble);
            let options =
                EvalOptions { data, device: device.device, infer: infer_options, panels, out, json, ensemble };
            infer::eval(&model, &options)?;
        }
        Command::Predict { model, input, output, device, infer } => {
            infer::predict(&model, &input, &output, &device.device, &infer.options(), &infer.ensemble)?;
        }
        Command::Export { model, onnx } => export(&model, &onnx)?,
        Command::Bench { model, channels, batch, warmup, steps, profile, device } => {
            let cfg = model.config(channels)?;
            let gpu = Gpu::open(&device.device)?;
            bench::run(&gpu, &cfg, batch, warmup, steps, profile)?.print();
        }
    }
    Ok(ExitCode::SUCCESS)
}
