//! The plan's run on an adapter: how long it is predicted to take, and with `--time-budget`
//! the largest setting that fits ([`super::budget`]).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;

use super::budget::{self, BudgetChoice, Ladders, EPOCH_LADDER, FILTER_LADDER, MAX_TIMED_STEP_S};
use super::duration::format_duration;
use super::timing::{Costs, Prediction, Shape, StepTimer, Workload};
use super::{multiple_of_16_up, Fingerprint, Input, Plan};
use crate::model::ModelConfig;

/// The values the command line gave: a budget keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Given {
    /// `--size` or `--patch`.
    pub side: bool,
    pub filters: bool,
    pub epochs: bool,
}

/// The run as `train` would start it, besides what the plan chose.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Architecture, channels and classes, and the size (the plan's or given) and filters.
    pub model: ModelConfig,
    /// Trains on patches of `model.size`.
    pub patches: bool,
    /// Segments with flip TTA (the final scoring passes each test image four times).
    pub tta: bool,
    pub batch: usize,
    pub epochs: usize,
    pub train_fraction: f64,
    pub max_images: Option<usize>,
    /// `--folds K`: K runs.
    pub folds: Option<usize>,
    pub budget: Option<Duration>,
    pub given: Given,
    /// How long reading the dataset took (a run reads it again).
    pub data_read_s: f64,
}

/// Without `--time-budget` or `--filters`, a run's filters are the most of [`FILTER_LADDER`] (up
/// to the requested) whose run is predicted to end within this: on a GPU that is the default 32,
/// while on a software adapter 32 filters can turn a run of minutes into one of hours or days
/// (colin27's 60 epochs: 2 hours on two cores, against 8 minutes with 8 filters and the same Dice).
/// A patch run without `--epochs` spends it as a `--time-budget` would, epochs first ([`estimate`]).
pub const UNBUDGETED_RUN: Duration = Duration::from_secs(3600);

/// The prediction, and what the budget chose.
#[derive(Clone, Debug)]
pub struct Estimate {
    pub adapter: String,
    pub workload: Workload,
    /// The setting to train: as requested, or as the budget chose.
    pub shape: Shape,
    pub epochs: usize,
    pub prediction: Prediction,
    pub budget: Option<BudgetChoice>,
    /// Without a budget, when the filters are fewer than requested ([`UNBUDGETED_RUN`]): why
    /// (`32 are predicted to take …`).
    pub fewer_filters: Option<String>,
    /// When nothing fits the budget: why, and what to change.
    pub impossible: Option<String>,
    /// The budget is [`UNBUDGETED_RUN`], spent on epochs then filters at the plan's patch: a patch
    /// run without `--time-budget` or `--epochs`.
    pub hour_for_patches: bool,
}

/// The workload of the run `request` describes on the dataset `f`.
pub fn workload(f: &Fingerprint, request: &RunRequest) -> Workload {
    let n = f.images.len().min(request.max_images.unwrap_or(usize::MAX));
    let trained = crate::data::split::train_count(n, request.train_fraction).max(1);
    let test = n - trained;
    let (train, watch, runs) = match request.folds {
        Some(k) if k >= 2 => (trained - trained.div_ceil(k), trained.div_ceil(k), k),
        _ => (trained, test, 1),
    };
    Workload {
        train_images: train,
        watch_images: watch,
        test_images: test,
        runs,
        batch: request.batch.min(train).max(1),
        data_read_s: request.data_read_s,
        patch_scoring: request.patches.then(|| f.median_size()),
        tta: request.tta,
    }
}

/// The ladders the budget climbs; those `given` hold one value.
fn ladders_for(f: &Fingerprint, plan: &Plan, request: &RunRequest, given: Given) -> Ladders {
    let (w, h) = f.median_size();
    let sides = match (given.side, plan.input) {
        (true, _) => vec![request.model.size],
        (false, Input::WholeSlice { size }) => budget::side_ladder(size, false, multiple_of_16_up(f64::from(w.max(h)))),
        (false, Input::Patches { patch }) => budget::side_ladder(patch, true, multiple_of_16_up(f64::from(w.min(h)))),
    };
    let filters = if given.filters { vec![request.model.filters] } else { FILTER_LADDER.to_vec() };
    let epochs = if given.epochs { vec![request.epochs] } else { EPOCH_LADDER.to_vec() };
    Ladders { sides, filters, epochs }
}

/// Times the requested setting (without a budget) or chooses one within the budget.
pub fn estimate(f: &Fingerprint, plan: &Plan, request: &RunRequest, timer: &mut dyn StepTimer) -> Result<Estimate> {
    let workload = workload(f, request);
    let mut costs = Costs::new(request.model.clone(), workload.batch, timer);
    let adapter = costs.adapter();
    // Small structures on patches want epochs more than filters: on the synthetic small-lesion
    // set (README, Small structures) 16 filters for 60 epochs scored native mean Dice 0.896 in
    // 16 minutes, the 32 of the filters-only rule for `train`'s 20 epochs 0.756 in 21. So a patch
    // run given neither a budget nor epochs spends the hour as a budget does, at the plan's
    // patch: the most epochs first, then the filters; when not even the floor fits, the filters
    // rule below decides at the requested epochs.
    let hour_for_patches = request.budget.is_none() && request.patches && !request.given.epochs;
    let (budget, given) = match request.budget {
        Some(budget) => (budget, request.given),
        None if hour_for_patches => (UNBUDGETED_RUN, Given { side: true, ..request.given }),
        None => return unbudgeted(request, &mut costs, workload, adapter),
    };
    let priority = budget::priority(request.patches, f.typical_structure());
    let ladders = ladders_for(f, plan, request, given);
    let choice = budget::choose(&ladders, priority, budget, &mut costs, &workload)?;
    if hour_for_patches && !choice.fits {
        return unbudgeted(request, &mut costs, workload, adapter);
    }
    let impossible = (!choice.fits).then(|| {
        let free = ladders_for(f, plan, request, Given::default()).floor();
        let free_s = workload.predict(costs.cost(free.shape), free.shape.side, free.epochs).total_s;
        let given = request.given;
        let flags: Vec<&str> =
            [(given.side, "--size/--patch"), (given.filters, "--filters"), (given.epochs, "--epochs")]
                .into_iter()
                .filter_map(|(g, flag)| g.then_some(flag))
                .collect();
        let smallest = format!(
            "the smallest setting (side {}, filters {}, {} epochs) is predicted to take {}",
            choice.chosen.shape.side,
            choice.chosen.shape.filters,
            choice.chosen.epochs,
            format_duration(choice.prediction.total_s)
        );
        if !flags.is_empty() && free_s <= budget.as_secs_f64() {
            format!(
                "{} (given) {} the {} budget impossible: {smallest}, without {pronoun} {}. Leave {pronoun} out or \
                 give a larger --time-budget",
                flags.join(", "),
                if flags.len() == 1 { "makes" } else { "make" },
                format_duration(budget.as_secs_f64()),
                format_duration(free_s),
                pronoun = if flags.len() == 1 { "it" } else { "them" },
            )
        } else {
            format!(
                "nothing fits the {} budget: {smallest}. Give a larger --time-budget{}",
                format_duration(budget.as_secs_f64()),
                if flags.is_empty() { "" } else { ", or smaller values of the options given" }
            )
        }
    });
    Ok(Estimate {
        adapter,
        workload,
        shape: choice.chosen.shape,
        epochs: choice.chosen.epochs,
        prediction: choice.prediction,
        budget: Some(choice),
        fewer_filters: None,
        impossible,
        hour_for_patches,
    })
}

/// The requested side and epochs, with the filters of [`unbudgeted_filters`] unless given.
fn unbudgeted(request: &RunRequest, costs: &mut Costs<'_>, workload: Workload, adapter: String) -> Result<Estimate> {
    let requested = Shape { side: request.model.size, filters: request.model.filters };
    let (shape, fewer_filters) = if request.given.filters {
        (requested, None)
    } else {
        unbudgeted_filters(requested, request.epochs, costs, &workload)?
    };
    let prediction = workload.predict(costs.time(shape)?, shape.side, request.epochs);
    Ok(Estimate {
        adapter,
        workload,
        shape,
        epochs: request.epochs,
        prediction,
        budget: None,
        fewer_filters,
        impossible: None,
        hour_for_patches: false,
    })
}

/// The most filters of the ladder, up to `requested`'s, whose run of `epochs` is predicted within
/// [`UNBUDGETED_RUN`] (the fewest when none is), and why when they are fewer than requested. As
/// the budget does, it times the fewest (quick to time) and the next rung when its steps are short
/// enough ([`MAX_TIMED_STEP_S`]), and predicts the rest from those. A line through fewer filters
/// overestimates more (on lavapipe, 32 filters at 128² ran 1.6× faster than a line through 8 and
/// 16 predicted: wider layers fill the lanes better), so the rung above the choice is timed too
/// when it is predicted within twice the limit, and the choice made again.
fn unbudgeted_filters(
    requested: Shape,
    epochs: usize,
    costs: &mut Costs<'_>,
    workload: &Workload,
) -> Result<(Shape, Option<String>)> {
    let ladder: Vec<Shape> = FILTER_LADDER
        .iter()
        .filter(|&&filters| filters < requested.filters)
        .map(|&filters| Shape { filters, ..requested })
        .chain([requested])
        .collect();
    let Some(&fewest) = ladder.first().filter(|_| ladder.len() > 1) else { return Ok((requested, None)) };
    costs.time(fewest)?;
    if costs.cost(ladder[1]).train_s <= MAX_TIMED_STEP_S {
        costs.time(ladder[1])?;
    }
    let limit_s = UNBUDGETED_RUN.as_secs_f64();
    let total_s = |costs: &Costs<'_>, shape: Shape| workload.predict(costs.cost(shape), shape.side, epochs).total_s;
    let pick = |costs: &Costs<'_>| ladder.iter().rev().copied().find(|&s| total_s(costs, s) <= limit_s);
    let mut chosen = pick(costs).unwrap_or(fewest);
    if let Some(&above) = ladder.iter().find(|s| s.filters > chosen.filters) {
        if costs.measured(above).is_none() && total_s(costs, above) <= 2.0 * limit_s {
            costs.time(above)?;
            chosen = pick(costs).unwrap_or(fewest);
        }
    }
    let why = (chosen != requested).then(|| {
        format!(
            "{} are predicted to take {} on this adapter, more than the {} a run is given without --time-budget{}; \
             --filters {} trains them anyway",
            requested.filters,
            format_duration(total_s(costs, requested)),
            format_duration(limit_s),
            if total_s(costs, chosen) > limit_s {
                " (even the fewest are: --time-budget fits side and epochs too)"
            } else {
                ""
            },
            requested.filters,
        )
    });
    Ok((chosen, why))
}

impl Estimate {
    /// Prints the prediction (and the budget's table).
    pub fn print(&self) {
        println!("time:\n{}", super::indent(&self.describe()));
    }

    /// The options the estimate is for: the input (of the plan's kind at the side to train),
    /// filters and epochs, as `train` takes them.
    pub fn options(&self, patches: bool) -> (Input, String) {
        let side = self.shape.side;
        let input = if patches { Input::Patches { patch: side } } else { Input::WholeSlice { size: side } };
        (input, format!(" --filters {} --epochs {}", self.shape.filters, self.epochs))
    }

    /// The prediction (and the budget's table) in lines, for the console.
    pub fn describe(&self) -> String {
        let w = &self.workload;
        let mut lines = vec![format!(
            "on {}: {} training and {} evaluated images an epoch{}, batch {}",
            self.adapter,
            w.train_images,
            w.watch_images,
            if w.runs > 1 { format!(", {} runs", w.runs) } else { String::new() },
            w.batch
        )];
        if let Some(choice) = &self.budget {
            lines.push(self.budget_rule(choice));
            lines.extend(choice.table().lines().map(str::to_string));
            lines.push(
                "  (t: timed on the device; the others predicted as a fixed part plus a part that grows with the \
                 forward FLOPs, fitted to the timed)"
                    .into(),
            );
        }
        lines.extend(self.fewer_filters.as_ref().map(|why| format!("filters {}: {why}", self.shape.filters)));
        lines.push(format!("{}: {}", self.setting(), self.summary()));
        lines.extend(self.impossible.clone());
        lines.join("\n")
    }

    /// The budget and how it was spent, in words.
    fn budget_rule(&self, choice: &BudgetChoice) -> String {
        let budget = format_duration(choice.budget.as_secs_f64());
        if self.hour_for_patches {
            format!(
                "no --time-budget or --epochs: a patch run is given {budget}, the most epochs first (small structures \
                 want training more than width), then the filters"
            )
        } else {
            format!("time budget {budget}: {}", choice.priority.rule())
        }
    }

    /// `side 64, filters 8, 60 epochs`.
    pub fn setting(&self) -> String {
        format!("side {}, filters {}, {} epochs", self.shape.side, self.shape.filters, self.epochs)
    }

    /// The predicted total and what it is made of.
    pub fn summary(&self) -> String {
        let p = &self.prediction;
        format!(
            "predicted {}: {} an epoch ({} training steps of {:.3} s, {} evaluation batches of {:.3} s) and {} a run to \
             read the data, set up and score{}",
            format_duration(p.total_s),
            format_duration(p.epoch_s),
            p.steps_per_epoch,
            p.step.train_s,
            p.eval_batches,
            p.step.infer_s,
            format_duration(p.overhead_s),
            if self.workload.runs > 1 { format!("; {} runs", self.workload.runs) } else { String::new() }
        )
    }

    /// The predicted time of a run that stopped after `epochs`.
    pub fn predicted_for(&self, epochs: usize) -> f64 {
        let p = &self.prediction;
        self.workload.runs as f64 * (p.overhead_s + epochs as f64 * p.epoch_s)
    }

    /// `took 4m 30s (+8 % of the prediction)`, and for a run that stopped early what was predicted
    /// for the `epochs_run`.
    pub fn comparison(&self, took_s: f64, epochs_run: Option<usize>) -> String {
        let took = format!(
            "took {} ({:+.0} % of the prediction)",
            format_duration(took_s),
            (took_s / self.prediction.total_s - 1.0) * 100.0
        );
        match epochs_run.filter(|&e| e < self.epochs) {
            Some(e) => format!("{took}; it ran {e} of {} epochs, predicted for those: {}", self.epochs, {
                format_duration(self.predicted_for(e))
            }),
            None => took,
        }
    }

    /// A `## Plan` section for a run's report: the plan's choices with their reasons, the
    /// prediction, the budget's candidates, and the time the run took (`took_s`, `epochs_run`).
    pub fn markdown(&self, plan: &Plan, given: &[String], took_s: f64, epochs_run: Option<usize>) -> String {
        let mut md = String::from("\n## Plan\n\nThe plan chose, each unless given on the command line");
        let _ =
            writeln!(md, "{}:\n", if given.is_empty() { String::new() } else { format!(" ({})", given.join(", ")) });
        let _ = writeln!(md, "| choice | value | why |\n| --- | --- | --- |");
        for ((choice, value), why) in plan.choices().iter().zip(&plan.reasons) {
            let _ = writeln!(md, "| {choice} | {value} | {} |", why.replace('|', "/"));
        }
        if let Some(choice) = &self.budget {
            let _ = writeln!(
                md,
                "| side, filters, epochs | {}, {}, {} | {} |",
                self.shape.side,
                self.shape.filters,
                self.epochs,
                self.budget_rule(choice)
            );
        }
        if let Some(why) = &self.fewer_filters {
            let _ = writeln!(md, "| filters | {} | {} |", self.shape.filters, why.replace('|', "/"));
        }
        let _ = writeln!(md, "\nOn {}: {}, {}; the run {}.", self.adapter, self.setting(), self.summary(), {
            self.comparison(took_s, epochs_run)
        });
        if let Some(choice) = &self.budget {
            let _ = writeln!(
                md,
                "\nCandidates (t: timed on the device, the others predicted):\n\n```text\n{}\n```",
                choice.table()
            );
        }
        md
    }
}
