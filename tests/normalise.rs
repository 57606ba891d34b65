//! Intensity normalisation: training, evaluation and prediction load an image into the same
//! tensor, and z-scores survive a change of scanner contrast that shifts [0, 1] values.

mod common;

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use wgunet::data::load::{load_image, load_sample_with_classes};
use wgunet::data::{normalise_dataset, split, Normalisation, NormaliseKind, Pair, Preprocess};
use wgunet::infer::native;
use wgunet::model::{Activation, Arch, ModelConfig};
use wgunet::train::{load_dataset, DataOptions, DataSource};

use common::TempDir;

const SIZE: u32 = 32;

/// A slice-like gray image: a bright disc with a gradient on a dark, uneven background.
fn slice(width: u32, height: u32, gain: f32, offset: f32) -> GrayImage {
    GrayImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32 - 0.5, y as f32 / height as f32 - 0.5);
        let inside = u * u + v * v < 0.12;
        let value = if inside { 0.55 + 0.4 * u } else { 0.08 + 0.05 * ((x * 7 + y * 3) % 5) as f32 / 5.0 };
        Luma([((value * gain + offset).clamp(0.0, 1.0) * 255.0).round() as u8])
    })
}

/// Three pairs: two at the model's size (so tiling at native size sees the same pixels) and one
/// of another size and shape.
fn write_pairs(dir: &Path) -> Vec<Pair> {
    let sizes = [(SIZE, SIZE, 1.0, 0.0), (SIZE, SIZE, 0.7, 0.2), (45, 27, 1.1, -0.05)];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h, gain, offset))| {
            let (image, mask) = (dir.join(format!("{i}.png")), dir.join(format!("{i}_mask.png")));
            slice(w, h, gain, offset).save(&image).unwrap();
            GrayImage::from_fn(w, h, |x, _| Luma([if x > w / 2 { 255 } else { 0 }])).save(&mask).unwrap();
            Pair { image, mask }
        })
        .collect()
}

fn model(normalise: Normalisation) -> ModelConfig {
    ModelConfig {
        arch: Arch::Unet,
        size: SIZE as usize,
        channels: 1,
        filters: 2,
        dropout: 0.1,
        classes: 1,
        activation: Activation::Relu,
        normalise,
    }
}

#[test]
fn train_eval_and_predict_load_the_same_tensor() {
    let dir = TempDir::new("paths");
    let pairs = write_pairs(&dir.0);
    let list = dir.0.join("all.txt");
    split::write_list(&list, &pairs).unwrap();
    let source = DataSource::Lists { train: list.clone(), test: list };
    for kind in [NormaliseKind::Unit, NormaliseKind::Zscore, NormaliseKind::Percentile, NormaliseKind::Rank] {
        // Training: decode at the model's size, fit on the training split, normalise both.
        let options = DataOptions {
            source: source.clone(),
            train_fraction: 0.7,
            max_images: None,
            channels: None,
            strict: false,
            normalise: kind,
            patch: None,
        };
        let mut data = load_dataset(&options, SIZE as usize, 1, 42, &dir.0).unwrap();
        let fitted = normalise_dataset(kind, &mut data.train, &mut data.test, data.channels);
        let pre = Preprocess::for_model(&model(fitted));
        assert_eq!(pre.normalise, fitted);
        for (k, pair) in pairs.iter().enumerate() {
            let trained = &data.train[k].image;
            let evaluated = load_sample_with_classes(pair, &pre, 1).unwrap().image;
            let (predicted, _) = load_image(&pair.image, &pre).unwrap();
            assert_eq!(trained, &evaluated, "{kind:?}: eval of {k} differs from training");
            assert_eq!(trained, &predicted, "{kind:?}: predict of {k} differs from training");
            let tiled = native::load_image(&pair.image, 1, &pre.normalise).unwrap();
            if (tiled.width, tiled.height) == (SIZE, SIZE) {
                assert_eq!(trained, &tiled.pixels, "{kind:?}: tiled predict of {k} differs from training");
            }
        }
        match fitted {
            Normalisation::Percentile { low, high, mean, std } => {
                assert!(low < high && std > 0.05, "{fitted:?}");
                // Every training pixel was standardised with the training set's own statistics.
                let all: Vec<f32> = data.train.iter().flat_map(|s| s.image.iter().copied()).collect();
                let (m, s) = mean_std(&all);
                assert!(m.abs() < 1e-3 && (s - 1.0).abs() < 1e-3, "training set mean {m}, std {s}");
                assert!((mean - 0.3).abs() < 0.2, "{fitted:?}");
            }
            other => assert_eq!(other, Normalisation::fit(kind, Vec::<&[f32]>::new())),
        }
    }
}

fn mean_std(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn zscore_gives_every_channel_mean_zero_and_std_one() {
    let dir = TempDir::new("zscore");
    let path = dir.0.join("rgb.png");
    let rgb = RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 3 + 100) as u8, ((x * y) % 200) as u8]));
    rgb.save(&path).unwrap();
    let pre = Preprocess { size: 32, channels: 3, normalise: Normalisation::Zscore };
    let (image, _) = load_image(&path, &pre).unwrap();
    for (c, plane) in image.chunks(32 * 32).enumerate() {
        let (mean, std) = mean_std(plane);
        assert!(mean.abs() < 1e-5 && (std - 1.0).abs() < 1e-4, "channel {c}: mean {mean}, std {std}");
    }
}

/// Root-mean-square difference of two tensors, relative to the spread of the first: how much an
/// input change moves what the network sees, in units of the input's own variation.
fn relative_change(a: &[f32], b: &[f32]) -> f64 {
    let rms = (a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
    rms / mean_std(a).1
}

#[test]
fn zscore_and_rank_absorb_a_change_of_contrast_and_gamma_that_unit_scaling_passes_on() {
    let dir = TempDir::new("contrast");
    let reference = slice(64, 64, 1.0, 0.0);
    let flatter = slice(64, 64, 0.6, 0.25);
    let gamma = GrayImage::from_fn(64, 64, |x, y| {
        Luma([((f32::from(reference.get_pixel(x, y).0[0]) / 255.0).powf(0.6) * 255.0).round() as u8])
    });
    let paths: Vec<PathBuf> = [("reference", &reference), ("flatter", &flatter), ("gamma", &gamma)]
        .iter()
        .map(|(name, image)| {
            let path = dir.0.join(format!("{name}.png"));
            image.save(&path).unwrap();
            path
        })
        .collect();
    let load = |path: &Path, normalise| load_image(path, &Preprocess { size: 64, channels: 1, normalise }).unwrap().0;
    for other in &paths[1..] {
        let unit = relative_change(&load(&paths[0], Normalisation::Unit), &load(other, Normalisation::Unit));
        let zscore = relative_change(&load(&paths[0], Normalisation::Zscore), &load(other, Normalisation::Zscore));
        assert!(unit > 0.3, "{}: unit scaling moved the input by only {unit:.3}", other.display());
        let rank = relative_change(&load(&paths[0], Normalisation::Rank), &load(other, Normalisation::Rank));
        assert!(zscore < unit / 4.0, "{}: zscore {zscore:.3} against unit {unit:.3}", other.display());
        // A rank moves only where the 8-bit rounding merged or split levels: gamma 0.6 merges
        // the brightest, which the logistic tails spread far (0.034 here, the z-score's 0.053).
        assert!(rank < 0.75 * zscore, "{}: rank moved the input by {rank:.3}, zscore by {zscore:.3}", other.display());
    }
}

fn wgunet(args: &[&str]) -> String {
    common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), args)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The test loss `train` measured on its normalised test split is the one `eval` measures on
/// the files with the normalisation read from model.json; with the normalisation removed from
/// model.json it is not.
#[test]
fn eval_normalises_as_training_did() {
    let dir = TempDir::new("cli");
    let data = dir.0.join("data");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    wgunet(&["synth", "--out", &s(&data), "--count", "16", "--size", "48", "--lesion-size", "0.5-4"]);
    for kind in ["zscore", "percentile"] {
        let run = dir.0.join(kind);
        // 16 pairs split 11/5 and batches of 5: no padding image in the test loss.
        #[rustfmt::skip]
        wgunet(&[
            "train", "--data", &s(&data), "--no-plan", "--device", "cpu", "--size", "16", "--filters", "2", "--epochs", "2",
            "--batch", "5", "--normalise", kind, "--out", &s(&run),
        ]);
        let model = run.join("model.json");
        assert_eq!(json(&model)["model"]["normalise"]["kind"], kind);
        let trained = json(&run.join("metrics.json"))["loss"].as_f64().unwrap();
        wgunet(&["eval", "--model", &s(&run), "--device", "cpu", "--panels", "0"]);
        let evaluated = json(&run.join("eval.json"))["loss"].as_f64().unwrap();
        assert!((trained - evaluated).abs() < 1e-5, "{kind}: train's test loss {trained}, eval's {evaluated}");

        let mut record = json(&model);
        record["model"]["normalise"] = serde_json::json!({ "kind": "unit" });
        std::fs::write(&model, record.to_string()).unwrap();
        wgunet(&["eval", "--model", &s(&run), "--device", "cpu", "--panels", "0"]);
        let unnormalised = json(&run.join("eval.json"))["loss"].as_f64().unwrap();
        assert!((trained - unnormalised).abs() > 1e-3, "{kind}: without normalisation eval still gets {unnormalised}");
    }
}
