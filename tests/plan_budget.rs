//! `--time-budget`'s choice, with step times from a formula instead of a device: the documented
//! order (resolution first for small structures, epochs first otherwise; filters last), values
//! the user gave kept, and only a few settings timed.

mod common;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use wgunet::model::{ModelConfig, DEFAULT_DROPOUT};
use wgunet::plan::budget::{self, choose, pick, side_ladder, Ladders, Priority, Setting, EPOCH_LADDER};
use wgunet::plan::estimate::{estimate, Given, RunRequest};
use wgunet::plan::timing::{Costs, Shape, StepTime, StepTimer, Workload};
use wgunet::plan::{Fingerprint, ImageSummary, Plan};

fn setting(side: usize, filters: usize, epochs: usize) -> Setting {
    Setting { shape: Shape { side, filters }, epochs }
}

/// A second an epoch at side 64 with 8 filters, growing with pixels × filters².
fn pixels_filters_squared(s: Setting) -> f64 {
    let (side, filters) = (s.shape.side as f64 / 64.0, s.shape.filters as f64 / 8.0);
    s.epochs as f64 * side * side * filters * filters
}

#[test]
fn the_budget_climbs_in_the_documented_order() {
    let ladders = Ladders { sides: vec![64, 128, 256], filters: vec![8, 16, 32], epochs: vec![20, 40, 60, 80, 100] };
    // Resolution first: 256 at 20 epochs (320 s); 40 epochs there would take 640 s, 16 filters 1280 s.
    assert_eq!(pick(&ladders, Priority::Resolution, 400.0, pixels_filters_squared), Some(setting(256, 8, 20)));
    // Epochs first: 100 (100 s), then side 128 (400 s); 256 or 16 filters would not fit.
    assert_eq!(pick(&ladders, Priority::Epochs, 400.0, pixels_filters_squared), Some(setting(128, 8, 100)));
    // A large budget takes everything; filters are raised last but raised.
    assert_eq!(pick(&ladders, Priority::Epochs, 1e6, pixels_filters_squared), Some(setting(256, 32, 100)));
    assert_eq!(pick(&ladders, Priority::Epochs, 6400.0, pixels_filters_squared), Some(setting(256, 16, 100)));
    // 20 epochs at the floor take 20 s.
    assert_eq!(pick(&ladders, Priority::Resolution, 19.0, pixels_filters_squared), None);
    // Filters the user gave stay, whatever they cost.
    let given = Ladders { filters: vec![32], ..ladders };
    assert_eq!(pick(&given, Priority::Epochs, 400.0, pixels_filters_squared), Some(setting(64, 32, 20)));
    assert_eq!(pick(&given, Priority::Epochs, 300.0, pixels_filters_squared), None);
}

#[test]
fn small_structures_buy_resolution_first() {
    assert_eq!(budget::priority(true, 0.2), Priority::Resolution, "patches");
    assert_eq!(budget::priority(false, 0.004), Priority::Resolution, "structures of 0.4 % of a slice");
    assert_eq!(budget::priority(false, 0.3), Priority::Epochs);
    assert_eq!(budget::priority(false, 0.0), Priority::Epochs, "no foreground");
}

/// Step times affine in the forward FLOPs, as the cost model assumes, with random constants;
/// records what it timed.
struct Formula {
    fixed_s: f64,
    per_gflop_s: f64,
    timed: Vec<Shape>,
}

impl Formula {
    /// The step of `model` at `batch`, exactly.
    fn step(&self, model: &ModelConfig, batch: usize) -> StepTime {
        let train_s = self.fixed_s + self.per_gflop_s * model.build(batch).flops() as f64 / 1e9;
        StepTime { train_s, infer_s: train_s / 3.0, setup_s: 2.0 }
    }
}

impl StepTimer for Formula {
    fn adapter(&self) -> String {
        "formula".into()
    }

    fn time(&mut self, model: &ModelConfig, batch: usize) -> anyhow::Result<StepTime> {
        self.timed.push(Shape { side: model.size, filters: model.filters });
        Ok(self.step(model, batch))
    }
}

fn model() -> ModelConfig {
    ModelConfig {
        arch: wgunet::model::Arch::Unet,
        size: 64,
        channels: 1,
        filters: 8,
        dropout: DEFAULT_DROPOUT,
        classes: 1,
        activation: Default::default(),
        normalise: Default::default(),
    }
}

#[test]
fn a_few_timed_settings_predict_the_others_and_the_choice_fits() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let workload = Workload {
        train_images: rng.random_range(20..200),
        watch_images: rng.random_range(5..60),
        test_images: rng.random_range(5..60),
        runs: 1,
        batch: 8,
        data_read_s: rng.random_range(0.1..5.0),
        patch_scoring: None,
        tta: false,
    };
    let mut formula =
        Formula { fixed_s: rng.random_range(0.0..0.5), per_gflop_s: rng.random_range(0.01..0.3), timed: vec![] };
    let exact = |f: &Formula, s: Setting| {
        let m = ModelConfig { size: s.shape.side, filters: s.shape.filters, ..model() };
        workload.predict(f.step(&m, 8), s.shape.side, s.epochs).total_s
    };
    let ladders =
        Ladders { sides: side_ladder(64, false, 160), filters: vec![8, 16, 32], epochs: EPOCH_LADDER.to_vec() };
    let (floor, top) = (ladders.floor(), setting(160, 32, 100));
    for priority in [Priority::Resolution, Priority::Epochs] {
        // Somewhere between the floor and the top, log-uniform.
        let (low, high) = (exact(&formula, floor).ln(), exact(&formula, top).ln());
        let budget = Duration::from_secs_f64(rng.random_range(low..high).exp());
        formula.timed.clear();
        let choice = {
            let mut costs = Costs::new(model(), workload.batch, &mut formula);
            choose(&ladders, priority, budget, &mut costs, &workload).unwrap()
        };
        let expected = pick(&ladders, priority, budget.as_secs_f64(), |s| exact(&formula, s)).unwrap();
        let context = format!("seed {seed}, {priority:?}, budget {budget:?}:\n{}", choice.table());
        assert_eq!(choice.chosen, expected, "{context}");
        assert!(choice.fits && choice.prediction.total_s <= budget.as_secs_f64(), "{context}");
        let relative = (choice.prediction.total_s - exact(&formula, expected)).abs() / exact(&formula, expected);
        assert!(relative < 1e-9, "predicted {} vs {}: {context}", choice.prediction.total_s, exact(&formula, expected));
        // The floor, one setting with more filters, and the choice where its steps are short:
        // not every candidate.
        let mut wanted = vec![floor.shape, Shape { filters: 16, ..floor.shape }];
        if !wanted.contains(&expected.shape) && choice.prediction.step.train_s <= budget::MAX_TIMED_STEP_S {
            wanted.push(expected.shape);
        }
        assert_eq!(formula.timed, wanted, "{context}");
        assert_eq!(choice.rows.len(), ladders.sides.len() * 3, "{context}");
        for row in &choice.rows {
            assert_eq!(row.fits, row.prediction.total_s <= budget.as_secs_f64(), "{row:?}: {context}");
        }
    }
}

/// 40 slices of 128² with one structure of a tenth of the slice: whole slices at 64, epochs first.
fn large_structures() -> Fingerprint {
    let slice = ImageSummary {
        width: 128,
        height: 128,
        gray: true,
        sixteen_bit: false,
        mean: 0.3,
        std: 0.2,
        structures: vec![vec![1638]],
    };
    Fingerprint { classes: 1, images: vec![slice; 40], skipped: vec![], intensity: [0.3, 0.2, 0.0, 1.0] }
}

fn request(budget: &str, given: Given) -> RunRequest {
    RunRequest {
        model: ModelConfig { filters: 32, ..model() },
        patches: false,
        tta: false,
        batch: 8,
        epochs: 20,
        train_fraction: 0.7,
        max_images: None,
        folds: None,
        budget: Some(wgunet::plan::duration::parse_duration(budget).unwrap()),
        given,
        data_read_s: 1.0,
    }
}

#[test]
fn a_budget_that_cannot_be_met_says_what_to_change() {
    let f = large_structures();
    let plan = Plan::choose(&f);
    let mut formula = Formula { fixed_s: 0.05, per_gflop_s: 0.1, timed: vec![] };
    // 28 training images, 4 steps an epoch; the floor (64², 8 filters, 20 epochs) is well under a
    // minute, 32 filters over it.
    let fits = estimate(&f, &plan, &request("1m", Given::default()), &mut formula).unwrap();
    assert_eq!((fits.workload.train_images, fits.prediction.steps_per_epoch), (28, 4));
    assert!(fits.impossible.is_none() && fits.prediction.total_s <= 60.0, "{}", fits.describe());
    let given = Given { filters: true, ..Given::default() };
    let filters = estimate(&f, &plan, &request("1m", given), &mut formula).unwrap();
    let why = filters.impossible.clone().unwrap_or_else(|| panic!("{}", filters.describe()));
    assert!(
        why.starts_with(
            "--filters (given) makes the 1m 00s budget impossible: the smallest setting (side 64, filters 32"
        ),
        "{why}"
    );
    assert!(why.contains(", without it ") && why.ends_with("Leave it out or give a larger --time-budget"), "{why}");
    formula.timed.clear();
    let tiny = estimate(&f, &plan, &request("2s", Given::default()), &mut formula).unwrap();
    assert_eq!(formula.timed, [Shape { side: 64, filters: 8 }], "the floor over the budget: nothing more timed");
    let why = tiny.impossible.clone().unwrap_or_else(|| panic!("{}", tiny.describe()));
    assert!(
        why.starts_with("nothing fits the 2.0s budget: the smallest setting (side 64, filters 8, 20 epochs)"),
        "{why}"
    );
}

/// `n` slices like [`large_structures`]'s.
fn slices(n: usize) -> Fingerprint {
    let f = large_structures();
    Fingerprint { images: vec![f.images[0].clone(); n], ..f }
}

#[test]
fn without_a_budget_the_filters_are_the_most_whose_run_fits_an_hour() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    // 400 slices: 35 steps an epoch, 100 epochs, about 4000 steps' time; a step of 8 filters is
    // 0.76 forward GFLOP, of 16 3.0, of 32 12. So in these ranges of seconds per GFLOP the run
    // fits an hour with 32 filters, with 16, with 8, with none.
    let f = slices(400);
    let plan = Plan::choose(&f);
    let unbudgeted = |given: Given| RunRequest { budget: None, epochs: 100, ..request("1m", given) };
    let limit_s = wgunet::plan::estimate::UNBUDGETED_RUN.as_secs_f64();
    let mut chosen_seen = Vec::new();
    let ranges = [(0.01, 0.06), (0.09, 0.25), (0.4, 1.0), (1.5, 4.0)];
    for per_gflop_s in ranges.map(|(low, high): (f64, f64)| rng.random_range(low.ln()..high.ln()).exp()) {
        let mut formula = Formula { fixed_s: rng.random_range(0.0..0.02), per_gflop_s, timed: vec![] };
        let exact_s = |f: &Formula, e: &wgunet::plan::estimate::Estimate, filters: usize| {
            e.workload.predict(f.step(&ModelConfig { filters, ..model() }, 8), 64, 100).total_s
        };
        let e = estimate(&f, &plan, &unbudgeted(Given::default()), &mut formula).unwrap();
        let context = format!("seed {seed}, {per_gflop_s} s/GFLOP:\n{}", e.describe());
        let expected = [32, 16, 8].into_iter().find(|&filters| exact_s(&formula, &e, filters) <= limit_s).unwrap_or(8);
        assert_eq!((e.shape.filters, e.prediction.steps_per_epoch), (expected, 35), "{context}");
        assert!(e.budget.is_none() && e.impossible.is_none(), "{context}");
        let relative = (e.prediction.total_s - exact_s(&formula, &e, expected)).abs() / e.prediction.total_s;
        assert!(relative < 1e-9, "{context}");
        match &e.fewer_filters {
            None => assert_eq!(expected, 32, "{context}"),
            Some(why) => {
                assert!(why.starts_with("32 are predicted to take "), "{context}");
                assert!(e.describe().contains(&format!("\nfilters {expected}: {why}\n")), "{context}");
                assert!(why.ends_with("--filters 32 trains them anyway"), "{context}");
                let over = exact_s(&formula, &e, 8) > limit_s;
                assert_eq!(why.contains("(even the fewest are: --time-budget fits side and epochs too)"), over);
            }
        }
        // The fewest filters first, the next rung when its steps are short, the rung above the
        // choice when it is predicted within two hours, the choice last.
        let shape = |filters| Shape { side: 64, filters };
        let gflop = |filters| ModelConfig { filters, ..model() }.build(8).flops() as f64 / 1e9;
        let mut wanted = vec![shape(8)];
        // Predicted from the fewest alone: their time scaled with the work.
        let step = |filters| formula.step(&ModelConfig { filters, ..model() }, 8);
        let scaled = |filters| step(8).train_s * gflop(filters) / gflop(8);
        let two_timed = scaled(16) <= budget::MAX_TIMED_STEP_S;
        if two_timed {
            wanted.push(shape(16));
        }
        if let Some(above) = [16, 32].into_iter().find(|&f| f > expected).filter(|&f| !wanted.contains(&shape(f))) {
            let step_s = if two_timed { step(above).train_s } else { scaled(above) };
            let predicted = StepTime { train_s: step_s, infer_s: step_s / 3.0, setup_s: 2.0 };
            if e.workload.predict(predicted, 64, 100).total_s <= 2.0 * limit_s {
                wanted.push(shape(above));
            }
        }
        if !wanted.contains(&e.shape) {
            wanted.push(e.shape);
        }
        assert_eq!(formula.timed, wanted, "{context}");
        chosen_seen.push(e.shape.filters);
        // Filters given are kept, and nothing else is timed.
        formula.timed.clear();
        let given =
            estimate(&f, &plan, &unbudgeted(Given { filters: true, ..Given::default() }), &mut formula).unwrap();
        assert_eq!((given.shape.filters, given.fewer_filters.is_none()), (32, true), "{context}");
        assert_eq!(formula.timed, [Shape { side: 64, filters: 32 }], "{context}");
    }
    assert_eq!(chosen_seen, [32, 16, 8, 8], "seed {seed}: each rung chosen once, and the fewest when none fits");
}

/// `n` slices of 256² with one lesion of 0.05 % of a slice: the plan trains on 128² patches.
fn lesions(n: usize) -> Fingerprint {
    let slice = ImageSummary {
        width: 256,
        height: 256,
        gray: true,
        sixteen_bit: false,
        mean: 0.3,
        std: 0.2,
        structures: vec![vec![33]],
    };
    Fingerprint { classes: 1, images: vec![slice; n], skipped: vec![], intensity: [0.3, 0.2, 0.0, 1.0] }
}

/// A patch run given neither `--time-budget` nor `--epochs` is the run `--time-budget 1h` would
/// choose at the plan's patch (epochs first, then filters), and says so; given `--epochs`, or
/// where not even the floor fits the hour, the filters-only rule decides at the epochs requested.
#[test]
fn patch_runs_without_epochs_spend_the_hour_on_epochs_then_filters() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let f = lesions(200);
    let plan = Plan::choose(&f);
    assert_eq!(plan.input, wgunet::plan::Input::Patches { patch: 128 }, "{}", plan.reasons[0]);
    let patches = |budget: Option<Duration>, given: Given| RunRequest {
        model: ModelConfig { size: 128, filters: 32, ..model() },
        patches: true,
        budget,
        given,
        ..request("1m", Given::default())
    };
    let hour = wgunet::plan::estimate::UNBUDGETED_RUN;
    let mut epochs_seen = Vec::new();
    // From an adapter where 32 filters train 100 epochs within the hour to one where 8 filters
    // do not train 20.
    for per_gflop_s in [(0.0005, 0.002), (0.02, 0.05), (0.3, 0.6), (20.0, 40.0)]
        .map(|(low, high): (f64, f64)| rng.random_range(low.ln()..high.ln()).exp())
    {
        let formula = || Formula { fixed_s: 0.01, per_gflop_s, timed: vec![] };
        let implicit = estimate(&f, &plan, &patches(None, Given::default()), &mut formula()).unwrap();
        let context = format!("seed {seed}, {per_gflop_s} s/GFLOP:\n{}", implicit.describe());
        let side_given = Given { side: true, ..Given::default() };
        let explicit = estimate(&f, &plan, &patches(Some(hour), side_given), &mut formula()).unwrap();
        let given_epochs = Given { epochs: true, ..Given::default() };
        let filters_only = estimate(&f, &plan, &patches(None, given_epochs), &mut formula()).unwrap();
        assert!(filters_only.budget.is_none() && !filters_only.hour_for_patches, "{context}");
        assert_eq!(filters_only.epochs, 20, "{context}");
        let fits = explicit.impossible.is_none();
        if fits {
            assert!(implicit.hour_for_patches, "{context}");
            assert_eq!((implicit.shape, implicit.epochs), (explicit.shape, explicit.epochs), "{context}");
            assert!(implicit.prediction.total_s <= hour.as_secs_f64(), "{context}");
            assert!(
                context.contains("no --time-budget or --epochs: a patch run is given 1h 00m, the most epochs first")
            );
            // Epochs first: fewer than 100 only at the fewest filters.
            assert!(implicit.epochs == 100 || implicit.shape.filters == 8, "{context}");
        } else {
            assert!(!implicit.hour_for_patches && implicit.budget.is_none(), "{context}");
            assert_eq!((implicit.shape, implicit.epochs), (filters_only.shape, 20), "{context}");
        }
        assert_eq!(implicit.shape.side, 128, "{context}");
        epochs_seen.push((implicit.shape.filters, implicit.epochs));
    }
    assert_eq!(epochs_seen[0], (32, 100), "seed {seed}: a fast adapter trains the widest for the most epochs");
    assert_eq!(epochs_seen[3], (8, 20), "seed {seed}: a slow one the fewest filters for train's epochs");
}
