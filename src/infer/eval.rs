//! `wgunet eval`: a saved run scored on its own test split or on another dataset, at the
//! model's size and at each image's own, with a per-image CSV and panels of the best and worst.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::input::{load_usable, notice_colour_conversion};
use super::model::LoadedModel;
use super::native;
use super::postprocess::{bce, cross_entropy};
use super::score::{metrics_of, per_image_csv, Confusion, ImageScore};
use super::segment::{InferOptions, Input, Segmenter};
use crate::checkpoint::{self, DatasetRecord};
use crate::data::load::{self, Preprocess, Sample};
use crate::data::pairs::{self, Pair};
use crate::data::skipped::{Skipped, Unusable};
use crate::data::split;
use crate::device::DeviceChoice;
use crate::evaluate::Metrics;
use crate::report;
use crate::train::synthetic_split;

/// What `wgunet eval` scores.
pub enum EvalData {
    /// The run's own test split.
    RunTestSplit,
    /// Every pair found in a folder.
    Folder(PathBuf),
    /// Pairs listed in a file.
    List(PathBuf),
}

pub struct EvalOptions {
    pub data: EvalData,
    pub device: DeviceChoice,
    pub infer: InferOptions,
    /// Panels written: the best half (rounded up) and the worst half by Dice; 0 for none.
    pub panels: usize,
    /// Folder for `per_image.csv` and `panels/` (default: RUN/eval).
    pub out: Option<PathBuf>,
    /// Where to write the metrics as JSON (default: OUT/eval.json with `out`, else RUN/eval.json).
    pub json: Option<PathBuf>,
    /// More runs whose probabilities are averaged with the run's (an ensemble).
    pub ensemble: Vec<PathBuf>,
}

impl EvalOptions {
    /// What `wgunet eval` does with no option but the data: default inference (a
    /// patch-trained run tiles by itself), the default panels, outputs in the run folder.
    pub fn defaults(data: EvalData, device: DeviceChoice) -> EvalOptions {
        EvalOptions {
            data,
            device,
            infer: InferOptions::default(),
            panels: DEFAULT_PANELS,
            out: None,
            json: None,
            ensemble: Vec::new(),
        }
    }
}

/// Panels `eval` draws unless told: the 3 best and 3 worst.
pub const DEFAULT_PANELS: usize = 2 * report::PANELS_EACH;

/// What `eval` writes as JSON: the model-resolution metrics at the top level (as before),
/// the native-resolution ones under `native`, and how the masks were made.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub model: Metrics,
    /// Each image scored at its own size; `loss` is the BCE (CE for K classes) of the resized
    /// probabilities.
    pub native: Metrics,
    pub inference: InferOptions,
    #[serde(skip)]
    pub per_image: Vec<ImageScore>,
}

/// An image to score: a file pair, or a synthetic slice (whose own size is the model's).
enum Item {
    File { name: String, pair: Pair },
    Synthetic { name: String, sample: Sample },
}

/// An item decoded: at the model's size, as the segmenter's input, and its mask at its own size
/// (0/1, or class ids).
struct Loaded {
    sample: Sample,
    input: Input,
    native_mask: Vec<u8>,
}

impl Item {
    fn name(&self) -> &str {
        match self {
            Item::File { name, .. } | Item::Synthetic { name, .. } => name,
        }
    }

    fn load(&self, seg: &Segmenter<'_>) -> Result<Loaded> {
        match self {
            Item::File { pair, .. } => {
                let classes = seg.model.classes();
                let sample = load::load_sample_with_classes(pair, &seg.model.preprocess(), classes)?;
                let (ids, mask_size) = if classes >= 2 {
                    native::load_labels(&pair.mask, classes)?
                } else {
                    let (bits, size) = native::load_mask(&pair.mask)?;
                    (bits.into_iter().map(u8::from).collect(), size)
                };
                // A mask of another size than its image is scored as resized to it.
                let native_mask = native::resize_ids(ids, mask_size, sample.native_size);
                let input = if seg.options.tile {
                    seg.load_input(&pair.image)?
                } else {
                    Input { pixels: sample.image.clone(), native_size: sample.native_size }
                };
                Ok(Loaded { sample, input, native_mask })
            }
            Item::Synthetic { sample, .. } => Ok(Loaded {
                native_mask: mask_ids(&sample.mask),
                input: Input { pixels: sample.image.clone(), native_size: sample.native_size },
                sample: sample.clone(),
            }),
        }
    }
}

/// A sample's mask (0/1, or class ids, as f32) as u8 ids.
fn mask_ids(mask: &[f32]) -> Vec<u8> {
    mask.iter().map(|&m| m.round() as u8).collect()
}

/// Names that tell images apart: paths below the images' deepest common folder.
fn file_items(pairs: Vec<Pair>) -> Vec<Item> {
    let common = pairs.iter().fold(None::<PathBuf>, |common, p| {
        let parent = p.image.parent().unwrap_or(Path::new("")).to_path_buf();
        Some(match common {
            None => parent,
            Some(c) => c.ancestors().find(|a| parent.starts_with(a)).unwrap_or(Path::new("")).to_path_buf(),
        })
    });
    let common = common.unwrap_or_default();
    pairs
        .into_iter()
        .map(|pair| {
            let name = pair.image.strip_prefix(&common).unwrap_or(&pair.image).display().to_string();
            Item::File { name, pair }
        })
        .collect()
}

/// The items to score, what they are in words, and the files that could not be paired.
fn eval_items(run: &Path, model: &LoadedModel, data: &EvalData) -> Result<(Vec<Item>, String, Vec<Unusable>)> {
    let pre = model.preprocess();
    let mut unpaired = Vec::new();
    let (pairs, label) = match data {
        EvalData::RunTestSplit => match &model.record.dataset {
            DatasetRecord::Synthetic { seed, count, train } => {
                let split = synthetic_split(*seed, *count, *train, pre.size, model.classes(), pre.channels)?;
                let items = split
                    .test
                    .into_iter()
                    .zip(split.test_names)
                    .map(|(mut sample, name)| {
                        // As `load` does for files: the model's preprocessing after decoding.
                        pre.normalise.apply(&mut sample.image, pre.channels);
                        Item::Synthetic { name, sample }
                    })
                    .collect();
                return Ok((items, "the run's test split (synthetic)".to_string(), Vec::new()));
            }
            DatasetRecord::Lists { .. } => {
                let list = run.join("test.txt");
                (split::read_list(&list)?, format!("the run's test split ({})", list.display()))
            }
        },
        EvalData::Folder(dir) => {
            let pairing = pairs::find_pairs(dir)?;
            println!("{}", pairs::describe(&pairing));
            unpaired = pairing.unpaired;
            (pairing.pairs, dir.display().to_string())
        }
        EvalData::List(file) => (split::read_list(file)?, file.display().to_string()),
    };
    notice_colour_conversion(&pairs, pre.channels);
    Ok((file_items(pairs), label, unpaired))
}

/// A picture for a panel, kept compactly until the best and worst are known: masks as ids
/// (0/1 for a binary model).
struct PanelCase {
    image: Vec<u8>,
    truth: Vec<u8>,
    pred: Vec<u8>,
}

/// Scores a saved run on `o.data`, prints the metrics, and writes them as JSON with a
/// per-image CSV and panels.
pub fn eval(run: &Path, o: &EvalOptions) -> Result<EvalReport> {
    let model = LoadedModel::open(run, &o.device)?;
    let (items, label, unpaired) = eval_items(run, &model, &o.data)?;
    let looked_at = items.len() + unpaired.len();
    if let (true, Some(first)) = (o.infer.strict, unpaired.first()) {
        bail!("--strict: {first}; fix or remove it, or run without --strict to skip it");
    }
    let mut faults = unpaired;
    if items.is_empty() {
        bail!("nothing to evaluate in {label}");
    }
    let others = o.ensemble.iter().map(|r| LoadedModel::open(r, &o.device)).collect::<Result<Vec<_>>>()?;
    let seg = Segmenter::ensemble(&model, &others, o.infer)?;
    let pre = model.preprocess();
    let scored = score_items(&seg, &items, o.infer.batch, o.panels > 0, &mut faults)?;
    let skipped = Skipped::new(faults);
    let out_dir = o.out.clone().unwrap_or_else(|| run.join("eval"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("could not create {}", out_dir.display()))?;
    skipped.report(looked_at, "pairs", &out_dir)?;
    let per_image = scored.per_image;
    if per_image.is_empty() {
        bail!("no usable image/mask pair in {label}: skipped {}: {}", skipped.files().len(), skipped.examples());
    }
    let n = per_image.len() as f64;
    let result = EvalReport {
        model: metrics_of(per_image.iter().map(|s| &s.model), scored.model_loss / n),
        native: metrics_of(per_image.iter().map(|s| &s.native), scored.native_loss / n),
        // As the segmenter ran: a patch-trained run tiles even when not asked to.
        inference: seg.options,
        per_image,
    };

    let models = match seg.members() {
        1 => format!("model {}", run.display()),
        n => format!("ensemble of {n} models ({} and {} more)", run.display(), n - 1),
    };
    println!("{label}, {models} ({} images; {}):", result.model.images, seg.options.describe(pre.size));
    println!("  model  = scored at the model's {0}×{0}; native = at each image's own size", pre.size);
    result.model.print_lines("model  ");
    result.native.print_lines("native ");

    let csv = out_dir.join("per_image.csv");
    checkpoint::write_atomic(&csv, per_image_csv(&result.per_image).as_bytes())?;
    println!("wrote {}", csv.display());
    if o.panels > 0 {
        write_eval_panels(&out_dir, &result.per_image, &scored.cases, pre, model.classes(), o.panels)?;
        println!("wrote panels of the best and worst images to {}", out_dir.join("panels").display());
    }
    // With --out, the metrics go with the folder's other outputs: scoring a run on other data
    // then leaves the run's own eval.json (its final scoring from train) as it was.
    let json = o.json.clone().unwrap_or_else(|| o.out.as_deref().unwrap_or(run).join("eval.json"));
    checkpoint::write_atomic(&json, serde_json::to_string_pretty(&result)?.as_bytes())?;
    println!("wrote {}", json.display());
    Ok(result)
}

/// What segmenting the items gave: each usable image's counts, their summed losses at the
/// model's size and at their own, and the pictures for panels.
struct Scored {
    per_image: Vec<ImageScore>,
    model_loss: f64,
    native_loss: f64,
    cases: Vec<PanelCase>,
}

/// Segments `items`, `batch` at a time, and scores each against its truth; files that cannot
/// be used go to `faults`. With `panels`, keeps each image and its masks for the panels.
fn score_items(
    seg: &Segmenter<'_>,
    items: &[Item],
    batch: usize,
    panels: bool,
    faults: &mut Vec<Unusable>,
) -> Result<Scored> {
    let side = seg.model.preprocess().size as u32;
    let classes = seg.model.classes();
    let mut scored =
        Scored { per_image: Vec::with_capacity(items.len()), model_loss: 0.0, native_loss: 0.0, cases: Vec::new() };
    for chunk in items.chunks(batch) {
        let (usable, loaded) = load_usable(chunk, |item| item.load(seg), faults, seg.options.strict)?;
        let (inputs, truths): (Vec<Input>, Vec<(Sample, Vec<u8>)>) =
            loaded.into_iter().map(|l| (l.input, (l.sample, l.native_mask))).unzip();
        let maps = seg.segment(&inputs)?;
        for (((item, input), (sample, native_mask)), m) in usable.into_iter().zip(&inputs).zip(truths).zip(maps) {
            let truth = mask_ids(&sample.mask);
            let (w, h) = input.native_size;
            let pred = seg.ids(&m.model, side, side);
            let native_pred = seg.ids(&m.native, w, h);
            scored.per_image.push(ImageScore {
                name: item.name().to_string(),
                width: w,
                height: h,
                model: Confusion::of(&pred, &truth, classes),
                native: Confusion::of(&native_pred, &native_mask, classes),
            });
            scored.model_loss += loss(&m.model, &truth, classes);
            scored.native_loss += loss(&m.native, &native_mask, classes);
            if panels {
                let image = report::display_levels(&sample.image);
                scored.cases.push(PanelCase { image, truth, pred });
            }
        }
    }
    Ok(scored)
}

/// The loss of probabilities against class ids: BCE for a binary model, CE for K classes.
fn loss(prob: &[f32], truth: &[u8], classes: usize) -> f64 {
    if classes >= 2 {
        cross_entropy(prob, truth)
    } else {
        bce(prob, &truth.iter().map(|&v| v == 1).collect::<Vec<_>>())
    }
}

/// Panels of the best half and worst half of `panels` images by model-resolution Dice.
fn write_eval_panels(
    out_dir: &Path,
    scores: &[ImageScore],
    cases: &[PanelCase],
    pre: Preprocess,
    classes: usize,
    panels: usize,
) -> Result<()> {
    let (best, worst) = (panels.div_ceil(2), panels / 2);
    let dice: Vec<f64> = scores.iter().map(|s| s.model.metrics().2).collect();
    let (top, bottom) = report::select_cases(&dice, best, worst);
    let chosen: Vec<usize> = top.iter().chain(&bottom).copied().collect();
    let images: Vec<Vec<f32>> =
        chosen.iter().map(|&i| cases[i].image.iter().map(|&v| f32::from(v) / 255.0).collect()).collect();
    if classes >= 2 {
        let selected: Vec<report::ClassCase<'_>> = chosen
            .iter()
            .zip(&images)
            .map(|(&i, image)| report::ClassCase {
                name: &scores[i].name,
                image,
                truth: &cases[i].truth,
                pred: &cases[i].pred,
            })
            .collect();
        report::write_class_panels(out_dir, &selected, classes, pre.channels, pre.size, top.len(), bottom.len())?;
        return Ok(());
    }
    let as_f32 = |ids: &[u8]| -> Vec<f32> { ids.iter().map(|&b| f32::from(b)).collect() };
    let masks: Vec<(Vec<f32>, Vec<f32>)> =
        chosen.iter().map(|&i| (as_f32(&cases[i].truth), as_f32(&cases[i].pred))).collect();
    let selected: Vec<report::Case<'_>> = chosen
        .iter()
        .zip(&images)
        .zip(&masks)
        .map(|((&i, image), (truth, prob))| report::Case { name: &scores[i].name, image, truth, prob })
        .collect();
    report::write_panels(out_dir, &selected, pre.channels, pre.size, top.len(), bottom.len())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_paths_below_the_common_folder() {
        let pair = |image: &str| Pair { image: PathBuf::from(image), mask: PathBuf::from("m.png") };
        let items = file_items(vec![pair("/d/P/Face/a.jpg"), pair("/d/P/Family/b.jpeg"), pair("/d/P/Face/c.jpg")]);
        let names: Vec<&str> = items.iter().map(Item::name).collect();
        assert_eq!(names, ["Face/a.jpg", "Family/b.jpeg", "Face/c.jpg"]);
        let items = file_items(vec![pair("/d/images/a.png")]);
        assert_eq!(items[0].name(), "a.png");
    }
}
