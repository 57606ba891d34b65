//! Segmenting a set of samples on the GPU and scoring it: per-image confusion counts come from
//! the metrics kernel; the host only turns counts into the seed's metrics. K-class models are
//! scored per class: IoU and Dice averaged over the foreground classes 1..K.

use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use crate::data::load::Sample;
use crate::device::Gpu;
use crate::executor::{Executor, ParamArena};
use crate::graph::{compile, Loss, Mode};
use crate::kernel::{BufferView, Dispatch, Recorder};
use crate::model::ModelConfig;
use crate::ops::elementwise;
use crate::ops::loss::SoftmaxCe;
use crate::ops::metrics::{self, ClassConfusion, ClassCounts};

/// Means over images, as the seed notebook reports them, plus dataset-level (micro) scores.
///
/// For a K-class model an image's IoU and Dice are the means over its foreground classes 1..K
/// (a class neither present nor predicted scores 1); the micro scores are the means over the
/// foreground classes of each class's dataset-level score, listed in `classes`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Metrics {
    pub images: usize,
    pub loss: f64,
    pub mean_pixel_accuracy: f64,
    pub mean_iou: f64,
    pub mean_dice: f64,
    pub micro_iou: f64,
    pub micro_dice: f64,
    /// K-class models: each class's dataset-level IoU and Dice, background first. Empty (and
    /// left out of the JSON) for binary models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassScore>,
}

/// One class's dataset-level (micro) scores: its TP, FP and FN summed over every image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    pub class: usize,
    pub iou: f64,
    pub dice: f64,
}

impl Metrics {
    /// From per-image class counts of a K-class model.
    pub fn from_class_counts(counts: &[ClassCounts], loss: f64) -> Metrics {
        let classes = counts.first().map_or(0, |c| c.per_class.len());
        let mut total = ClassCounts::new(classes);
        for c in counts {
            total.add(c);
        }
        let scores: Vec<ClassScore> = (0..classes)
            .map(|class| {
                let (iou, dice) = total.class_scores(class);
                ClassScore { class, iou, dice }
            })
            .collect();
        let foreground = &scores[1.min(scores.len())..];
        let mean = |f: fn(&ClassScore) -> f64| foreground.iter().map(f).sum::<f64>() / foreground.len().max(1) as f64;
        let micro = (mean(|s| s.iou), mean(|s| s.dice));
        let per_image = counts.iter().map(ClassCounts::image_metrics);
        Metrics { classes: scores, ..Metrics::from_image_metrics(per_image, micro, loss) }
    }

    /// From per-image `[TP, FP, FN, TN]`.
    pub fn from_counts(counts: &[[u64; 4]], loss: f64) -> Metrics {
        let mut total = [0u64; 4];
        for c in counts {
            for k in 0..4 {
                total[k] += c[k];
            }
        }
        let (_, micro_iou, micro_dice) = metrics::image_metrics(total);
        let per_image = counts.iter().map(|&c| metrics::image_metrics(c));
        Metrics::from_image_metrics(per_image, (micro_iou, micro_dice), loss)
    }

    /// The means over images of their (pixel accuracy, IoU, Dice), and the dataset-level
    /// `(micro IoU, micro Dice)`.
    fn from_image_metrics(
        per_image: impl ExactSizeIterator<Item = (f64, f64, f64)>,
        micro: (f64, f64),
        loss: f64,
    ) -> Metrics {
        let images = per_image.len();
        let n = images.max(1) as f64;
        let (acc, iou, dice) = per_image.fold((0.0, 0.0, 0.0), |(a, i, d), (ai, ii, di)| (a + ai, i + ii, d + di));
        Metrics {
            images,
            loss,
            mean_pixel_accuracy: acc / n,
            mean_iou: iou / n,
            mean_dice: dice / n,
            micro_iou: micro.0,
            micro_dice: micro.1,
            classes: Vec::new(),
        }
    }

    pub fn print(&self, label: &str) {
        println!("{label} ({} images):", self.images);
        self.print_lines("");
    }

    /// The metric lines alone, each starting with `prefix` (e.g. "native ").
    pub fn print_lines(&self, prefix: &str) {
        println!("  {prefix}mean pixel accuracy {:.4}", self.mean_pixel_accuracy);
        println!("  {prefix}mean IoU            {:.4}", self.mean_iou);
        println!("  {prefix}mean Dice           {:.4}", self.mean_dice);
        println!("  {prefix}micro IoU           {:.4}", self.micro_iou);
        println!("  {prefix}micro Dice          {:.4}", self.micro_dice);
        if !self.classes.is_empty() {
            println!("  {prefix}per class, dataset level:");
            println!("  {prefix}  class      IoU     Dice");
            for s in &self.classes {
                let note = if s.class == 0 { "  (background)" } else { "" };
                println!("  {prefix}  {:>5}   {:.4}   {:.4}{note}", s.class, s.iou, s.dice);
            }
        }
    }
}

/// A forward-and-loss program over a fixed number of samples, with one metrics dispatch per
/// batch writing into a single counts buffer that is read back once.
pub struct Evaluator {
    pub exec: Executor,
    pub batch: usize,
    /// The model's classes: 1 (binary) or K.
    pub classes: usize,
    probabilities: BufferView,
    /// Sigmoid (binary) or softmax over the classes.
    to_probabilities: Dispatch,
    counts: BufferView,
    count_dispatches: Vec<Dispatch>,
}

impl Evaluator {
    pub fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        params: Arc<ParamArena>,
        batch: usize,
        samples: usize,
    ) -> Result<Evaluator> {
        let classes = cfg.classes;
        let program = compile(&cfg.build(batch), Mode::Evaluate(Loss::monitor(classes)));
        let exec = Executor::new(gpu, program, params, None)?;
        let batches = samples.div_ceil(batch).max(1);
        let pixels = cfg.size * cfg.size;
        let row = if cfg.multiclass() { metrics::class_row_len(classes) } else { 4 };
        let counts = gpu.buffer("confusion counts", batches * batch * row)?;
        let count_dispatches = (0..batches)
            .map(|b| {
                let first_image = b * batch;
                if cfg.multiclass() {
                    ClassConfusion { images: batch, pixels, classes, first_image }.dispatch(
                        gpu,
                        exec.logits(),
                        exec.target(),
                        &counts,
                    )
                } else {
                    // Logit > 0 is probability > 0.5, the seed's threshold.
                    metrics::ConfusionCounts { images: batch, pixels, threshold: 0.0, first_image }.dispatch(
                        gpu,
                        exec.logits(),
                        exec.target(),
                        &counts,
                    )
                }
            })
            .collect::<Result<_>>()?;
        let probabilities = gpu.buffer("probabilities", exec.logits().elems())?;
        let to_probabilities = if cfg.multiclass() {
            SoftmaxCe { n: batch, k: classes, hw: pixels }.probabilities(gpu, exec.logits(), &probabilities)?
        } else {
            elementwise::sigmoid(gpu, exec.logits(), &probabilities)?
        };
        Ok(Evaluator { exec, batch, classes, probabilities, to_probabilities, counts, count_dispatches })
    }

    fn upload_batch(&self, gpu: &Gpu, samples: &[Sample], first: usize) {
        let (img_len, mask_len) = (self.exec.input().elems() / self.batch, self.exec.target().elems() / self.batch);
        let mut image = vec![0.0f32; img_len * self.batch];
        let mut mask = vec![0.0f32; mask_len * self.batch];
        for (i, s) in samples.iter().skip(first).take(self.batch).enumerate() {
            image[i * img_len..(i + 1) * img_len].copy_from_slice(&s.image);
            mask[i * mask_len..(i + 1) * mask_len].copy_from_slice(&s.mask);
        }
        gpu.write(self.exec.input(), &image);
        gpu.write(self.exec.target(), &mask);
    }

    /// The metrics of `samples` from per-image counts, and the mean loss (BCE, or CE for a
    /// K-class model).
    pub fn evaluate(&self, gpu: &Gpu, samples: &[Sample]) -> Result<Metrics> {
        anyhow::ensure!(samples.len() <= self.count_dispatches.len() * self.batch, "evaluator built for fewer samples");
        gpu.write(self.exec.loss_sum(), &[0.0f32]);
        let batches = samples.len().div_ceil(self.batch);
        for b in 0..batches {
            self.upload_batch(gpu, samples, b * self.batch);
            let mut recorder = Recorder::new(gpu);
            self.exec.record_forward(&mut recorder);
            self.exec.record_loss(&mut recorder);
            recorder.dispatch(&self.count_dispatches[b]);
            recorder.submit(gpu);
            gpu.wait()?;
        }
        let raw: Vec<u32> = gpu.read(&self.counts)?;
        // The loss of padding images in a last partial batch is included; it is a monitor, not a metric.
        let loss = gpu.read::<f32>(self.exec.loss_sum())?[0] as f64 / batches.max(1) as f64;
        if self.classes >= 2 {
            let row = metrics::class_row_len(self.classes);
            let counts: Vec<ClassCounts> =
                raw.chunks_exact(row).take(samples.len()).map(ClassCounts::from_row).collect();
            return Ok(Metrics::from_class_counts(&counts, loss));
        }
        let counts: Vec<[u64; 4]> =
            raw.chunks_exact(4).take(samples.len()).map(|c| [c[0], c[1], c[2], c[3]].map(u64::from)).collect();
        Ok(Metrics::from_counts(&counts, loss))
    }

    /// Probability maps (model resolution) for `samples`' images.
    pub fn probabilities(&self, gpu: &Gpu, samples: &[Sample]) -> Result<Vec<Vec<f32>>> {
        let images: Vec<&[f32]> = samples.iter().map(|s| s.image.as_slice()).collect();
        self.probability_maps(gpu, &images)
    }

    /// Probability maps of any number of `[channels, size, size]` images (tiles, flipped
    /// copies), run `batch` at a time: `[size, size]` for a binary model, `[classes, size, size]`
    /// (a softmax per pixel) for a K-class one.
    pub fn probability_maps(&self, gpu: &Gpu, images: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let per = self.probabilities.elems() / self.batch;
        let img_len = self.exec.input().elems() / self.batch;
        let mut out = Vec::with_capacity(images.len());
        let mut input = vec![0.0f32; img_len * self.batch];
        for chunk in images.chunks(self.batch) {
            for (i, image) in chunk.iter().enumerate() {
                anyhow::ensure!(
                    image.len() == img_len,
                    "an image has {} values, the model takes {img_len}",
                    image.len()
                );
                input[i * img_len..(i + 1) * img_len].copy_from_slice(image);
            }
            input[chunk.len() * img_len..].fill(0.0);
            gpu.write(self.exec.input(), &input);
            let mut recorder = Recorder::new(gpu);
            self.exec.record_forward(&mut recorder);
            recorder.dispatch(&self.to_probabilities);
            recorder.submit(gpu);
            let probs: Vec<f32> = gpu.read(&self.probabilities)?;
            out.extend((0..chunk.len()).map(|i| probs[i * per..(i + 1) * per].to_vec()));
        }
        Ok(out)
    }
}
