//! What an epoch ends with on disk — `last.safetensors`, `best.safetensors` when the epoch is
//! the best, `model.json` and the checkpoint `train-state.safetensors` — written at a pace that
//! keeps them a small part of the run. A 32-filter U-Net's weights, Adam's moments and the two
//! weight files are about 150 MB an epoch: on an H200, where colin27's epochs take 0.25 s of
//! training, writing them every epoch took more than half of the run (40 s against 15 s of
//! training). So an epoch's files are kept in memory and written once the time since the last
//! write is [`WRITE_TIME_RATIO`] times what that write took, and always after the last epoch,
//! an early stop, an interruption or a failure: a run that is killed outright loses at most that
//! much training, which its resume redoes; on a software adapter, whose epochs are long against
//! a write, every epoch is still written.

use std::time::Instant;

use anyhow::Result;

use super::state::{Progress, Tensors};
use super::Trainer;
use crate::checkpoint;

/// Writing costs a run at most about 1 / (1 + this) of its time.
pub const WRITE_TIME_RATIO: f64 = 9.0;

/// Whether files whose last write took `write_s` are due again `since_write_s` after it.
pub fn due(since_write_s: f64, write_s: f64) -> bool {
    since_write_s >= WRITE_TIME_RATIO * write_s
}

/// An epoch's files, kept until they are written.
struct Pending {
    progress: Progress,
    tensors: Tensors,
    /// The weights of the best epoch, when it came after the last write.
    best: Option<Vec<Vec<f32>>>,
}

/// The files of the last epoch not yet written, and when the last write ended and took.
pub(super) struct Saver {
    pending: Option<Pending>,
    written_at: Instant,
    write_s: f64,
    /// The epoch whose checkpoint is on disk.
    pub written_epoch: usize,
}

impl Saver {
    /// After the checkpoint of `epoch` was written (or read, on a resume).
    pub fn new(epoch: usize) -> Saver {
        Saver { pending: None, written_at: Instant::now(), write_s: 0.0, written_epoch: epoch }
    }

    /// Keeps the files of the epoch `progress` has completed: its `tensors`, and its weights as
    /// the best when it `improved`. `last` (the run's last epoch or its early stop) writes them
    /// now; otherwise they are written once due.
    pub fn keep(
        &mut self,
        t: &Trainer,
        progress: &Progress,
        tensors: Tensors,
        improved: bool,
        last: bool,
    ) -> Result<()> {
        let earlier_best = self.pending.take().and_then(|p| p.best);
        let best = if improved { Some(tensors.values.clone()) } else { earlier_best };
        self.pending = Some(Pending { progress: progress.clone(), tensors, best });
        if last || due(self.written_at.elapsed().as_secs_f64(), self.write_s) {
            self.write(t)?;
        }
        Ok(())
    }

    /// Writes what is pending: the weights, the run's record, the checkpoint last (whatever a kill
    /// interrupts before it, a resume redoes).
    pub fn write(&mut self, t: &Trainer) -> Result<()> {
        let Some(p) = self.pending.take() else { return Ok(()) };
        let started = Instant::now();
        let (out, infos) = (&t.o.out, &t.params.infos);
        checkpoint::save_weights(&out.join("last.safetensors"), infos, &p.tensors.values)?;
        if let Some(best) = &p.best {
            checkpoint::save_weights(&out.join("best.safetensors"), infos, best)?;
        }
        checkpoint::save_record(out, &t.record(p.progress.epoch, p.progress.callbacks.best_epoch))?;
        p.progress.save(out, infos, &p.tensors)?;
        (self.written_at, self.write_s, self.written_epoch) =
            (Instant::now(), started.elapsed().as_secs_f64(), p.progress.epoch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write is due once the time since the last is WRITE_TIME_RATIO times what it took: on a
    /// software adapter (an epoch of seconds, a write of a tenth) every epoch, on a fast GPU (an
    /// epoch of 0.25 s, a write of 0.5) every eighteenth.
    #[test]
    fn writes_cost_at_most_a_tenth_of_the_run() {
        assert!(due(0.0, 0.0), "the first epoch after a start or resume is written");
        assert!(due(5.0, 0.1) && due(0.9, 0.1) && !due(0.89, 0.1));
        let (epoch_s, write_s) = (0.25, 0.5);
        let mut since = 0.0;
        let mut written = Vec::new();
        for epoch in 1..=60 {
            since += epoch_s;
            if due(since, write_s) {
                written.push(epoch);
                since = 0.0;
            }
        }
        assert_eq!(written, [18, 36, 54]);
        let overhead = written.len() as f64 * write_s / (60.0 * epoch_s + written.len() as f64 * write_s);
        assert!(overhead <= 1.0 / (1.0 + WRITE_TIME_RATIO), "{overhead}");
    }
}
