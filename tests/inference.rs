//! `eval` and `predict` beyond the model's own data: overlap-tile inference at native size,
//! flip test-time augmentation, keeping the largest component, and a model trained on gray
//! synthetic MRI slices evaluated on a Pratheepan-style tree of colour photos of any size.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wgunet::data::synth;
use wgunet::infer::postprocess::keep_largest_component;
use wgunet::infer::tiling::{Blend, TilePlan};
use wgunet::infer::tta::Flip;
use wgunet::infer::{self, EvalData, EvalOptions, InferOptions, LoadedModel, Segmenter};
use wgunet::DeviceChoice;

use common::TempDir;

const SIZE: usize = 32;

/// Below cargo's scratch folder for integration tests; each test removes its own folder.
fn wgunet(args: &[&str]) -> String {
    common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), args)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn device() -> DeviceChoice {
    std::env::var("WGUNET_TEST_DEVICE").unwrap_or_else(|_| "cpu".into()).parse().unwrap()
}

/// One small grayscale model for every test: 32 px, F 4, trained briefly on synthetic slices.
fn trained_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        // Shared by the tests of this process, so kept when they end: under Cargo's scratch
        // space for tests (target/tmp).
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("inference-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        wgunet(&[
            "train",
            "--device",
            "cpu",
            "--synth-count",
            "60",
            "--size",
            "32",
            "--filters",
            "4",
            "--epochs",
            "8",
            "--batch",
            "6",
            "--lr",
            "3e-3",
            "--out",
            &s(&dir),
        ]);
        dir
    })
}

fn model() -> LoadedModel {
    LoadedModel::open(trained_run(), &device()).unwrap()
}

/// Synthetic slice `index` as a `[1, 32, 32]` image.
fn slice(index: usize) -> Vec<f32> {
    synth::samples(11, index + 1, SIZE).pop().unwrap().image
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn tiled_options(overlap: f64, blend: Blend) -> InferOptions {
    InferOptions { tile: true, overlap, blend, batch: 3, ..InferOptions::default() }
}

#[test]
fn tiles_covering_the_image_exactly_equal_running_each_quarter() {
    let model = model();
    // A 64×64 image made of four different slices: exactly 2×2 tiles.
    let quarters: Vec<Vec<f32>> = (0..4).map(slice).collect();
    let mut image = vec![0.0f32; 64 * 64];
    for (q, quarter) in quarters.iter().enumerate() {
        let (y0, x0) = (q / 2 * SIZE, q % 2 * SIZE);
        for y in 0..SIZE {
            image[(y0 + y) * 64 + x0..(y0 + y) * 64 + x0 + SIZE].copy_from_slice(&quarter[y * SIZE..(y + 1) * SIZE]);
        }
    }
    let plain = Segmenter::new(&model, InferOptions::default()).unwrap();
    let refs: Vec<&[f32]> = quarters.iter().map(Vec::as_slice).collect();
    let direct = plain.probabilities(&refs).unwrap();
    let tiled = Segmenter::new(&model, tiled_options(0.0, Blend::Constant)).unwrap().tiled(&image, 64, 64).unwrap();
    assert_eq!(tiled.len(), 64 * 64);
    for (q, want) in direct.iter().enumerate() {
        let (y0, x0) = (q / 2 * SIZE, q % 2 * SIZE);
        let got: Vec<f32> =
            (0..SIZE).flat_map(|y| tiled[(y0 + y) * 64 + x0..(y0 + y) * 64 + x0 + SIZE].to_vec()).collect();
        let diff = max_abs_diff(&got, want);
        assert!(diff <= 1e-6, "quarter {q}: tiled differs from direct by {diff}");
    }
    // The quarters really differ, so a misplaced tile would show.
    assert!(max_abs_diff(&direct[0], &direct[3]) > 1e-3);

    // With overlap and a Gaussian window the map is a blend, still a probability everywhere.
    let blended = Segmenter::new(&model, tiled_options(0.5, Blend::Gaussian)).unwrap().tiled(&image, 64, 64).unwrap();
    assert!(blended.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(max_abs_diff(&blended, &tiled) > 0.0, "overlapping tiles changed nothing");
}

#[test]
fn an_image_smaller_than_a_tile_is_padded_by_reflection() {
    let model = model();
    let (h, w) = (20, 27);
    let full = slice(5);
    let image: Vec<f32> = (0..h).flat_map(|y| full[y * SIZE..y * SIZE + w].to_vec()).collect();
    let seg = Segmenter::new(&model, tiled_options(0.25, Blend::Gaussian)).unwrap();
    let got = seg.tiled(&image, h, w).unwrap();
    let plan = TilePlan::new(h, w, SIZE, 0.25).unwrap();
    let padded = plan.cut(&image, 1, 0);
    let whole = seg.probabilities(&[&padded]).unwrap().pop().unwrap();
    let want: Vec<f32> = (0..h).flat_map(|y| whole[y * SIZE..y * SIZE + w].to_vec()).collect();
    assert!(max_abs_diff(&got, &want) <= 1e-6);
}

/// The mean over the four mirrorings, each output flipped back, commutes with every flip
/// whatever the model: TTA(flip(x)) = flip(TTA(x)). A forgotten input flip or output flip
/// breaks this (a model's output is not flip-equivariant by itself).
#[test]
fn tta_is_flip_equivariant() {
    let model = model();
    let tta = Segmenter::new(&model, InferOptions { tta: Some(true), ..InferOptions::default() }).unwrap();
    let plain = Segmenter::new(&model, InferOptions::default()).unwrap();
    let x = slice(2);
    let flipped: Vec<Vec<f32>> = Flip::ALL.iter().map(|f| f.apply(&x, SIZE, SIZE)).collect();
    let refs: Vec<&[f32]> = flipped.iter().map(Vec::as_slice).collect();
    let with_tta = tta.probabilities(&refs).unwrap();
    for (f, map) in Flip::ALL.iter().zip(&with_tta) {
        let diff = max_abs_diff(map, &f.apply(&with_tta[0], SIZE, SIZE));
        assert!(diff <= 1e-6, "TTA of the {f:?}-flipped image is not the flipped TTA ({diff})");
    }
    // By hand: the mean of the plain outputs on the flipped inputs, flipped back.
    let plain_maps = plain.probabilities(&refs).unwrap();
    let back: Vec<Vec<f32>> = Flip::ALL.iter().zip(&plain_maps).map(|(f, m)| f.apply(m, SIZE, SIZE)).collect();
    let by_hand: Vec<f32> = (0..SIZE * SIZE).map(|k| back.iter().map(|m| m[k]).sum::<f32>() / 4.0).collect();
    assert!(max_abs_diff(&with_tta[0], &by_hand) <= 1e-6);
    // This model is not equivariant on its own, so the check above has teeth.
    assert!(max_abs_diff(&plain_maps[1], &Flip::Horizontal.apply(&plain_maps[0], SIZE, SIZE)) > 1e-4);
}

/// For an image symmetric under both flips every flipped copy is the image itself, so TTA is
/// the plain output averaged with its own mirror images, which is symmetric too.
#[test]
fn tta_of_a_symmetric_image_is_the_symmetrised_plain_output() {
    let model = model();
    // The top-left quarter of a slice mirrored into the other three.
    let x = slice(3);
    let fold = |i: usize| i.min(SIZE - 1 - i);
    let symmetric: Vec<f32> = (0..SIZE * SIZE).map(|k| x[fold(k / SIZE) * SIZE + fold(k % SIZE)]).collect();
    for f in Flip::ALL {
        assert!(f.apply(&symmetric, SIZE, SIZE) == symmetric, "the test image is not symmetric under {f:?}");
    }
    let plain =
        Segmenter::new(&model, InferOptions::default()).unwrap().probabilities(&[&symmetric]).unwrap().remove(0);
    let tta = Segmenter::new(&model, InferOptions { tta: Some(true), ..InferOptions::default() })
        .unwrap()
        .probabilities(&[&symmetric])
        .unwrap()
        .remove(0);
    let mirrors: Vec<Vec<f32>> = Flip::ALL.iter().map(|f| f.apply(&plain, SIZE, SIZE)).collect();
    let symmetrised: Vec<f32> = (0..SIZE * SIZE).map(|k| mirrors.iter().map(|m| m[k]).sum::<f32>() / 4.0).collect();
    assert!(max_abs_diff(&tta, &symmetrised) <= 1e-6);
    for f in Flip::ALL {
        assert!(max_abs_diff(&f.apply(&tta, SIZE, SIZE), &tta) <= 1e-6);
    }
}

/// Scores computed on the CPU from probability maps match the metrics kernel's on the GPU.
#[test]
fn eval_scores_match_the_gpu_evaluator() {
    let run = trained_run();
    let out = TempDir::new("inference-eval-split");
    let options = EvalOptions {
        data: EvalData::RunTestSplit,
        device: device(),
        infer: InferOptions::default(),
        panels: 0,
        out: Some(out.to_path_buf()),
        json: Some(out.join("eval.json")),
        ensemble: Vec::new(),
    };
    let report = infer::eval(run, &options).unwrap();
    let model = model();
    // Batches of 6 split the 18 test slices evenly, so no padding image enters the GPU's loss.
    let samples: Vec<_> = synth::samples(42, 60, SIZE).split_off(42);
    let gpu = model.evaluator(samples.len(), 6).unwrap().evaluate(&model.gpu, &samples).unwrap();
    assert_eq!(report.model.images, 18);
    for (cpu, gpu, what) in [
        (report.model.mean_pixel_accuracy, gpu.mean_pixel_accuracy, "accuracy"),
        (report.model.mean_iou, gpu.mean_iou, "IoU"),
        (report.model.mean_dice, gpu.mean_dice, "Dice"),
        (report.model.micro_dice, gpu.micro_dice, "micro Dice"),
    ] {
        assert!((cpu - gpu).abs() < 1e-3, "{what}: CPU {cpu} vs GPU {gpu}");
    }
    assert!((report.model.loss - gpu.loss).abs() < 1e-3 * gpu.loss, "loss: {} vs {}", report.model.loss, gpu.loss);
    // Synthetic slices are at the model's size: native scores are the same.
    assert_eq!(report.native.mean_dice, report.model.mean_dice);
    assert!(!out.join("panels").exists(), "--panels 0 drew panels");
    assert_eq!(std::fs::read_to_string(out.join("per_image.csv")).unwrap().lines().count(), 19);
}

/// A skin-like photo: an orange ellipse on a noisy green-blue background, and its mask.
fn photo(w: u32, h: u32, seed: u32) -> (image::RgbImage, image::GrayImage) {
    let inside = |x: u32, y: u32| {
        let (dx, dy) =
            ((x as f32 - w as f32 * 0.45) / (w as f32 * 0.3), (y as f32 - h as f32 * 0.55) / (h as f32 * 0.35));
        dx * dx + dy * dy < 1.0
    };
    let noise = |x: u32, y: u32| ((x.wrapping_mul(73) ^ y.wrapping_mul(151) ^ seed.wrapping_mul(29)) % 40) as u8;
    let rgb = image::RgbImage::from_fn(w, h, |x, y| {
        let n = noise(x, y);
        if inside(x, y) {
            image::Rgb([210 + n / 2, 150 + n, 120 + n])
        } else {
            image::Rgb([40 + n, 90 + n, 70 + n * 2])
        }
    });
    let mask = image::GrayImage::from_fn(w, h, |x, y| image::Luma([if inside(x, y) { 255 } else { 0 }]));
    (rgb, mask)
}

/// The Pratheepan skin dataset's layout: jpg and jpeg photos of different sizes, png ground
/// truth in `Ground_Truth/GroundT_<folder>/`.
fn pratheepan_tree(root: &Path) {
    let files = [
        ("FacePhoto", "face1.jpg", 45, 37),
        ("FacePhoto", "face2.jpg", 64, 50),
        ("FamilyPhoto", "fam1.jpeg", 30, 70),
        ("FamilyPhoto", "fam2.jpeg", 81, 81),
        ("FamilyPhoto", "tiny.jpeg", 20, 13),
    ];
    for (i, (folder, name, w, h)) in files.into_iter().enumerate() {
        let (rgb, mask) = photo(w, h, i as u32);
        let images = root.join("Pratheepan_Dataset").join(folder);
        let truth = root.join("Ground_Truth").join(format!("GroundT_{folder}"));
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&truth).unwrap();
        rgb.save(images.join(name)).unwrap();
        mask.save(truth.join(Path::new(name).with_extension("png"))).unwrap();
    }
    // A tinted synthetic slice at an odd size: something the brain model may find.
    let (slice, lesion) = synth::generate(7, 1, 64);
    let (w, h) = (57, 45);
    let gray = image::imageops::resize(&slice, w, h, image::imageops::FilterType::Triangle);
    let tinted = image::RgbImage::from_fn(w, h, |x, y| {
        let v = gray.get_pixel(x, y).0[0];
        image::Rgb([v, v.saturating_sub(10), v / 2])
    });
    tinted.save(root.join("Pratheepan_Dataset/FacePhoto/brain.jpg")).unwrap();
    image::imageops::resize(&lesion, w, h, image::imageops::FilterType::Nearest)
        .save(root.join("Ground_Truth/GroundT_FacePhoto/brain.png"))
        .unwrap();
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

fn dice(pred: &image::GrayImage, truth: &image::GrayImage) -> f64 {
    let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
    for (p, t) in pred.pixels().zip(truth.pixels()) {
        match (p.0[0] > 127, t.0[0] > 127) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            _ => {}
        }
    }
    if tp + fp + fn_ == 0.0 {
        1.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    }
}

#[test]
fn pratheepan_layout_end_to_end() {
    let run = trained_run();
    let scratch = TempDir::new("inference-pratheepan");
    let data = scratch.join("data");
    pratheepan_tree(&data);
    let out = scratch.join("eval");
    let text = wgunet(&[
        "eval",
        "--model",
        &s(run),
        "--data",
        &s(&data),
        "--device",
        "cpu",
        "--panels",
        "4",
        "--out",
        &s(&out),
        "--json",
        &s(&out.join("eval.json")),
    ]);
    assert!(text.contains("found 6 pairs"), "{text}");
    assert!(text.contains("note: the images are colour but the model takes grayscale"), "{text}");
    assert!(text.contains("model  mean Dice") && text.contains("native mean Dice"), "{text}");
    assert!(text.contains("mean pixel accuracy") && text.contains("native micro IoU"), "{text}");

    let rows = csv_rows(&out.join("per_image.csv"));
    let sizes: Vec<(String, &str, &str)> = rows.iter().map(|r| (r[0].clone(), r[1].as_str(), r[2].as_str())).collect();
    assert_eq!(
        sizes,
        [
            ("FacePhoto/brain.jpg".to_string(), "57", "45"),
            ("FacePhoto/face1.jpg".to_string(), "45", "37"),
            ("FacePhoto/face2.jpg".to_string(), "64", "50"),
            ("FamilyPhoto/fam1.jpeg".to_string(), "30", "70"),
            ("FamilyPhoto/fam2.jpeg".to_string(), "81", "81"),
            ("FamilyPhoto/tiny.jpeg".to_string(), "20", "13"),
        ]
    );
    for f in ["best-1.png", "best-2.png", "worst-1.png", "worst-2.png", "contact_sheet.png"] {
        assert!(out.join("panels").join(f).is_file(), "no panel {f}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["images"], 6);
    assert!(json["native"]["mean_dice"].is_number() && json["inference"]["tile"] == false);

    // The native scores are those of the masks `predict` writes, against the original truth.
    let masks = scratch.join("masks");
    for folder in ["FacePhoto", "FamilyPhoto"] {
        wgunet(&[
            "predict",
            "--model",
            &s(run),
            "--input",
            &s(&data.join("Pratheepan_Dataset").join(folder)),
            "--output",
            &s(&masks),
            "--device",
            "cpu",
        ]);
    }
    for row in &rows {
        let (folder, file) = row[0].split_once('/').unwrap();
        let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
        let pred = image::open(masks.join(format!("{stem}.png"))).unwrap().to_luma8();
        let truth =
            image::open(data.join("Ground_Truth").join(format!("GroundT_{folder}")).join(format!("{stem}.png")))
                .unwrap()
                .to_luma8();
        assert_eq!(pred.dimensions(), truth.dimensions());
        let native_dice: f64 = row[8].parse().unwrap();
        assert!((dice(&pred, &truth) - native_dice).abs() < 1e-5, "{}: {native_dice} in the CSV", row[0]);
    }

    // Tiled, with TTA and the largest component: native size end to end, smaller-than-tile images included.
    let tiled_out = scratch.join("tiled");
    let text = wgunet(&[
        "eval",
        "--model",
        &s(run),
        "--data",
        &s(&data),
        "--device",
        "cpu",
        "--tile",
        "--overlap",
        "0.5",
        "--blend",
        "constant",
        "--tta",
        "--keep-largest",
        "--panels",
        "2",
        "--out",
        &s(&tiled_out),
        "--json",
        &s(&tiled_out.join("eval.json")),
    ]);
    assert!(text.contains("tiles of 32 px") && text.contains("native mean Dice"), "{text}");
    assert_eq!(csv_rows(&tiled_out.join("per_image.csv")).len(), 6);
    assert!(tiled_out.join("panels/best-1.png").is_file() && tiled_out.join("panels/worst-1.png").is_file());
}

fn components(mask: &image::GrayImage) -> Vec<bool> {
    mask.pixels().map(|p| p.0[0] == 255).collect()
}

#[test]
fn predict_tiled_with_largest_component_writes_native_size_masks() {
    let run = trained_run();
    let scratch = TempDir::new("inference-predict");
    let data = scratch.join("data");
    synth::write_dataset(&data, 3, 5, 48).unwrap();
    let small = image::GrayImage::from_fn(21, 17, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]));
    small.save(data.join("images").join("small.png")).unwrap();
    let masks = scratch.join("masks");
    wgunet(&[
        "predict",
        "--model",
        &s(run),
        "--input",
        &s(&data.join("images")),
        "--output",
        &s(&masks),
        "--device",
        "cpu",
        "--tile",
        "--keep-largest",
        "--batch",
        "2",
    ]);
    for (name, size) in [("0000.png", (48, 48)), ("0002.png", (48, 48)), ("small.png", (21, 17))] {
        let mask = image::open(masks.join(name)).unwrap().to_luma8();
        assert_eq!(mask.dimensions(), size, "{name}");
        assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        let bits = components(&mask);
        assert_eq!(
            keep_largest_component(&bits, size.0 as usize, size.1 as usize),
            bits,
            "{name} has several components"
        );
    }
}

#[test]
fn gray_images_for_a_colour_model_are_announced() {
    let scratch = TempDir::new("inference-rgb");
    let dir = scratch.join("run");
    wgunet(&[
        "train",
        "--device",
        "cpu",
        "--synth-count",
        "10",
        "--size",
        "32",
        "--filters",
        "4",
        "--epochs",
        "1",
        "--batch",
        "4",
        "--channels",
        "3",
        "--out",
        &s(&dir),
    ]);
    let data = scratch.join("data");
    synth::write_dataset(&data, 4, 9, 40).unwrap();
    let text = wgunet(&["eval", "--model", &s(&dir), "--data", &s(&data), "--device", "cpu", "--panels", "0"]);
    assert!(text.contains("note: the images are grayscale but the model takes RGB"), "{text}");
    assert!(text.contains("native mean Dice"), "{text}");
}

/// An ensemble's probabilities are the mean of its members' (here two runs of other seeds);
/// a member that reads images otherwise is refused; `eval --ensemble` scores the mean.
#[test]
fn an_ensemble_averages_its_members_probabilities() {
    let other = TempDir::new("inference-second-run");
    #[rustfmt::skip]
    wgunet(&[
        "train", "--device", "cpu", "--synth-count", "60", "--size", "32", "--filters", "4", "--epochs", "3",
        "--batch", "6", "--seed", "9", "--out", &s(&other),
    ]);
    let (first, second) = (model(), LoadedModel::open(&other, &device()).unwrap());
    let images: Vec<Vec<f32>> = (0..5).map(slice).collect();
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let options = InferOptions { batch: 2, ..InferOptions::default() };
    let each = |m: &LoadedModel| Segmenter::new(m, options).unwrap().probabilities(&refs).unwrap();
    let (a, b) = (each(&first), each(&second));
    let members = [second];
    let mean = Segmenter::ensemble(&first, &members, options).unwrap().probabilities(&refs).unwrap();
    for ((a, b), mean) in a.iter().zip(&b).zip(&mean) {
        assert!(max_abs_diff(a, b) > 1e-3, "the two runs agree: the check would prove nothing");
        let expected: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x + y) / 2.0).collect();
        assert!(max_abs_diff(mean, &expected) < 1e-6, "ensemble is not the mean of its members");
    }

    // The same weights read at 48 px: not the same input.
    let wider = TempDir::new("inference-wider-run");
    for entry in std::fs::read_dir(&other).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, wider.join(path.file_name().unwrap())).unwrap();
        }
    }
    let json = std::fs::read_to_string(wider.join("model.json")).unwrap();
    std::fs::write(wider.join("model.json"), json.replacen("\"size\": 32", "\"size\": 48", 1)).unwrap();
    let members = [LoadedModel::open(&wider, &device()).unwrap()];
    let err = Segmenter::ensemble(&first, &members, options).err().expect("a 48 px member was accepted").to_string();
    assert!(err.contains("must read images alike") && err.contains("32 px") && err.contains("48 px"), "{err}");

    let out = TempDir::new("inference-ensemble-eval");
    let stdout = wgunet(&[
        "eval",
        "--model",
        &s(trained_run()),
        "--ensemble",
        &s(&other),
        "--device",
        "cpu",
        "--json",
        &s(&out.join("eval.json")),
        "--out",
        &s(&out),
    ]);
    assert!(stdout.contains("ensemble of 2 models"), "{stdout}");
    assert!(out.join("eval.json").is_file());
}
