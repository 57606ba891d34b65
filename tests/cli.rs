//! The command line end to end on a tiny generated dataset: synth → split → train → eval →
//! predict, as a user runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn wgunet(args: &[&str]) -> String {
    common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), args)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgunet-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

#[test]
fn synth_writes_pairs() {
    let root = temp_dir("synth");
    let s = root.to_str().unwrap();
    let out = wgunet(&["synth", "--out", s, "--count", "5", "--size", "32"]);
    assert!(out.contains("wrote 5"), "{out}");
    assert_eq!(std::fs::read_dir(root.join("images")).unwrap().count(), 5);
    assert_eq!(std::fs::read_dir(root.join("masks")).unwrap().count(), 5);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn split_train_eval_predict() {
    let root = temp_dir("e2e");
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
    let pre = wgunet::data::load::Preprocess { size: 32, channels: 1 };
    let samples = wgunet::data::load::load_all(&tests, &pre).unwrap();
    let background_iou =
        samples.iter().filter(|s| s.mask.iter().all(|&m| m == 0.0)).count() as f64 / samples.len() as f64;

    let out = wgunet(&["eval", "--model", &s(&run), "--device", "cpu"]);
    assert!(out.contains("mean pixel accuracy") && out.contains("mean IoU") && out.contains("mean Dice"), "{out}");
    let iou = json_number(&run.join("eval.json"), "mean_iou");
    assert!(iou > background_iou + 0.1, "mean IoU {iou} does not beat all-background {background_iou}");
    assert_eq!(json_number(&run.join("eval.json"), "images") as usize, 18);

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
    let _ = std::fs::remove_dir_all(&root);
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
    let root = temp_dir("compare");
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
    let _ = std::fs::remove_dir_all(&root);
}
