//! An epoch's training steps: every training image once, in a shuffled order, a batch a step,
//! each step recorded into one command buffer. The host reads back only the running loss, a few
//! times an epoch.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use rand::seq::SliceRandom;

use super::state::Progress;
use super::stop::{Diverged, Interrupted, DIVERGENCE_FACTOR, STOP_REQUESTED};
use super::Trainer;
use crate::kernel::Recorder;
use crate::ops::adam::AdamHyper;

/// Steps between two read-backs of the running loss. Each read waits for the GPU to finish the
/// steps queued before it, so reading at every step would stall the queue.
const LOSS_READBACK_INTERVAL: usize = 8;

/// The outcome of an epoch's training steps.
pub(super) struct EpochLoss {
    pub train_loss: f64,
    pub images_per_s: f64,
}

impl Trainer {
    /// Trains on every image once, showing the loss on a progress bar; a loss that diverges
    /// (see [`DIVERGENCE_FACTOR`]) or a stop the user asked for ends the epoch with an error.
    pub(super) fn run_epoch(&self, progress: &mut Progress, epoch: usize) -> Result<EpochLoss> {
        let (gpu, exec, batch) = (&self.gpu, &self.exec, self.batch);
        let train_len = self.train_len();
        let steps = train_len.div_ceil(batch);
        let mut order: Vec<usize> = (0..train_len).collect();
        order.shuffle(&mut progress.rng);
        let bar = progress_bar(steps, format!("{epoch}/{}", self.o.schedule.epochs));
        gpu.write(exec.loss_sum(), &[0.0f32]);
        let t0 = Instant::now();
        let (img_len, mask_len) = (exec.input().elems() / batch, exec.target().elems() / batch);
        let mut image = vec![0.0f32; img_len * batch];
        let mut mask = vec![0.0f32; mask_len * batch];
        let mut loss = f64::NAN;
        for s in 0..steps {
            // Every sample once an epoch; the last batch is topped up from the start of the order.
            for i in 0..batch {
                let k = order[(s * batch + i) % order.len()];
                let (image, mask) = (&mut image[i * img_len..][..img_len], &mut mask[i * mask_len..][..mask_len]);
                match &self.patches {
                    Some(patches) => {
                        let patch = patches.draw(k, &mut progress.rng);
                        image.copy_from_slice(&patch.image);
                        mask.copy_from_slice(&patch.mask);
                    }
                    None => {
                        image.copy_from_slice(&self.data.train[k].image);
                        mask.copy_from_slice(&self.data.train[k].mask);
                    }
                }
                if let Some(intensity) = self.o.intensity.config() {
                    intensity.apply(image, self.cfg.channels, self.cfg.size, &self.cfg.normalise, &mut progress.rng);
                }
            }
            progress.step += 1;
            self.submit_step(progress, &image, &mask);
            let first_step = progress.step == 1;
            if first_step {
                gpu.wait()?;
                bar.suspend(crate::bench::print_first_step);
            }
            if first_step || (s + 1) % LOSS_READBACK_INTERVAL == 0 || s + 1 == steps {
                loss = gpu.read::<f32>(exec.loss_sum())?[0] as f64 / (s + 1) as f64;
                self.check_divergence(progress, epoch, loss).inspect_err(|_| bar.finish_and_clear())?;
                let ips = ((s + 1) * batch) as f64 / t0.elapsed().as_secs_f64();
                bar.set_message(format!("loss {loss:.4}  {ips:.1} images/s"));
            } else {
                gpu.check()?;
            }
            bar.inc(1);
            if STOP_REQUESTED.load(Ordering::Relaxed) {
                gpu.wait()?;
                bar.finish_and_clear();
                return Err(Interrupted { run: self.o.out.clone(), epochs_done: progress.epoch }.into());
            }
        }
        gpu.wait()?;
        bar.finish_and_clear();
        Ok(EpochLoss { train_loss: loss, images_per_s: (steps * batch) as f64 / t0.elapsed().as_secs_f64() })
    }

    /// A running `loss` that is not finite or far above the run's first is [`Diverged`].
    fn check_divergence(&self, progress: &mut Progress, epoch: usize, loss: f64) -> Result<()> {
        let first_loss = *progress.first_loss.get_or_insert(loss);
        if !loss.is_finite() || loss > DIVERGENCE_FACTOR * first_loss {
            return Err(Diverged {
                run: self.o.out.clone(),
                epoch,
                step: progress.step,
                loss,
                first_loss,
                lr: self.o.optimizer.lr,
                best_epoch: progress.callbacks.best_epoch,
            }
            .into());
        }
        Ok(())
    }

    /// Uploads a batch and records augmentation, forward, loss, backward and Adam into one
    /// command buffer.
    fn submit_step(&self, progress: &mut Progress, image: &[f32], mask: &[f32]) {
        let (gpu, exec) = (&self.gpu, &self.exec);
        exec.set_hyper(gpu, AdamHyper::new(progress.lr, self.o.optimizer.weight_decay, progress.step));
        exec.set_step(gpu, self.o.seed, progress.step);
        match &self.augmentation {
            Some(augmentation) => augmentation.upload(gpu, image, mask, &mut progress.rng),
            None => {
                gpu.write(exec.input(), image);
                gpu.write(exec.target(), mask);
            }
        }
        let mut recorder = Recorder::new(gpu);
        if let Some(augmentation) = &self.augmentation {
            recorder.dispatch(&augmentation.dispatch);
        }
        exec.record_train_step(&mut recorder);
        recorder.submit(gpu);
    }
}

fn progress_bar(steps: usize, prefix: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}
