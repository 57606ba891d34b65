//! What the commands do beyond handing their options to the library: building the training
//! options from the arguments, applying a plan, the small commands (split, shift, export,
//! info), and the checks of numeric arguments.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{PlanArgs, TrainArgs};
use wgunet::data::split::DEFAULT_TRAIN_FRACTION;
use wgunet::data::{pairs, split};
use wgunet::finetune::InitRecord;
use wgunet::graph::{compile, Loss, Mode};
use wgunet::infer::{self, EvalData, EvalOptions};
use wgunet::model::ModelConfig;
use wgunet::ops::augment::AugmentPreset;
use wgunet::plan::duration::written_duration;
use wgunet::plan::estimate::{Estimate, Given, RunRequest};
use wgunet::plan::timing::DeviceTimer;
use wgunet::plan::{Fingerprint, Input, Plan};
use wgunet::train::{DataOptions, DataSource, OptimizerOptions, Schedule, TrainOptions};
use wgunet::{device, Gpu};

/// The flags the plan chooses the values of: one given on the command line wins.
const PLANNED_FLAGS: [&str; 9] = [
    "--size",
    "--patch",
    "--loss",
    "--normalise",
    "--intensity",
    "--early-stopping-patience",
    "--lr-schedule",
    "--filters",
    "--epochs",
];

/// `wgunet plan`: the dataset's fingerprint and plan, and the planned run timed on its device
/// (with `--time-budget`: the largest setting that fits). `flags` were given on the command line.
pub(crate) fn plan_command(a: PlanArgs, flags: &[String]) -> Result<()> {
    let started = Instant::now();
    let (fingerprint, plan) = wgunet::plan::plan(&a.data, a.classes)?;
    let (patches, side) = match plan.input {
        Input::WholeSlice { size } => (false, size),
        Input::Patches { patch } => (true, patch),
    };
    let given = |flag: &str| flags.iter().any(|f| f == flag);
    let request = RunRequest {
        model: ModelConfig {
            arch: a.arch,
            size: side,
            channels: data_channels(&fingerprint),
            filters: a.filters,
            dropout: wgunet::model::DEFAULT_DROPOUT,
            classes: a.classes,
            activation: Default::default(),
            normalise: Default::default(),
        },
        patches,
        tta: plan.tta,
        batch: a.batch,
        epochs: a.epochs,
        train_fraction: DEFAULT_TRAIN_FRACTION,
        max_images: None,
        folds: None,
        budget: a.time_budget,
        given: Given { side: false, filters: given("--filters"), epochs: given("--epochs") },
        data_read_s: started.elapsed().as_secs_f64(),
    };
    let estimate = estimate_on(&fingerprint, &plan, &request, &a.device.device)?;
    let mut plan = plan;
    if let Some(line) = plan.fit_intensity_to(estimate.shape.filters) {
        println!("{line}");
    }
    if let Some(budget) = request.budget.filter(|_| estimate.impossible.is_none()) {
        let (input, extra) = estimate.options(patches);
        println!(
            "train within the budget: {} (or: wgunet train --data … --time-budget {})",
            plan.train_command(&a.data, input, &extra),
            written_duration(budget)
        );
    }
    Ok(())
}

/// The channels a run reads the dataset with (without `--channels`): the first image's.
fn data_channels(f: &Fingerprint) -> usize {
    if f.images.first().is_some_and(|s| s.gray) {
        1
    } else {
        3
    }
}

/// Times the planned run on `device` and prints the estimate.
fn estimate_on(f: &Fingerprint, plan: &Plan, request: &RunRequest, device: &wgunet::DeviceChoice) -> Result<Estimate> {
    let mut timer = DeviceTimer { gpu: Gpu::open(device)? };
    let estimate = wgunet::plan::estimate::estimate(f, plan, request, &mut timer)?;
    estimate.print();
    Ok(estimate)
}

/// A run `--plan` set up: what it chose and predicted, to compare with the run's time.
pub(crate) struct PlannedRun {
    plan: Plan,
    estimate: Estimate,
    /// The planned flags given on the command line.
    given: Vec<String>,
    /// When training started (after planning).
    started: Instant,
}

/// `train --plan`: the plan's choices for `data`, but for those given as `flags`; the run timed
/// on its device and, with a `budget`, fitted to it.
pub(crate) fn apply_plan(
    options: &mut TrainOptions,
    data: &Path,
    flags: &[String],
    budget: Option<Duration>,
    folds: Option<usize>,
) -> Result<PlannedRun> {
    let started = Instant::now();
    let (fingerprint, plan) = wgunet::plan::plan(data, options.model.classes)?;
    let data_read_s = started.elapsed().as_secs_f64();
    let given = |flag: &str| flags.iter().any(|f| f == flag);
    if !given("--size") && !given("--patch") {
        match plan.input {
            Input::WholeSlice { size } => (options.model.size, options.data.patch) = (size, None),
            Input::Patches { patch } => (options.model.size, options.data.patch) = (patch, Some(patch)),
        }
    }
    if !given("--loss") {
        options.loss = plan.loss;
    }
    if !given("--normalise") {
        options.data.normalise = plan.normalise;
    }
    if !given("--early-stopping-patience") {
        options.schedule.early_stopping_patience = plan.early_stopping_patience;
    }
    if !given("--lr-schedule") {
        options.schedule.lr_schedule = plan.lr_schedule;
    }
    options.tta |= plan.tta;
    let kept: Vec<String> = PLANNED_FLAGS
        .iter()
        .filter(|f| given(f) && !matches!(**f, "--filters" | "--epochs"))
        .map(|&flag| format!("{flag} {}", given_value(options, flag)))
        .collect();
    if !kept.is_empty() {
        // The plan above is printed as chosen: say which of its choices the run does not take
        // (filters and epochs are the estimate's, printed below as the run takes them).
        println!("the command line replaces the plan's: {}", kept.join(", "));
    }
    let request = RunRequest {
        model: ModelConfig {
            channels: options.data.channels.unwrap_or(data_channels(&fingerprint)),
            ..options.model.clone()
        },
        patches: options.data.patch.is_some(),
        tta: options.tta,
        batch: options.batch,
        epochs: options.schedule.epochs,
        train_fraction: options.data.train_fraction,
        max_images: options.data.max_images,
        folds,
        budget,
        given: Given {
            side: given("--size") || given("--patch"),
            filters: given("--filters"),
            epochs: given("--epochs"),
        },
        data_read_s,
    };
    let estimate = estimate_on(&fingerprint, &plan, &request, &options.device)?;
    if let Some(why) = &estimate.impossible {
        bail!("--time-budget: {why}");
    }
    // The budget's choice, or the filters that fit without one (the rest as requested).
    let side = estimate.shape.side;
    (options.model.size, options.data.patch) = (side, options.data.patch.map(|_| side));
    (options.model.filters, options.schedule.epochs) = (estimate.shape.filters, estimate.epochs);
    // The intensity set follows the filters the run trains.
    let mut plan = plan;
    let intensity_line = plan.fit_intensity_to(options.model.filters);
    if !given("--intensity") {
        options.intensity = plan.intensity;
        if let Some(line) = intensity_line {
            println!("{line}");
        }
    }
    let given = PLANNED_FLAGS.iter().filter(|f| given(f)).map(|f| f.to_string()).collect();
    Ok(PlannedRun { plan, estimate, given, started: Instant::now() })
}

/// The value `options` hold for a planned `flag` given on the command line, as it is spelled.
fn given_value(options: &TrainOptions, flag: &str) -> String {
    match flag {
        "--size" => options.model.size.to_string(),
        "--patch" => options.data.patch.map_or_else(String::new, |p| p.to_string()),
        "--loss" => options.loss.name().into(),
        "--normalise" => options.data.normalise.name().into(),
        "--intensity" => options.intensity.name().into(),
        "--early-stopping-patience" => options.schedule.early_stopping_patience.to_string(),
        "--lr-schedule" => options.schedule.lr_schedule.name().into(),
        _ => unreachable!("{flag} is not a planned flag with a value to print"),
    }
}

impl PlannedRun {
    /// Prints the predicted against the actual time and adds the plan to the run's report
    /// (`report.md`, or `folds.md` for `--folds`).
    pub(crate) fn finish(&self, run: &Path, folds: bool) -> Result<()> {
        let took_s = self.started.elapsed().as_secs_f64();
        let epochs_run = if folds { None } else { Some(wgunet::checkpoint::load_record(run)?.epochs_run) };
        let section = self.estimate.markdown(&self.plan, &self.given, took_s, epochs_run);
        println!("time: {}; {}", self.estimate.summary(), self.estimate.comparison(took_s, epochs_run));
        let report = run.join(if folds { "folds.md" } else { "report.md" });
        append_section(&report, &section)?;
        println!("added the plan to {}", report.display());
        Ok(())
    }
}

/// Adds a markdown `section` at the end of `report` (written whole again, atomically).
fn append_section(report: &Path, section: &str) -> Result<()> {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    wgunet::checkpoint::write_atomic(report, format!("{text}{section}").as_bytes())
}

/// Training scores the test split each epoch as it trains: on the model's inputs, without flips
/// (and for `--patch`, on one patch per image). A run whose inference differs (patches: whole
/// images in tiles; `--tta`: flips averaged) is then scored once more as `wgunet eval` scores it,
/// and the result is added to its report.
pub(crate) fn score_run_as_eval(run: &Path, device: &wgunet::DeviceChoice) -> Result<()> {
    let record = wgunet::checkpoint::load_record(run)?;
    if record.patch.is_none() && !record.tta {
        return Ok(());
    }
    let how = match (record.patch.is_some(), record.tta) {
        (true, true) => "whole test images, in tiles at their own size, with flip TTA",
        (true, false) => "whole test images, in tiles at their own size",
        _ => "test images with flip TTA",
    };
    println!("{how} (`wgunet eval {}`):", run.display());
    // The segmenter tiles a patch-trained run and flips a TTA run by itself.
    let scored = infer::eval(run, &EvalOptions::defaults(EvalData::RunTestSplit, device.clone()))?;
    let section = format!(
        "\n## Test split as `wgunet eval` scores it\n\n{how}: mean Dice {:.4} (micro {:.4}) at the model's {} px, \
         {:.4} (micro {:.4}) at each image's own size; per image in `eval/per_image.csv`.\n",
        scored.model.mean_dice,
        scored.model.micro_dice,
        record.model.size,
        scored.native.mean_dice,
        scored.native.micro_dice
    );
    append_section(&run.join("report.md"), &section)
}

/// `wgunet split`: the train and test lists of a dataset folder, written into `out`.
pub(crate) fn write_split(data: &Path, train: f64, seed: u64, max_images: Option<usize>, out: &Path) -> Result<()> {
    let pairing = pairs::find_pairs(data)?;
    println!("{}", pairs::describe(&pairing));
    let (tr, te) = split::split(&pairing.pairs, train, seed, max_images)?;
    std::fs::create_dir_all(out)?;
    split::write_list(&out.join("train.txt"), &tr)?;
    split::write_list(&out.join("test.txt"), &te)?;
    println!(
        "wrote {} ({} pairs) and {} ({} pairs)",
        out.join("train.txt").display(),
        tr.len(),
        out.join("test.txt").display(),
        te.len()
    );
    Ok(())
}

/// `wgunet shift`: the pairs of the folder `data` or of the `list`, shifted into `out`.
pub(crate) fn write_shift(
    data: Option<&Path>,
    list: Option<&Path>,
    shift: wgunet::data::shift::Shift,
    out: &Path,
) -> Result<()> {
    let pairs = match (data, list) {
        (Some(dir), _) => pairs::find_pairs(dir)?.pairs,
        (None, Some(list)) => split::read_list(list)?,
        (None, None) => bail!("give --data DIR or --list FILE"),
    };
    let n = wgunet::data::shift::write_shifted(&pairs, shift, out)?;
    println!(
        "wrote {n} pairs to {} (images shifted: gamma {}, contrast ×{} about mid-gray, bias field ±{}; masks \
         unchanged)",
        out.display(),
        shift.gamma,
        shift.contrast,
        shift.bias
    );
    Ok(())
}

/// `wgunet export`: the run in `model` as the ONNX file `onnx`.
pub(crate) fn export(model: &Path, onnx: &Path) -> Result<()> {
    let e = wgunet::export::export_run(model, onnx)?;
    println!(
        "wrote {} ({} ONNX nodes, {} parameters, {:.1} KiB, opset {}): input '{}' [batch, C, H, W], output '{}'",
        onnx.display(),
        e.nodes,
        e.parameters,
        e.bytes as f64 / 1024.0,
        wgunet::export::OPSET,
        wgunet::export::INPUT,
        wgunet::export::OUTPUT
    );
    Ok(())
}

/// The training options a `train` (or `compare`) command line asks for.
pub(crate) fn train_options(a: TrainArgs) -> Result<TrainOptions> {
    let source = match (a.data, a.train_list, a.test_list) {
        (Some(dir), _, _) => DataSource::Folder { dir },
        (None, Some(train), Some(test)) => DataSource::Lists { train, test },
        (None, None, None) => DataSource::Synthetic { count: a.synth_count },
        _ => bail!("give both --train-list and --test-list"),
    };
    Ok(TrainOptions {
        // Validated once the data have decided the channels.
        model: ModelConfig { size: a.patch.unwrap_or(a.model.size), ..a.model.model(a.channels.unwrap_or(1)) },
        data: DataOptions {
            source,
            train_fraction: a.train,
            max_images: a.max_images,
            channels: a.channels,
            strict: a.strict,
            normalise: a.normalise,
            patch: a.patch,
        },
        optimizer: OptimizerOptions { lr: a.lr, weight_decay: a.weight_decay },
        schedule: Schedule {
            epochs: a.epochs,
            plateau_patience: a.plateau_patience,
            early_stopping_patience: a.early_stopping_patience,
            lr_schedule: a.lr_schedule,
        },
        batch: a.batch,
        loss: Loss::for_classes(a.loss, a.model.classes)?,
        augment: if a.no_augment { AugmentPreset::None } else { a.augment },
        intensity: a.intensity,
        tta: a.tta,
        seed: a.seed,
        device: a.device.device,
        out: a.out,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        init: a.init.map(|run| InitRecord { run: run.display().to_string(), skip_head: a.init_skip_head }),
    })
}

pub(crate) fn print_info(cfg: &ModelConfig, batch: usize) {
    let graph = cfg.build(batch);
    println!("{:<18} {:<16} {:>18} {:>10}", "layer", "op", "output (NCHW)", "params");
    for node in &graph.nodes {
        let params: usize =
            graph.params.iter().filter(|p| p.name.starts_with(&format!("{}.", node.name))).map(|p| p.elems()).sum();
        let op = node.op.name();
        let [n, c, h, w] = node.shape;
        println!("{:<18} {:<16} {:>18} {:>10}", node.name, op, format!("{n}x{c}x{h}x{w}"), params);
    }
    let train = compile(&graph, Mode::Train(Loss::monitor(cfg.classes)));
    let plan = wgunet::executor::MemoryPlan::new(&train);
    println!("parameters: {}", graph.param_count());
    println!("forward FLOPs per image: {:.3} G (training step ~3x)", graph.flops() as f64 / batch as f64 / 1e9);
    println!(
        "planned training memory for batch {batch}: activations and gradients {} ({} without sharing), parameters + gradients + Adam state {}",
        device::mib(plan.planned_bytes()),
        device::mib(plan.unplanned_elems as u64 * 4),
        device::mib(graph.param_count() as u64 * 16)
    );
}

pub(crate) fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(42)
}

/// `--batch`, `--epochs`, `--max-images`, `--steps`: a count of at least 1 (0 would train on
/// nothing, or silently as 1).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number of at least 1")),
    }
}

/// `--lr`: finite and above 0.
pub(crate) fn learning_rate(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a learning rate: give a finite number above 0, e.g. 1e-3")),
    }
}

/// `--train`: the training share of a split, strictly between 0 and 1 (both parts non-empty).
pub(crate) fn train_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a fraction in the open interval (0, 1), e.g. 0.7")),
    }
}

/// `--min-component`: a percentage of the image in [0, 100).
pub(crate) fn percentage(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..100.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a percentage in [0, 100), e.g. 0.05")),
    }
}

/// `--dropout`: a probability in [0, 1).
pub(crate) fn dropout_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a dropout probability in [0, 1)")),
    }
}
