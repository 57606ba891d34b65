//! The seed notebook's callbacks, on the training loss: ReduceLROnPlateau (factor 0.5,
//! patience 3) and EarlyStopping (patience 6, restore_best_weights).

use serde::{Deserialize, Serialize};

use super::options::Schedule;

/// ReduceLROnPlateau's patience in the seed: epochs without a lower loss before the learning
/// rate is cut.
pub const PLATEAU_PATIENCE: usize = 3;
/// EarlyStopping's patience in the seed: epochs without a lower loss before training stops.
pub const EARLY_STOPPING_PATIENCE: usize = 6;
/// ReduceLROnPlateau's factor in the seed: the learning rate is halved.
pub const PLATEAU_FACTOR: f32 = 0.5;

/// What the callbacks remember between epochs (saved in the checkpoint).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Callbacks {
    /// The lowest training loss so far (none before the first epoch).
    best: Option<f64>,
    pub best_epoch: usize,
    since_best: usize,
    since_lr_change: usize,
}

/// What the callbacks decide after an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The loss is the lowest so far: these weights are the best.
    pub improved: bool,
    /// Multiply the learning rate by [`PLATEAU_FACTOR`].
    pub reduce_lr: bool,
    pub stop: bool,
}

impl Callbacks {
    pub fn observe(&mut self, epoch: usize, loss: f64, schedule: &Schedule) -> Decision {
        // Keras' min_delta for ReduceLROnPlateau is 1e-4; EarlyStopping's is 0.
        let improved = self.best.is_none_or(|best| loss < best);
        if improved {
            self.best = Some(loss);
            self.best_epoch = epoch;
            self.since_best = 0;
            self.since_lr_change = 0;
        } else {
            self.since_best += 1;
            self.since_lr_change += 1;
        }
        let reduce_lr = self.since_lr_change >= schedule.plateau_patience;
        if reduce_lr {
            self.since_lr_change = 0;
        }
        let patience = schedule.early_stopping_patience;
        Decision { improved, reduce_lr, stop: patience > 0 && self.since_best >= patience }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The learning rate is cut after every 2 epochs without a new best, training stops after 3.
    #[test]
    fn patiences_count_epochs_since_the_best_loss() {
        let schedule = Schedule { epochs: 10, plateau_patience: 2, early_stopping_patience: 3 };
        let mut callbacks = Callbacks::default();
        let decisions: Vec<(bool, bool, bool)> = [1.0, 0.5, 0.6, 0.7, 0.4, 0.5, 0.5, 0.5]
            .iter()
            .enumerate()
            .map(|(i, &loss)| callbacks.observe(i + 1, loss, &schedule))
            .map(|d| (d.improved, d.reduce_lr, d.stop))
            .collect();
        let (t, f) = (true, false);
        assert_eq!(decisions, [(t, f, f), (t, f, f), (f, f, f), (f, t, f), (t, f, f), (f, f, f), (f, t, f), (f, f, t)]);
        assert_eq!(callbacks.best_epoch, 5);
    }

    /// Patience 0 never stops, however long the loss stalls; the learning rate still halves.
    #[test]
    fn early_stopping_patience_zero_trains_every_epoch() {
        let schedule = Schedule { epochs: 10, plateau_patience: 2, early_stopping_patience: 0 };
        let mut callbacks = Callbacks::default();
        let decisions: Vec<Decision> = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
            .iter()
            .enumerate()
            .map(|(i, &loss)| callbacks.observe(i + 1, loss, &schedule))
            .collect();
        assert!(decisions.iter().all(|d| !d.stop), "{decisions:?}");
        assert_eq!(decisions.iter().filter(|d| d.reduce_lr).count(), 3, "{decisions:?}");
    }
}
