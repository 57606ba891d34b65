//! What a run costs on an adapter: training steps and inference batches timed on the device
//! for one or a few settings, a cost model fitted to them for the others, and the run's time
//! from the cost of a step, the number of steps and the evaluations.
//!
//! The time of a step grows with its work, the forward FLOPs of a batch (for a U-Net about
//! pixels × filters²), on top of a part that does not (dispatch overhead, Adam, the weight
//! gradients of the small deep maps; see BENCHMARKS.md). Two timed settings of different work
//! give both parts; one gives only their sum, which is then taken as proportional to the work —
//! an overestimate for larger settings, the safe side for a budget.

use std::time::Instant;

use anyhow::Result;

use crate::bench;
use crate::device::Gpu;
use crate::infer::tiling::tile_starts;
use crate::infer::tta::Flip;
use crate::model::ModelConfig;

/// Warm-up and timed steps per setting: the first step compiles pipelines; two timed steps
/// keep the timing to a few seconds at small settings on a software adapter.
const WARMUP_STEPS: usize = 1;
const TIMED_STEPS: usize = 2;
/// The overlap of the tiles a patch-trained run is scored in when training ends (as `eval`).
const SCORING_OVERLAP: f64 = 0.25;

/// The input side (whole-slice size or patch) and the base filters: what the cost of a step
/// depends on besides the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shape {
    pub side: usize,
    pub filters: usize,
}

/// A setting's cost on the device, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTime {
    /// A training step of a batch (forward, loss, backward, Adam).
    pub train_s: f64,
    /// An inference batch (the per-epoch evaluation).
    pub infer_s: f64,
    /// Building the executors and compiling their pipelines, before the first step.
    pub setup_s: f64,
}

/// Times training steps of a model: the device ([`DeviceTimer`]), or in tests a formula.
pub trait StepTimer {
    /// The adapter the times are of, for the console.
    fn adapter(&self) -> String;
    fn time(&mut self, model: &ModelConfig, batch: usize) -> Result<StepTime>;
}

/// Times on a device with `wgunet bench`'s machinery, after one warm-up step.
pub struct DeviceTimer {
    pub gpu: Gpu,
}

impl StepTimer for DeviceTimer {
    fn adapter(&self) -> String {
        self.gpu.describe()
    }

    fn time(&mut self, model: &ModelConfig, batch: usize) -> Result<StepTime> {
        let started = Instant::now();
        let r = bench::run(&self.gpu, model, batch, WARMUP_STEPS, TIMED_STEPS, false)?;
        let (train_s, infer_s) = (r.train_ms_per_step / 1e3, batch as f64 / r.infer_images_per_s);
        // bench ran warm-up and timed steps of both; the rest of its time built and compiled.
        let stepped = (WARMUP_STEPS + TIMED_STEPS) as f64 * (train_s + infer_s);
        Ok(StepTime { train_s, infer_s, setup_s: (started.elapsed().as_secs_f64() - stepped).max(0.0) })
    }
}

/// Seconds as `fixed + per_gflop × GFLOP`.
#[derive(Clone, Copy, Debug)]
struct Line {
    fixed: f64,
    per_gflop: f64,
}

impl Line {
    /// Least squares through `(GFLOP, seconds)`; proportional (through the origin) when the
    /// points cannot separate a fixed part, or when timing noise makes one negative.
    fn fit(points: &[(f64, f64)]) -> Line {
        let n = points.len() as f64;
        let (mean_w, mean_t) =
            (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let spread: f64 = points.iter().map(|p| (p.0 - mean_w).powi(2)).sum();
        if spread > 1e-9 * mean_w * mean_w {
            let per_gflop = points.iter().map(|p| (p.0 - mean_w) * (p.1 - mean_t)).sum::<f64>() / spread;
            let fixed = mean_t - per_gflop * mean_w;
            if fixed >= 0.0 && per_gflop > 0.0 {
                return Line { fixed, per_gflop };
            }
        }
        let per_gflop = points.iter().map(|p| p.0 * p.1).sum::<f64>() / points.iter().map(|p| p.0 * p.0).sum::<f64>();
        Line { fixed: 0.0, per_gflop }
    }

    fn at(&self, gflop: f64) -> f64 {
        self.fixed + self.per_gflop * gflop
    }
}

/// The cost of any [`Shape`] of a model at a batch: timed where it was, else from lines fitted
/// to the timed ones.
pub struct Costs<'a> {
    /// The model timed: architecture, channels, classes; its size and filters are the shape's.
    model: ModelConfig,
    batch: usize,
    timer: &'a mut dyn StepTimer,
    timed: Vec<(Shape, StepTime)>,
}

impl<'a> Costs<'a> {
    pub fn new(model: ModelConfig, batch: usize, timer: &'a mut dyn StepTimer) -> Costs<'a> {
        Costs { model, batch, timer, timed: Vec::new() }
    }

    pub fn adapter(&self) -> String {
        self.timer.adapter()
    }

    /// Times `shape` on the device (once).
    pub fn time(&mut self, shape: Shape) -> Result<StepTime> {
        if let Some(t) = self.measured(shape) {
            return Ok(t);
        }
        let t = self.timer.time(&self.model_at(shape), self.batch)?;
        self.timed.push((shape, t));
        Ok(t)
    }

    pub fn measured(&self, shape: Shape) -> Option<StepTime> {
        self.timed.iter().find(|(s, _)| *s == shape).map(|(_, t)| *t)
    }

    /// `shape`'s cost: measured, or predicted from the timed shapes (at least one).
    pub fn cost(&self, shape: Shape) -> StepTime {
        if let Some(t) = self.measured(shape) {
            return t;
        }
        let points = |of: fn(&StepTime) -> f64| -> Vec<(f64, f64)> {
            self.timed.iter().map(|(s, t)| (self.gflop(*s), of(t))).collect()
        };
        let (train, infer) = (Line::fit(&points(|t| t.train_s)), Line::fit(&points(|t| t.infer_s)));
        let gflop = self.gflop(shape);
        // The first setting timed compiled its pipelines from nothing, as a run does.
        let setup_s = self.timed.iter().map(|(_, t)| t.setup_s).fold(0.0, f64::max);
        StepTime { train_s: train.at(gflop), infer_s: infer.at(gflop), setup_s }
    }

    fn model_at(&self, shape: Shape) -> ModelConfig {
        ModelConfig { size: shape.side, filters: shape.filters, ..self.model.clone() }
    }

    /// The forward GFLOP of a batch: the work a step's time grows with.
    fn gflop(&self, shape: Shape) -> f64 {
        self.model_at(shape).build(self.batch).flops() as f64 / 1e9
    }
}

/// What a run does, in steps and evaluations.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Images an epoch trains on (each once; a patch of each with `--patch`), per run.
    pub train_images: usize,
    /// Images evaluated after each epoch (the test split, or a fold's own part).
    pub watch_images: usize,
    /// Test images scored when training ends.
    pub test_images: usize,
    /// Runs trained one after the other (`--folds K`: K).
    pub runs: usize,
    /// The batch a step trains (at most the training images).
    pub batch: usize,
    /// Reading and decoding the data, as a run does before training.
    pub data_read_s: f64,
    /// With `--patch`: the test images' median native size, scored in tiles of the patch at the
    /// end.
    pub patch_scoring: Option<(u32, u32)>,
    /// Flip TTA: the test images are scored once more as `eval` scores them, four mirrorings
    /// each (in tiles with `--patch`).
    pub tta: bool,
}

/// A run's predicted time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub step: StepTime,
    pub steps_per_epoch: usize,
    pub eval_batches: usize,
    pub epoch_s: f64,
    /// Per run, besides the epochs: reading the data, setting up, the final scoring.
    pub overhead_s: f64,
    pub epochs: usize,
    pub total_s: f64,
}

impl Workload {
    pub fn predict(&self, step: StepTime, side: usize, epochs: usize) -> Prediction {
        let steps_per_epoch = self.train_images.div_ceil(self.batch);
        let eval_batches = self.watch_images.div_ceil(self.batch);
        let epoch_s = steps_per_epoch as f64 * step.train_s + eval_batches as f64 * step.infer_s;
        // The final metrics and the report's panels: two passes over the test split.
        let mut end_s = 2.0 * self.test_images.div_ceil(self.batch) as f64 * step.infer_s;
        // Then as `eval` scores them, if that differs: in tiles for patches, mirrored for TTA.
        let passes = match self.patch_scoring {
            Some((width, height)) => {
                tile_starts(width as usize, side, SCORING_OVERLAP).len()
                    * tile_starts(height as usize, side, SCORING_OVERLAP).len()
            }
            None => usize::from(self.tta),
        };
        let flips = if self.tta { Flip::ALL.len() } else { 1 };
        end_s += (self.test_images * passes * flips).div_ceil(self.batch) as f64 * step.infer_s;
        let overhead_s = self.data_read_s + step.setup_s + end_s;
        let total_s = self.runs as f64 * (overhead_s + epochs as f64 * epoch_s);
        Prediction { step, steps_per_epoch, eval_batches, epoch_s, overhead_s, epochs, total_s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_through_two_settings_separates_the_fixed_part() {
        let line = Line::fit(&[(1.0, 0.5), (4.0, 1.1)]);
        assert!((line.fixed - 0.3).abs() < 1e-12 && (line.per_gflop - 0.2).abs() < 1e-12, "{line:?}");
        // Noise that would make the fixed part negative: proportional instead.
        let line = Line::fit(&[(1.0, 0.1), (2.0, 0.5)]);
        assert_eq!(line.fixed, 0.0);
        assert!((line.at(2.0) - 0.44).abs() < 1e-12, "{line:?}");
        // One setting: proportional to the work.
        assert!((Line::fit(&[(2.0, 1.0)]).at(6.0) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_run_is_its_epochs_and_its_overheads() {
        let w = Workload {
            train_images: 106,
            watch_images: 46,
            test_images: 46,
            runs: 1,
            batch: 8,
            data_read_s: 2.0,
            patch_scoring: None,
            tta: false,
        };
        let step = StepTime { train_s: 0.5, infer_s: 0.1, setup_s: 3.0 };
        let p = w.predict(step, 64, 10);
        assert_eq!((p.steps_per_epoch, p.eval_batches), (14, 6));
        assert!((p.epoch_s - 7.6).abs() < 1e-9 && (p.overhead_s - 6.2).abs() < 1e-9, "{p:?}");
        assert!((p.total_s - 82.2).abs() < 1e-9, "{p:?}");
        // Patches of 128 over 181×217 test images: 2 × 2 tiles each, 184 tiles, 23 batches more.
        let patches = Workload { patch_scoring: Some((181, 217)), runs: 2, ..w }.predict(step, 128, 10);
        assert!((patches.total_s - 2.0 * (82.2 + 2.3)).abs() < 1e-9, "{patches:?}");
        // Flip TTA: the 46 test images four times, 23 batches more; with patches, 92 more.
        let tta = Workload { tta: true, ..w }.predict(step, 64, 10);
        assert!((tta.total_s - (82.2 + 2.3)).abs() < 1e-9, "{tta:?}");
        let both = Workload { tta: true, patch_scoring: Some((181, 217)), ..w }.predict(step, 128, 10);
        assert!((both.total_s - (82.2 + 9.2)).abs() < 1e-9, "{both:?}");
    }
}
