//! `wgunet train`: the seed notebook's recipe on the GPU. Data are decoded once on CPU threads
//! and kept in memory; each step uploads one batch, augments it on the GPU and records forward,
//! loss, backward and Adam into one command buffer. The host reads back only the loss (for the
//! progress bar, every few steps) and the test metrics once an epoch.

mod state;
mod stop;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, DatasetRecord, RunRecord};
use crate::data::load::{Preprocess, Sample};
use crate::data::skipped::{Skipped, Unusable};
use crate::data::{load, normalise_dataset, pairs, split, synth, Normalisation, NormaliseKind};
use crate::device::{DeviceChoice, Gpu};
use crate::evaluate::{Evaluator, Metrics};
use crate::executor::{Executor, OptimizerConfig, ParamArena};
use crate::finetune::{self, InitRecord};
use crate::graph::{compile, Loss, Mode};
use crate::infer::postprocess::argmax;
use crate::kernel::{BufferView, Dispatch};
use crate::model::{Activation, Arch, ModelConfig};
use crate::ops::adam::AdamHyper;
use crate::ops::augment::{Augment, AugmentConfig, AugmentPreset, ImageTransform};
use crate::report;
use state::{Progress, SavedState, Tensors};
pub use stop::{Diverged, Interrupted, DIVERGENCE_FACTOR, STOP_REQUESTED};

/// Where training data come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DataSource {
    /// The built-in synthetic MRI-like slices (tumour masks, or with K classes tumour,
    /// ventricles and skull: see [`synth`]).
    Synthetic { count: usize },
    /// A folder of image/mask pairs, split reproducibly.
    Folder { dir: PathBuf, train: f64, max_images: Option<usize> },
    /// Lists written by `wgunet split`.
    Lists { train: PathBuf, test: PathBuf },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub source: DataSource,
    pub device: DeviceChoice,
    pub arch: Arch,
    pub size: usize,
    pub filters: usize,
    pub dropout: f32,
    /// None: from the data (grayscale stays grayscale).
    pub channels: Option<usize>,
    /// 1: binary masks (sigmoid head). K ≥ 2: masks of class ids 0..K (softmax head).
    pub classes: usize,
    /// Runs recorded before the choice resume as ReLU.
    #[serde(default)]
    pub activation: Activation,
    /// Runs recorded before the choice resume as `unit`.
    #[serde(default)]
    pub normalise: NormaliseKind,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub loss: Loss,
    pub augment: AugmentPreset,
    pub seed: u64,
    pub out: PathBuf,
    pub command: String,
    /// Any file of the dataset that cannot be used is an error instead of being skipped.
    #[serde(default)]
    pub strict: bool,
    /// Start from another run's weights instead of the random initialisation.
    #[serde(default)]
    pub init: Option<InitRecord>,
}

/// Decoded train and test samples, and how to find them again.
pub struct Dataset {
    pub train: Vec<Sample>,
    pub test: Vec<Sample>,
    /// A name per test sample (file stem, or `synthetic-N`), for panels.
    pub test_names: Vec<String>,
    /// Pairs found before splitting.
    pub pairs: usize,
    pub record: DatasetRecord,
    pub channels: usize,
}

/// Loads the data of `source` at `size` for a model of `classes` classes (binary masks for 1,
/// class ids for K), writing the split lists of the usable pairs into `out` when there are
/// files, and the files skipped (an error with `strict`) into `out/skipped.txt`.
pub fn load_dataset(
    source: &DataSource,
    size: usize,
    channels: Option<usize>,
    classes: usize,
    seed: u64,
    out: &Path,
    strict: bool,
) -> Result<Dataset> {
    match source {
        DataSource::Synthetic { count } => {
            let all = synth::samples_with_classes(seed, *count, size, classes)?;
            let n_train = ((*count as f64) * 0.7).round() as usize;
            let mut all = all;
            let test = all.split_off(n_train);
            println!("built-in synthetic data: {} slices ({} train, {} test)", count, all.len(), test.len());
            let test_names = (n_train..*count).map(|i| format!("synthetic-{i:04}")).collect();
            Ok(Dataset {
                test_names,
                pairs: *count,
                train: expand_channels(all, channels.unwrap_or(1)),
                test: expand_channels(test, channels.unwrap_or(1)),
                record: DatasetRecord::Synthetic { seed, count: *count, train: 0.7 },
                channels: channels.unwrap_or(1),
            })
        }
        DataSource::Folder { dir, train, max_images } => {
            let pairing = pairs::find_pairs(dir)?;
            println!("{}", pairs::describe(&pairing));
            // Split before decoding: a bad file drops out of its side without moving any other
            // pair, and a clean folder splits as it always did.
            let (tr, te) = split::split(&pairing.pairs, *train, seed, *max_images)?;
            println!(
                "split {:.0}/{:.0} with seed {seed}: {} train, {} test",
                train * 100.0,
                (1.0 - train) * 100.0,
                tr.len(),
                te.len()
            );
            let record = DatasetRecord::Lists { source: dir.display().to_string() };
            let found = Found {
                source: dir.display().to_string(),
                pairs: pairing.pairs.len(),
                files: pairing.files,
                unpaired: pairing.unpaired,
            };
            load_lists(&tr, &te, size, channels, classes, record, found, out, strict)
        }
        DataSource::Lists { train, test } => {
            let (tr, te) = (split::read_list(train)?, split::read_list(test)?);
            let record = DatasetRecord::Lists { source: train.display().to_string() };
            let found = Found {
                source: format!("{} and {}", train.display(), test.display()),
                pairs: tr.len() + te.len(),
                files: 2 * (tr.len() + te.len()),
                unpaired: Vec::new(),
            };
            load_lists(&tr, &te, size, channels, classes, record, found, out, strict)
        }
    }
}

/// What pairing found in `source`: pairs, image files, and the files that could not be paired.
struct Found {
    source: String,
    pairs: usize,
    files: usize,
    unpaired: Vec<Unusable>,
}

/// Decodes the train and test pairs, skipping (or with `strict`, refusing) unusable files, and
/// writes the lists of the usable pairs and `skipped.txt` into `out`.
#[allow(clippy::too_many_arguments)]
fn load_lists(
    tr: &[pairs::Pair],
    te: &[pairs::Pair],
    size: usize,
    channels: Option<usize>,
    classes: usize,
    record: DatasetRecord,
    found: Found,
    out: &Path,
    strict: bool,
) -> Result<Dataset> {
    // With no readable image the count does not matter: every pair is skipped below.
    let channels = channels.or_else(|| load::channels_of(tr)).or_else(|| load::channels_of(te)).unwrap_or(1);
    // Normalised once the training set's statistics are known (see `normalise_dataset`).
    let pre = Preprocess { size, channels, normalise: Normalisation::Unit };
    let t0 = Instant::now();
    let (train, test) = (load::decode_pairs(tr, &pre, classes)?, load::decode_pairs(te, &pre, classes)?);
    let looked_at = tr.len() + te.len() + found.unpaired.len();
    let skipped = Skipped::new([found.unpaired, train.skipped, test.skipped].concat());
    skipped.report(looked_at, "pairs", out)?;
    if strict {
        skipped.refuse(out)?;
    }
    if train.pairs.is_empty() && test.pairs.is_empty() {
        anyhow::bail!(
            "no usable image/mask pair in {}: saw {} image files, {} pairs, and skipped {} files: {} (all listed in {})",
            found.source,
            found.files,
            found.pairs,
            skipped.files().len(),
            skipped.examples(),
            out.join(crate::data::skipped::LIST_NAME).display()
        );
    }
    let resized: Vec<&PathBuf> = train.resized_masks.iter().chain(&test.resized_masks).collect();
    if let Some(first) = resized.first() {
        println!(
            "note: {} mask(s) differ in size from their image and were resized to it (nearest neighbour), e.g. {}",
            resized.len(),
            first.display()
        );
    }
    split::write_list(&out.join("train.txt"), &train.pairs)?;
    split::write_list(&out.join("test.txt"), &test.pairs)?;
    let (te, train, test) = (test.pairs, train.samples, test.samples);
    println!(
        "decoded {} images at {size}x{size}, {channels} channel(s), in {:.1} s (kept in memory)",
        train.len() + test.len(),
        t0.elapsed().as_secs_f64()
    );
    let test_names =
        te.iter().map(|p| p.image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    Ok(Dataset { train, test, test_names, pairs: found.pairs, record, channels })
}

/// Synthetic slices are grayscale; a 3-channel model gets them replicated.
fn expand_channels(samples: Vec<Sample>, channels: usize) -> Vec<Sample> {
    if channels == 1 {
        return samples;
    }
    samples
        .into_iter()
        .map(|s| Sample { image: s.image.repeat(channels), mask: s.mask, native_size: s.native_size })
        .collect()
}

/// The seed's callbacks, on the training loss: ReduceLROnPlateau(factor 0.5, patience 3) and
/// EarlyStopping(patience 6, restore_best_weights).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Callbacks {
    /// The lowest training loss so far (none before the first epoch).
    best: Option<f64>,
    best_epoch: usize,
    since_best: usize,
    since_lr_change: usize,
}

impl Callbacks {
    /// Returns (improved, halve learning rate, stop).
    fn observe(&mut self, epoch: usize, loss: f64) -> (bool, bool, bool) {
        // Keras' min_delta for ReduceLROnPlateau is 1e-4; EarlyStopping's is 0.
        let improved = self.best.is_none_or(|best| loss < best);
        if improved {
            self.best = Some(loss);
            self.best_epoch = epoch;
            self.since_best = 0;
            self.since_lr_change = 0;
        } else {
            self.since_best += 1;
            self.since_lr_change += 1;
        }
        let halve = self.since_lr_change >= 3;
        if halve {
            self.since_lr_change = 0;
        }
        (improved, halve, self.since_best >= 6)
    }
}

/// Trains a new model into `o.out`.
pub fn train(o: &TrainOptions) -> Result<Metrics> {
    let t = Trainer::new(o)?;
    t.params.load(&t.gpu, &finetune::initial_values(&t.params, &t.cfg, o.init.as_ref(), o.seed)?)?;
    let progress = Progress {
        options: o.clone(),
        epoch: 0,
        step: 0,
        lr: o.lr,
        first_loss: None,
        callbacks: Callbacks::default(),
        rng: rand_pcg::Pcg64::seed_from_u64(o.seed ^ 0x5eed),
        metrics_rows: Vec::new(),
        stopped_early: false,
        finished: false,
    };
    // A checkpoint before the first epoch: a run stopped in it can be resumed too.
    checkpoint::save_record(&o.out, &t.record(0, 0))?;
    t.write_metrics_csv(&progress.metrics_rows)?;
    progress.save(&o.out, &t.params.infos, &t.read_tensors()?)?;
    t.run(progress)
}

/// `wgunet train --resume DIR`: continues the run in `dir` from its last checkpoint with the
/// options it was started with. `given` are the options of the command line, of which those in
/// `flags_given` (e.g. `--size`) were typed: they must agree with the recorded ones, except
/// `--epochs` (which may be raised) and `--device` (where to run, not what to train).
pub fn resume(dir: &Path, given: &TrainOptions, flags_given: &[String]) -> Result<()> {
    let saved = SavedState::read(dir)?;
    let o = resumed_options(&saved.progress.options, given, flags_given, dir)?;
    let progress = Progress { options: o.clone(), finished: false, ..saved.progress.clone() };
    if saved.progress.finished && (progress.stopped_early || progress.epoch >= o.epochs) {
        let why = if progress.stopped_early {
            "stopped early: its loss had not improved for 6 epochs"
        } else {
            "finished (give a larger --epochs to train it longer)"
        };
        println!("{} has run {} epochs and {why}: nothing to resume", dir.display(), progress.epoch);
        return Ok(());
    }
    let t = Trainer::new(&o)?;
    let tensors = saved.tensors(&t.params.infos)?;
    t.params.load(&t.gpu, &tensors.values)?;
    t.params.load_moments(&t.gpu, &tensors.adam_m, &tensors.adam_v)?;
    // A kill after metrics.csv got a row but before the checkpoint of its epoch leaves the row
    // behind; that epoch is redone.
    t.write_metrics_csv(&progress.metrics_rows)?;
    println!("resuming {} after epoch {} of {}", dir.display(), progress.epoch, o.epochs);
    t.run(progress).map(drop)
}

/// The options of a resumed run: the recorded ones, with `--epochs` and `--device` as given.
fn resumed_options(
    recorded: &TrainOptions,
    given: &TrainOptions,
    flags_given: &[String],
    dir: &Path,
) -> Result<TrainOptions> {
    let conflicts: Vec<&str> =
        flags_given.iter().map(String::as_str).filter(|f| option_differs(f, recorded, given)).collect();
    anyhow::ensure!(
        conflicts.is_empty(),
        "{} {} from the options {} was started with (see {}): a resumed run keeps its options. \
         Leave {} out, or start a new run with another --out",
        conflicts.join(", "),
        if conflicts.len() == 1 { "differs" } else { "differ" },
        dir.display(),
        dir.join("model.json").display(),
        if conflicts.len() == 1 { "it" } else { "them" },
    );
    let typed = |flag: &str| flags_given.iter().any(|f| f == flag);
    let mut o = TrainOptions { out: dir.to_path_buf(), ..recorded.clone() };
    if typed("--epochs") {
        anyhow::ensure!(
            given.epochs >= recorded.epochs,
            "--epochs {}: {} was started with --epochs {}; resuming can only raise it",
            given.epochs,
            dir.display(),
            recorded.epochs
        );
        o.epochs = given.epochs;
    }
    if typed("--device") {
        o.device = given.device.clone();
    }
    Ok(o)
}

/// Whether the command-line `flag` sets something different in `a` and `b` (`--epochs` and
/// `--device`, which a resume may change, and flags that are not training options: never).
fn option_differs(flag: &str, a: &TrainOptions, b: &TrainOptions) -> bool {
    match flag {
        "--data" | "--train-list" | "--test-list" | "--train" | "--max-images" | "--synth-count" => {
            a.source != b.source
        }
        "--arch" => a.arch != b.arch,
        "--size" => a.size != b.size,
        "--filters" => a.filters != b.filters,
        "--dropout" => a.dropout != b.dropout,
        "--channels" => a.channels != b.channels,
        "--classes" => a.classes != b.classes,
        "--activation" => a.activation != b.activation,
        "--normalise" => a.normalise != b.normalise,
        "--batch" => a.batch != b.batch,
        "--lr" => a.lr != b.lr,
        "--weight-decay" => a.weight_decay != b.weight_decay,
        "--loss" => a.loss != b.loss,
        "--augment" | "--no-augment" => a.augment != b.augment,
        "--seed" => a.seed != b.seed,
        "--init" | "--init-skip-head" => a.init != b.init,
        _ => false,
    }
}

/// What a run builds once from its options: the data in memory, the device, the model with its
/// optimizer, the evaluator and the GPU augmentation.
struct Trainer {
    o: TrainOptions,
    data: Dataset,
    cfg: ModelConfig,
    gpu: Gpu,
    params: Arc<ParamArena>,
    exec: Executor,
    evaluator: Evaluator,
    batch: usize,
    augment: Augment,
    aug_cfg: Option<AugmentConfig>,
    raw_image: BufferView,
    raw_mask: BufferView,
    transforms: BufferView,
    augment_dispatch: Dispatch,
}

/// The outcome of an epoch's training steps.
struct EpochLoss {
    train_loss: f64,
    images_per_s: f64,
}

const METRICS_HEADER: &str =
    "epoch,lr,train_loss,test_loss,mean_pixel_accuracy,mean_iou,mean_dice,micro_iou,micro_dice,train_images_per_s";

impl Trainer {
    fn new(o: &TrainOptions) -> Result<Trainer> {
        let cfg = ModelConfig {
            arch: o.arch,
            size: o.size,
            channels: o.channels.unwrap_or(1),
            filters: o.filters,
            dropout: o.dropout,
            classes: o.classes,
            activation: o.activation,
            normalise: Normalisation::Unit,
        };
        cfg.validate()?;
        Loss::for_classes(Some(o.loss), o.classes)?;
        if let DataSource::Synthetic { .. } = o.source {
            synth::check_classes(o.classes).context("train without --data uses the built-in synthetic slices")?;
        }
        std::fs::create_dir_all(&o.out).with_context(|| format!("could not create {}", o.out.display()))?;
        let mut data = load_dataset(&o.source, o.size, o.channels, o.classes, o.seed, &o.out, o.strict)?;
        anyhow::ensure!(!data.train.is_empty(), "no training images");
        anyhow::ensure!(!data.test.is_empty(), "no test images: use more images or a smaller --train fraction");
        let normalise = normalise_dataset(o.normalise, &mut data.train, &mut data.test, data.channels);
        println!("normalisation: {}", normalise.describe());
        let cfg = ModelConfig { channels: data.channels, normalise, ..cfg };
        let gpu = Gpu::open(&o.device)?;
        println!("device: {}", gpu.describe());

        let batch = o.batch.min(data.train.len()).max(1);
        let graph = cfg.build(batch);
        let program = compile(&graph, Mode::Train(o.loss));
        let params = Arc::new(ParamArena::new(&gpu, &program.params)?);
        let exec = Executor::new(
            &gpu,
            program,
            params.clone(),
            Some(OptimizerConfig { weight_decay: o.weight_decay, decoupled: true }),
        )?;
        let evaluator = Evaluator::new(&gpu, &cfg, params.clone(), batch, data.test.len())?;
        let head = if cfg.multiclass() { format!(", {} classes (softmax)", cfg.classes) } else { String::new() };
        println!(
            "{}{head}, loss {}: {} parameters, {:.2} GFLOP per image forward, batch {batch}, {} kernels per step; {}",
            cfg.arch.name(),
            o.loss.name(),
            graph.param_count(),
            graph.flops() as f64 / batch as f64 / 1e9,
            exec.dispatch_count(),
            exec.memory_summary()
        );

        let augment = Augment { n: batch, channels: cfg.channels, size: cfg.size, class_ids: cfg.multiclass() };
        let raw_image = gpu.buffer("batch images", exec.input().elems())?;
        let raw_mask = gpu.buffer("batch masks", exec.target().elems())?;
        let transforms = gpu.buffer("augmentation transforms", augment.transforms_len())?;
        let augment_dispatch =
            augment.dispatch(&gpu, &transforms, &raw_image, &raw_mask, exec.input(), exec.target())?;
        Ok(Trainer {
            o: o.clone(),
            data,
            cfg,
            gpu,
            params,
            exec,
            evaluator,
            batch,
            augment,
            aug_cfg: o.augment.config(),
            raw_image,
            raw_mask,
            transforms,
            augment_dispatch,
        })
    }

    fn record(&self, epochs_run: usize, best_epoch: usize) -> RunRecord {
        RunRecord {
            model: self.cfg.clone(),
            loss: self.o.loss,
            augment: self.o.augment,
            dataset: self.data.record.clone(),
            command: self.o.command.clone(),
            epochs_run,
            best_epoch,
            wgunet_version: env!("CARGO_PKG_VERSION").to_string(),
            init: self.o.init.clone(),
        }
    }

    /// Epochs from the checkpoint `progress` on, then the final evaluation and report.
    fn run(&self, mut progress: Progress) -> Result<Metrics> {
        let mut last_metrics = None;
        while !progress.stopped_early && progress.epoch < self.o.epochs {
            let epoch = progress.epoch + 1;
            let metrics = self
                .run_epoch(&mut progress, epoch)
                .and_then(|loss| self.end_epoch(&mut progress, epoch, loss))
                .map_err(|e| self.note_checkpoint(e, epoch))?;
            last_metrics = Some(metrics);
            if STOP_REQUESTED.load(Ordering::Relaxed) {
                return Err(Interrupted { run: self.o.out.clone(), epochs_done: epoch }.into());
            }
        }
        let metrics = self.finish(&progress, last_metrics)?;
        state::mark_finished(&self.o.out)?;
        Ok(metrics)
    }

    /// A device fault (or any failure) in `epoch` leaves the checkpoint before it intact: say so.
    fn note_checkpoint(&self, e: anyhow::Error, epoch: usize) -> anyhow::Error {
        if e.is::<Interrupted>() || e.is::<Diverged>() {
            return e;
        }
        let run = self.o.out.display();
        e.context(format!(
            "epoch {epoch} failed; {run} keeps the checkpoint of epoch {} (`wgunet train --resume {run}` continues it with the same options)",
            epoch - 1
        ))
    }

    /// Every training image once, in a shuffled order, with a step per batch; the loss is read
    /// back a few times (the GPU waits for it) to show progress and to catch divergence.
    fn run_epoch(&self, progress: &mut Progress, epoch: usize) -> Result<EpochLoss> {
        let (gpu, exec, batch) = (&self.gpu, &self.exec, self.batch);
        let steps = self.data.train.len().div_ceil(batch);
        let mut order: Vec<usize> = (0..self.data.train.len()).collect();
        order.shuffle(&mut progress.rng);
        let bar = indicatif::ProgressBar::new(steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", self.o.epochs));
        gpu.write(exec.loss_sum(), &[0.0f32]);
        let t0 = Instant::now();
        let (img_len, mask_len) = (exec.input().elems() / batch, exec.target().elems() / batch);
        let mut image = vec![0.0f32; img_len * batch];
        let mut mask = vec![0.0f32; mask_len * batch];
        let mut loss = f64::NAN;
        for s in 0..steps {
            // Every sample once an epoch; the last batch is topped up from the start of the order.
            for i in 0..batch {
                let sample = &self.data.train[order[(s * batch + i) % order.len()]];
                image[i * img_len..(i + 1) * img_len].copy_from_slice(&sample.image);
                mask[i * mask_len..(i + 1) * mask_len].copy_from_slice(&sample.mask);
            }
            progress.step += 1;
            self.submit_step(progress, &image, &mask);
            let first_step = progress.step == 1;
            if first_step {
                gpu.wait()?;
                bar.suspend(crate::bench::print_first_step);
            }
            // Reading the running loss waits for the GPU; do it a few times an epoch only.
            if first_step || (s + 1) % 8 == 0 || s + 1 == steps {
                loss = gpu.read::<f32>(exec.loss_sum())?[0] as f64 / (s + 1) as f64;
                let first_loss = *progress.first_loss.get_or_insert(loss);
                if !loss.is_finite() || loss > DIVERGENCE_FACTOR * first_loss {
                    bar.finish_and_clear();
                    return Err(Diverged {
                        run: self.o.out.clone(),
                        epoch,
                        step: progress.step,
                        loss,
                        first_loss,
                        lr: self.o.lr,
                        best_epoch: progress.callbacks.best_epoch,
                    }
                    .into());
                }
                let ips = ((s + 1) * batch) as f64 / t0.elapsed().as_secs_f64();
                bar.set_message(format!("loss {loss:.4}  {ips:.1} images/s"));
            } else {
                gpu.check()?;
            }
            bar.inc(1);
            if STOP_REQUESTED.load(Ordering::Relaxed) {
                gpu.wait()?;
                bar.finish_and_clear();
                return Err(Interrupted { run: self.o.out.clone(), epochs_done: progress.epoch }.into());
            }
        }
        gpu.wait()?;
        bar.finish_and_clear();
        Ok(EpochLoss { train_loss: loss, images_per_s: (steps * batch) as f64 / t0.elapsed().as_secs_f64() })
    }

    /// Uploads a batch and records augmentation, forward, loss, backward and Adam into one
    /// command buffer.
    fn submit_step(&self, progress: &mut Progress, image: &[f32], mask: &[f32]) {
        let (gpu, exec) = (&self.gpu, &self.exec);
        exec.set_hyper(gpu, AdamHyper::new(progress.lr, self.o.weight_decay, progress.step));
        exec.set_step(gpu, self.o.seed, progress.step);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        if let Some(aug_cfg) = &self.aug_cfg {
            gpu.write(&self.raw_image, image);
            gpu.write(&self.raw_mask, mask);
            let t: Vec<ImageTransform> =
                (0..self.batch).map(|_| ImageTransform::random(&mut progress.rng, self.cfg.size, aug_cfg)).collect();
            gpu.write(&self.transforms, &self.augment.pack(&t));
        } else {
            gpu.write(exec.input(), image);
            gpu.write(exec.target(), mask);
        }
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            if self.aug_cfg.is_some() {
                self.augment_dispatch.record(&mut pass);
            }
            exec.record_train_step(&mut pass);
        }
        gpu.queue.submit([enc.finish()]);
    }

    /// Test metrics, metrics.csv and curves, the callbacks, the weights and the checkpoint.
    /// The checkpoint is written last: whatever a kill interrupts before it, a resume redoes.
    fn end_epoch(&self, progress: &mut Progress, epoch: usize, loss: EpochLoss) -> Result<Metrics> {
        let (o, train_loss, ips, lr) = (&self.o, loss.train_loss, loss.images_per_s, progress.lr);
        let m = self.evaluator.evaluate(&self.gpu, &self.data.test)?;
        println!(
            "epoch {epoch}/{}: loss {train_loss:.4}, test loss {:.4}, mean pixel accuracy {:.4}, mean IoU {:.4}, mean Dice {:.4}  ({ips:.1} images/s, lr {lr:.2e})",
            o.epochs, m.loss, m.mean_pixel_accuracy, m.mean_iou, m.mean_dice
        );
        progress.metrics_rows.push(format!(
            "{epoch},{lr},{train_loss},{},{},{},{},{},{},{ips}",
            m.loss, m.mean_pixel_accuracy, m.mean_iou, m.mean_dice, m.micro_iou, m.micro_dice
        ));
        self.write_metrics_csv(&progress.metrics_rows)?;
        report::curves(&o.out.join("metrics.csv"), &o.out.join("curves.png"))?;
        let (improved, halve, stop) = progress.callbacks.observe(epoch, train_loss);
        let tensors = self.read_tensors()?;
        checkpoint::save_weights(&o.out.join("last.safetensors"), &self.params.infos, &tensors.values)?;
        if improved {
            checkpoint::save_weights(&o.out.join("best.safetensors"), &self.params.infos, &tensors.values)?;
        }
        checkpoint::save_record(&o.out, &self.record(epoch, progress.callbacks.best_epoch))?;
        progress.epoch = epoch;
        if halve {
            progress.lr *= 0.5;
            println!("  loss has not improved for 3 epochs: learning rate halved to {:.2e}", progress.lr);
        }
        if stop {
            progress.stopped_early = true;
            println!("  loss has not improved for 6 epochs: stopping early");
        }
        progress.save(&o.out, &self.params.infos, &tensors)?;
        Ok(m)
    }

    fn read_tensors(&self) -> Result<Tensors> {
        let (gpu, p) = (&self.gpu, &self.params);
        Ok(Tensors { values: p.read(gpu, &p.values)?, adam_m: p.read(gpu, &p.m)?, adam_v: p.read(gpu, &p.v)? })
    }

    /// metrics.csv, rewritten whole (atomically) so that it never holds half a row.
    fn write_metrics_csv(&self, rows: &[String]) -> Result<()> {
        let text: String =
            std::iter::once(METRICS_HEADER).chain(rows.iter().map(String::as_str)).map(|l| format!("{l}\n")).collect();
        checkpoint::write_atomic(&self.o.out.join("metrics.csv"), text.as_bytes())
    }

    /// The final metrics (of the best epoch's weights: EarlyStopping's restore_best_weights),
    /// metrics.json and the report. `last_metrics` are those of the last epoch trained in this
    /// process, if any.
    fn finish(&self, progress: &Progress, last_metrics: Option<Metrics>) -> Result<Metrics> {
        let best_epoch = progress.callbacks.best_epoch;
        let metrics = match last_metrics {
            Some(m) if best_epoch == progress.epoch => m,
            _ => {
                let best = checkpoint::load_weights(&self.o.out.join("best.safetensors"), &self.params.infos)?;
                self.params.load(&self.gpu, &best)?;
                if best_epoch != progress.epoch {
                    println!("restored the weights of epoch {best_epoch} (lowest training loss)");
                }
                self.evaluator.evaluate(&self.gpu, &self.data.test)?
            }
        };
        metrics.print("test split");
        checkpoint::write_atomic(&self.o.out.join("metrics.json"), serde_json::to_string_pretty(&metrics)?.as_bytes())?;
        write_run_report(&self.o, &self.gpu, &self.evaluator, &self.data, &self.cfg, &metrics)?;
        println!("saved {}", self.o.out.display());
        Ok(metrics)
    }
}

/// Panels of the best and worst test images and `report.md`, from the final weights.
fn write_run_report(
    o: &TrainOptions,
    gpu: &Gpu,
    evaluator: &Evaluator,
    data: &Dataset,
    cfg: &ModelConfig,
    metrics: &Metrics,
) -> Result<()> {
    let probs = evaluator.probabilities(gpu, &data.test)?;
    let panels = if cfg.multiclass() {
        let truths: Vec<Vec<u8>> = data.test.iter().map(|s| s.mask.iter().map(|&v| v as u8).collect()).collect();
        let preds: Vec<Vec<u8>> = probs.iter().map(|p| argmax(p, cfg.classes)).collect();
        let cases: Vec<report::ClassCase<'_>> = data
            .test
            .iter()
            .zip(&truths)
            .zip(&preds)
            .zip(&data.test_names)
            .map(|(((s, truth), pred), name)| report::ClassCase { name, image: &s.image, truth, pred })
            .collect();
        report::write_class_panels(&o.out, &cases, cfg.classes, cfg.channels, cfg.size, 3, 3)?
    } else {
        let cases: Vec<report::Case<'_>> = data
            .test
            .iter()
            .zip(&probs)
            .zip(&data.test_names)
            .map(|((s, p), name)| report::Case { name, image: &s.image, truth: &s.mask, prob: p })
            .collect();
        report::write_panels(&o.out, &cases, cfg.channels, cfg.size, 3, 3)?
    };
    let dataset = match &data.record {
        DatasetRecord::Synthetic { seed, .. } => format!("built-in synthetic slices (seed {seed})"),
        DatasetRecord::Lists { source } => source.clone(),
    };
    report::write_report(
        &o.out,
        &report::ReportInfo {
            command: o.command.clone(),
            dataset,
            pairs: data.pairs,
            train: data.train.len(),
            test: data.test.len(),
            size: cfg.size,
            channels: cfg.channels,
            metrics: report::metric_rows(metrics),
            panels,
        },
    )?;
    println!("wrote {}", o.out.join("report.md").display());
    Ok(())
}
