//! `wgunet plan --data DIR`: reads every image/mask pair once, prints a fingerprint of the
//! dataset (sizes, channels, intensities, how much is foreground, how large its connected
//! structures are) and chooses the input (whole slices or native-resolution patches), the loss
//! and the normalisation, each with its reason — the nnU-Net idea of deriving a recipe from the
//! data rather than from defaults.
//!
//! The deciding number is how large the structures to segment are: a brain mask survives
//! shrinking a slice to 64 px; a tumour of 0.1 % of a 256² slice is 4 px at 64² and the
//! network learns to answer "background" everywhere. Structures are measured by where the
//! foreground pixels are: the size such that 90 % of them lie in structures at least that
//! large, so a few specks do not decide, nor do a few large structures hide many small ones.
//!
//! The plan then times a few training steps on the adapter and predicts the run's time
//! ([`estimate`]); with `--time-budget` it chooses the largest setting that fits ([`budget`]).

pub mod budget;
pub mod duration;
pub mod estimate;
pub mod timing;

use std::path::Path;

use anyhow::{bail, Result};
use image::{imageops, ColorType};
use rayon::prelude::*;

use crate::config::Loss;
use crate::data::intensity::IntensityPreset;
use crate::data::load::{decode, is_gray, mask_targets};
use crate::data::normalise::{mean_std, Histogram, NormaliseKind, CLIP_PERCENTILES};
use crate::data::pairs::{self, Pair};
use crate::data::skipped::{Skipped, Unusable};
use crate::infer::postprocess::label_components;
use crate::train::LrSchedule;

/// A structure smaller than this (8×8 pixels) after resizing is lost: a depth-4 U-Net's bridge
/// sees it as half a pixel.
pub const MIN_STRUCTURE_PIXELS: f64 = 64.0;
/// The largest whole-slice side the plan trains at; beyond it, patches at native resolution cost
/// less for the same pixels.
pub const MAX_WHOLE_SLICE: usize = 128;
/// The smallest whole-slice side (the seed notebook's 64 is the least it used).
pub const MIN_WHOLE_SLICE: usize = 64;
/// The largest patch side.
pub const MAX_PATCH: usize = 128;
/// Foreground below this share of the pixels is rare: plain BCE is then minimised by
/// predicting background.
pub const RARE_FOREGROUND: f64 = 0.05;
/// Structures below this share of a slice are small (where 90 % of the foreground lies).
pub const SMALL_STRUCTURE: f64 = 0.01;
/// 90 % of the foreground pixels lie in structures at least as large as the one this measures.
const FOREGROUND_COVERED: f64 = 0.9;
/// Mean Dice weighs every image alike, so the images whose foreground is small count as much as
/// the rest: 95 % of the images with foreground hold at least the share this measures.
const IMAGES_COVERED: f64 = 0.95;
/// Per-image standard deviations that vary less than this (relative) across 16-bit images
/// suggest a calibrated scale (CT's Hounsfield units): percentile normalisation keeps it.
const CALIBRATED_SPREAD: f64 = 0.1;

/// One image/mask pair, as the plan sees it.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    pub width: u32,
    pub height: u32,
    /// Gray, or colour with R = G = B.
    pub gray: bool,
    pub sixteen_bit: bool,
    /// Of all its channels' values in [0, 1].
    pub mean: f64,
    pub std: f64,
    /// Per foreground class (1 to K−1; one for a binary mask): the size in pixels of each
    /// 8-connected structure.
    pub structures: Vec<Vec<usize>>,
}

impl ImageSummary {
    fn pixels(&self) -> f64 {
        f64::from(self.width) * f64::from(self.height)
    }

    fn foreground_share(&self) -> f64 {
        self.structures.iter().flatten().sum::<usize>() as f64 / self.pixels()
    }
}

/// A dataset's statistics.
#[derive(Debug)]
pub struct Fingerprint {
    pub classes: usize,
    /// The pairs that could be read, in the order found.
    pub images: Vec<ImageSummary>,
    pub skipped: Vec<Unusable>,
    /// Over every value of every image: mean, standard deviation, 0.5th and 99.5th percentile.
    pub intensity: [f64; 4],
}

impl Fingerprint {
    /// Reads every pair in `dir` once, in parallel; `classes` as `train --classes` reads masks.
    pub fn read(dir: &Path, classes: usize) -> Result<Fingerprint> {
        let pairing = pairs::find_pairs(dir)?;
        let (histogram, mut read) = pairing
            .pairs
            .par_iter()
            .enumerate()
            .map(|(index, pair)| (index, summarise(pair, classes)))
            .fold(
                || (Histogram::new(), Vec::new()),
                |(mut histogram, mut read), (index, result)| {
                    let result = result.map(|(summary, values)| {
                        histogram.add(&values);
                        summary
                    });
                    read.push((index, result));
                    (histogram, read)
                },
            )
            .reduce(
                || (Histogram::new(), Vec::new()),
                |(a, mut read_a), (b, read_b)| {
                    read_a.extend(read_b);
                    (a.merged(b), read_a)
                },
            );
        read.sort_by_key(|(index, _)| *index);
        let (mut images, mut skipped) = (Vec::new(), pairing.unpaired);
        for (_, result) in read {
            match result {
                Ok(summary) => images.push(summary),
                Err(fault) => skipped.push(fault),
            }
        }
        if images.is_empty() {
            let left_out = Skipped::new(skipped);
            bail!(
                "no usable image/mask pair in {}: saw {} pairs and left out {} files: {} (`wgunet train --no-plan` \
                 lists them all in OUT/{})",
                dir.display(),
                pairing.pairs.len(),
                left_out.files().len(),
                left_out.examples(),
                crate::data::skipped::LIST_NAME
            );
        }
        let (mean, std) = histogram.clipped_mean_std(0.0, 1.0);
        let (low, high) = (histogram.percentile(CLIP_PERCENTILES.0), histogram.percentile(CLIP_PERCENTILES.1));
        Ok(Fingerprint { classes, images, skipped, intensity: [mean, std, f64::from(low), f64::from(high)] })
    }

    /// Median width and height.
    pub fn median_size(&self) -> (u32, u32) {
        let widths: Vec<f64> = self.images.iter().map(|s| f64::from(s.width)).collect();
        let heights: Vec<f64> = self.images.iter().map(|s| f64::from(s.height)).collect();
        (median(widths) as u32, median(heights) as u32)
    }

    /// Every structure of class `index + 1` as its share of its slice's area.
    pub fn structure_shares(&self, index: usize) -> Vec<f64> {
        self.images.iter().flat_map(|s| s.structures[index].iter().map(move |&n| n as f64 / s.pixels())).collect()
    }

    /// The share of a slice such that [`FOREGROUND_COVERED`] of a class's foreground pixels lie
    /// in structures at least that large, for the class where it is smallest (every class must
    /// survive resizing); 0 without foreground.
    pub fn typical_structure(&self) -> f64 {
        (0..self.structures_per_class())
            .map(|index| covering_structure(self.structure_shares(index)))
            .filter(|&share| share > 0.0)
            .fold(None, |smallest: Option<f64>, share| Some(smallest.map_or(share, |s| s.min(share))))
            .unwrap_or(0.0)
    }

    /// The share of a slice that [`IMAGES_COVERED`] of the images with foreground of a class hold
    /// at least, for the class where it is smallest; 0 without foreground. Brain masks are large,
    /// yet the slices at a volume's ends hold a few hundred pixels of brain: mean Dice counts them.
    pub fn small_image_foreground(&self) -> f64 {
        (0..self.structures_per_class())
            .filter_map(|index| {
                let mut shares: Vec<f64> = self
                    .images
                    .iter()
                    .map(|s| s.structures[index].iter().sum::<usize>() as f64 / s.pixels())
                    .filter(|&share| share > 0.0)
                    .collect();
                shares.sort_by(f64::total_cmp);
                // At most this many images (5 %) may hold less; 1e-9 keeps 20 × 5 % at 1.
                let at = (shares.len() as f64 * (1.0 - IMAGES_COVERED) + 1e-9).floor() as usize;
                shares.get(at).copied()
            })
            .fold(0.0, |smallest: f64, share| if smallest == 0.0 { share } else { smallest.min(share) })
    }

    /// The mean share of foreground pixels per image.
    pub fn foreground_share(&self) -> f64 {
        self.images.iter().map(ImageSummary::foreground_share).sum::<f64>() / self.images.len() as f64
    }

    /// The spread (standard deviation over mean) of the images' standard deviations.
    pub fn contrast_spread(&self) -> f64 {
        let stds: Vec<f64> = self.images.iter().map(|s| s.std).collect();
        let (mean, spread) = mean_std(&stds);
        if mean > 0.0 {
            spread / mean
        } else {
            0.0
        }
    }
}

impl Fingerprint {
    /// The fingerprint in lines, for the console.
    pub fn describe(&self) -> String {
        let n = self.images.len();
        let mut sizes: Vec<((u32, u32), usize)> = Vec::new();
        for s in &self.images {
            match sizes.iter_mut().find(|(size, _)| *size == (s.width, s.height)) {
                Some((_, count)) => *count += 1,
                None => sizes.push(((s.width, s.height), 1)),
            }
        }
        sizes.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
        let mut size_list: Vec<String> = sizes.iter().take(3).map(|((w, h), c)| format!("{w}×{h} ({c})")).collect();
        if sizes.len() > 3 {
            size_list.push(format!("{} other sizes", sizes.len() - 3));
        }
        let gray = self.images.iter().filter(|s| s.gray).count();
        let sixteen = self.images.iter().filter(|s| s.sixteen_bit).count();
        let [mean, std, low, high] = self.intensity;
        let empty = self.images.iter().filter(|s| s.foreground_share() == 0.0).count();
        let largest = self.images.iter().map(ImageSummary::foreground_share).fold(0.0, f64::max);
        let mut lines = vec![
            format!("{n} image/mask pairs read, {} files left out", self.skipped.len()),
            format!("sizes: {}", size_list.join(", ")),
            format!("channels: {gray} of {n} gray, {} colour; {sixteen} 16-bit, {} 8-bit", n - gray, n - sixteen),
            format!(
                "intensity in [0, 1]: mean {mean:.3}, std {std:.3}, {} and {} percentiles {low:.3} and {high:.3}; \
                 per-image std varies by {:.1} %",
                CLIP_PERCENTILES.0,
                CLIP_PERCENTILES.1,
                self.contrast_spread() * 100.0
            ),
            format!(
                "foreground: {:.2} % of the pixels on average, at most {:.2} %; {empty} of {n} images have none",
                self.foreground_share() * 100.0,
                largest * 100.0
            ),
        ];
        lines.extend((0..self.structures_per_class()).map(|class| self.describe_class(class)));
        lines.join("\n")
    }

    fn structures_per_class(&self) -> usize {
        self.images.first().map_or(0, |s| s.structures.len())
    }

    /// Class `index + 1`'s structures: count and size distribution, as shares and native pixels.
    fn describe_class(&self, index: usize) -> String {
        let mut shares: Vec<(f64, usize)> = self
            .images
            .iter()
            .flat_map(|s| s.structures[index].iter().map(move |&px| (px as f64 / s.pixels(), px)))
            .collect();
        shares.sort_by(|a, b| a.0.total_cmp(&b.0));
        let class = index + 1;
        if shares.is_empty() {
            return format!("class {class}: no structures");
        }
        let at = |q: f64| {
            let (share, px) = shares[((shares.len() - 1) as f64 * q).round() as usize];
            format!("{:.3} % ({px} px)", share * 100.0)
        };
        format!(
            "class {class}: {} structures (8-connected), {:.2} per image; size as share of the slice (native pixels): \
             min {}, 10th percentile {}, median {}, 90th percentile {}, max {}; 90 % of its pixels in structures of \
             at least {:.3} %",
            shares.len(),
            shares.len() as f64 / self.images.len() as f64,
            at(0.0),
            at(0.1),
            at(0.5),
            at(0.9),
            at(1.0),
            covering_structure(self.structure_shares(index)) * 100.0
        )
    }
}

/// An image's summary and its values (to count into the dataset's histogram).
fn summarise(pair: &Pair, classes: usize) -> Result<(ImageSummary, Vec<f32>), Unusable> {
    let image = decode(&pair.image)?;
    let (width, height) = (image.width(), image.height());
    let gray = is_gray(&image);
    let sixteen_bit = matches!(image.color(), ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16);
    let values: Vec<f32> = if gray { image.to_luma32f().into_raw() } else { image.to_rgb32f().into_raw() };
    let values: Vec<f32> = values.into_iter().map(|v| v.clamp(0.0, 1.0)).collect();
    let mut mask = mask_targets(&decode(&pair.mask)?, classes, &pair.mask)?;
    if mask.dimensions() != (width, height) {
        mask = imageops::resize(&mask, width, height, imageops::FilterType::Nearest);
    }
    let ids = mask.into_raw();
    let structures = (1..classes.max(2))
        .map(|class| {
            let in_class: Vec<bool> = ids.iter().map(|&id| usize::from(id) == class).collect();
            label_components(&in_class, width as usize, height as usize).1
        })
        .collect();
    let (mean, std) = mean_std(&values);
    Ok((ImageSummary { width, height, gray, sixteen_bit, mean, std, structures }, values))
}

/// The share such that [`FOREGROUND_COVERED`] of the total lies in structures at least that
/// large (0 for none).
fn covering_structure(mut shares: Vec<f64>) -> f64 {
    shares.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = shares.iter().sum();
    let mut covered = 0.0;
    for share in shares {
        covered += share;
        if covered >= FOREGROUND_COVERED * total {
            return share;
        }
    }
    0.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// What the network trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Whole slices resized to `size`×`size` (`train --size`).
    WholeSlice { size: usize },
    /// `patch`×`patch` crops at native resolution, a third centred on foreground
    /// (`data::patches`).
    Patches { patch: usize },
}

/// The recipe, each choice with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// As `--classes` read the masks.
    pub classes: usize,
    pub input: Input,
    pub loss: Loss,
    pub normalise: NormaliseKind,
    pub intensity: IntensityPreset,
    /// Epochs without a lower training loss before training stops (`--early-stopping-patience`;
    /// 0: never, every epoch is trained).
    pub early_stopping_patience: usize,
    /// How the learning rate changes over the run (`--lr-schedule`).
    pub lr_schedule: LrSchedule,
    /// Inference averages the four mirrorings (`train --tta`, recorded with the model).
    pub tta: bool,
    /// Why: input, loss, normalisation, intensity augmentation, early stopping, learning-rate
    /// schedule, inference.
    pub reasons: [String; 7],
}

impl Plan {
    pub fn choose(f: &Fingerprint) -> Plan {
        let (input, input_reason) = choose_input(f);
        let (loss, loss_reason) = choose_loss(f, input);
        let (normalise, normalise_reason) = choose_normalise(f);
        // Until the filters are known (the time estimate chooses them): the set for the fewest.
        let (intensity, intensity_reason) = intensity_for(0, input);
        // nnU-Net trains a fixed number of epochs. The seed's EarlyStopping watches the training
        // loss, which the augmentation makes noisy: it ended a colin27 plan run at 44 of 60
        // epochs. The learning rate still halves on a plateau, and the weights kept are still
        // those of the lowest training loss.
        let stopping_reason =
            "every epoch is trained, as nnU-Net does; the augmented training loss is too noisy to stop on".to_string();
        let (lr_schedule, lr_schedule_reason) = lr_schedule_for(input);
        Plan {
            classes: f.classes,
            input,
            loss,
            normalise,
            intensity,
            early_stopping_patience: 0,
            lr_schedule,
            // nnU-Net mirrors at inference too. A model sees a slice's few-pixel structures
            // better as the mean of four views: colin27's 8-pixel end slice went from Dice 0.30
            // to 0.89, the native mean Dice from 0.945 to 0.962.
            tta: true,
            reasons: [
                input_reason,
                loss_reason,
                normalise_reason,
                intensity_reason,
                stopping_reason,
                lr_schedule_reason,
                "eval, predict and the final scoring average the four mirrorings of each image, as nnU-Net does \
                 (`--no-tta` at eval or predict turns it off)"
                    .to_string(),
            ],
        }
    }
}

/// The learning-rate schedule for a run on `input`, and why. On patches of the synthetic
/// small-lesion set (README, Small structures; 16 filters for the 100 epochs the hour gave) the
/// seed's plateau halvings, on a training loss the patch sampling makes noisy, had cut the rate
/// to 1e-6 by epoch 57 and the run scored native mean Dice 0.883; nnU-Net's poly decay kept
/// learning to the end and scored 0.939. On colin27's whole slices (60 epochs, six splits on an
/// H200) the two were within the splits' spread (0.957 against 0.954), so whole slices keep the
/// seed's schedule.
pub fn lr_schedule_for(input: Input) -> (LrSchedule, String) {
    match input {
        Input::Patches { .. } => (
            LrSchedule::Poly,
            "nnU-Net's decay to near 0 at the last epoch: on patches the plateau halvings stopped a small-lesion run \
             halfway (native mean Dice 0.883 against 0.939)"
                .to_string(),
        ),
        Input::WholeSlice { .. } => (
            LrSchedule::Plateau,
            "the seed's halvings on a plateau of the training loss (on colin27's whole slices as good as nnU-Net's \
             poly decay over six splits)"
                .to_string(),
        ),
    }
}

/// A whole-slice model of at least this many base filters trains with the `scanner` intensity
/// set.
pub const SCANNER_MIN_FILTERS: usize = 16;

/// The intensity augmentation for a model of `filters` base filters trained on `input`, and
/// why. nnU-Net augments every dataset's intensities. On colin27 (README, "Scanner shift"; one
/// run each, whole slices at 128², 60 epochs) its set cost no clean Dice and cut the loss to a
/// new scanner 2–4×; the wider `scanner` set did better at 16 filters in every column
/// (unchanged 0.965 against 0.958, the largest shifted loss 0.029 against 0.043) but cost 8
/// filters 0.04 of clean Dice. On patches of small structures it cost every width: synthetic
/// lesions of 0.1–1 % of a slice (README, "Small structures"; 128² patches, 20 epochs) scored
/// native mean Dice 0.674 against 0.842 at 16 filters and 0.658 against 0.756 at 32 (its
/// worst slices: lesions darker than the tissue around them, missed).
pub fn intensity_for(filters: usize, input: Input) -> (IntensityPreset, String) {
    let nnunet = "nnU-Net's gamma, contrast and brightness changes, so a model meets another scanner's intensities in \
                  training";
    if let Input::Patches { .. } = input {
        let why = format!(
            "{nnunet} (on patches the wider scanner set cost small lesions 0.10–0.17 mean Dice at 16 and 32 filters)"
        );
        return (IntensityPreset::Nnunet, why);
    }
    if filters >= SCANNER_MIN_FILTERS {
        let why = format!(
            "{filters} filters: another scanner's gamma and contrast (×½–2, saturating), noise, blur and bias field, \
             so a model meets other scanners in training (below {SCANNER_MIN_FILTERS} filters, nnU-Net's milder set)"
        );
        return (IntensityPreset::Scanner, why);
    }
    let why = format!("{nnunet} (with {SCANNER_MIN_FILTERS} filters or more, the wider scanner set)");
    (IntensityPreset::Nnunet, why)
}

impl Plan {
    /// The intensity set for the `filters` the run trains (the time estimate chooses them after
    /// the plan is printed): a line to print when that changes the plan's choice.
    pub fn fit_intensity_to(&mut self, filters: usize) -> Option<String> {
        let (intensity, why) = intensity_for(filters, self.input);
        if intensity == self.intensity {
            return None;
        }
        (self.intensity, self.reasons[3]) = (intensity, why);
        Some(format!("intensity: {}: {}", intensity.name(), self.reasons[3]))
    }

    /// Each choice's name and value, in the order of [`Plan::reasons`].
    pub fn choices(&self) -> [(&'static str, String); 7] {
        let input = match self.input {
            Input::WholeSlice { size } => format!("whole slices at {size}×{size}"),
            Input::Patches { patch } => format!("{patch}×{patch} patches at native resolution"),
        };
        [
            ("input", input),
            ("loss", self.loss.name().into()),
            ("normalise", self.normalise.name().into()),
            ("intensity", self.intensity.name().into()),
            ("early stopping", self.early_stopping()),
            ("lr schedule", self.lr_schedule.name().into()),
            ("inference", self.inference().into()),
        ]
    }

    /// The choices with their reasons, and the `train` options that apply them.
    pub fn describe(&self, data: &Path) -> String {
        let mut lines: Vec<String> = (self.choices().iter().zip(&self.reasons))
            .map(|((choice, value), why)| format!("{:<10} {value}: {why}", format!("{choice}:")))
            .collect();
        lines.push(format!(
            "train with: {} (what `train --data` does by default)",
            self.train_command(data, self.input, "")
        ));
        lines.join("\n")
    }

    /// How the model segments, in words.
    pub fn inference(&self) -> &'static str {
        if self.tta {
            "flip TTA"
        } else {
            "one pass"
        }
    }

    /// When training stops early, in words.
    pub fn early_stopping(&self) -> String {
        match self.early_stopping_patience {
            0 => "never".into(),
            n => format!("after {n} epochs without a lower training loss"),
        }
    }

    /// The `wgunet train` command line that applies the plan, with `input` (the plan's, or the
    /// side a budget chose) and `extra` options.
    pub fn train_command(&self, data: &Path, input: Input, extra: &str) -> String {
        let input = match input {
            Input::WholeSlice { size } => format!("--size {size}"),
            Input::Patches { patch } => format!("--patch {patch}"),
        };
        let classes = if self.classes >= 2 { format!(" --classes {}", self.classes) } else { String::new() };
        format!(
            "wgunet train --data {}{classes} {input}{extra} --loss {} --normalise {} --intensity {} --early-stopping-patience {} --lr-schedule {}{}",
            data.display(),
            self.loss.name(),
            self.normalise.name(),
            self.intensity.name(),
            self.early_stopping_patience,
            self.lr_schedule.name(),
            if self.tta { " --tta" } else { "" }
        )
    }
}

/// `wgunet plan`: reads `dir`, prints its fingerprint and the plan, and returns both.
pub fn plan(dir: &Path, classes: usize) -> Result<(Fingerprint, Plan)> {
    anyhow::ensure!(
        classes == 1 || (2..=crate::model::MAX_CLASSES).contains(&classes),
        "--classes must be 1 (binary masks) or 2 to {} (class-id masks), not {classes}",
        crate::model::MAX_CLASSES
    );
    let fingerprint = Fingerprint::read(dir, classes)?;
    let plan = Plan::choose(&fingerprint);
    println!("dataset {}:\n{}", dir.display(), indent(&fingerprint.describe()));
    println!("plan:\n{}", indent(&plan.describe(dir)));
    Ok((fingerprint, plan))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

fn multiple_of_16_up(x: f64) -> usize {
    ((x / 16.0).ceil().max(1.0) as usize) * 16
}

/// The smallest whole-slice side (a multiple of 16, at least [`MIN_WHOLE_SLICE`]) that keeps
/// [`MIN_STRUCTURE_PIXELS`] of both the typical structure and the small images' foreground
/// ([`Fingerprint::small_image_foreground`]); patches when that is over [`MAX_WHOLE_SLICE`] or
/// over the images' own size.
fn choose_input(f: &Fingerprint) -> (Input, String) {
    let typical = f.typical_structure();
    let every = if f.classes >= 2 { " of every class" } else { "" };
    let (w, h) = f.median_size();
    let native = multiple_of_16_up(f64::from(w.max(h)));
    if typical == 0.0 {
        let size = MAX_WHOLE_SLICE.min(native).max(MIN_WHOLE_SLICE);
        return (Input::WholeSlice { size }, "no foreground to keep: whole slices".into());
    }
    let small_images = f.small_image_foreground();
    let (decisive, what) = if small_images < typical {
        let what = format!(
            "{:.0} % of the images with foreground{every} hold at least {:.2} % of a slice of it (mean Dice counts \
             each image alike)",
            IMAGES_COVERED * 100.0,
            small_images * 100.0
        );
        (small_images, what)
    } else {
        (
            typical,
            format!("90 % of the foreground{every} lies in structures of at least {:.2} % of a slice", typical * 100.0),
        )
    };
    let needed = multiple_of_16_up((MIN_STRUCTURE_PIXELS / decisive).sqrt());
    let at = |side: usize| decisive * (side * side) as f64;
    if needed <= MAX_WHOLE_SLICE.min(native) {
        let size = needed.max(MIN_WHOLE_SLICE);
        let reason = format!("{what}: at {size}×{size} that is {:.0} px (≥ {MIN_STRUCTURE_PIXELS} px)", at(size));
        return (Input::WholeSlice { size }, reason);
    }
    let patch = MAX_PATCH.min(multiple_of_16_up(f64::from(w.min(h))));
    let largest = MAX_WHOLE_SLICE.min(native);
    let native_pixels = decisive * f64::from(w) * f64::from(h);
    let reason = format!(
        "{what}: {:.0} px at {largest}×{largest} (< {MIN_STRUCTURE_PIXELS}), {native_pixels:.0} px at the native \
         {w}×{h}; a third of the patches centred on foreground",
        at(largest)
    );
    (Input::Patches { patch }, reason)
}

/// bce+dice (Dice does not let background outvote the foreground) when the foreground is rare
/// or its structures small; BCE otherwise; CE for K classes (wgunet's only K-class loss).
fn choose_loss(f: &Fingerprint, input: Input) -> (Loss, String) {
    let (share, typical) = (f.foreground_share(), f.typical_structure());
    if f.classes >= 2 {
        return (Loss::Ce, format!("{} classes: softmax cross-entropy, wgunet's K-class loss", f.classes));
    }
    let (smallest, rare) = (f.small_image_foreground(), share < RARE_FOREGROUND);
    let small = typical < SMALL_STRUCTURE || matches!(input, Input::Patches { .. });
    let facts = format!(
        "foreground is {:.2} % of the pixels, typical structure {:.2} % of a slice",
        share * 100.0,
        typical * 100.0
    );
    if rare || small {
        let why = if rare { "rare" } else { "small" };
        (
            Loss::BceDice,
            format!("{facts}: {why}, so BCE alone is minimised by answering background; Dice counts the foreground"),
        )
    } else if smallest < SMALL_STRUCTURE {
        // BCE weighs an image by its foreground pixels, mean Dice weighs every image alike: the
        // per-image Dice term gives the few-pixel end slices of a volume their share (colin27:
        // native mean Dice 0.934 with BCE, 0.945 with bce+dice, one run each).
        let smallest =
            format!("but 5 % of the images with foreground hold under {:.2} % of a slice of it", smallest * 100.0);
        (Loss::BceDice, format!("{facts}, {smallest}: the per-image Dice term counts those images as mean Dice does"))
    } else {
        (Loss::Bce, format!("{facts}: neither rare nor small, the seed's BCE"))
    }
}

/// percentile for 16-bit images whose contrast is the same in every image (a calibrated scale,
/// CT-like); zscore otherwise (an arbitrary per-scanner scale, MRI-like: nnU-Net's default).
fn choose_normalise(f: &Fingerprint) -> (NormaliseKind, String) {
    let spread = f.contrast_spread();
    let sixteen_bit = f.images.iter().all(|s| s.sixteen_bit);
    if sixteen_bit && spread < CALIBRATED_SPREAD {
        let reason = format!(
            "16-bit images whose contrast varies by {:.1} % between images: a calibrated scale (CT-like), kept by \
             clipping to the dataset's percentiles",
            spread * 100.0
        );
        return (NormaliseKind::Percentile, reason);
    }
    let depth = if sixteen_bit { "16-bit" } else { "8-bit" };
    let reason = format!(
        "{depth} images whose contrast varies by {:.1} % between images: an arbitrary scale (MRI-like), so each \
         image is standardised on its own",
        spread * 100.0
    );
    (NormaliseKind::Zscore, reason)
}
