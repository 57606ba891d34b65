//! What a training run is configured with: built once from the command line (`main.rs`), and
//! recorded in the run's checkpoint so that `--resume` continues it with the same options.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::callbacks::{LrSchedule, EARLY_STOPPING_PATIENCE, PLATEAU_PATIENCE};
use crate::data::intensity::IntensityPreset;
use crate::data::split::DEFAULT_TRAIN_FRACTION;
use crate::data::NormaliseKind;
use crate::device::DeviceChoice;
use crate::finetune::InitRecord;
use crate::graph::Loss;
use crate::model::ModelConfig;
use crate::ops::augment::AugmentPreset;

/// Where training data come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DataSource {
    /// The built-in synthetic MRI-like slices (tumour masks, or with K classes tumour,
    /// ventricles and skull: see [`synth`](crate::data::synth)).
    Synthetic { count: usize },
    /// A folder of image/mask pairs, split reproducibly.
    Folder { dir: PathBuf },
    /// Lists written by `wgunet split`.
    Lists { train: PathBuf, test: PathBuf },
}

/// The data a run trains and tests on, and how they are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataOptions {
    pub source: DataSource,
    /// The share of a folder's pairs (or of the synthetic slices) that trains; the rest is the
    /// test split. Lists keep the split they record.
    pub train_fraction: f64,
    /// A folder's pairs used at most.
    pub max_images: Option<usize>,
    /// The input channels images are converted to; None keeps the data's (grayscale stays
    /// grayscale).
    pub channels: Option<usize>,
    /// Any file of the dataset that cannot be used is an error instead of being skipped.
    pub strict: bool,
    /// How intensities are normalised (fitted to the training images, then stored with the
    /// model). Runs recorded before the choice resume as `unit`.
    #[serde(default)]
    pub normalise: NormaliseKind,
    /// Train on random P×P patches of the images at their own size (the model's size is P)
    /// instead of whole images resized to the model's size.
    #[serde(default)]
    pub patch: Option<usize>,
}

/// Adam's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerOptions {
    pub lr: f32,
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    pub weight_decay: f32,
}

/// How long a run trains and when its callbacks act (see [`Callbacks`](super::Callbacks)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub epochs: usize,
    /// Epochs without a lower training loss after which the learning rate is halved.
    #[serde(default = "plateau_patience")]
    pub plateau_patience: usize,
    /// Epochs without a lower training loss after which training stops; 0: never.
    #[serde(default = "early_stopping_patience")]
    pub early_stopping_patience: usize,
    /// How the learning rate changes; runs recorded before the option resume with the plateau
    /// halvings they had.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
}

fn plateau_patience() -> usize {
    PLATEAU_PATIENCE
}

fn early_stopping_patience() -> usize {
    EARLY_STOPPING_PATIENCE
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The model to train. Its `channels` are replaced by the data's once they are loaded
    /// (see [`DataOptions::channels`]).
    pub model: ModelConfig,
    pub data: DataOptions,
    pub optimizer: OptimizerOptions,
    pub schedule: Schedule,
    pub batch: usize,
    pub loss: Loss,
    pub augment: AugmentPreset,
    /// Random intensity changes of the training images (see
    /// [`intensity`](crate::data::intensity)); runs recorded before the option resume without,
    /// runs that recorded it as a switch (`true`) with `nnunet`.
    #[serde(default)]
    pub intensity: IntensityPreset,
    /// The model's inference averages the four mirrorings (recorded in `model.json`): eval,
    /// predict and the final scoring of the test split use it unless told `--no-tta`.
    #[serde(default)]
    pub tta: bool,
    /// Drives the split, the synthetic slices, the initial weights, shuffles, augmentation and
    /// dropout.
    pub seed: u64,
    pub device: DeviceChoice,
    pub out: PathBuf,
    pub command: String,
    /// Start from another run's weights instead of the random initialisation.
    #[serde(default)]
    pub init: Option<InitRecord>,
}

/// Reads options as any wgunet recorded them: nested, or flat as checkpoints written before
/// the options were grouped (see [`nest_flat_options`]).
pub(super) fn deserialize_recorded<'de, D: Deserializer<'de>>(d: D) -> Result<TrainOptions, D::Error> {
    serde_json::from_value(nest_flat_options(Value::deserialize(d)?)).map_err(serde::de::Error::custom)
}

/// Checkpoints written before the options were grouped hold them flat (`"arch"`, `"lr"`,
/// `"epochs"` beside each other, and a folder source with its own `train` and `max_images`):
/// each moves into its group; options added since take their defaults. Nested options pass
/// through unchanged.
fn nest_flat_options(options: Value) -> Value {
    let Value::Object(mut flat) = options else { return options };
    if flat.contains_key("model") {
        return Value::Object(flat);
    }
    let mut group =
        |keys: &[&str]| -> Map<String, Value> { keys.iter().filter_map(|&k| flat.remove_entry(k)).collect() };
    let mut model = group(&["arch", "size", "filters", "dropout", "classes", "activation"]);
    let mut data = group(&["source", "channels", "strict"]);
    let optimizer = group(&["lr", "weight_decay"]);
    let schedule = group(&["epochs"]);
    // The model's channels were decided by the data; until then 1, as a new run has them.
    model.insert("channels".into(), Value::from(data.get("channels").and_then(Value::as_u64).unwrap_or(1)));
    data.entry("strict").or_insert(Value::Bool(false));
    let folder = data.get_mut("source").and_then(|s| s.get_mut("Folder")).and_then(Value::as_object_mut);
    let (train, max_images) = match folder {
        Some(folder) => (folder.remove("train"), folder.remove("max_images")),
        None => (None, None),
    };
    data.insert("train_fraction".into(), train.unwrap_or(Value::from(DEFAULT_TRAIN_FRACTION)));
    data.insert("max_images".into(), max_images.unwrap_or(Value::Null));
    flat.insert("model".into(), Value::Object(model));
    flat.insert("data".into(), Value::Object(data));
    flat.insert("optimizer".into(), Value::Object(optimizer));
    flat.insert("schedule".into(), Value::Object(schedule));
    Value::Object(flat)
}

/// The options of a resumed run: the recorded ones, with `--epochs` and `--device` as given.
/// `given` are the options of the command line, of which those in `flags_given` (e.g. `--size`)
/// were typed: they must agree with the recorded ones, except `--epochs` (which may be raised)
/// and `--device` (where to run, not what to train).
pub(super) fn resumed_options(
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
        let (given, recorded) = (given.schedule.epochs, recorded.schedule.epochs);
        anyhow::ensure!(
            given >= recorded,
            "--epochs {given}: {} was started with --epochs {recorded}; resuming can only raise it",
            dir.display(),
        );
        o.schedule.epochs = given;
    }
    if typed("--device") {
        o.device = given.device.clone();
    }
    Ok(o)
}

/// Whether the command-line `flag` sets something different in `a` and `b` (`--epochs` and
/// `--device`, which a resume may change, and flags that are not training options: never).
fn option_differs(flag: &str, a: &TrainOptions, b: &TrainOptions) -> bool {
    let (ad, bd) = (&a.data, &b.data);
    match flag {
        "--data" | "--train-list" | "--test-list" | "--synth-count" => ad.source != bd.source,
        "--train" => ad.train_fraction != bd.train_fraction,
        "--max-images" => ad.max_images != bd.max_images,
        "--channels" => ad.channels != bd.channels,
        "--normalise" => ad.normalise != bd.normalise,
        "--patch" => ad.patch != bd.patch,
        "--batch" => a.batch != b.batch,
        "--lr" => a.optimizer.lr != b.optimizer.lr,
        "--weight-decay" => a.optimizer.weight_decay != b.optimizer.weight_decay,
        "--plateau-patience" => a.schedule.plateau_patience != b.schedule.plateau_patience,
        "--early-stopping-patience" => a.schedule.early_stopping_patience != b.schedule.early_stopping_patience,
        "--lr-schedule" => a.schedule.lr_schedule != b.schedule.lr_schedule,
        "--loss" => a.loss != b.loss,
        "--augment" | "--no-augment" => a.augment != b.augment,
        "--intensity" => a.intensity != b.intensity,
        "--tta" => a.tta != b.tta,
        "--seed" => a.seed != b.seed,
        "--init" | "--init-skip-head" => a.init != b.init,
        _ => model_option_differs(flag, &a.model, &b.model),
    }
}

/// Whether a model flag sets something different in `a` and `b`. A model flag is named after
/// its [`ModelConfig`] field (`--filters`: `filters`), so a new model option needs no line here.
fn model_option_differs(flag: &str, a: &ModelConfig, b: &ModelConfig) -> bool {
    let Some(field) = flag.strip_prefix("--").map(|f| f.replace('-', "_")) else { return false };
    let value = |cfg: &ModelConfig| serde_json::to_value(cfg).ok().and_then(|v| v.get(&field).cloned());
    value(a) != value(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Normalisation;
    use crate::model::{Activation, Arch};

    /// The flat options a checkpoint of the previous layout holds (written by `wgunet train
    /// --data d --max-images 50 --train 0.6`).
    const FLAT: &str = r#"{"source":{"Folder":{"dir":"d","train":0.6,"max_images":50}},"device":"Cpu",
        "arch":"resunet","size":32,"filters":4,"dropout":0.1,"channels":3,"classes":2,"activation":"leaky-relu",
        "epochs":3,"batch":2,"lr":0.33333334,"weight_decay":0.0,"loss":"ce","augment":"full","seed":42,
        "out":"runs/x","command":"wgunet train","strict":true,"init":null}"#;

    fn read(json: &str) -> TrainOptions {
        let mut d = serde_json::Deserializer::from_str(json);
        deserialize_recorded(&mut d).unwrap()
    }

    #[test]
    fn flat_options_of_earlier_checkpoints_are_read_into_their_groups() {
        let o = read(FLAT);
        let model = ModelConfig {
            arch: Arch::Resunet,
            size: 32,
            channels: 3,
            filters: 4,
            dropout: 0.1,
            classes: 2,
            activation: Activation::LeakyRelu,
            normalise: Normalisation::Unit,
        };
        assert_eq!(o.model, model);
        let data = DataOptions {
            source: DataSource::Folder { dir: "d".into() },
            train_fraction: 0.6,
            max_images: Some(50),
            channels: Some(3),
            strict: true,
            normalise: NormaliseKind::Unit,
            patch: None,
        };
        assert_eq!(o.data, data);
        assert_eq!(o.optimizer, OptimizerOptions { lr: 1.0 / 3.0, weight_decay: 0.0 });
        let schedule =
            Schedule { epochs: 3, plateau_patience: 3, early_stopping_patience: 6, lr_schedule: LrSchedule::Plateau };
        assert_eq!(o.schedule, schedule);
        assert_eq!((o.batch, o.loss, o.seed, &o.init), (2, Loss::Ce, 42, &None));
        // Written back, the options are nested and read unchanged.
        assert_eq!(read(&serde_json::to_string(&o).unwrap()), o);
    }

    /// The oldest checkpoints: synthetic data, no activation, strict or init yet.
    #[test]
    fn options_recorded_before_later_flags_take_their_defaults() {
        let oldest = r#"{"source":{"Synthetic":{"count":60}},"device":"Auto","arch":"unet","size":32,
            "filters":4,"dropout":0.1,"channels":null,"classes":1,"epochs":3,"batch":2,"lr":0.001,
            "weight_decay":0.0,"loss":"bce","augment":"dihedral","seed":7,"out":"r","command":"c"}"#;
        let o = read(oldest);
        assert_eq!((o.model.channels, o.model.activation), (1, Activation::Relu));
        assert_eq!(o.data.source, DataSource::Synthetic { count: 60 });
        assert_eq!(
            (o.data.train_fraction, o.data.max_images, o.data.channels, o.data.strict),
            (0.7, None, None, false)
        );
        assert_eq!(o.init, None);
    }

    #[test]
    fn each_flag_compares_its_own_option() {
        let recorded = read(FLAT);
        let mut given = recorded.clone();
        given.model.filters = 8;
        given.data.train_fraction = 0.5;
        given.schedule.epochs = 9;
        let differs = |flag: &str| option_differs(flag, &recorded, &given);
        assert!(differs("--filters") && differs("--train"));
        assert!(!differs("--size") && !differs("--max-images") && !differs("--data") && !differs("--epochs"));
        assert!(!differs("--out") && !differs("--not-an-option"));
    }
}
