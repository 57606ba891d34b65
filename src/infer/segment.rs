//! Images to probability maps and masks: at the model's size and resized back, or in
//! overlapping tiles at the image's own size ([`super::tiling`]), optionally averaged
//! over mirrorings ([`super::tta`]) and cut down to the largest component.

use std::path::Path;

use anyhow::{ensure, Result};
use serde::Serialize;

use super::model::LoadedModel;
use super::native;
use super::postprocess::{argmax, drop_small_components, keep_largest_component, resize_maps, threshold};
use super::tiling::{self, Blend, Blender, TilePlan};
use super::tta::{self, Flip};
use crate::data::load;
use crate::evaluate::Evaluator;

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
    /// Average the probabilities over the four mirrorings: `None` as the run recorded
    /// (`model.json`'s `tta`, the plan's choice); the segmenter resolves it.
    pub tta: Option<bool>,
    /// Keep only the largest 8-connected component of each thresholded mask.
    pub keep_largest: bool,
    /// Drop 8-connected components smaller than this percentage of the image's area (0: keep
    /// all): the specks a model marks on slices without the structure.
    pub min_component: f64,
    /// An image (or pair) that cannot be used is an error instead of being skipped.
    pub strict: bool,
}

impl Default for InferOptions {
    fn default() -> InferOptions {
        InferOptions {
            batch: 8,
            tile: false,
            overlap: 0.25,
            blend: Blend::Gaussian,
            tta: None,
            keep_largest: false,
            min_component: 0.0,
            strict: false,
        }
    }
}

impl InferOptions {
    /// Whether the four mirrorings are averaged (once resolved: `tta` given, or the run's).
    pub fn flips(&self) -> bool {
        self.tta == Some(true)
    }

    /// "tiles of 32 px, overlap 0.25, gaussian blend; flip TTA; largest component", or "resized to 32 px".
    pub fn describe(&self, size: usize) -> String {
        let mut parts = vec![if self.tile {
            format!("tiles of {size} px at native size, overlap {}, {} blend", self.overlap, self.blend.name())
        } else {
            format!("resized to {size}×{size}")
        }];
        if self.flips() {
            parts.push("flip TTA".into());
        }
        if self.keep_largest {
            parts.push("largest component".into());
        }
        if self.min_component > 0.0 {
            parts.push(format!("components under {} % dropped", self.min_component));
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

/// Batches of tiles cut and segmented at a time: a large photo has hundreds of tiles, which are
/// not all held in memory at once.
const TILE_BATCHES_AT_ONCE: usize = 4;

/// A loaded model (or an ensemble of models that read images alike) with the GPU programs and
/// options that turn images into probability maps and masks.
pub struct Segmenter<'m> {
    /// The model whose preprocessing, size and classes every member shares.
    pub(super) model: &'m LoadedModel,
    /// Each member's inference program, `model`'s first; their probabilities are averaged.
    members: Vec<(&'m LoadedModel, Evaluator)>,
    pub(super) options: InferOptions,
    window: Vec<f32>,
}

impl<'m> Segmenter<'m> {
    pub fn new(model: &'m LoadedModel, options: InferOptions) -> Result<Segmenter<'m>> {
        Segmenter::ensemble(model, &[], options)
    }

    /// `model` and `others` as one model whose probabilities are their mean (nnU-Net's
    /// ensembles of folds): each must read images as `model` does — same size, channels,
    /// classes, normalisation and patch training. A model trained on patches at the images' own
    /// size (`train --patch`) always segments in tiles: resizing a whole image to its patch side
    /// would shrink what it learned to see.
    pub fn ensemble(
        model: &'m LoadedModel,
        others: &'m [LoadedModel],
        mut options: InferOptions,
    ) -> Result<Segmenter<'m>> {
        for other in others {
            let (a, b) = (&model.record, &other.record);
            ensure!(
                model.preprocess() == other.preprocess() && a.model.classes == b.model.classes && a.patch == b.patch,
                "an ensemble's models must read images alike: one takes {}, another {}",
                reads(model),
                reads(other)
            );
        }
        options.tile |= model.record.patch.is_some();
        options.tta = Some(options.tta.unwrap_or(model.record.tta));
        ensure!(options.batch > 0, "--batch must be at least 1");
        ensure!(
            (0.0..1.0).contains(&options.overlap),
            "--overlap must be at least 0 and below 1, not {}",
            options.overlap
        );
        ensure!(
            !((options.keep_largest || options.min_component > 0.0) && model.classes() >= 2),
            "--keep-largest and --min-component work on a binary mask; this model segments {} classes",
            model.classes()
        );
        let members = std::iter::once(model)
            .chain(others)
            .map(|m| Ok((m, m.evaluator(options.batch, options.batch)?)))
            .collect::<Result<_>>()?;
        Ok(Segmenter { model, members, options, window: tiling::window(model.record.model.size, options.blend) })
    }

    /// Models averaged (1 for a single model).
    pub fn members(&self) -> usize {
        self.members.len()
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
        // Each image's maps, one per member, averaged as TTA averages its mirrorings.
        let mut per_image: Vec<Vec<Vec<f32>>> = images.iter().map(|_| Vec::with_capacity(self.members.len())).collect();
        for (member, evaluator) in &self.members {
            for (maps, map) in per_image.iter_mut().zip(self.member_probabilities(member, evaluator, images)?) {
                maps.push(map);
            }
        }
        Ok(per_image.iter().map(|maps| tta::mean(maps)).collect())
    }

    /// [`probabilities`](Segmenter::probabilities) of one member.
    fn member_probabilities(
        &self,
        member: &LoadedModel,
        evaluator: &Evaluator,
        images: &[&[f32]],
    ) -> Result<Vec<Vec<f32>>> {
        let gpu = &member.gpu;
        if !self.options.flips() {
            return evaluator.probability_maps(gpu, images);
        }
        let s = self.size();
        let flipped: Vec<Vec<f32>> = images.iter().flat_map(|image| Flip::ALL.map(|f| f.apply(image, s, s))).collect();
        let refs: Vec<&[f32]> = flipped.iter().map(Vec::as_slice).collect();
        let maps = evaluator.probability_maps(gpu, &refs)?;
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
        let group = TILE_BATCHES_AT_ONCE * self.options.batch;
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

    /// A `width`×`height` probability map thresholded at 0.5, without components under
    /// `--min-component`, reduced to its largest with `--keep-largest` (binary models).
    pub fn mask(&self, prob: &[f32], width: u32, height: u32) -> Vec<bool> {
        let (w, h) = (width as usize, height as usize);
        let mut mask = threshold(prob);
        if self.options.min_component > 0.0 {
            let min_pixels = (self.options.min_component / 100.0 * (w * h) as f64).ceil() as usize;
            mask = drop_small_components(&mask, w, h, min_pixels);
        }
        if self.options.keep_largest {
            mask = keep_largest_component(&mask, w, h);
        }
        mask
    }

    /// Each pixel's class from `[classes, height, width]` probabilities (K-class models): the
    /// most probable, the first on a tie.
    pub fn labels(&self, prob: &[f32]) -> Vec<u8> {
        argmax(prob, self.model.classes())
    }

    /// The mask of a probability map as class ids: 0/1 for a binary model ([`Segmenter::mask`]),
    /// else [`Segmenter::labels`].
    pub(super) fn ids(&self, prob: &[f32], width: u32, height: u32) -> Vec<u8> {
        if self.model.classes() >= 2 {
            self.labels(prob)
        } else {
            self.mask(prob, width, height).into_iter().map(u8::from).collect()
        }
    }
}

/// "32 px, 1 channel(s), 1 class(es), zscore normalisation" for an ensemble mismatch.
fn reads(model: &LoadedModel) -> String {
    let (pre, record) = (model.preprocess(), &model.record);
    let patch = if record.patch.is_some() { ", trained on patches" } else { "" };
    format!(
        "{} px, {} channel(s), {} class(es), {}{patch}",
        pre.size,
        pre.channels,
        record.model.classes,
        pre.normalise.describe()
    )
}
