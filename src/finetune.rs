//! `wgunet train --init RUN`: training that starts from another run's weights (fine-tuning a
//! model trained on one dataset on another) instead of a random initialisation.
//!
//! The two models must have the same shapes of weights: the same architecture, filters and
//! input channels, and the same classes unless the head (the final 1×1 convolution) starts from
//! scratch (`--init-skip-head`), which also lets a binary model seed a K-class one. The input
//! size may differ: every weight is a convolution kernel, independent of the image size.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::executor::ParamArena;
use crate::graph::ParamInfo;
use crate::model::{ModelConfig, HEAD};

/// Where a run's initial weights came from, recorded in its `model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitRecord {
    /// The run folder whose weights (best, else last) training started from.
    pub run: String,
    /// The head started from the random initialisation instead.
    pub skip_head: bool,
}

/// The values `params` (of a model `cfg`) start training from: the random initialisation of
/// `seed`, or with `init` that run's weights (its head random with `skip_head`). A run whose
/// weights do not fit is an error naming every difference and how to resolve it.
pub fn initial_values(
    params: &ParamArena,
    cfg: &ModelConfig,
    init: Option<&InitRecord>,
    seed: u64,
) -> Result<Vec<Vec<f32>>> {
    let mut values = params.initial_values(seed);
    let Some(init) = init else { return Ok(values) };
    let run = Path::new(&init.run);
    ensure!(run.is_dir(), "--init {}: no such run folder (give a folder written by `wgunet train`)", init.run);
    let source = checkpoint::load_record(run).with_context(|| format!("--init {}", init.run))?;
    check_compatible(&init.run, &source.model, cfg, init.skip_head)?;
    let kept = |p: &ParamInfo| !(init.skip_head && is_head(p));
    let path = checkpoint::weights_path(run)?;
    let loaded = checkpoint::load_weights_where(&path, &params.infos, kept)?;
    for ((value, loaded), p) in values.iter_mut().zip(loaded).zip(&params.infos) {
        if kept(p) {
            *value = loaded;
        }
    }
    let head = if init.skip_head { " (the head from scratch)" } else { "" };
    println!("starting from the weights of {}{head}", path.display());
    Ok(values)
}

fn classes(n: usize) -> String {
    if n == 1 {
        "1 class".into()
    } else {
        format!("{n} classes")
    }
}

fn is_head(p: &ParamInfo) -> bool {
    p.name.strip_prefix(HEAD).is_some_and(|rest| rest.starts_with('.'))
}

/// Every way the model of run `run` (`from`) differs from this run's (`to`) in the shapes of its
/// weights or in what they mean (the activation and the input normalisation they were trained
/// with).
fn check_compatible(run: &str, from: &ModelConfig, to: &ModelConfig, skip_head: bool) -> Result<()> {
    let mut differences = Vec::new();
    if from.arch != to.arch {
        differences.push(format!(
            "{run} is a {} model, this run a {}: give --arch {}",
            from.arch.name(),
            to.arch.name(),
            from.arch.name()
        ));
    }
    if from.activation != to.activation {
        let name = |a: crate::model::Activation| {
            clap::ValueEnum::to_possible_value(&a).map_or_else(String::new, |v| v.get_name().to_string())
        };
        differences.push(format!(
            "{run} uses {}, this run {}: give --activation {}",
            name(from.activation),
            name(to.activation),
            name(from.activation)
        ));
    }
    let (from_kind, to_kind) = (from.normalise.kind(), to.normalise.kind());
    // Percentile statistics differ from dataset to dataset; what the weights expect is the kind.
    if from_kind != to_kind {
        differences.push(format!(
            "{run} was trained on {} inputs, this run on {}: give --normalise {}",
            from_kind.name(),
            to_kind.name(),
            from_kind.name()
        ));
    }
    if from.filters != to.filters {
        differences.push(format!(
            "{run} has {} filters, this run has {}: give --filters {}",
            from.filters, to.filters, from.filters
        ));
    }
    if from.channels != to.channels {
        differences.push(format!(
            "{run} takes {} input channel(s), this run {} (from the data or --channels): give --channels {}",
            from.channels, to.channels, from.channels
        ));
    }
    if from.classes != to.classes && !skip_head {
        differences.push(format!(
            "{run} has {}, this run has {}: use --init-skip-head to start the head from scratch",
            classes(from.classes),
            classes(to.classes)
        ));
    }
    ensure!(differences.is_empty(), "--init {run} does not fit this model: {}", differences.join("; "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Normalisation;
    use crate::model::{Activation, Arch};

    fn config(arch: Arch, filters: usize, channels: usize, classes: usize) -> ModelConfig {
        ModelConfig {
            arch,
            size: 32,
            channels,
            filters,
            dropout: 0.1,
            classes,
            activation: Activation::Relu,
            normalise: Normalisation::Unit,
        }
    }

    #[test]
    fn every_difference_is_named_and_the_head_may_be_skipped() {
        let from = config(Arch::Unet, 8, 1, 3);
        assert!(check_compatible("runs/A", &from, &ModelConfig { size: 64, ..from.clone() }, false).is_ok());
        let err = check_compatible("runs/A", &from, &config(Arch::Resunet, 4, 3, 1), false).unwrap_err().to_string();
        for part in [
            "runs/A is a unet model, this run a resunet: give --arch unet",
            "runs/A has 8 filters, this run has 4: give --filters 8",
            "give --channels 1",
            "runs/A has 3 classes, this run has 1 class: use --init-skip-head",
        ] {
            assert!(err.contains(part), "{err}\nlacks: {part}");
        }
        assert!(check_compatible("runs/A", &from, &config(Arch::Unet, 8, 1, 1), true).is_ok());
        let leaky = ModelConfig { activation: Activation::LeakyRelu, ..from.clone() };
        let err = check_compatible("runs/A", &leaky, &from, false).unwrap_err().to_string();
        assert!(err.contains("runs/A uses leaky-relu, this run relu: give --activation leaky-relu"), "{err}");
        let zscore = ModelConfig { normalise: Normalisation::Zscore, ..from.clone() };
        let err = check_compatible("runs/A", &zscore, &from, false).unwrap_err().to_string();
        assert!(
            err.contains("runs/A was trained on zscore inputs, this run on unit: give --normalise zscore"),
            "{err}"
        );
        let fitted = |mean| Normalisation::Percentile { low: 0.0, high: 0.9, mean, std: 0.2 };
        let (a, b) = (
            ModelConfig { normalise: fitted(0.3), ..from.clone() },
            ModelConfig { normalise: fitted(0.4), ..from.clone() },
        );
        assert!(check_compatible("runs/A", &a, &b, false).is_ok(), "another dataset's percentiles");
        assert!(check_compatible("runs/A", &from, &config(Arch::Unet, 4, 1, 1), true).is_err());
    }

    #[test]
    fn runs_saved_before_init_load_without_it_and_new_ones_keep_it() {
        let old = r#"{ "model": { "arch": "unet", "size": 64, "channels": 1, "filters": 8 }, "loss": "bce",
            "dataset": { "kind": "synthetic", "seed": 1, "count": 10, "train": 0.7 }, "command": "wgunet train",
            "epochs_run": 3, "best_epoch": 2, "wgunet_version": "0.1.0" }"#;
        let mut record: checkpoint::RunRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.init, None);
        record.init = Some(InitRecord { run: "runs/A".into(), skip_head: true });
        let again: checkpoint::RunRecord = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(again.init, record.init);
    }

    #[test]
    fn the_head_is_the_final_convolution_only() {
        let names: Vec<String> =
            config(Arch::Unet, 2, 1, 1).build(1).params.iter().filter(|p| is_head(p)).map(|p| p.name.clone()).collect();
        assert_eq!(names, ["head.weight", "head.bias"]);
    }
}
