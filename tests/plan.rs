//! `wgunet plan` on small datasets written to a temp folder: tiny lesions call for patches and
//! a Dice-aware loss, large structures for whole slices.

mod common;

use std::path::Path;

use image::{GrayImage, ImageBuffer, Luma};
use wgunet::config::Loss;
use wgunet::data::intensity::IntensityPreset;
use wgunet::data::synth::{self, Lesions};
use wgunet::data::NormaliseKind;
use wgunet::plan::{Fingerprint, Input, Plan};
use wgunet::train::LrSchedule;

use common::TempDir;

/// A fresh dataset folder (empty images/ and masks/), removed when dropped.
fn dataset_dir(name: &str) -> TempDir {
    let dir = TempDir::new(&format!("plan-{name}"));
    std::fs::create_dir_all(dir.path("images")).unwrap();
    std::fs::create_dir_all(dir.path("masks")).unwrap();
    dir
}

/// `count` `side`² slices with a textured background and discs of `radius` at `centres`
/// (fractions of the side), mask 255 inside.
fn write_discs(dir: &Path, count: usize, side: u32, radius: f32, centres: &[(f32, f32)]) {
    for i in 0..count {
        let inside = |x: u32, y: u32| {
            centres.iter().any(|&(cx, cy)| {
                let (dx, dy) = (x as f32 - cx * side as f32 - i as f32, y as f32 - cy * side as f32);
                dx * dx + dy * dy <= radius * radius
            })
        };
        let image = GrayImage::from_fn(side, side, |x, y| {
            Luma([if inside(x, y) { 200 } else { 40 + ((x * 3 + y * 5 + i as u32) % 30) as u8 }])
        });
        let mask = GrayImage::from_fn(side, side, |x, y| Luma([if inside(x, y) { 255 } else { 0 }]));
        image.save(dir.join(format!("images/{i:02}.png"))).unwrap();
        mask.save(dir.join(format!("masks/{i:02}.png"))).unwrap();
    }
}

#[test]
fn tiny_lesions_call_for_patches_and_a_dice_aware_loss() {
    let dir = dataset_dir("tiny");
    // Two discs of radius 3 (29 px, 0.04 % of a 256² slice) per slice.
    write_discs(&dir.0, 6, 256, 3.0, &[(0.25, 0.375), (0.75, 0.625)]);
    let f = Fingerprint::read(&dir.0, 1).unwrap();
    assert_eq!(f.images.len(), 6);
    assert_eq!(f.images[0].structures, [vec![29, 29]], "two 8-connected discs of 29 pixels");
    assert!((f.typical_structure() - 29.0 / 65536.0).abs() < 1e-9, "{}", f.typical_structure());
    let plan = Plan::choose(&f);
    assert_eq!(plan.input, Input::Patches { patch: 128 }, "{}", plan.reasons[0]);
    assert_eq!(plan.loss, Loss::BceDice, "{}", plan.reasons[1]);
    assert_eq!(plan.normalise, NormaliseKind::Zscore, "{}", plan.reasons[2]);
    assert_eq!(plan.lr_schedule, LrSchedule::Poly, "{}", plan.reasons[5]);

    let data = dir.0.to_str().unwrap();
    let out = common::run_wgunet(
        env!("CARGO_BIN_EXE_wgunet"),
        &["plan", "--data", data, "--filters", "4", "--device", "cpu"],
    );
    for line in [
        "6 image/mask pairs read, 0 files left out",
        "sizes: 256×256 (6)",
        "class 1: 12 structures (8-connected), 2.00 per image",
        "input:     128×128 patches at native resolution",
        "loss:      bce+dice",
        "normalise: zscore",
        &format!("train with: wgunet train --data {data} --patch 128 --loss bce+dice --normalise zscore --intensity nnunet --early-stopping-patience 0 --lr-schedule poly --tta (what `train --data` does by default)"),
        // Without --epochs a patch run spends the hour on epochs first: 100 here, in seconds.
        "no --time-budget or --epochs: a patch run is given 1h 00m, the most epochs first",
        "side 128, filters 4, 100 epochs: predicted",
    ] {
        assert!(out.contains(line), "{out}\nlacks: {line}");
    }

    // `train --data` applies the plan (as `--plan` does), but for the choices given on the
    // command line.
    let record = |run: &str, extra: &[&str]| {
        let out_dir = dir.0.join(run);
        let mut args = vec!["train", "--data", data, "--epochs", "1", "--filters", "4", "--device", "cpu"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", out_dir.to_str().unwrap()]);
        let out = common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), &args);
        let json = std::fs::read_to_string(out_dir.join("model.json")).unwrap();
        (out, serde_json::from_str::<serde_json::Value>(&json).unwrap())
    };
    let (out, planned) = record("planned", &[]);
    assert!(out.contains("training on 128x128 patches") && out.contains("loss bce+dice"), "{out}");
    assert!(!out.contains("the command line replaces"), "{out}");
    // The plan, its prediction and the time taken, in the console and the report.
    assert!(out.contains("side 128, filters 4, 1 epochs: predicted") && out.contains("% of the prediction)"), "{out}");
    let report = std::fs::read_to_string(dir.0.join("planned/report.md")).unwrap();
    for line in [
        "## Plan",
        "| input | 128×128 patches at native resolution |",
        "| loss | bce+dice |",
        "| intensity | nnunet |",
        "| early stopping | never |",
        "| lr schedule | poly |",
        "| inference | flip TTA |",
        "## Test split as `wgunet eval` scores it",
        "the run took",
    ] {
        assert!(report.contains(line), "{report}\nlacks: {line}");
    }
    assert_eq!((planned["patch"].as_u64(), planned["model"]["size"].as_u64()), (Some(128), Some(128)), "{planned}");
    assert!(planned["model"]["normalise"].to_string().to_lowercase().contains("zscore"), "{planned}");
    // The plan's inference: flips averaged at the end of training and by eval, unless --no-tta.
    assert_eq!(planned["tta"], serde_json::Value::Bool(true), "{planned}");
    assert!(out.contains("whole test images, in tiles at their own size, with flip TTA"), "{out}");
    let planned_run = dir.0.join("planned");
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--model", planned_run.to_str().unwrap(), "--device", "cpu"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--panels", "0"]);
        common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), &args)
    };
    assert!(eval(&[]).contains("; flip TTA)"), "eval of a planned run does not flip");
    assert!(!eval(&["--no-tta"]).contains("flip TTA"), "eval --no-tta still flips");
    // The training options (the header of train-state.safetensors) carry the planned intensity
    // augmentation.
    let state =
        String::from_utf8_lossy(&std::fs::read(dir.0.join("planned/train-state.safetensors")).unwrap()).into_owned();
    assert!(state.contains(r#"\"intensity\":\"nnunet\""#), "train-state header lacks the planned intensity");
    assert!(state.contains(r#"\"lr_schedule\":\"poly\""#), "train-state header lacks the planned schedule");
    let (out, sized) = record("sized", &["--size", "64", "--loss", "bce"]);
    let report = std::fs::read_to_string(dir.0.join("sized/report.md")).unwrap();
    assert!(report.contains("on the command line (--size, --loss, --filters, --epochs):"), "{report}");
    assert!(!out.contains("patches at the images' own size") && out.contains("loss bce:"), "{out}");
    // The console shows the plan as chosen, then which of its choices the command line replaced.
    assert!(out.contains("the command line replaces the plan's: --size 64, --loss bce\n"), "{out}");
    assert_eq!((sized["patch"].as_u64(), sized["model"]["size"].as_u64()), (None, Some(64)), "{sized}");

    // `--no-plan` trains the seed's recipe: whole slices at --size, [0, 1], BCE, and no plan in
    // the report.
    let (out, seed) = record("seed", &["--no-plan", "--size", "32"]);
    assert!(!out.contains("plan:") && out.contains("loss bce:"), "{out}");
    assert!(!std::fs::read_to_string(dir.0.join("seed/report.md")).unwrap().contains("## Plan"));
    assert_eq!((seed["patch"].as_u64(), seed["model"]["size"].as_u64()), (None, Some(32)), "{seed}");
    assert!(seed["model"]["normalise"].to_string().to_lowercase().contains("unit"), "{seed}");
    assert!(seed.get("tta").is_none(), "{seed}");
}

/// The intensity set follows the filters the time estimate (or `--filters`) gives a whole-slice
/// run: nnU-Net's below 16, the scanner set from 16; `plan` says so once the filters are known.
/// Patch runs keep nnU-Net's at every width.
#[test]
fn wide_whole_slice_models_train_with_the_scanner_intensity_set() {
    let dir = dataset_dir("wide");
    write_discs(&dir.0, 4, 64, 12.0, &[(0.5, 0.5)]);
    let mut plan = Plan::choose(&Fingerprint::read(&dir.0, 1).unwrap());
    assert!(matches!(plan.input, Input::WholeSlice { .. }), "{}", plan.reasons[0]);
    assert_eq!(plan.intensity, IntensityPreset::Nnunet, "{}", plan.reasons[3]);
    assert_eq!(plan.fit_intensity_to(8), None, "8 filters keep nnU-Net's set");
    for filters in [16, 32] {
        let line = plan.fit_intensity_to(filters);
        assert_eq!(plan.intensity, IntensityPreset::Scanner, "{filters} filters: {}", plan.reasons[3]);
        if filters == 16 {
            assert!(line.is_some_and(|l| l.starts_with("intensity: scanner: 16 filters")), "{}", plan.reasons[3]);
        } else {
            assert_eq!(line, None, "already the scanner set");
        }
    }
    assert!(plan.fit_intensity_to(4).is_some_and(|l| l.starts_with("intensity: nnunet")));
    assert!(plan.train_command(&dir.0, plan.input, "").contains("--intensity nnunet"));

    // The same plan on patches: the scanner set cost small structures at every width.
    let mut patches = Plan { input: Input::Patches { patch: 64 }, ..plan.clone() };
    for filters in [8, 16, 32] {
        assert_eq!(patches.fit_intensity_to(filters), None, "{filters} filters on patches");
        assert_eq!(patches.intensity, IntensityPreset::Nnunet, "{filters} filters: {}", patches.reasons[3]);
    }

    let data = dir.0.to_str().unwrap();
    let out = common::run_wgunet(
        env!("CARGO_BIN_EXE_wgunet"),
        &["plan", "--data", data, "--filters", "16", "--epochs", "2", "--device", "cpu"],
    );
    assert!(out.contains("\nintensity: scanner: 16 filters: another scanner's"), "{out}");
}

#[test]
fn large_structures_train_on_whole_slices_with_bce() {
    let dir = dataset_dir("large");
    // One disc of radius 20 in a 64² slice: 1257 px, 31 % of it.
    write_discs(&dir.0, 5, 64, 20.0, &[(0.45, 0.5)]);
    let f = Fingerprint::read(&dir.0, 1).unwrap();
    assert!((0.28..0.33).contains(&f.foreground_share()), "{}", f.foreground_share());
    let plan = Plan::choose(&f);
    assert_eq!(plan.input, Input::WholeSlice { size: 64 }, "{}", plan.reasons[0]);
    assert_eq!(plan.loss, Loss::Bce, "{}", plan.reasons[1]);
    assert_eq!(plan.lr_schedule, LrSchedule::Plateau, "{}", plan.reasons[5]);
}

/// Brain masks are large, but the slices at a volume's ends hold little of it, and mean Dice
/// counts them as much as the rest: the plan keeps them at 64 px too.
#[test]
fn small_foreground_on_a_few_slices_raises_the_whole_slice_side() {
    let dir = dataset_dir("ends");
    // 20 slices with a disc of radius 80 (30 % of a 256² slice), then slices 00 and 01 (10 % of
    // the images) rewritten with one of radius 10 (317 px, 0.48 %): 64 px at 128², 20 at 64².
    write_discs(&dir.0, 20, 256, 80.0, &[(0.5, 0.5)]);
    write_discs(&dir.0, 2, 256, 10.0, &[(0.5, 0.5)]);
    let f = Fingerprint::read(&dir.0, 1).unwrap();
    let small = f.small_image_foreground();
    assert!((small - 317.0 / 65536.0).abs() < 2e-4, "small images' foreground {small}");
    assert!(f.typical_structure() > 0.25, "typical structure {}", f.typical_structure());
    let plan = Plan::choose(&f);
    assert_eq!(plan.input, Input::WholeSlice { size: 128 }, "{}", plan.reasons[0]);
    assert!(plan.reasons[0].contains("95 % of the images with foreground"), "{}", plan.reasons[0]);
    // Mean Dice counts those slices as much as the rest: the per-image Dice term too.
    assert_eq!(plan.loss, Loss::BceDice, "{}", plan.reasons[1]);
    assert!(plan.reasons[1].contains("under 0.48 % of a slice"), "{}", plan.reasons[1]);

    // With one such slice in 20 (5 %), the 95 % that count are the large ones: 64² suffices.
    write_discs(&dir.0, 20, 256, 80.0, &[(0.5, 0.5)]);
    write_discs(&dir.0, 1, 256, 10.0, &[(0.5, 0.5)]);
    let plan = Plan::choose(&Fingerprint::read(&dir.0, 1).unwrap());
    assert_eq!(plan.input, Input::WholeSlice { size: 64 }, "{}", plan.reasons[0]);
    assert_eq!(plan.loss, Loss::Bce, "{}", plan.reasons[1]);
}

#[test]
fn synthetic_small_lesions_call_for_patches() {
    let dir = dataset_dir("synth");
    synth::write_dataset_with(&dir.0, 12, 5, 256, 1, Lesions::Area { min: 0.1, max: 1.0 }).unwrap();
    let f = Fingerprint::read(&dir.0, 1).unwrap();
    let typical = f.typical_structure();
    assert!((0.0008..0.01).contains(&typical), "typical structure {typical}");
    let plan = Plan::choose(&f);
    assert_eq!(plan.input, Input::Patches { patch: 128 }, "{}", plan.reasons[0]);
    assert_eq!(plan.loss, Loss::BceDice, "{}", plan.reasons[1]);
}

#[test]
fn calibrated_sixteen_bit_images_keep_their_scale() {
    let dir = dataset_dir("ct");
    for i in 0..4u32 {
        // The same intensities in every image (a fixed scale), shifted in space only.
        let image: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_fn(48, 48, |x, y| Luma([(((x + i) % 48) * 1000 + y * 100) as u16]));
        let mask = GrayImage::from_fn(48, 48, |x, _| Luma([if (x + i) % 48 < 20 { 255 } else { 0 }]));
        image.save(dir.0.join(format!("images/{i}.png"))).unwrap();
        mask.save(dir.0.join(format!("masks/{i}.png"))).unwrap();
    }
    let f = Fingerprint::read(&dir.0, 1).unwrap();
    assert!(f.images.iter().all(|s| s.sixteen_bit));
    let plan = Plan::choose(&f);
    assert_eq!(plan.normalise, NormaliseKind::Percentile, "{}", plan.reasons[2]);
    assert_eq!(plan.input, Input::WholeSlice { size: 64 }, "{}", plan.reasons[0]);
}

#[test]
fn the_class_with_the_smallest_structures_decides() {
    let dir = dataset_dir("classes");
    let disc = |x: u32, y: u32, (cx, cy): (u32, u32), r: u32| (x.abs_diff(cx).pow(2) + y.abs_diff(cy).pow(2)) <= r * r;
    for i in 0..3 {
        // Class 1 a large disc (11 % of the slice), class 2 two discs of 29 px.
        let id = |x, y| {
            if disc(x, y, (60, 200), 3) || disc(x, y, (200, 60), 3) {
                2
            } else if disc(x, y, (128, 128), 48) {
                1
            } else {
                0
            }
        };
        let image = GrayImage::from_fn(256, 256, |x, y| Luma([30 + 80 * id(x, y) + ((x + y + i) % 9) as u8]));
        image.save(dir.0.join(format!("images/{i}.png"))).unwrap();
        GrayImage::from_fn(256, 256, |x, y| Luma([id(x, y)])).save(dir.0.join(format!("masks/{i}.png"))).unwrap();
    }
    let f = Fingerprint::read(&dir.0, 3).unwrap();
    assert_eq!(f.images[0].structures[1], [29, 29]);
    assert!((f.typical_structure() - 29.0 / 65536.0).abs() < 1e-9, "{}", f.typical_structure());
    let plan = Plan::choose(&f);
    assert_eq!((plan.input, plan.loss), (Input::Patches { patch: 128 }, Loss::Ce), "{:?}", plan.reasons);
    assert!(plan.describe(&dir.0).contains("--classes 3 --patch 128 --loss ce"), "{}", plan.describe(&dir.0));
}

/// Seconds from a printed duration: `8.2s`, `45s`, `4m 10s`, `1h 05m`.
fn seconds(printed: &str) -> f64 {
    printed
        .split_whitespace()
        .map(|part| {
            let (number, unit) = part.split_at(part.len() - 1);
            number.parse::<f64>().unwrap()
                * [("h", 3600.0), ("m", 60.0), ("s", 1.0)].iter().find(|u| u.0 == unit).unwrap().1
        })
        .sum()
}

#[test]
fn a_time_budget_chooses_a_setting_that_fits_it() {
    let dir = dataset_dir("budget");
    // 80² slices with a large disc: whole slices at 64 or 80; 7 training images, a step an epoch.
    // The filters given keep the timing to two small settings; the budget leaves room for a
    // machine twice as slow as an idle 2-core one (a loaded one took 1.6 s a step).
    write_discs(&dir.0, 10, 80, 20.0, &[(0.45, 0.5)]);
    let data = dir.0.to_str().unwrap();
    let args = ["plan", "--data", data, "--device", "cpu", "--filters", "8", "--time-budget", "90s"];
    let out = common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), &args);
    let chosen =
        out.lines().find(|l| l.trim_start().starts_with("side ") && l.contains(" epochs: predicted ")).unwrap();
    let predicted = chosen.split("predicted ").nth(1).unwrap().split(':').next().unwrap();
    assert!(seconds(predicted) <= 90.0, "{out}");
    let numbers: Vec<usize> = chosen.split([' ', ',']).filter_map(|w| w.parse().ok()).take(3).collect();
    let [side, filters, epochs] = numbers[..] else { panic!("{chosen}") };
    assert!([64, 80].contains(&side) && filters == 8 && epochs >= 20, "{out}");
    assert!(out.contains(&format!("--size {side} --filters 8 --epochs {epochs} --loss bce")), "{out}");
    assert!(out.contains("the most epochs first") && out.contains("<- chosen"), "{out}");
}

#[test]
fn a_malformed_time_budget_names_the_flag_and_the_format() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgunet"))
        .args(["plan", "--data", ".", "--time-budget", "20"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("--time-budget") && text.contains("e.g. 90s, 20m, 1h30m or 2h"),
        "{text}"
    );
}
