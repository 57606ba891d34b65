//! What the commands do beyond handing their options to the library: building the training
//! options from the arguments, applying a plan, the small commands (split, shift, export,
//! info), and the checks of numeric arguments.

use std::path::Path;

use anyhow::{bail, Result};

use super::TrainArgs;
use wgunet::data::{pairs, split};
use wgunet::device;
use wgunet::finetune::InitRecord;
use wgunet::graph::{compile, Loss, Mode};
use wgunet::infer::{self, EvalData, EvalOptions};
use wgunet::model::ModelConfig;
use wgunet::ops::augment::AugmentPreset;
use wgunet::train::{DataOptions, DataSource, OptimizerOptions, Schedule, TrainOptions};

/// `train --plan`: the plan's choices for `data`, but for those given as `flags`.
pub(crate) fn apply_plan(options: &mut TrainOptions, data: &Path, flags: &[String]) -> Result<()> {
    let (_, plan) = wgunet::plan::plan(data, options.model.classes)?;
    let given = |flag: &str| flags.iter().any(|f| f == flag);
    if !given("--size") && !given("--patch") {
        match plan.input {
            wgunet::plan::Input::WholeSlice { size } => (options.model.size, options.data.patch) = (size, None),
            wgunet::plan::Input::Patches { patch } => (options.model.size, options.data.patch) = (patch, Some(patch)),
        }
    }
    if !given("--loss") {
        options.loss = plan.loss;
    }
    if !given("--normalise") {
        options.data.normalise = plan.normalise;
    }
    Ok(())
}

/// A run trained on patches (`--patch`) was scored on one patch per test image each epoch:
/// score its whole test images too, in tiles at their own size, as `wgunet eval` does.
pub(crate) fn score_patch_run(run: &Path, device: &wgunet::DeviceChoice) -> Result<()> {
    if wgunet::checkpoint::load_record(run)?.patch.is_none() {
        return Ok(());
    }
    println!("whole test images, in tiles at their own size (`wgunet eval {}`):", run.display());
    // Segmenter tiles a patch-trained run by itself.
    infer::eval(run, &EvalOptions::defaults(EvalData::RunTestSplit, device.clone())).map(drop)
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
    println!("wrote {n} pairs to {} (images shifted: {shift:?}; masks unchanged)", out.display());
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
        },
        batch: a.batch,
        loss: Loss::for_classes(a.loss, a.model.classes)?,
        augment: if a.no_augment { AugmentPreset::None } else { a.augment },
        intensity: a.intensity,
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
            graph.params.iter().filter(|p| p.name.starts_with(&format!("{}.", node.name))).map(|p| p.len()).sum();
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

/// `--dropout`: a probability in [0, 1).
pub(crate) fn percentage(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..100.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a percentage in [0, 100), e.g. 0.05")),
    }
}

pub(crate) fn dropout_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a dropout probability in [0, 1)")),
    }
}
