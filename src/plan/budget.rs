//! `--time-budget`: the largest setting (input side, filters, epochs) whose predicted time fits.
//!
//! Each of the three climbs a ladder from its floor; a value the user gave is a ladder of one.
//! The settings are ordered by a priority that depends on the structures to segment:
//!
//! - small structures (the plan trains on patches, or its structures are under
//!   [`SMALL_STRUCTURE`] of a slice): **resolution first** — the largest input side that fits
//!   with the other two at their floors, then the most epochs at that side, then the filters.
//!   At too low a resolution a small structure is not seen at all, and no training makes up
//!   for that (issue 11: 0.00 Dice at 64², where the same lesions at native resolution scored
//!   0.84).
//! - otherwise **epochs first**, then the input side, then the filters: the planned side already
//!   keeps the structures at least [`MIN_STRUCTURE_PIXELS`](super::MIN_STRUCTURE_PIXELS), so
//!   more resolution refines boundaries while an undertrained network errs everywhere.
//!
//! Filters come last in both: doubling them costs about four times the time of a step, and the
//! runs measured so far reached their Dice with 8.
//!
//! Timing every candidate would take longer than some runs. The floor is timed, and (when the
//! floor fits) one setting more of another work, filters or else side one rung up, to separate
//! the fixed part of a step from the part that grows with the work ([`timing`](super::timing));
//! the others are predicted. The setting chosen is then timed too and the choice made again
//! with what that measured. A setting is timed only when its steps are predicted short
//! ([`MAX_TIMED_STEP_S`]); without a second, the floor's time is scaled with the work.

use std::time::Duration;

use anyhow::Result;

use super::duration::format_duration;
use super::timing::{Costs, Prediction, Shape, Workload};
use super::SMALL_STRUCTURE;

/// The filters the budget chooses from.
pub const FILTER_LADDER: [usize; 3] = [8, 16, 32];
/// The epochs it chooses from: 20 (`train`'s default) at least, as few epochs learn little;
/// 100 at most, where early stopping usually has ended a run on these datasets' sizes.
pub const EPOCH_LADDER: [usize; 6] = [20, 30, 40, 60, 80, 100];
/// The largest input side the budget considers (whole slices are never larger than their own
/// size either; patches never larger than the images' shorter side).
pub const MAX_BUDGET_SIDE: usize = 256;
/// The smallest patch: at 64 px the U-Net's deepest map is 4×4.
pub const MIN_BUDGET_PATCH: usize = 64;
/// A setting beyond the floor is timed only when its steps are predicted shorter than this:
/// timing a slower one would cost more than the prediction gains.
pub const MAX_TIMED_STEP_S: f64 = 3.0;

/// Which of the three the budget spends on first (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Resolution,
    Epochs,
}

impl Priority {
    /// Indices into the levels of [`Ladders::at`] (side, filters, epochs), most important first.
    fn order(self) -> [usize; 3] {
        match self {
            Priority::Resolution => [0, 2, 1],
            Priority::Epochs => [2, 0, 1],
        }
    }

    pub fn rule(self) -> &'static str {
        match self {
            Priority::Resolution => {
                "small structures: the largest input side first (too coarse, they are not seen at all), then the \
                 most epochs, then the filters"
            }
            Priority::Epochs => {
                "the planned side keeps the structures: the most epochs first (an undertrained network errs \
                 everywhere, a coarser one at boundaries), then the input side, then the filters (twice the \
                 filters, four times the time)"
            }
        }
    }
}

/// The values each of side, filters and epochs may take, smallest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ladders {
    pub sides: Vec<usize>,
    pub filters: Vec<usize>,
    pub epochs: Vec<usize>,
}

/// One point on the ladders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub shape: Shape,
    pub epochs: usize,
}

impl Ladders {
    fn len(&self, dimension: usize) -> usize {
        [self.sides.len(), self.filters.len(), self.epochs.len()][dimension]
    }

    fn at(&self, levels: [usize; 3]) -> Setting {
        let shape = Shape { side: self.sides[levels[0]], filters: self.filters[levels[1]] };
        Setting { shape, epochs: self.epochs[levels[2]] }
    }

    pub fn floor(&self) -> Setting {
        self.at([0; 3])
    }
}

/// Whole-slice sides from the planned `size` up, or patch sides from [`MIN_BUDGET_PATCH`] up, in
/// steps of 32 to the largest the images allow (`native`, a multiple of 16).
pub fn side_ladder(planned: usize, patches: bool, native: usize) -> Vec<usize> {
    let floor = if patches { MIN_BUDGET_PATCH.min(planned) } else { planned };
    let top = native.min(MAX_BUDGET_SIDE).max(floor);
    let mut sides: Vec<usize> = (floor..top).step_by(32).collect();
    sides.push(top);
    sides
}

/// The most the ladders allow within `budget_s`, in the `priority`'s order; None when even the
/// floor does not fit.
pub fn pick(ladders: &Ladders, priority: Priority, budget_s: f64, total_s: impl Fn(Setting) -> f64) -> Option<Setting> {
    let mut levels = [0; 3];
    if total_s(ladders.at(levels)) > budget_s {
        return None;
    }
    for dimension in priority.order() {
        let fits = |level: usize| {
            let mut raised = levels;
            raised[dimension] = level;
            total_s(ladders.at(raised)) <= budget_s
        };
        levels[dimension] = (0..ladders.len(dimension)).rev().find(|&l| fits(l)).unwrap_or(0);
    }
    Some(ladders.at(levels))
}

/// A row of the candidates' table: a shape and the most epochs of the ladder that fit with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub shape: Shape,
    pub timed: bool,
    /// At the most epochs that fit, or at the fewest when none do.
    pub prediction: Prediction,
    pub fits: bool,
}

/// What the budget chose, and from what.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetChoice {
    pub budget: Duration,
    pub priority: Priority,
    /// The setting chosen: the largest that fits, or the floor when none does.
    pub chosen: Setting,
    pub prediction: Prediction,
    pub fits: bool,
    pub rows: Vec<Row>,
}

/// Times the floor and one setting of another work, picks, times the pick and picks again.
pub fn choose(
    ladders: &Ladders,
    priority: Priority,
    budget: Duration,
    costs: &mut Costs<'_>,
    workload: &Workload,
) -> Result<BudgetChoice> {
    let floor = ladders.floor();
    costs.time(floor.shape)?;
    let budget_s = budget.as_secs_f64();
    let predict = |costs: &Costs<'_>, s: Setting| workload.predict(costs.cost(s.shape), s.shape.side, s.epochs);
    // Nothing is cheaper than the floor: when it does not fit, more timing cannot help.
    if predict(costs, floor).total_s <= budget_s {
        let second = [
            ladders.filters.get(1).map(|&filters| Shape { filters, ..floor.shape }),
            ladders.sides.get(1).map(|&side| Shape { side, ..floor.shape }),
        ];
        if let Some(shape) = second.into_iter().flatten().find(|&s| costs.cost(s).train_s <= MAX_TIMED_STEP_S) {
            costs.time(shape)?;
        }
    }
    let picked = pick(ladders, priority, budget_s, |s| predict(costs, s).total_s);
    if let Some(p) = picked.filter(|p| costs.measured(p.shape).is_none()) {
        if costs.cost(p.shape).train_s <= MAX_TIMED_STEP_S {
            costs.time(p.shape)?;
        }
    }
    let picked = pick(ladders, priority, budget_s, |s| predict(costs, s).total_s);
    let chosen = picked.unwrap_or(floor);
    let rows = ladders
        .sides
        .iter()
        .flat_map(|&side| ladders.filters.iter().map(move |&filters| Shape { side, filters }))
        .map(|shape| {
            let at = |epochs| predict(costs, Setting { shape, epochs });
            let most = ladders.epochs.iter().rev().map(|&e| at(e)).find(|p| p.total_s <= budget_s);
            let fits = most.is_some();
            Row {
                shape,
                timed: costs.measured(shape).is_some(),
                prediction: most.unwrap_or(at(ladders.epochs[0])),
                fits,
            }
        })
        .collect();
    let prediction = predict(costs, chosen);
    Ok(BudgetChoice { budget, priority, chosen, prediction, fits: picked.is_some(), rows })
}

/// Resolution first for small structures (see the module's documentation).
pub fn priority(patches: bool, typical_structure: f64) -> Priority {
    if patches || (typical_structure > 0.0 && typical_structure < SMALL_STRUCTURE) {
        Priority::Resolution
    } else {
        Priority::Epochs
    }
}

impl BudgetChoice {
    /// The candidates' table, a row per shape, the chosen one marked.
    pub fn table(&self) -> String {
        let mut lines = vec![format!(
            "{:>6} {:>7} {:>9} {:>9} {:>7} {:>10}",
            "side", "filters", "s/step", "s/epoch", "epochs", "predicted"
        )];
        for row in &self.rows {
            let p = &row.prediction;
            let epochs = if row.fits { p.epochs.to_string() } else { format!("({})", p.epochs) };
            let mark = if row.shape == self.chosen.shape {
                "  <- chosen"
            } else if row.fits {
                ""
            } else {
                "  over"
            };
            lines.push(format!(
                "{:>6} {:>7} {:>8.3}{} {:>9.2} {:>7} {:>10}{mark}",
                row.shape.side,
                row.shape.filters,
                p.step.train_s,
                if row.timed { "t" } else { " " },
                p.epoch_s,
                epochs,
                format_duration(p.total_s)
            ));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_ladders_climb_in_steps_of_32_to_what_the_images_allow() {
        assert_eq!(side_ladder(64, false, 224), [64, 96, 128, 160, 192, 224]);
        assert_eq!(side_ladder(80, false, 512), [80, 112, 144, 176, 208, 240, 256]);
        assert_eq!(side_ladder(128, true, 256), [64, 96, 128, 160, 192, 224, 256]);
        assert_eq!(side_ladder(48, true, 48), [48]);
        assert_eq!(side_ladder(64, false, 64), [64]);
    }
}
