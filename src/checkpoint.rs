//! A run folder: `model.json` (architecture, preprocessing, how it was trained, which data),
//! weights as safetensors (`best.safetensors`, `last.safetensors`), the split lists and
//! `metrics.csv`. Every file is written to a temporary name and renamed, so a crash never leaves
//! a half-written model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::finetune::InitRecord;
use crate::graph::{Loss, ParamInfo};
use crate::model::ModelConfig;
use crate::ops::augment::AugmentPreset;

/// Where a run's data came from, so `wgunet eval --model RUN` can rebuild its test split.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DatasetRecord {
    /// The built-in synthetic slices.
    Synthetic { seed: u64, count: usize, train: f64 },
    /// Image/mask pairs listed in the run folder's `train.txt` and `test.txt`.
    Lists { source: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub model: ModelConfig,
    pub loss: Loss,
    /// Runs written before `--augment` existed trained with the full set (or none: their
    /// command says `--no-augment`).
    #[serde(default = "full_augmentation")]
    pub augment: AugmentPreset,
    pub dataset: DatasetRecord,
    pub command: String,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub wgunet_version: String,
    /// The run whose weights training started from (`--init`); absent for a random start and
    /// in runs saved before `--init` existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitRecord>,
    /// The patch side P of a model trained on patches at the images' own size (`--patch`):
    /// eval and predict segment such a model's inputs in tiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<usize>,
    /// eval and predict average the four mirrorings unless told `--no-tta` (`train --tta`, the
    /// plan's choice); absent: they do not unless told `--tta`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tta: bool,
}

fn full_augmentation() -> AugmentPreset {
    AugmentPreset::Full
}

/// Writes `bytes` to `path` so that a crash or kill at any moment leaves either the old file or
/// the new one: a temporary file beside it, flushed to disk, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("could not write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("could not move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

pub fn save_record(dir: &Path, record: &RunRecord) -> Result<()> {
    write_atomic(&dir.join("model.json"), serde_json::to_string_pretty(record)?.as_bytes())
}

pub fn load_record(dir: &Path) -> Result<RunRecord> {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("{} not found: --model must be a run folder written by `wgunet train`", path.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a wgunet model description", path.display()))
}

pub fn save_weights(path: &Path, params: &[ParamInfo], values: &[Vec<f32>]) -> Result<()> {
    let meta = HashMap::from([("format".to_string(), "wgunet".to_string())]);
    save_tensor_groups(path, params, &[("", values)], meta)
}

/// Several tensors per parameter in one safetensors file, each group's named `PREFIXname`
/// (empty vectors, such as the optimizer moments of untrained state, are left out), with
/// `metadata` in the header.
pub fn save_tensor_groups(
    path: &Path,
    params: &[ParamInfo],
    groups: &[(&str, &[Vec<f32>])],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut views = Vec::new();
    for (prefix, values) in groups {
        for (p, v) in params.iter().zip(values.iter()).filter(|(_, v)| !v.is_empty()) {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, p.shape.clone(), bytemuck::cast_slice(v))
                    .expect("shape matches length");
            views.push((format!("{prefix}{}", p.name), view));
        }
    }
    let bytes = safetensors::serialize(views, Some(metadata))?;
    write_atomic(path, &bytes)
}

/// Loads weights in the order of `params`, checking names and shapes.
pub fn load_weights(path: &Path, params: &[ParamInfo]) -> Result<Vec<Vec<f32>>> {
    load_weights_where(path, params, |_| true)
}

/// The weights of the parameters `wanted` keeps, from `path`; an empty vector for the others.
pub fn load_weights_where(
    path: &Path,
    params: &[ParamInfo],
    wanted: impl Fn(&ParamInfo) -> bool,
) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("could not read weights {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    load_tensor_group(&st, path, params, "", wanted)
}

/// The tensors `PREFIXname` of `st` (read from `path`) for each parameter `wanted` keeps, in the
/// order of `params`, checking shapes; an empty vector for each parameter it does not keep.
pub fn load_tensor_group(
    st: &safetensors::SafeTensors<'_>,
    path: &Path,
    params: &[ParamInfo],
    prefix: &str,
    wanted: impl Fn(&ParamInfo) -> bool,
) -> Result<Vec<Vec<f32>>> {
    params
        .iter()
        .map(|p| {
            if !wanted(p) {
                return Ok(Vec::new());
            }
            let name = format!("{prefix}{}", p.name);
            let t = st.tensor(&name).with_context(|| {
                format!("{} has no tensor '{name}': it was saved for another architecture", path.display())
            })?;
            if t.shape() != p.shape.as_slice() || t.dtype() != safetensors::Dtype::F32 {
                bail!(
                    "{}: tensor '{name}' is {:?} {:?}, the model needs F32 {:?}",
                    path.display(),
                    t.dtype(),
                    t.shape(),
                    p.shape
                );
            }
            Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        })
        .collect()
}

/// `best.safetensors` if present, else `last.safetensors` (and says so on stderr: the two score
/// differently, and a user who moved or deleted the best weights should know which were used).
pub fn weights_path(dir: &Path) -> Result<PathBuf> {
    let (best, last) = (dir.join("best.safetensors"), dir.join("last.safetensors"));
    if best.exists() {
        return Ok(best);
    }
    if last.exists() {
        eprintln!("{} has no best.safetensors: using last.safetensors, the last epoch's weights", dir.display());
        return Ok(last);
    }
    bail!("{} holds no weights (best.safetensors or last.safetensors): was training interrupted before the first epoch ended?", dir.display())
}
