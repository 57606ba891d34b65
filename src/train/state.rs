//! The training checkpoint `train-state.safetensors`: everything the next epoch needs, so a run
//! stopped at any moment continues (`wgunet train --resume`) exactly as if it had not stopped.
//! The tensors (weights, Adam's moments) and the scalars (JSON in the safetensors header) are
//! one file, written atomically: a kill can never pair the tensors of one epoch with the
//! scalars of another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Callbacks, TrainOptions};
use crate::checkpoint;
use crate::graph::ParamInfo;

pub const STATE_FILE: &str = "train-state.safetensors";
/// The `format` of the header; a new layout gets a new name.
const FORMAT: &str = "wgunet-train-state-1";
const PROGRESS_KEY: &str = "progress";

/// The scalars of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    /// The options the run started with (`--epochs` raised by a resume).
    #[serde(deserialize_with = "super::options::deserialize_recorded")]
    pub options: TrainOptions,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken: Adam's bias correction and the dropout masks derive from it.
    pub step: u32,
    pub lr: f32,
    /// The mean loss of the run's first step: the yardstick of divergence.
    pub first_loss: Option<f64>,
    pub callbacks: Callbacks,
    /// Shuffles and augmentation parameters come from it.
    pub rng: rand_pcg::Pcg64,
    /// The rows of metrics.csv, one per epoch completed.
    pub metrics_rows: Vec<String>,
    pub stopped_early: bool,
    /// The final evaluation and report are written.
    pub finished: bool,
}

/// The tensors of a checkpoint, each a vector per parameter in `ParamInfo` order (as
/// `ParamArena::read` gives them).
pub struct Tensors {
    pub values: Vec<Vec<f32>>,
    pub adam_m: Vec<Vec<f32>>,
    pub adam_v: Vec<Vec<f32>>,
}

const VALUES: &str = "value/";
const ADAM_M: &str = "adam_m/";
const ADAM_V: &str = "adam_v/";

impl Progress {
    /// Writes the checkpoint into the run folder `dir`, replacing the previous one atomically.
    pub fn save(&self, dir: &Path, params: &[ParamInfo], tensors: &Tensors) -> Result<()> {
        let groups = [(VALUES, &tensors.values[..]), (ADAM_M, &tensors.adam_m[..]), (ADAM_V, &tensors.adam_v[..])];
        checkpoint::save_tensor_groups(&dir.join(STATE_FILE), params, &groups, self.header()?)
    }

    fn header(&self) -> Result<HashMap<String, String>> {
        Ok(HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            (PROGRESS_KEY.to_string(), serde_json::to_string(self)?),
        ]))
    }
}

/// A checkpoint read from a run folder: its scalars at once, its tensors once the model they
/// belong to is built.
pub struct SavedState {
    pub path: PathBuf,
    pub progress: Progress,
    bytes: Vec<u8>,
}

impl SavedState {
    pub fn read(dir: &Path) -> Result<SavedState> {
        let path = dir.join(STATE_FILE);
        if !path.is_file() {
            if dir.join("model.json").is_file() {
                bail!(
                    "{} has no {STATE_FILE}: it was trained by a wgunet without --resume and cannot be continued; \
                     start a new run with `wgunet train --out`",
                    dir.display()
                );
            }
            bail!(
                "{} is not a run folder written by `wgunet train` (it has no {STATE_FILE}): give --resume the --out folder of a run",
                dir.display()
            );
        }
        let bytes = std::fs::read(&path).with_context(|| format!("could not read {}", path.display()))?;
        let progress = read_progress(&bytes).with_context(|| {
            format!(
                "{} is not a wgunet training checkpoint (damaged or from another program): start a new run",
                path.display()
            )
        })?;
        Ok(SavedState { path, progress, bytes })
    }

    /// The weights and moments, checked against the model's parameters.
    pub fn tensors(&self, params: &[ParamInfo]) -> Result<Tensors> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes)
            .with_context(|| format!("{} is not a safetensors file", self.path.display()))?;
        let group = |prefix, wanted: fn(&ParamInfo) -> bool| {
            checkpoint::load_tensor_group(&st, &self.path, params, prefix, wanted)
        };
        Ok(Tensors {
            values: group(VALUES, |_| true)?,
            adam_m: group(ADAM_M, |p| p.trained)?,
            adam_v: group(ADAM_V, |p| p.trained)?,
        })
    }
}

fn read_progress(bytes: &[u8]) -> Result<Progress> {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)?;
    let header = metadata.metadata().as_ref().context("no header metadata")?;
    let format = header.get("format").map(String::as_str);
    anyhow::ensure!(format == Some(FORMAT), "its format is {format:?}, not {FORMAT}");
    let json = header.get(PROGRESS_KEY).context("no training progress in the header")?;
    Ok(serde_json::from_str(json)?)
}

/// Marks the checkpoint in `dir` as belonging to a finished run (its tensors unchanged).
pub fn mark_finished(dir: &Path) -> Result<()> {
    let saved = SavedState::read(dir)?;
    let progress = Progress { finished: true, ..saved.progress };
    let st = safetensors::SafeTensors::deserialize(&saved.bytes)?;
    let bytes = safetensors::serialize(st.tensors(), Some(progress.header()?))?;
    checkpoint::write_atomic(&saved.path, &bytes)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::graph::Init;
    use crate::train::{DataOptions, DataSource, LrSchedule, OptimizerOptions, Schedule};

    fn param(name: &str, shape: Vec<usize>, trained: bool) -> ParamInfo {
        ParamInfo { name: name.into(), shape, init: Init::Zeros, trained }
    }

    /// Options away from their defaults wherever they can be, writing to `out`.
    fn unusual_options(out: std::path::PathBuf) -> crate::train::TrainOptions {
        crate::train::TrainOptions {
            model: crate::model::ModelConfig {
                arch: crate::model::Arch::Unet,
                size: 32,
                channels: 1,
                filters: 4,
                dropout: 0.1,
                classes: 1,
                activation: crate::model::Activation::LeakyRelu,
                normalise: crate::data::Normalisation::Unit,
            },
            data: DataOptions {
                source: DataSource::Synthetic { count: 20 },
                train_fraction: 0.6,
                max_images: None,
                channels: None,
                strict: false,
                normalise: crate::data::NormaliseKind::Percentile,
                patch: Some(32),
            },
            optimizer: OptimizerOptions { lr: 1.0 / 3.0, weight_decay: 0.0 },
            schedule: Schedule {
                epochs: 3,
                plateau_patience: 2,
                early_stopping_patience: 5,
                lr_schedule: LrSchedule::Poly,
            },
            batch: 2,
            loss: crate::graph::Loss::Bce,
            augment: crate::ops::augment::AugmentPreset::Full,
            intensity: crate::data::intensity::IntensityPreset::Scanner,
            tta: true,
            seed: 42,
            device: crate::DeviceChoice::Cpu,
            out,
            command: "wgunet train".into(),
            init: Some(crate::finetune::InitRecord { run: "runs/A".into(), skip_head: true }),
        }
    }

    /// Every scalar and tensor comes back bit for bit (floats without a short decimal form, a
    /// generator mid-stream, untrained state without moments), and marking the run finished
    /// changes nothing else.
    #[test]
    fn checkpoint_round_trips_exactly() {
        let dir = std::env::temp_dir().join(format!("wgunet-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let params = [param("conv.w", vec![2, 3], true), param("bn.mean", vec![3], false)];
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        let mut random = |n: usize| (0..n).map(|_| rng.random::<f32>() / 3.0).collect::<Vec<f32>>();
        let tensors = Tensors {
            values: vec![random(6), random(3)],
            adam_m: vec![random(6), vec![]],
            adam_v: vec![random(6), vec![]],
        };
        let options = unusual_options(dir.clone());
        let mut generator = rand_pcg::Pcg64::seed_from_u64(3);
        generator.random::<u64>();
        let mut callbacks = Callbacks::default();
        callbacks.observe(1, 0.1 + 0.2, &options.schedule);
        let progress = Progress {
            options,
            epoch: 1,
            step: 21,
            lr: 1.0 / 3.0,
            first_loss: Some(std::f64::consts::LN_2),
            callbacks,
            rng: generator.clone(),
            metrics_rows: vec!["1,0.001,0.3".into()],
            stopped_early: false,
            finished: false,
        };
        progress.save(&dir, &params, &tensors).unwrap();
        mark_finished(&dir).unwrap();

        let saved = SavedState::read(&dir).unwrap();
        let back = &saved.progress;
        assert!(back.finished);
        assert_eq!(back.lr.to_bits(), progress.lr.to_bits());
        assert_eq!(back.first_loss.map(f64::to_bits), progress.first_loss.map(f64::to_bits));
        assert_eq!(format!("{:?}", back.callbacks), format!("{:?}", progress.callbacks));
        assert_eq!(back.rng.clone().random::<u64>(), generator.random::<u64>());
        assert_eq!(
            (back.epoch, back.step, &back.metrics_rows, &back.options),
            (1, 21, &progress.metrics_rows, &progress.options)
        );
        let loaded = saved.tensors(&params).unwrap();
        assert_eq!((loaded.values, loaded.adam_m, loaded.adam_v), (tensors.values, tensors.adam_m, tensors.adam_v));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
