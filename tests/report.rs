//! Report pictures and report.md: geometry, the overlay's colours pixel by pixel, ordering by
//! Dice, curves from hand-written metrics.csv files, and the links in report.md.

mod common;

use std::path::Path;

use image::{Rgb, RgbImage};
use wgunet::report::{self, Case, PanelLayout, ReportInfo};

const HEADER: &str =
    "epoch,lr,train_loss,test_loss,mean_pixel_accuracy,mean_iou,mean_dice,micro_iou,micro_dice,train_images_per_s";

/// `epochs` rows of a plausible run: falling losses, rising scores, one learning-rate halving.
fn metrics_csv(epochs: usize) -> String {
    let mut csv = format!("{HEADER}\n");
    for e in 1..=epochs {
        let t = e as f64;
        let lr = if e > 12 { 5e-4 } else { 1e-3 };
        let (train, test) = (0.6 / t.sqrt(), 0.65 / t.sqrt() + 0.02);
        let (dice, iou) = (0.95 - 0.5 / t, 0.9 - 0.55 / t);
        csv += &format!("{e},{lr},{train},{test},0.97,{iou},{dice},{iou},{dice},123.4\n");
    }
    csv
}

#[test]
fn panel_is_four_enlarged_tiles_under_a_caption() {
    for (size, scale) in [(16, 8), (48, 3), (128, 1), (200, 1)] {
        let layout = PanelLayout::new(size);
        assert_eq!(layout.scale, scale, "size {size}");
        assert_eq!(layout.tile, size as u32 * scale);
        assert!(layout.tile as usize >= report::MIN_TILE);
        let pixels = size * size;
        let p = report::panel(&vec![0.3; pixels], 1, size, &vec![0.0; pixels], &vec![0.0; pixels], "case");
        assert_eq!((p.width(), p.height()), (layout.width, layout.height));
        assert_eq!(layout.width, 4 * layout.tile + 5 * layout.gap);
        let (x, y) = layout.tile_origin(3);
        assert_eq!(x + layout.tile + layout.gap, layout.width, "the overlay tile is the last, inside the panel");
        assert_eq!(y + layout.tile + layout.gap, layout.height);
    }
}

#[test]
fn overlay_colours_true_positives_false_positives_and_false_negatives_exactly() {
    // truth: the left half; prediction: the top half. So TP top-left, FP top-right,
    // FN bottom-left, TN bottom-right.
    let size = 8;
    let truth: Vec<f32> = (0..size * size).map(|k| if k % size < 4 { 1.0 } else { 0.0 }).collect();
    let prob: Vec<f32> = (0..size * size).map(|k| if k / size < 4 { 0.9 } else { 0.1 }).collect();
    let image = vec![0.5f32; size * size];
    let grey = Rgb([128u8, 128, 128]);
    let p = report::panel(&image, 1, size, &truth, &prob, "hand-made  Dice 0.500");
    let layout = PanelLayout::new(size);

    let colours = [report::TRUE_POSITIVE, report::FALSE_POSITIVE, report::FALSE_NEGATIVE];
    for (i, a) in colours.iter().enumerate() {
        for b in &colours[i + 1..] {
            assert_ne!(report::tint(grey, *a), report::tint(grey, *b), "overlay colours must differ");
        }
    }
    let white = Rgb([255u8, 255, 255]);
    let black = Rgb([0u8, 0, 0]);
    for y in 0..layout.tile {
        for x in 0..layout.tile {
            let (col, row) = ((x / layout.scale) as usize, (y / layout.scale) as usize);
            let (t, pred) = (col < 4, row < 4);
            let at = |tile: u32| {
                let (x0, y0) = layout.tile_origin(tile);
                *p.get_pixel(x0 + x, y0 + y)
            };
            let overlay = match (pred, t) {
                (true, true) => report::tint(grey, report::TRUE_POSITIVE),
                (true, false) => report::tint(grey, report::FALSE_POSITIVE),
                (false, true) => report::tint(grey, report::FALSE_NEGATIVE),
                (false, false) => grey,
            };
            assert_eq!(at(0), grey, "image tile at ({x}, {y})");
            assert_eq!(at(1), if t { white } else { black }, "truth tile at ({x}, {y})");
            assert_eq!(at(2), if pred { white } else { black }, "prediction tile at ({x}, {y})");
            assert_eq!(at(3), overlay, "overlay tile at ({x}, {y})");
        }
    }
    assert_eq!(report::dice(&truth, &prob), 0.5);
}

#[test]
fn panel_shows_rgb_images_in_colour_and_their_overlay_in_grey() {
    let size = 4;
    let pixels = size * size;
    let mut image = vec![0.0f32; 3 * pixels];
    image[..pixels].fill(1.0); // pure red
    let p = report::panel(&image, 3, size, &vec![0.0; pixels], &vec![0.0; pixels], "red");
    let layout = PanelLayout::new(size);
    let (x0, y0) = layout.tile_origin(0);
    assert_eq!(*p.get_pixel(x0, y0), Rgb([255, 0, 0]));
    let (x3, y3) = layout.tile_origin(3);
    assert_eq!(*p.get_pixel(x3, y3), Rgb([76, 76, 76]), "true negatives show the image's luma");
}

#[test]
fn selection_orders_by_dice_and_never_repeats_a_case() {
    let dice = [0.5, 0.9, 0.1, 0.7, f64::NAN];
    assert_eq!(report::select_cases(&dice, 2, 2), (vec![1, 3], vec![4, 2]));
    assert_eq!(report::select_cases(&dice, 4, 4), (vec![1, 3, 0, 2], vec![4]));
    assert_eq!(report::select_cases(&dice, 0, 1), (vec![], vec![4]));
    assert_eq!(report::select_cases(&[], 3, 3), (vec![], vec![]));
}

#[test]
fn contact_sheet_stacks_best_then_worst() {
    let colours = [[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [40, 200, 200]];
    let dice = [0.5, 0.9, 0.1, 0.7, 0.3];
    let rows: Vec<(String, f64, RgbImage)> = colours
        .iter()
        .zip(dice)
        .enumerate()
        .map(|(i, (&c, d))| (format!("case {i}"), d, RgbImage::from_pixel(400, 30, Rgb(c))))
        .collect();
    let sheet = report::contact_sheet(&rows, 2, 2);
    // Walk down a column through every panel and note whose colour appears, in order.
    let mut seen: Vec<usize> = Vec::new();
    for y in 0..sheet.height() {
        if let Some(i) = colours.iter().position(|&c| *sheet.get_pixel(200, y) == Rgb(c)) {
            if seen.last() != Some(&i) {
                seen.push(i);
            }
        }
    }
    assert_eq!(seen, vec![1, 3, 2, 4], "best (0.9, 0.7) then worst (0.1, 0.3)");
    assert!(sheet.width() >= 400);
}

fn check_curves(dir: &Path, name: &str, csv_text: &str) -> RgbImage {
    let csv = dir.join(format!("{name}.csv"));
    std::fs::write(&csv, csv_text).unwrap();
    let png = dir.join(format!("{name}.png"));
    report::curves(&csv, &png).unwrap();
    assert!(!dir.join(format!("{name}.png.tmp")).exists(), "temporary file left behind");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), report::CURVES_SIZE);
    img
}

#[test]
fn curves_draw_one_epoch_and_many() {
    let dir = common::TempDir::new("curves");
    let one = check_curves(&dir, "one", &metrics_csv(1));
    let many = check_curves(&dir, "many", &metrics_csv(20));
    // A diverged run: every value NaN, so only the legend shows the series colours.
    let nan_row = format!("1,0.001{}\n", ",NaN".repeat(8));
    let diverged = check_curves(&dir, "diverged", &format!("{HEADER}\n{nan_row}"));
    let count = |img: &RgbImage, c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    // The series colours (train loss, test loss, mean Dice, mean IoU).
    for colour in [[31, 119, 180], [255, 127, 14], [44, 160, 44], [148, 103, 189]] {
        let (legend, marker, curve) = (count(&diverged, colour), count(&one, colour), count(&many, colour));
        assert!(legend > 0, "{colour:?} is not in the legend");
        assert!(marker > legend, "one epoch draws no marker in {colour:?}");
        assert!(curve > marker + 100, "twenty epochs draw no line in {colour:?}: {curve} pixels");
    }
}

#[test]
fn curves_reject_files_that_are_not_metrics() {
    let dir = common::TempDir::new("bad-curves");
    let png = dir.join("curves.png");
    let header_only = dir.join("header.csv");
    std::fs::write(&header_only, format!("{HEADER}\n")).unwrap();
    let err = format!("{:#}", report::curves(&header_only, &png).unwrap_err());
    assert!(err.contains("no epochs"), "{err}");
    let missing = dir.join("missing.csv");
    std::fs::write(&missing, "epoch,train_loss\n1,0.5\n").unwrap();
    let err = format!("{:#}", report::curves(&missing, &png).unwrap_err());
    assert!(err.contains("test_loss"), "{err}");
    assert!(!png.exists());
}

#[test]
fn report_has_the_configuration_metrics_curves_and_panels() {
    let dir = common::TempDir::new("run");
    let model = r#"{
  "model": { "arch": "unet", "size": 16, "channels": 1, "filters": 4 },
  "loss": "bce",
  "dataset": { "kind": "synthetic", "seed": 7, "count": 20, "train": 0.8 },
  "command": "wgunet train --synthetic 20 --size 16 --out run",
  "epochs_run": 5,
  "best_epoch": 4,
  "wgunet_version": "0.1.0"
}"#;
    std::fs::write(dir.join("model.json"), model).unwrap();
    std::fs::write(dir.join("metrics.csv"), metrics_csv(5)).unwrap();

    let size = 16;
    let truth: Vec<f32> = (0..size * size).map(|k| if k % size < 8 { 1.0 } else { 0.0 }).collect();
    let probs: Vec<Vec<f32>> =
        (0..4).map(|shift| (0..size * size).map(|k| if k % size < 8 + shift { 0.8 } else { 0.2 }).collect()).collect();
    let image = vec![0.4f32; size * size];
    let names = ["slice a", "slice b", "slice c", "slice d"];
    let cases: Vec<Case> =
        names.iter().zip(&probs).map(|(&name, prob)| Case { name, image: &image, truth: &truth, prob }).collect();
    // An earlier evaluation's panels in the same folder: more of them, and a file of the user's.
    report::write_panels(&dir, &cases, 1, size, 2, 3).unwrap();
    std::fs::write(dir.join("panels/best-notes.png"), b"the user's").unwrap();
    let panels = report::write_panels(&dir, &cases, 1, size, 1, 2).unwrap();
    assert_eq!(panels.iter().map(|p| p.group.as_str()).collect::<Vec<_>>(), ["best", "worst", "worst"]);
    let mut files: Vec<String> =
        std::fs::read_dir(dir.join("panels")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["best-1.png", "best-notes.png", "contact_sheet.png", "worst-1.png", "worst-2.png"]);
    assert!(panels[0].caption.starts_with("slice a  Dice 1.000"), "{}", panels[0].caption);
    assert!(panels[1].caption.starts_with("slice d"), "the worst first: {}", panels[1].caption);

    let info = ReportInfo {
        command: String::new(),
        dataset: "synthetic slices (seed 7)".into(),
        pairs: 20,
        train: 16,
        test: 4,
        size,
        channels: 1,
        metrics: vec![("mean Dice".into(), 0.913), ("mean IoU".into(), 0.84)],
        panels: panels.clone(),
    };
    report::write_report(&dir, &info).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for needle in [
        "wgunet train --synthetic 20 --size 16 --out run",
        "| model.arch | unet |",
        "| dataset.seed | 7 |",
        "| 20 | 16 | 4 | 16×16, 1 channel (grey) |",
        "Source: synthetic slices (seed 7)",
        "| metric | value |",
        "| mean Dice | 0.9130 |",
        "| mean IoU | 0.8400 |",
        "](curves.png)",
        "](panels/best-1.png)",
        "](panels/worst-1.png)",
        "](panels/worst-2.png)",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    assert!(!md.contains("| command |"), "the command has its own section, not a table row");
    for target in md.split("](").skip(1).map(|rest| &rest[..rest.find(')').unwrap()]) {
        assert!(dir.join(target).is_file(), "report.md links {target}, which is not there");
    }
    assert!(dir.join("panels/contact_sheet.png").is_file());
}
