//! The seed notebook's callbacks, on the training loss: ReduceLROnPlateau (factor 0.5,
//! patience 3) and EarlyStopping (patience 6, restore_best_weights), and the learning-rate
//! schedule (those halvings, or nnU-Net's poly decay).

use serde::{Deserialize, Serialize};

use super::options::Schedule;

/// ReduceLROnPlateau's patience in the seed: epochs without a lower loss before the learning
/// rate is cut.
pub const PLATEAU_PATIENCE: usize = 3;
/// EarlyStopping's patience in the seed: epochs without a lower loss before training stops.
pub const EARLY_STOPPING_PATIENCE: usize = 6;
/// ReduceLROnPlateau's factor in the seed: the learning rate is halved.
pub const PLATEAU_FACTOR: f32 = 0.5;
/// nnU-Net's polynomial decay: `lr · (1 − e/E)^0.9` in epoch e of E (from 0).
pub const POLY_EXPONENT: f64 = 0.9;

/// How the learning rate changes over a run (`--lr-schedule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The seed's ReduceLROnPlateau: halved after `--plateau-patience` epochs without a lower
    /// training loss.
    #[default]
    Plateau,
    /// nnU-Net's: `lr · (1 − e/E)^0.9` in epoch e of E (from 0), near 0 at the last, so the
    /// weights a run ends with have settled.
    Poly,
}

impl LrSchedule {
    /// As `--lr-schedule` spells it.
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Plateau => "plateau",
            LrSchedule::Poly => "poly",
        }
    }

    /// The learning rate of `epoch` (from 1) of `epochs` under the poly schedule from `lr`; the
    /// plateau schedule's is whatever its halvings left (`current`).
    pub fn lr(self, lr: f32, current: f32, epoch: usize, epochs: usize) -> f32 {
        match self {
            LrSchedule::Plateau => current,
            LrSchedule::Poly => {
                let done = (epoch - 1) as f64 / epochs as f64;
                (lr as f64 * (1.0 - done).powf(POLY_EXPONENT)) as f32
            }
        }
    }
}

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
        let reduce_lr =
            schedule.lr_schedule == LrSchedule::Plateau && self.since_lr_change >= schedule.plateau_patience;
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
        let schedule =
            Schedule { epochs: 10, plateau_patience: 2, early_stopping_patience: 3, lr_schedule: LrSchedule::Plateau };
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
        let schedule =
            Schedule { epochs: 10, plateau_patience: 2, early_stopping_patience: 0, lr_schedule: LrSchedule::Plateau };
        let mut callbacks = Callbacks::default();
        let decisions: Vec<Decision> = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
            .iter()
            .enumerate()
            .map(|(i, &loss)| callbacks.observe(i + 1, loss, &schedule))
            .collect();
        assert!(decisions.iter().all(|d| !d.stop), "{decisions:?}");
        assert_eq!(decisions.iter().filter(|d| d.reduce_lr).count(), 3, "{decisions:?}");
    }

    /// The poly schedule: the full rate in epoch 1, nnU-Net's `(1 − e/E)^0.9` after, a few % of
    /// it in the last epoch, and no plateau halvings on top however the loss stalls (early
    /// stopping still watches the loss).
    #[test]
    fn poly_schedule_decays_to_near_zero_without_plateau_cuts() {
        let (lr, epochs) = (1e-3f32, 60);
        let poly = LrSchedule::Poly;
        assert_eq!(poly.lr(lr, 0.0, 1, epochs), lr);
        for epoch in 1..=epochs {
            let expected = 1e-3 * (1.0 - (epoch - 1) as f64 / 60.0).powf(0.9);
            let got = poly.lr(lr, 0.0, epoch, epochs) as f64;
            assert!((got - expected).abs() <= 1e-6 * expected, "epoch {epoch}: {got} against {expected}");
        }
        let last = poly.lr(lr, 0.0, epochs, epochs);
        assert!(last > 0.0 && last < 0.03 * lr, "{last}");
        assert_eq!(LrSchedule::Plateau.lr(lr, 2.5e-4, 30, epochs), 2.5e-4, "plateau keeps what its halvings left");
        let schedule = Schedule { epochs, plateau_patience: 2, early_stopping_patience: 4, lr_schedule: poly };
        let mut callbacks = Callbacks::default();
        let decisions: Vec<Decision> = [1.0, 2.0, 2.0, 2.0, 2.0]
            .iter()
            .enumerate()
            .map(|(i, &l)| callbacks.observe(i + 1, l, &schedule))
            .collect();
        assert!(decisions.iter().all(|d| !d.reduce_lr), "{decisions:?}");
        assert!(decisions[4].stop, "{decisions:?}");
    }
}
