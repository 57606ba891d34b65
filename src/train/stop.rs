//! Why a run stops before its last epoch, other than an error: the user asked (Ctrl-C,
//! SIGTERM), or the loss diverged. Both leave the run folder's last checkpoint whole.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// Set when the user asks a run to stop (Ctrl-C, SIGTERM; see `main.rs`): the training loop
/// finishes the step under way and stops, its last checkpoint intact.
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// A training loss above this many times the run's first step's (or one not finite) means the
/// run diverged.
pub const DIVERGENCE_FACTOR: f64 = 1000.0;

/// The run stopped because the user asked (Ctrl-C, SIGTERM); `wgunet train --resume` continues it.
#[derive(Debug)]
pub struct Interrupted {
    pub run: PathBuf,
    /// Epochs in the checkpoint.
    pub epochs_done: usize,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run = self.run.display();
        match self.epochs_done {
            0 => write!(f, "interrupted in epoch 1: {run} keeps the checkpoint from before it")?,
            done => write!(f, "interrupted: {run} keeps the checkpoint of epoch {done}")?,
        }
        write!(f, " and the epoch under way will be redone.\nResume with: wgunet train --resume {run}")
    }
}

impl std::error::Error for Interrupted {}

/// The training loss became non-finite or ran away (see [`DIVERGENCE_FACTOR`]).
#[derive(Debug)]
pub struct Diverged {
    pub run: PathBuf,
    pub epoch: usize,
    pub step: u32,
    pub loss: f64,
    pub first_loss: f64,
    /// The run's --lr.
    pub lr: f32,
    /// The epoch whose weights best.safetensors holds (0: none finished).
    pub best_epoch: usize,
}

impl fmt::Display for Diverged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run = self.run.display();
        write!(
            f,
            "training diverged in epoch {} at step {}: the mean training loss is {:.4e} (the first step's was {:.4}; \
             the limit is {DIVERGENCE_FACTOR} times that). ",
            self.epoch, self.step, self.loss, self.first_loss
        )?;
        if self.best_epoch == 0 {
            write!(f, "No epoch finished, so {run} holds no usable weights. ")?;
        } else {
            write!(
                f,
                "{run} keeps the weights of epoch {} (the lowest finite loss): `wgunet eval --model {run}` uses them. ",
                self.best_epoch
            )?;
        }
        write!(
            f,
            "Train again with a lower learning rate, e.g. --lr {} (a tenth of --lr {})",
            short_number(self.lr as f64 / 10.0),
            short_number(self.lr as f64)
        )
    }
}

/// `x` to three significant digits, as a user types it: 0.0003, 2.5, 100000, 1e29.
fn short_number(x: f64) -> String {
    let rounded: f64 = format!("{x:.2e}").parse().expect("a formatted number");
    if (1e-4..1e6).contains(&rounded.abs()) {
        format!("{rounded}")
    } else {
        format!("{rounded:e}")
    }
}

impl std::error::Error for Diverged {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rates_print_as_typed() {
        let printed: Vec<String> = [1e6f32, 1e30, 0.3, 1e-3, 2.5e-5, 0.123456].map(|lr| short_number(lr as f64)).into();
        assert_eq!(printed, ["1e6", "1e30", "0.3", "0.001", "2.5e-5", "0.123"]);
    }

    #[test]
    fn divergence_after_an_epoch_points_at_the_best_weights() {
        let diverged = Diverged {
            run: PathBuf::from("runs/x"),
            epoch: 4,
            step: 29,
            loss: f64::INFINITY,
            first_loss: 0.69,
            lr: 0.03,
            best_epoch: 2,
        };
        assert_eq!(
            diverged.to_string(),
            "training diverged in epoch 4 at step 29: the mean training loss is inf (the first step's was 0.6900; \
             the limit is 1000 times that). runs/x keeps the weights of epoch 2 (the lowest finite loss): \
             `wgunet eval --model runs/x` uses them. Train again with a lower learning rate, e.g. --lr 0.003 (a tenth of --lr 0.03)"
        );
    }
}
