//! `wgunet eval` and `wgunet predict`: a saved run applied to data. Images are segmented at the
//! model's size and the probabilities resized back to each image's own size, or, with `--tile`,
//! in overlapping tiles of the model's size at the image's own size ([`tiling`]); optionally
//! averaged over mirrorings (`--tta`, [`tta`]) and cut down to the largest connected component
//! (`--keep-largest`, [`postprocess`]). `eval` scores both at the model's size and at each
//! image's own size, and writes a per-image CSV and panels of the best and worst images.
//!
//! A K-class model's probabilities are K maps (one per class), resized, tiled and averaged
//! alike; each pixel's class is the most probable one.

pub mod native;
pub mod postprocess;
pub mod tiling;
pub mod tta;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::checkpoint::{self, DatasetRecord, RunRecord};
use crate::data::load::{self, Preprocess, Sample};
use crate::data::pairs::{self, Pair};
use crate::data::skipped::{self, Skipped, Unusable};
use crate::data::{split, synth};
use crate::device::{DeviceChoice, Gpu};
use crate::evaluate::{Evaluator, Metrics};
use crate::executor::ParamArena;
use crate::graph::{compile, Mode};
use crate::ops::metrics::{image_metrics, ClassCounts};
use crate::report;
use postprocess::{
    argmax, bce, class_confusion, confusion, cross_entropy, keep_largest_component, resize_maps, threshold,
};
use tiling::{Blend, Blender, TilePlan};
use tta::Flip;

/// A trained model on a device, ready to segment batches.
pub struct LoadedModel {
    pub gpu: Gpu,
    pub record: RunRecord,
    pub params: Arc<ParamArena>,
}

impl LoadedModel {
    pub fn open(run: &Path, device: &DeviceChoice) -> Result<LoadedModel> {
        let record = checkpoint::load_record(run)?;
        let gpu = Gpu::open(device)?;
        let program = compile(&record.model.build(1), Mode::Inference);
        let weights = checkpoint::load_weights(&checkpoint::weights_path(run)?, &program.params)?;
        let params = Arc::new(ParamArena::new(&gpu, &program.params)?);
        params.load(&gpu, &weights)?;
        Ok(LoadedModel { gpu, record, params })
    }

    pub fn preprocess(&self) -> Preprocess {
        Preprocess::for_model(&self.record.model)
    }

    pub fn evaluator(&self, samples: usize, batch: usize) -> Result<Evaluator> {
        Evaluator::new(&self.gpu, &self.record.model, self.params.clone(), batch, samples)
    }

    /// 1 for a binary model, else its K classes.
    pub fn classes(&self) -> usize {
        self.record.model.classes
    }
}

/// How images are turned into masks, shared by `eval` and `predict`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct InferOptions {
    /// Images (or tiles) per GPU batch.
    pub batch: usize,
    /// Segment each image at its own size in overlapping tiles of the model's size, instead of
    /// resizing it to the model's size.
    pub tile: bool,
    /// Fraction of a tile shared with its neighbour, in [0, 1).
    pub overlap: f64,
    pub blend: Blend,
    /// Average the probabilities over the four mirrorings.
    pub tta: bool,
    /// Keep only the largest 8-connected component of each thresholded mask.
    pub keep_largest: bool,
}

impl Default for InferOptions {
    fn default() -> InferOptions {
        InferOptions { batch: 8, tile: false, overlap: 0.25, blend: Blend::Gaussian, tta: false, keep_largest: false }
    }
}

impl InferOptions {
    /// "tiles of 32 px, overlap 0.25, gaussian blend; flip TTA; largest component", or "resized to 32 px".
    pub fn describe(&self, size: usize) -> String {
        let mut parts = vec![if self.tile {
            format!("tiles of {size} px at native size, overlap {}, {} blend", self.overlap, self.blend.name())
        } else {
            format!("resized to {size}×{size}")
        }];
        if self.tta {
            parts.push("flip TTA".into());
        }
        if self.keep_largest {
            parts.push("largest component".into());
        }
        parts.join("; ")
    }
}

/// One image to segment: with `--tile`, `[channels, height, width]` at its own size;
/// otherwise `[channels, size, size]` at the model's size. `native_size` is (width, height).
pub struct Input {
    pub pixels: Vec<f32>,
    pub native_size: (u32, u32),
}

/// Probability maps of one image: `[size, size]` and `[height, width]`, or for a K-class model
/// `[classes, size, size]` and `[classes, height, width]`.
pub struct Maps {
    pub model: Vec<f32>,
    pub native: Vec<f32>,
}

/// A loaded model with the GPU program and options that turn images into probability maps
/// and masks.
pub struct Segmenter<'m> {
    model: &'m LoadedModel,
    evaluator: Evaluator,
    options: InferOptions,
    window: Vec<f32>,
}

impl<'m> Segmenter<'m> {
    pub fn new(model: &'m LoadedModel, options: InferOptions) -> Result<Segmenter<'m>> {
        ensure!(options.batch > 0, "--batch must be at least 1");
        ensure!(
            (0.0..1.0).contains(&options.overlap),
            "--overlap must be at least 0 and below 1, not {}",
            options.overlap
        );
        ensure!(
            !(options.keep_largest && model.classes() >= 2),
            "--keep-largest keeps the largest component of a binary mask; this model segments {} classes",
            model.classes()
        );
        Ok(Segmenter {
            model,
            evaluator: model.evaluator(options.batch, options.batch)?,
            options,
            window: tiling::window(model.record.model.size, options.blend),
        })
    }

    fn size(&self) -> usize {
        self.model.record.model.size
    }

    /// An image file as this segmenter's [`Input`]: at its own size with `--tile`, else resized.
    pub fn load_input(&self, path: &Path) -> Result<Input> {
        let pre = self.model.preprocess();
        if self.options.tile {
            let image = native::load_image(path, pre.channels, &pre.normalise)?;
            Ok(Input { pixels: image.pixels, native_size: (image.width, image.height) })
        } else {
            let (pixels, native_size) = load::load_image(path, &pre)?;
            Ok(Input { pixels, native_size })
        }
    }

    /// Probability maps `[size, size]` (`[classes, size, size]` for a K-class model) of
    /// `[channels, size, size]` images; with `--tta` each is the mean over the four mirrorings,
    /// every output flipped back first.
    pub fn probabilities(&self, images: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let gpu = &self.model.gpu;
        if !self.options.tta {
            return self.evaluator.probability_maps(gpu, images);
        }
        let s = self.size();
        let flipped: Vec<Vec<f32>> = images.iter().flat_map(|image| Flip::ALL.map(|f| f.apply(image, s, s))).collect();
        let refs: Vec<&[f32]> = flipped.iter().map(Vec::as_slice).collect();
        let maps = self.evaluator.probability_maps(gpu, &refs)?;
        Ok(maps
            .chunks(Flip::ALL.len())
            .map(|group| {
                let back: Vec<Vec<f32>> = group.iter().zip(Flip::ALL).map(|(m, f)| f.apply(m, s, s)).collect();
                tta::mean(&back)
            })
            .collect())
    }

    /// Probability map `[height, width]` (`[classes, height, width]` for a K-class model) of a
    /// `[channels, height, width]` image from overlapping tiles of the model's size, blended with
    /// the window of `--blend`.
    pub fn tiled(&self, image: &[f32], height: usize, width: usize) -> Result<Vec<f32>> {
        let plan = TilePlan::new(height, width, self.size(), self.options.overlap)?;
        let channels = self.model.record.model.channels;
        let mut blender = Blender::new(&plan, self.model.classes());
        // A few batches of tiles at a time: a large photo has hundreds.
        let group = 4 * self.options.batch;
        for first in (0..plan.origins.len()).step_by(group) {
            let indices = first..(first + group).min(plan.origins.len());
            let tiles: Vec<Vec<f32>> = indices.clone().map(|i| plan.cut(image, channels, i)).collect();
            let refs: Vec<&[f32]> = tiles.iter().map(Vec::as_slice).collect();
            for (i, map) in indices.zip(self.probabilities(&refs)?) {
                blender.add(&plan, i, &map, &self.window);
            }
        }
        Ok(blender.finish())
    }

    /// Both probability maps of each input: the model's output resized bilinearly to the
    /// image's size, or with `--tile` the tiled map resized down to the model's size.
    pub fn segment(&self, inputs: &[Input]) -> Result<Vec<Maps>> {
        let s = self.size() as u32;
        let planes = self.model.classes();
        if self.options.tile {
            return inputs
                .iter()
                .map(|input| {
                    let (w, h) = input.native_size;
                    let native = self.tiled(&input.pixels, h as usize, w as usize)?;
                    Ok(Maps { model: resize_maps(&native, planes, w, h, s, s), native })
                })
                .collect();
        }
        let refs: Vec<&[f32]> = inputs.iter().map(|i| i.pixels.as_slice()).collect();
        let probs = self.probabilities(&refs)?;
        Ok(probs
            .into_iter()
            .zip(inputs)
            .map(|(model, input)| {
                let (w, h) = input.native_size;
                Maps { native: resize_maps(&model, planes, s, s, w, h), model }
            })
            .collect())
    }

    /// A `width`×`height` probability map thresholded at 0.5, reduced to its largest
    /// component with `--keep-largest` (binary models).
    pub fn mask(&self, prob: &[f32], width: u32, height: u32) -> Vec<bool> {
        let mask = threshold(prob);
        if self.options.keep_largest {
            keep_largest_component(&mask, width as usize, height as usize)
        } else {
            mask
        }
    }

    /// Each pixel's class from `[classes, height, width]` probabilities (K-class models): the
    /// most probable, the first on a tie.
    pub fn labels(&self, prob: &[f32]) -> Vec<u8> {
        argmax(prob, self.model.classes())
    }

    /// The mask of a probability map as class ids: 0/1 for a binary model ([`Segmenter::mask`]),
    /// else [`Segmenter::labels`].
    fn ids(&self, prob: &[f32], width: u32, height: u32) -> Vec<u8> {
        if self.model.classes() >= 2 {
            self.labels(prob)
        } else {
            self.mask(prob, width, height).into_iter().map(u8::from).collect()
        }
    }
}

/// Prints a line when the images' colour differs from the model's (a skin-photo set for a
/// model trained on gray MRI, say), judged from the first few readable files.
fn notice_colour_conversion(pairs: &[Pair], channels: usize) {
    match (load::channels_of(pairs), channels) {
        (Some(3), 1) => println!("note: the images are colour but the model takes grayscale: using their luma"),
        (Some(1), 3) => println!("note: the images are grayscale but the model takes RGB: repeating the gray channel"),
        _ => {}
    }
}

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
    /// Where to write the metrics as JSON (default: RUN/eval.json).
    pub json: Option<PathBuf>,
}

/// One image's confusion counts against its truth.
#[derive(Clone, Debug, PartialEq)]
pub enum Confusion {
    /// `[TP, FP, FN, TN]` of a binary mask.
    Binary([u64; 4]),
    /// Per class counts of a K-class mask.
    Classes(ClassCounts),
}

impl Confusion {
    /// Counts of predicted against true class ids (0/1 for a binary model).
    fn of(pred: &[u8], truth: &[u8], classes: usize) -> Confusion {
        if classes >= 2 {
            Confusion::Classes(class_confusion(pred, truth, classes))
        } else {
            let bits = |ids: &[u8]| -> Vec<bool> { ids.iter().map(|&v| v == 1).collect() };
            Confusion::Binary(confusion(&bits(pred), &bits(truth)))
        }
    }

    /// (pixel accuracy, IoU, Dice); for classes, IoU and Dice are means over the foreground classes.
    pub fn metrics(&self) -> (f64, f64, f64) {
        match self {
            Confusion::Binary(c) => image_metrics(*c),
            Confusion::Classes(c) => c.image_metrics(),
        }
    }
}

/// The metrics of images' counts (all binary or all of one K) and their mean loss.
fn metrics_of<'a>(counts: impl Iterator<Item = &'a Confusion>, loss: f64) -> Metrics {
    let (mut binary, mut classes) = (Vec::new(), Vec::new());
    for c in counts {
        match c {
            Confusion::Binary(b) => binary.push(*b),
            Confusion::Classes(k) => classes.push(k.clone()),
        }
    }
    if classes.is_empty() {
        Metrics::from_counts(&binary, loss)
    } else {
        Metrics::from_class_counts(&classes, loss)
    }
}

/// One image's confusion counts at the model's size and at its own.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageScore {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub model: Confusion,
    pub native: Confusion,
}

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
                let n_train = ((*count as f64) * train).round() as usize;
                let mut all = synth::samples_with_classes(*seed, *count, pre.size, model.classes())?;
                let test = all.split_off(n_train);
                let items = test
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| Item::Synthetic {
                        name: format!("synthetic-{:04}", n_train + i),
                        sample: Sample {
                            image: normalised(s.image.repeat(pre.channels), &pre),
                            mask: s.mask,
                            native_size: s.native_size,
                        },
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

/// A synthetic slice's image as the model's preprocessing leaves it (`load` does this for files).
fn normalised(mut image: Vec<f32>, pre: &Preprocess) -> Vec<f32> {
    pre.normalise.apply(&mut image, pre.channels);
    image
}

/// A picture for a panel, kept compactly until the best and worst are known: masks as ids
/// (0/1 for a binary model).
struct PanelCase {
    image: Vec<u8>,
    truth: Vec<u8>,
    pred: Vec<u8>,
}

pub fn eval(run: &Path, o: &EvalOptions) -> Result<EvalReport> {
    let model = LoadedModel::open(run, &o.device)?;
    let (items, label, unpaired) = eval_items(run, &model, &o.data)?;
    let looked_at = items.len() + unpaired.len();
    let mut faults = unpaired;
    if items.is_empty() {
        bail!("nothing to evaluate in {label}");
    }
    let seg = Segmenter::new(&model, o.infer)?;
    let pre = model.preprocess();
    let side = pre.size as u32;
    let classes = model.classes();
    let loss_of = |prob: &[f32], truth: &[u8]| -> f64 {
        if classes >= 2 {
            cross_entropy(prob, truth)
        } else {
            bce(prob, &truth.iter().map(|&v| v == 1).collect::<Vec<_>>())
        }
    };
    let mut per_image = Vec::with_capacity(items.len());
    let mut cases = Vec::new();
    let (mut model_loss, mut native_loss) = (0.0, 0.0);
    for chunk in items.chunks(o.infer.batch) {
        let (usable, loaded) = load_usable(chunk, |item| item.load(&seg), &mut faults)?;
        let (inputs, truths): (Vec<Input>, Vec<(Sample, Vec<u8>)>) =
            loaded.into_iter().map(|l| (l.input, (l.sample, l.native_mask))).unzip();
        let maps = seg.segment(&inputs)?;
        for (((item, input), (sample, native_mask)), m) in usable.into_iter().zip(&inputs).zip(truths).zip(maps) {
            let truth = mask_ids(&sample.mask);
            let (w, h) = input.native_size;
            let pred = seg.ids(&m.model, side, side);
            let native_pred = seg.ids(&m.native, w, h);
            per_image.push(ImageScore {
                name: item.name().to_string(),
                width: w,
                height: h,
                model: Confusion::of(&pred, &truth, classes),
                native: Confusion::of(&native_pred, &native_mask, classes),
            });
            model_loss += loss_of(&m.model, &truth);
            native_loss += loss_of(&m.native, &native_mask);
            if o.panels > 0 {
                let image = report::display_levels(&sample.image);
                cases.push(PanelCase { image, truth, pred });
            }
        }
    }
    let skipped = Skipped::new(faults);
    let out_dir = o.out.clone().unwrap_or_else(|| run.join("eval"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("could not create {}", out_dir.display()))?;
    skipped.report(looked_at, "pairs", &out_dir)?;
    if per_image.is_empty() {
        bail!("no usable image/mask pair in {label}: skipped {}: {}", skipped.files().len(), skipped.examples());
    }
    let n = per_image.len() as f64;
    let result = EvalReport {
        model: metrics_of(per_image.iter().map(|s| &s.model), model_loss / n),
        native: metrics_of(per_image.iter().map(|s| &s.native), native_loss / n),
        inference: o.infer,
        per_image,
    };

    println!("{label}, model {} ({} images; {}):", run.display(), result.model.images, o.infer.describe(pre.size));
    println!("  model  = scored at the model's {0}×{0}; native = at each image's own size", pre.size);
    result.model.print_lines("model  ");
    result.native.print_lines("native ");

    let csv = out_dir.join("per_image.csv");
    checkpoint::write_atomic(&csv, per_image_csv(&result.per_image).as_bytes())?;
    println!("wrote {}", csv.display());
    if o.panels > 0 {
        write_eval_panels(&out_dir, &result.per_image, &cases, pre, classes, o.panels)?;
        println!("wrote panels of the best and worst images to {}", out_dir.join("panels").display());
    }
    let json = o.json.clone().unwrap_or_else(|| run.join("eval.json"));
    checkpoint::write_atomic(&json, serde_json::to_string_pretty(&result)?.as_bytes())?;
    println!("wrote {}", json.display());
    Ok(result)
}

/// `name,width,height,pixel_accuracy,iou,dice,native_pixel_accuracy,native_iou,native_dice`
/// (for K classes, IoU and Dice are the means over the foreground classes).
pub fn per_image_csv(scores: &[ImageScore]) -> String {
    let mut text =
        String::from("name,width,height,pixel_accuracy,iou,dice,native_pixel_accuracy,native_iou,native_dice\n");
    for s in scores {
        let name = if s.name.contains([',', '"', '\n']) {
            format!("\"{}\"", s.name.replace('"', "\"\""))
        } else {
            s.name.clone()
        };
        let (a, i, d) = s.model.metrics();
        let (na, ni, nd) = s.native.metrics();
        text += &format!("{name},{},{},{a:.6},{i:.6},{d:.6},{na:.6},{ni:.6},{nd:.6}\n", s.width, s.height);
    }
    text
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

/// Loads `items` on CPU threads: the ones that loaded, with what they loaded; each file that
/// could not be used goes to `faults` (any other error stops).
fn load_usable<'a, T: Sync, R: Send>(
    items: &'a [T],
    load: impl Fn(&T) -> Result<R> + Sync + Send,
    faults: &mut Vec<Unusable>,
) -> Result<(Vec<&'a T>, Vec<R>)> {
    let results: Vec<Result<R>> = items.par_iter().map(load).collect();
    let (mut usable, mut loaded) = (Vec::with_capacity(items.len()), Vec::with_capacity(items.len()));
    for (item, result) in items.iter().zip(results) {
        match result {
            Ok(l) => {
                usable.push(item);
                loaded.push(l);
            }
            Err(e) => faults.push(skipped::file_fault(e)?),
        }
    }
    Ok((usable, loaded))
}

fn images_in(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let entries = std::fs::read_dir(input)
        .with_context(|| format!("--input {} is neither a file nor a folder", input.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| pairs::is_image_file(p) && !pairs::is_hidden(p))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("--input {} holds no images ({})", input.display(), pairs::IMAGE_EXTENSIONS.join(", "));
    }
    Ok(files)
}

/// Writes one mask PNG per image, at the image's own size, named by its stem: 0/255 for a binary
/// model, class ids (0..K) for a K-class model, as its training masks were.
pub fn predict(
    run: &Path,
    input: &Path,
    output: &Path,
    device: &DeviceChoice,
    options: &InferOptions,
) -> Result<usize> {
    let model = LoadedModel::open(run, device)?;
    let files = images_in(input)?;
    let as_pairs: Vec<Pair> = files.iter().map(|f| Pair { image: f.clone(), mask: f.clone() }).collect();
    notice_colour_conversion(&as_pairs, model.record.model.channels);
    std::fs::create_dir_all(output).with_context(|| format!("could not create {}", output.display()))?;
    let seg = Segmenter::new(&model, *options)?;
    let (mut written, mut faults) = (0, Vec::new());
    for chunk in files.chunks(options.batch) {
        let (usable, inputs) = load_usable(chunk, |f| seg.load_input(f), &mut faults)?;
        for ((file, input), maps) in usable.into_iter().zip(&inputs).zip(seg.segment(&inputs)?) {
            let (w, h) = input.native_size;
            // Resized probabilities (not a resized mask) were thresholded: smoother edges.
            let pixels = if model.classes() >= 2 {
                seg.labels(&maps.native)
            } else {
                seg.mask(&maps.native, w, h).iter().map(|&b| if b { 255 } else { 0 }).collect()
            };
            let mask = image::GrayImage::from_raw(w, h, pixels).expect("mask size");
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("mask");
            let path = output.join(format!("{stem}.png"));
            let mut bytes = Vec::new();
            mask.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
            checkpoint::write_atomic(&path, &bytes)?;
            written += 1;
        }
    }
    let skipped = Skipped::new(faults);
    // The output folder may be the user's own: a skipped.txt is written there only when needed.
    if !skipped.is_empty() {
        skipped.report(files.len(), "images", output)?;
    }
    if written == 0 {
        bail!("no readable image in --input {}: {}", input.display(), skipped.examples());
    }
    println!("wrote {written} masks to {}", output.display());
    Ok(written)
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

    #[test]
    fn csv_quotes_awkward_names() {
        let score = |name: &str| ImageScore {
            name: name.into(),
            width: 3,
            height: 2,
            model: Confusion::Binary([1, 0, 0, 5]),
            native: Confusion::Binary([1, 1, 0, 4]),
        };
        // 3 classes, 6 pixels: class 1 IoU 1/2 and Dice 2/3, class 2 absent and not predicted (1).
        let classes = ClassCounts { correct: 5, per_class: vec![[4, 0, 1], [1, 1, 0], [0, 0, 0]] };
        let three = ImageScore {
            name: "k.png".into(),
            width: 3,
            height: 2,
            model: Confusion::Classes(classes.clone()),
            native: Confusion::Classes(classes),
        };
        let text = per_image_csv(&[score("a.png"), score("b, \"c\".png"), three]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "name,width,height,pixel_accuracy,iou,dice,native_pixel_accuracy,native_iou,native_dice");
        assert_eq!(lines[1], "a.png,3,2,1.000000,1.000000,1.000000,0.833333,0.500000,0.666667");
        assert!(lines[2].starts_with("\"b, \"\"c\"\".png\",3,2,"), "{}", lines[2]);
        assert_eq!(lines[3], "k.png,3,2,0.833333,0.750000,0.833333,0.833333,0.750000,0.833333");
    }
}
