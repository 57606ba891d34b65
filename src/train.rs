//! `wgunet train`: the seed notebook's recipe on the GPU. The data are loaded once and kept in
//! memory ([`dataset`]); the model, its optimizer, the evaluator and the GPU augmentation are
//! built once ([`setup`]). Then each epoch trains on every image once ([`epoch`]), evaluates
//! the test split, writes a row of `metrics.csv` ([`outputs`]), lets the seed's callbacks
//! decide ([`callbacks`]) and hands the weights and the checkpoint ([`state`]) that `--resume`
//! continues from to the [`saver`], which writes them when due. The best epoch's weights are
//! evaluated and reported at the end.

mod callbacks;
mod dataset;
mod epoch;
mod options;
mod outputs;
mod patches;
mod saver;
mod setup;
mod state;
mod stop;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use rand::SeedableRng;

use crate::checkpoint::{self, RunRecord};
use crate::device::Gpu;
use crate::evaluate::{Evaluator, Metrics};
use crate::executor::{Executor, ParamArena};
use crate::finetune;
use crate::model::ModelConfig;
pub use callbacks::{Callbacks, LrSchedule, EARLY_STOPPING_PATIENCE, PLATEAU_PATIENCE};
use callbacks::{Decision, PLATEAU_FACTOR};
pub use dataset::{load_dataset, synthetic_split, Dataset, SyntheticSplit};
use epoch::EpochLoss;
pub use options::{DataOptions, DataSource, OptimizerOptions, Schedule, TrainOptions};
use saver::Saver;
use setup::BatchAugment;
use state::{Progress, SavedState, Tensors};
pub use stop::{Diverged, Interrupted, DIVERGENCE_FACTOR, STOP_REQUESTED};

/// Salts the run's seed for the generator of shuffles and augmentations, so that its stream is
/// not the one the split, the synthetic slices or the initial weights draw from the same seed.
const SHUFFLE_SEED_SALT: u64 = 0x5eed;

/// Trains a new model into `o.out`.
pub fn train(o: &TrainOptions) -> Result<Metrics> {
    let t = Trainer::new(o)?;
    t.params.load(&t.gpu, &finetune::initial_values(&t.params, &t.cfg, o.init.as_ref(), o.seed)?)?;
    let progress = Progress {
        options: o.clone(),
        epoch: 0,
        step: 0,
        lr: o.optimizer.lr,
        first_loss: None,
        callbacks: Callbacks::default(),
        rng: rand_pcg::Pcg64::seed_from_u64(o.seed ^ SHUFFLE_SEED_SALT),
        metrics_rows: Vec::new(),
        stopped_early: false,
        finished: false,
    };
    // A checkpoint before the first epoch: a run stopped in it can be resumed too.
    checkpoint::save_record(&o.out, &t.record(0, 0))?;
    outputs::write_metrics_csv(o, &progress.metrics_rows)?;
    progress.save(&o.out, &t.params.infos, &t.read_tensors()?)?;
    t.run(progress)
}

/// `wgunet train --resume DIR`: continues the run in `dir` from its last checkpoint with the
/// options it was started with. `given` are the options of the command line, of which those in
/// `flags_given` (e.g. `--size`) were typed: they must agree with the recorded ones, except
/// `--epochs` (which may be raised) and `--device` (where to run, not what to train).
pub fn resume(dir: &Path, given: &TrainOptions, flags_given: &[String]) -> Result<()> {
    let saved = SavedState::read(dir)?;
    let o = options::resumed_options(&saved.progress.options, given, flags_given, dir)?;
    let progress = Progress { options: o.clone(), finished: false, ..saved.progress.clone() };
    if saved.progress.finished && (progress.stopped_early || progress.epoch >= o.schedule.epochs) {
        let why = if progress.stopped_early {
            format!("stopped early: its loss had not improved for {} epochs", o.schedule.early_stopping_patience)
        } else {
            "finished (give a larger --epochs to train it longer)".to_string()
        };
        println!("{} has run {} epochs and {why}: nothing to resume", dir.display(), progress.epoch);
        return Ok(());
    }
    let t = Trainer::new(&o)?;
    let tensors = saved.tensors(&t.params.infos)?;
    t.params.load(&t.gpu, &tensors.values)?;
    t.params.load_moments(&t.gpu, &tensors.adam_m, &tensors.adam_v)?;
    // A kill after metrics.csv got a row but before the checkpoint of its epoch leaves the row
    // behind; that epoch is redone.
    outputs::write_metrics_csv(&o, &progress.metrics_rows)?;
    println!("resuming {} after epoch {} of {}", dir.display(), progress.epoch, o.schedule.epochs);
    t.run(progress).map(drop)
}

/// What a run builds once from its options (see [`setup`]).
struct Trainer {
    o: TrainOptions,
    data: Dataset,
    /// The model trained: the options' with the data's channels.
    cfg: ModelConfig,
    gpu: Gpu,
    params: Arc<ParamArena>,
    exec: Executor,
    evaluator: Evaluator,
    batch: usize,
    /// None with `--augment none`.
    augmentation: Option<BatchAugment>,
    /// With `--patch`: the training images at their own size, drawn from (`data.train` is
    /// then empty).
    patches: Option<patches::TrainPatches>,
}

impl Trainer {
    /// Epochs from the checkpoint `progress` on, then the final evaluation and report.
    fn run(&self, mut progress: Progress) -> Result<Metrics> {
        let mut last_metrics = None;
        let mut saver = Saver::new(progress.epoch);
        while !progress.stopped_early && progress.epoch < self.o.schedule.epochs {
            let epoch = progress.epoch + 1;
            let schedule = &self.o.schedule;
            progress.lr = schedule.lr_schedule.lr(self.o.optimizer.lr, progress.lr, epoch, schedule.epochs);
            let metrics = self
                .run_epoch(&mut progress, epoch)
                .and_then(|loss| self.end_epoch(&mut progress, epoch, loss, &mut saver))
                .map_err(|e| self.note_checkpoint(e, epoch, &mut saver))?;
            last_metrics = Some(metrics);
            if STOP_REQUESTED.load(Ordering::Relaxed) {
                saver.write(self)?;
                return Err(Interrupted { run: self.o.out.clone(), epochs_done: epoch }.into());
            }
        }
        let metrics = self.finish(&progress, last_metrics)?;
        state::mark_finished(&self.o.out)?;
        Ok(metrics)
    }

    /// Test metrics, metrics.csv and curves, the callbacks, then the weights and the checkpoint
    /// to the `saver`.
    fn end_epoch(&self, progress: &mut Progress, epoch: usize, loss: EpochLoss, saver: &mut Saver) -> Result<Metrics> {
        let o = &self.o;
        let m = self.evaluator.evaluate(&self.gpu, &self.data.test)?;
        println!(
            "epoch {epoch}/{}: loss {:.4}, test loss {:.4}, mean pixel accuracy {:.4}, mean IoU {:.4}, mean Dice {:.4}  ({:.1} images/s, lr {:.2e})",
            o.schedule.epochs, loss.train_loss, m.loss, m.mean_pixel_accuracy, m.mean_iou, m.mean_dice, loss.images_per_s, progress.lr
        );
        progress.metrics_rows.push(outputs::metrics_row(epoch, progress.lr, &loss, &m));
        outputs::write_metrics_csv(o, &progress.metrics_rows)?;
        crate::report::curves(&o.out.join("metrics.csv"), &o.out.join("curves.png"))?;
        let decision = progress.callbacks.observe(epoch, loss.train_loss, &o.schedule);
        let tensors = self.read_tensors()?;
        progress.epoch = epoch;
        self.follow(decision, progress);
        let last = progress.stopped_early || epoch >= o.schedule.epochs;
        saver.keep(self, progress, tensors, decision.improved, last)?;
        Ok(m)
    }

    /// Cuts the learning rate or stops, as the callbacks decided.
    fn follow(&self, decision: Decision, progress: &mut Progress) {
        let schedule = &self.o.schedule;
        if decision.reduce_lr {
            progress.lr *= PLATEAU_FACTOR;
            println!(
                "  loss has not improved for {} epochs: learning rate halved to {:.2e}",
                schedule.plateau_patience, progress.lr
            );
        }
        if decision.stop {
            progress.stopped_early = true;
            println!("  loss has not improved for {} epochs: stopping early", schedule.early_stopping_patience);
        }
    }

    /// A failure (or an interruption) in `epoch`: the files of the last epoch completed are
    /// written if they were pending, and for a failure the message says which checkpoint the
    /// run keeps.
    fn note_checkpoint(&self, e: anyhow::Error, epoch: usize, saver: &mut Saver) -> anyhow::Error {
        let e = match saver.write(self) {
            Ok(()) => e,
            Err(write) => {
                e.context(format!("the files of the last epoch completed could not be written either: {write:#}"))
            }
        };
        if e.is::<Interrupted>() || e.is::<Diverged>() {
            return e;
        }
        let run = self.o.out.display();
        e.context(format!(
            "epoch {epoch} failed; {run} keeps the checkpoint of epoch {} (`wgunet train --resume {run}` continues it with the same options)",
            saver.written_epoch
        ))
    }

    /// Training images (with `--patch`, drawn from as patches).
    fn train_len(&self) -> usize {
        self.patches.as_ref().map_or(self.data.train.len(), patches::TrainPatches::len)
    }

    fn record(&self, epochs_run: usize, best_epoch: usize) -> RunRecord {
        RunRecord {
            model: self.cfg.clone(),
            loss: self.o.loss,
            augment: self.o.augment,
            dataset: self.data.record.clone(),
            command: self.o.command.clone(),
            epochs_run,
            best_epoch,
            wgunet_version: env!("CARGO_PKG_VERSION").to_string(),
            init: self.o.init.clone(),
            patch: self.o.data.patch,
            tta: self.o.tta,
        }
    }

    fn read_tensors(&self) -> Result<Tensors> {
        let (gpu, p) = (&self.gpu, &self.params);
        Ok(Tensors { values: p.read(gpu, &p.values)?, adam_m: p.read(gpu, &p.m)?, adam_v: p.read(gpu, &p.v)? })
    }

    /// The final metrics (of the best epoch's weights: EarlyStopping's restore_best_weights),
    /// metrics.json and the report. `last_metrics` are those of the last epoch trained in this
    /// process, if any.
    fn finish(&self, progress: &Progress, last_metrics: Option<Metrics>) -> Result<Metrics> {
        let best_epoch = progress.callbacks.best_epoch;
        let metrics = match last_metrics {
            Some(m) if best_epoch == progress.epoch => m,
            _ => {
                let best = checkpoint::load_weights(&self.o.out.join("best.safetensors"), &self.params.infos)?;
                self.params.load(&self.gpu, &best)?;
                if best_epoch != progress.epoch {
                    println!("restored the weights of epoch {best_epoch} (lowest training loss)");
                }
                self.evaluator.evaluate(&self.gpu, &self.data.test)?
            }
        };
        metrics.print(if self.patches.is_some() { "test split, one patch per image" } else { "test split" });
        checkpoint::write_atomic(&self.o.out.join("metrics.json"), serde_json::to_string_pretty(&metrics)?.as_bytes())?;
        outputs::write_run_report(
            &self.o,
            &self.gpu,
            &self.evaluator,
            &self.data,
            self.train_len(),
            &self.cfg,
            &metrics,
        )?;
        println!("saved {}", self.o.out.display());
        Ok(metrics)
    }
}
