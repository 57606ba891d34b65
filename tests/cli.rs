//! The command line end to end on a tiny generated dataset: synth → split → train → eval →
//! predict, as a user runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn wgunet(args: &[&str]) -> String {
    common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), args)
}

fn csv_column(path: &Path, column: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header.iter().position(|h| *h == column).unwrap_or_else(|| panic!("no column {column}"));
    lines.map(|l| l.split(',').nth(i).unwrap().parse().unwrap()).collect()
}

fn json_number(path: &Path, key: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v[key].as_f64().unwrap_or_else(|| panic!("{} has no number {key}", path.display()))
}

/// Bright discs of random size and place on a noisy background, 32×32 — a task a small U-Net
/// learns in a few epochs, so the test can check that training works, not just that it runs.
fn write_disc_dataset(dir: &Path, count: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    for i in 0..count {
        let (cx, cy, r) = (rng.random_range(8.0..24.0), rng.random_range(8.0..24.0), rng.random_range(3.0..8.0f32));
        let mut image = image::GrayImage::new(32, 32);
        let mut mask = image::GrayImage::new(32, 32);
        for (x, y, p) in image.enumerate_pixels_mut() {
            let inside = (x as f32 - cx).hypot(y as f32 - cy) < r;
            p.0[0] = (if inside { 170.0 } else { 70.0 } + rng.random_range(-40.0..40.0f32)) as u8;
            mask.put_pixel(x, y, image::Luma([if inside { 255 } else { 0 }]));
        }
        image.save(dir.join("images").join(format!("{i}.png"))).unwrap();
        mask.save(dir.join("masks").join(format!("{i}.png"))).unwrap();
    }
}

/// 48×40 images with a bright disc (class 1) on the left and a dark square (class 2) on the
/// right, on a noisy grey background; the masks hold the class ids (0, 1, 2), as a user's
/// class-id masks do.
fn write_class_dataset(dir: &Path, count: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_pcg::Pcg64::seed_from_u64(12);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    for i in 0..count {
        let (cx, cy, r) = (rng.random_range(10.0..15.0), rng.random_range(10.0..30.0), rng.random_range(6.0..10.0f32));
        let (sx, sy, side) = (rng.random_range(25..31), rng.random_range(3..19), rng.random_range(12..18));
        let mut image = image::GrayImage::new(48, 40);
        let mut mask = image::GrayImage::new(48, 40);
        for (x, y, p) in image.enumerate_pixels_mut() {
            let disc = (x as f32 - cx).hypot(y as f32 - cy) < r;
            let square = (sx..sx + side).contains(&x) && (sy..sy + side).contains(&y);
            let (level, class) = if disc {
                (200.0, 1)
            } else if square {
                (20.0, 2)
            } else {
                (110.0, 0)
            };
            p.0[0] = (level + rng.random_range(-25.0..25.0f32)) as u8;
            mask.put_pixel(x, y, image::Luma([class]));
        }
        image.save(dir.join("images").join(format!("{i}.png"))).unwrap();
        mask.save(dir.join("masks").join(format!("{i}.png"))).unwrap();
    }
}

/// `wgunet ARGS` that must fail; returns its stderr.
/// Runs wgunet: its exit code and stderr.
fn wgunet_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgunet"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("wgunet runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn wgunet_fails(args: &[&str]) -> String {
    let (code, err) = wgunet_exit(args);
    assert_ne!(code, Some(0), "wgunet {} succeeded:\n{err}", args.join(" "));
    err
}

/// `--classes 3` end to end: train on class-id masks, eval, predict class-id PNGs at native size.
#[test]
fn three_classes_train_eval_predict() {
    let root = common::TempDir::new("classes");
    let data = root.join("data");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    write_class_dataset(&data, 60);

    let run = root.join("run");
    #[rustfmt::skip]
    let out = wgunet(&[
        "train", "--data", &s(&data), "--no-plan", "--classes", "3", "--device", "cpu", "--size", "32", "--filters", "8",
        "--epochs", "8", "--batch", "6", "--lr", "6e-3", "--out", &s(&run),
    ]);
    assert!(out.contains("3 classes (softmax), loss ce") && out.contains("per class, dataset level"), "{out}");
    for f in ["model.json", "best.safetensors", "metrics.csv", "metrics.json", "report.md", "panels/contact_sheet.png"]
    {
        assert!(run.join(f).is_file(), "train did not write {f}");
    }
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model.json")).unwrap()).unwrap();
    assert_eq!((model["model"]["classes"].as_u64(), model["loss"].as_str()), (Some(3), Some("ce")));
    let loss = csv_column(&run.join("metrics.csv"), "train_loss");
    assert!(loss[loss.len() - 1] < 0.5 * loss[0], "training loss did not fall: {loss:?}");

    // Every image has a disc and a square, so predicting background everywhere scores IoU 0 on
    // both foreground classes.
    let out = wgunet(&["eval", "--model", &s(&run), "--device", "cpu", "--panels", "2"]);
    assert!(out.contains("model  mean IoU") && out.contains("native   class"), "{out}");
    let eval = run.join("eval.json");
    let iou = json_number(&eval, "mean_iou");
    assert!(iou > 0.3, "mean IoU {iou} does not beat the all-background predictor (0)");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&eval).unwrap()).unwrap();
    assert_eq!(json["classes"].as_array().map(Vec::len), Some(3), "{json}");
    assert_eq!(json["images"], 18);
    assert_eq!(std::fs::read_to_string(run.join("eval/per_image.csv")).unwrap().lines().count(), 19);
    assert!(run.join("eval/panels/best-1.png").is_file());
    let err = wgunet_fails(&["eval", "--model", &s(&run), "--device", "cpu", "--keep-largest"]);
    assert!(err.contains("--keep-largest") && err.contains("3 classes"), "{err}");

    for (name, extra) in [("plain", &[][..]), ("tiled", &["--tile", "--tta"][..])] {
        let masks = root.join(name);
        let mut args = vec!["predict", "--model", run.to_str().unwrap(), "--device", "cpu"];
        let (input, output) = (s(&data.join("images")), s(&masks));
        args.extend(["--input", &input, "--output", &output]);
        args.extend(extra);
        wgunet(&args);
        assert_eq!(std::fs::read_dir(&masks).unwrap().count(), 60);
        let mut seen = [false; 3];
        for i in 0..5 {
            let predicted = image::open(masks.join(format!("{i}.png"))).unwrap();
            assert_eq!(predicted.color(), image::ColorType::L8, "{name}: not an 8-bit gray PNG");
            let predicted = predicted.to_luma8();
            assert_eq!(predicted.dimensions(), (48, 40), "{name}: not at the image's own size");
            for p in predicted.pixels() {
                assert!(p.0[0] < 3, "{name}: predicted class id {} of 3 classes", p.0[0]);
                seen[usize::from(p.0[0])] = true;
            }
        }
        assert_eq!(seen, [true; 3], "{name}: some class is never predicted");
    }

    // A class id of K or more names the file, the value and the classes (with --strict; else
    // the pair is skipped, see tests/data_faults.rs).
    let bad = root.join("bad");
    write_class_dataset(&bad, 6);
    image::GrayImage::from_fn(48, 40, |x, _| image::Luma([if x == 7 { 3 } else { 0 }]))
        .save(bad.join("masks/4.png"))
        .unwrap();
    #[rustfmt::skip]
    let err = wgunet_fails(&[
        "train", "--data", &s(&bad), "--classes", "3", "--device", "cpu", "--out", &s(&root.join("x")), "--strict",
    ]);
    assert!(err.contains("4.png") && err.contains("class id 3") && err.contains("--classes 4"), "{err}");
}

/// Binary losses with --classes, ce without, and more classes than allowed say what to use.
#[test]
fn class_options_that_do_not_fit_are_clear_errors() {
    let root = common::TempDir::new("class-errors");
    let out = root.join("run");
    let out = out.to_str().unwrap();
    let err = wgunet_fails(&["train", "--classes", "3", "--loss", "bce+dice", "--out", out]);
    assert!(err.contains("--loss bce+dice is for binary masks") && err.contains("--loss ce"), "{err}");
    let err = wgunet_fails(&["train", "--loss", "ce", "--out", out]);
    assert!(err.contains("--classes K"), "{err}");
    let err = wgunet_fails(&["info", "--classes", "256"]);
    assert!(err.contains("--classes must be 1") && err.contains("255"), "{err}");
    let err = wgunet_fails(&["train", "--classes", "6", "--out", out]);
    assert!(err.contains("synthetic slices have 1") && err.contains("not 6"), "{err}");
    let err = wgunet_fails(&["synth", "--classes", "5", "--out", out]);
    assert!(err.contains("not 5"), "{err}");
}

/// `synth --classes 3` writes class-id masks; train without --data uses the same slices, and
/// eval rebuilds their test split.
#[test]
fn synthetic_classes_train_and_eval() {
    let root = common::TempDir::new("synth-classes");
    let data = root.join("data");
    wgunet(&["synth", "--out", data.to_str().unwrap(), "--count", "8", "--size", "32", "--classes", "3"]);
    let mut seen = [0usize; 256];
    for entry in std::fs::read_dir(data.join("masks")).unwrap() {
        let mask = image::open(entry.unwrap().path()).unwrap().to_luma8();
        mask.pixels().for_each(|p| seen[usize::from(p.0[0])] += 1);
    }
    assert!(seen[0] > 0 && seen[1] > 0 && seen[2] > 0, "tumour or ventricles missing: {:?}", &seen[..4]);
    assert_eq!(seen[3..].iter().sum::<usize>(), 0, "class ids of 3 or more");

    let run = root.join("run");
    let run = run.to_str().unwrap();
    #[rustfmt::skip]
    wgunet(&[
        "train", "--classes", "3", "--synth-count", "10", "--device", "cpu", "--size", "16", "--filters", "2",
        "--epochs", "1", "--batch", "4", "--out", run,
    ]);
    let out = wgunet(&["eval", "--model", run, "--device", "cpu", "--panels", "2"]);
    assert!(out.contains("(synthetic)") && out.contains("native   class"), "{out}");
    let eval = Path::new(run).join("eval.json");
    assert_eq!(json_number(&eval, "images"), 3.0);
}

#[test]
fn synth_writes_pairs() {
    let root = common::TempDir::new("synth");
    let s = root.to_str().unwrap();
    let out = wgunet(&["synth", "--out", s, "--count", "5", "--size", "32"]);
    assert!(out.contains("wrote 5"), "{out}");
    assert_eq!(std::fs::read_dir(root.join("images")).unwrap().count(), 5);
    assert_eq!(std::fs::read_dir(root.join("masks")).unwrap().count(), 5);
}

#[test]
fn split_train_eval_predict() {
    let root = common::TempDir::new("e2e");
    let data = root.join("data");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    write_disc_dataset(&data, 60);

    let lists = root.join("lists");
    let out = wgunet(&["split", "--data", &s(&data), "--train", "0.7", "--seed", "1", "--out", &s(&lists)]);
    assert!(out.contains("found 60 pairs"), "{out}");
    let count = |f: &str| std::fs::read_to_string(lists.join(f)).unwrap().lines().count();
    assert_eq!((count("train.txt"), count("test.txt")), (42, 18));

    let run = root.join("run");
    let out = wgunet(&[
        "train",
        "--train-list",
        &s(&lists.join("train.txt")),
        "--test-list",
        &s(&lists.join("test.txt")),
        "--device",
        "cpu",
        "--size",
        "32",
        "--filters",
        "4",
        "--epochs",
        "20",
        "--batch",
        "6",
        "--lr",
        "3e-3",
        "--out",
        &s(&run),
    ]);
    assert!(out.contains("mean Dice"), "{out}");
    for f in
        ["model.json", "best.safetensors", "last.safetensors", "metrics.csv", "metrics.json", "train.txt", "test.txt"]
    {
        assert!(run.join(f).is_file(), "train did not write {f}");
    }
    let loss = csv_column(&run.join("metrics.csv"), "train_loss");
    assert_eq!(loss.len(), 20);
    assert!(loss[19] < 0.5 * loss[0], "training loss did not fall: {loss:?}");

    // An all-background prediction scores IoU 1 on empty masks and 0 elsewhere (every disc
    // image here has a mask, so it scores 0).
    let tests = wgunet::data::split::read_list(&lists.join("test.txt")).unwrap();
    let pre = wgunet::data::load::Preprocess { size: 32, channels: 1, normalise: wgunet::data::Normalisation::Unit };
    let samples = wgunet::data::load::load_all(&tests, &pre).unwrap();
    let background_iou =
        samples.iter().filter(|s| s.mask.iter().all(|&m| m == 0.0)).count() as f64 / samples.len() as f64;

    let out = wgunet(&["eval", "--model", &s(&run), "--device", "cpu"]);
    assert!(out.contains("mean pixel accuracy") && out.contains("mean IoU") && out.contains("mean Dice"), "{out}");
    let iou = json_number(&run.join("eval.json"), "mean_iou");
    assert!(iou > background_iou + 0.1, "mean IoU {iou} does not beat all-background {background_iou}");
    assert_eq!(json_number(&run.join("eval.json"), "images") as usize, 18);
    // With --out the metrics go there, and the run's eval.json stays as it was.
    let kept = std::fs::read(run.join("eval.json")).unwrap();
    let elsewhere = root.join("elsewhere");
    wgunet(&["eval", "--model", &s(&run), "--device", "cpu", "--panels", "0", "--out", &s(&elsewhere)]);
    assert_eq!(json_number(&elsewhere.join("eval.json"), "images") as usize, 18);
    assert!(elsewhere.join("per_image.csv").is_file());
    assert_eq!(std::fs::read(run.join("eval.json")).unwrap(), kept, "eval --out rewrote the run's eval.json");

    // Without best.safetensors a run is scored with its last epoch's weights, and says so.
    let best = run.join("best.safetensors");
    std::fs::rename(&best, root.join("best.safetensors")).unwrap();
    let out = wgunet(&["eval", "--model", &s(&run), "--device", "cpu", "--json", &s(&root.join("last.json"))]);
    assert!(out.contains("has no best.safetensors: using last.safetensors"), "{out}");
    assert_eq!(json_number(&root.join("last.json"), "images") as usize, 18);
    std::fs::rename(root.join("best.safetensors"), &best).unwrap();
    let out = wgunet(&["eval", "--model", &s(&run), "--device", "cpu", "--json", &s(&root.join("best.json"))]);
    assert!(!out.contains("no best.safetensors"), "{out}");

    let masks = root.join("masks");
    wgunet(&[
        "predict",
        "--model",
        &s(&run),
        "--input",
        &s(&data.join("images")),
        "--output",
        &s(&masks),
        "--device",
        "cpu",
    ]);
    let first = std::fs::read_dir(data.join("images")).unwrap().next().unwrap().unwrap().path();
    let predicted = image::open(masks.join(first.file_name().unwrap()).with_extension("png")).unwrap().to_luma8();
    let original = image::open(&first).unwrap();
    assert_eq!(predicted.dimensions(), (original.width(), original.height()));
    assert!(predicted.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255), "predicted mask is not 0/255");
    assert_eq!(std::fs::read_dir(&masks).unwrap().count(), 60);
}

#[test]
fn bad_size_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_wgunet")).args(["info", "--size", "100"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a multiple of 16") && err.contains("try 96"), "{err}");
}

#[test]
fn compare_tabulates_each_architecture() {
    let root = common::TempDir::new("compare");
    let data = root.join("data");
    write_disc_dataset(&data, 24);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = root.join("cmp");
    let text = wgunet(&[
        "compare",
        "--archs",
        "unet,resunet",
        "--data",
        &s(&data),
        "--device",
        "cpu",
        "--size",
        "16",
        "--filters",
        "2",
        "--epochs",
        "2",
        "--batch",
        "4",
        "--out",
        &s(&out),
    ]);
    assert!(text.contains("| unet |") && text.contains("| resunet |"), "{text}");
    let csv = std::fs::read_to_string(out.join("comparison.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[1].starts_with("unet,") && rows[2].starts_with("resunet,"), "{csv}");
    // Both runs used the same split.
    let list = |arch: &str| std::fs::read_to_string(out.join(arch).join("test.txt")).unwrap();
    assert_eq!(list("unet"), list("resunet"));
    assert!(out.join("comparison.md").is_file());
}

/// Numbers outside their range are refused while parsing (exit code 2, clap's usage error), with
/// the valid range in the message, before any data is read or any adapter opened.
#[test]
fn out_of_range_numbers_are_refused_at_parse_time() {
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--lr", "nan"], "finite number above 0"),
        (&["train", "--lr", "0"], "finite number above 0"),
        (&["train", "--lr=-1e-3"], "finite number above 0"),
        (&["train", "--lr", "inf"], "finite number above 0"),
        (&["train", "--batch", "0"], "at least 1"),
        (&["train", "--epochs", "0"], "at least 1"),
        (&["train", "--max-images", "0"], "at least 1"),
        (&["train", "--train", "1.5"], "open interval (0, 1)"),
        (&["train", "--train", "0"], "open interval (0, 1)"),
        (&["train", "--dropout", "1"], "[0, 1)"),
        (&["split", "--data", "x", "--out", "y", "--train", "1"], "open interval (0, 1)"),
        (&["bench", "--steps", "0"], "at least 1"),
        (&["eval", "--model", "x", "--batch", "0"], "at least 1"),
    ];
    for (args, range) in cases {
        let (code, err) = wgunet_exit(args);
        assert_eq!(code, Some(2), "wgunet {} should be a usage error:\n{err}", args.join(" "));
        assert!(err.contains(range), "wgunet {}: the message should give the range '{range}':\n{err}", args.join(" "));
    }
}

/// Without XDG_RUNTIME_DIR (servers, containers) the driver says nothing about it: the binary
/// gives it a private folder before opening the adapter, and removes it when it ends (also after
/// clap's help and usage errors).
#[test]
fn no_driver_noise_without_xdg_runtime_dir() {
    // (XDG_RUNTIME_DIR, arguments, exit code): 2 is clap's for a usage error.
    for (value, args, code) in [
        (None, &["devices"][..], 0),
        (Some("/nonexistent/wgunet-runtime"), &["devices"][..], 0),
        (None, &["--help"][..], 0),
        (None, &["train", "--no-such-option"][..], 2),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wgunet"));
        command.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        match value {
            None => command.env_remove("XDG_RUNTIME_DIR"),
            Some(v) => command.env("XDG_RUNTIME_DIR", v),
        };
        let child = command.spawn().expect("wgunet runs");
        let folder = std::env::temp_dir().join(format!("wgunet-runtime-{}", child.id()));
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "wgunet {args:?}:\n{err}");
        assert!(!err.contains("XDG_RUNTIME_DIR"), "driver noise with XDG_RUNTIME_DIR={value:?}:\n{err}");
        assert!(!folder.exists(), "wgunet {args:?} left {}", folder.display());
    }
}

/// `--patch`: the model's side is the patch's; each epoch is scored on test patches, then the
/// whole test images in tiles at their own size; eval and predict tile the model by default.
#[test]
fn patch_training_scores_and_predicts_whole_images_in_tiles() {
    let root = common::TempDir::new("patch");
    let data = root.join("data");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    write_disc_dataset(&data, 40);
    let run = root.join("run");
    let out = wgunet(&[
        "train",
        "--data",
        &s(&data),
        "--no-plan",
        "--device",
        "cpu",
        "--filters",
        "4",
        "--seed",
        "3",
        "--patch",
        "16",
        "--epochs",
        "15",
        "--batch",
        "6",
        "--lr",
        "3e-3",
        "--out",
        &s(&run),
    ]);
    assert!(out.contains("training on 16x16 patches at the images' own size"), "{out}");
    assert!(out.contains("test split, one patch per image") && out.contains("whole test images, in tiles"), "{out}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model.json")).unwrap()).unwrap();
    assert_eq!((record["patch"].as_u64(), record["model"]["size"].as_u64()), (Some(16), Some(16)), "{record}");
    let loss = csv_column(&run.join("metrics.csv"), "train_loss");
    assert!(loss[14] < 0.6 * loss[0], "training loss did not fall: {loss:?}");

    // The whole 32×32 test images, in tiles: every disc image has foreground, so an
    // all-background prediction scores IoU 0.
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(eval["inference"]["tile"], serde_json::Value::Bool(true), "{eval}");
    let native_iou = eval["native"]["mean_iou"].as_f64().unwrap();
    assert!(native_iou > 0.3, "native mean IoU {native_iou} after patch training: {eval}");

    // Without --tile, eval and predict still tile a patch-trained model.
    let json = root.join("again.json");
    wgunet(&["eval", "--model", &s(&run), "--device", "cpu", "--json", &s(&json)]);
    assert_eq!(json_number(&json, "mean_iou"), eval["mean_iou"].as_f64().unwrap());
    let masks = root.join("masks");
    let input = data.join("images").join("0.png");
    wgunet(&["predict", "--model", &s(&run), "--input", &s(&input), "--output", &s(&masks), "--device", "cpu"]);
    let predicted = image::open(masks.join("0.png")).unwrap().to_luma8();
    assert_eq!(predicted.dimensions(), (32, 32));

    let err =
        wgunet_fails(&["train", "--device", "cpu", "--patch", "16", "--epochs", "1", "--out", &s(&root.join("x"))]);
    assert!(err.contains("--patch trains on images at their own size: give --data"), "{err}");
    let err = wgunet_fails(&["train", "--data", &s(&data), "--patch", "16", "--size", "32"]);
    assert!(err.contains("--size") && err.contains("--patch"), "{err}");
}

/// `train --folds 3`: three runs on disjoint watched folds of the training part, each and their
/// ensemble scored on the same held-out test split, tabulated in folds.csv.
#[test]
fn folds_train_each_fold_and_score_the_ensemble_on_the_test_split() {
    let root = common::TempDir::new("folds");
    let data = root.join("data");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    write_disc_dataset(&data, 30);
    let out = root.join("cv");
    #[rustfmt::skip]
    let stdout = wgunet(&[
        "train", "--data", &s(&data), "--no-plan", "--folds", "3", "--device", "cpu", "--size", "32", "--filters", "4",
        "--epochs", "3", "--batch", "6", "--lr", "3e-3", "--out", &s(&out),
    ]);
    assert!(stdout.contains("the 3 folds as one ensemble") && stdout.contains("ensemble of 3 models"), "{stdout}");
    let list = |p: PathBuf| wgunet::data::read_list(&p).unwrap();
    let (train, test) = (list(out.join("train.txt")), list(out.join("test.txt")));
    assert_eq!((train.len(), test.len()), (21, 9));
    assert!(train.iter().all(|p| !test.contains(p)), "a test pair is in the training part");
    let mut watched = Vec::new();
    for fold in 1..=3 {
        let run = out.join(format!("fold-{fold}"));
        let (fold_train, fold_watch) = (list(run.join("fold-train.txt")), list(run.join("fold-watch.txt")));
        assert_eq!(fold_train.len() + fold_watch.len(), 21);
        assert!(fold_watch.iter().all(|p| !fold_train.contains(p)), "fold {fold} trains on what it watches");
        watched.extend(fold_watch);
        assert!(run.join("best.safetensors").is_file() && run.join("test-eval/eval.json").is_file());
    }
    watched.sort();
    let mut all = train.clone();
    all.sort();
    assert_eq!(watched, all, "the folds do not partition the training part");
    // folds.csv repeats each eval's native mean Dice.
    let dice = csv_column(&out.join("folds.csv"), "mean_dice");
    let native = |p: PathBuf| {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["native"]["mean_dice"].as_f64().unwrap()
    };
    let mut expected: Vec<f64> = (1..=3).map(|f| native(out.join(format!("fold-{f}/test-eval/eval.json")))).collect();
    expected.push(native(out.join("ensemble-eval/eval.json")));
    assert_eq!(dice.len(), 4);
    for (d, e) in dice.iter().zip(&expected) {
        assert!((d - e).abs() < 1e-4, "folds.csv {dice:?} against the evals {expected:?}");
    }
    assert!(std::fs::read_to_string(out.join("folds.md")).unwrap().contains("Folds' mean Dice"));
    let err = wgunet_fails(&["train", "--folds", "3", "--device", "cpu", "--out", &s(&root.join("x"))]);
    assert!(err.contains("--data"), "{err}");
}

/// `wgunet shift`: each image through the shift (8-bit rounding aside), each mask byte for byte.
#[test]
fn shift_writes_shifted_images_and_the_same_masks() {
    let root = common::TempDir::new("shift");
    let (data, out) = (root.join("data"), root.join("shifted"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    write_disc_dataset(&data, 3);
    #[rustfmt::skip]
    let stdout = wgunet(&[
        "shift", "--data", &s(&data), "--gamma", "1.6", "--contrast", "2", "--bias", "0.2", "--out", &s(&out),
    ]);
    assert!(stdout.contains("wrote 3 pairs"), "{stdout}");
    let shift = wgunet::data::shift::Shift { gamma: 1.6, contrast: 2.0, bias: 0.2 };
    for i in 0..3 {
        let name = format!("{i}.png");
        let read = |p: PathBuf| image::open(p).unwrap().to_luma8();
        let (before, after) = (read(data.join("images").join(&name)), read(out.join("images").join(&name)));
        assert_eq!(before.dimensions(), after.dimensions());
        for (x, y, p) in before.enumerate_pixels() {
            let expected = shift.apply(f32::from(p.0[0]) / 255.0, (x, y), before.dimensions()) * 255.0;
            let got = f32::from(after.get_pixel(x, y).0[0]);
            assert!((got - expected).abs() <= 1.0, "pixel ({x}, {y}) of {name}: {got} for {expected}");
        }
        let mask = |d: &Path| std::fs::read(d.join("masks").join(&name)).unwrap();
        assert_eq!(mask(&data), mask(&out), "mask {name} changed");
    }
}

/// `--intensity` (`nnunet`) and `--intensity scanner` each change what training sees (same
/// seed, another loss) and are recorded with the run: resumed without the flag, a run continues
/// with its preset, exactly as an uninterrupted one.
#[test]
fn intensity_augmentation_changes_training_and_is_recorded() {
    let root = common::TempDir::new("intensity");
    let data = root.join("data");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    write_disc_dataset(&data, 16);
    let loss = |name: &str, extra: &[&str]| {
        let run = root.join(name);
        let mut args =
            vec!["train".to_string(), "--data".into(), s(&data), "--no-plan".into(), "--out".into(), s(&run)];
        for a in ["--device", "cpu", "--size", "32", "--filters", "4", "--batch", "4", "--seed", "5"] {
            args.push(a.into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        wgunet(&args.iter().map(String::as_str).collect::<Vec<_>>());
        csv_column(&run.join("metrics.csv"), "train_loss")
    };
    let longer = loss("longer", &["--intensity", "scanner", "--epochs", "3"]);
    let (plain, again) = (loss("plain", &["--epochs", "2"]), loss("again", &["--epochs", "2"]));
    let nnunet = loss("nnunet", &["--intensity", "--epochs", "2"]);
    let changed = loss("changed", &["--intensity", "scanner", "--epochs", "2"]);
    assert_eq!(plain, again, "the same seed trained differently");
    assert_ne!(plain, nnunet, "--intensity left training unchanged");
    assert_ne!(plain, changed, "--intensity scanner left training unchanged");
    assert_ne!(nnunet, changed, "--intensity scanner trained as --intensity nnunet");
    wgunet(&["train", "--resume", &s(&root.join("changed")), "--epochs", "3", "--device", "cpu"]);
    assert_eq!(csv_column(&root.join("changed").join("metrics.csv"), "train_loss"), longer);
}
