//! Every loader of user files fed random bytes and mutated valid files (bit flips, truncations,
//! spliced chunks): each must answer Ok or Err, never panic. A panicking input is saved and its
//! path printed; `WGUNET_SEED` replays a run, `WGUNET_FUZZ_ROUNDS` makes it longer.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use wgunet::checkpoint;
use wgunet::data::load::{self, Preprocess};
use wgunet::data::{split, Normalisation, Pair};
use wgunet::graph::{compile, Mode, ParamInfo};
use wgunet::model::{Activation, Arch, ModelConfig};

/// Inputs per loader: about 5 s for all of them in a debug build. `WGUNET_FUZZ_ROUNDS` asks for
/// a longer hunt.
fn rounds() -> usize {
    std::env::var("WGUNET_FUZZ_ROUNDS").map_or(300, |n| n.parse().expect("WGUNET_FUZZ_ROUNDS must be a whole number"))
}

fn encoded(image: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
    bytes
}

/// model.json as `wgunet train` writes it.
const MODEL_JSON: &str = r#"{
  "model": { "arch": "unet", "size": 16, "channels": 1, "filters": 2, "dropout": 0.1, "classes": 1 },
  "loss": "bce",
  "augment": "dihedral",
  "dataset": { "kind": "lists", "source": "/data/brains" },
  "command": "wgunet train --data /data/brains --size 16 --filters 2",
  "epochs_run": 3,
  "best_epoch": 2,
  "wgunet_version": "0.1.0"
}"#;

/// The valid files mutations start from, written into `dir`.
struct Seeds {
    images: Vec<Vec<u8>>,
    masks: Vec<Vec<u8>>,
    model_json: Vec<u8>,
    weights: Vec<u8>,
    params: Vec<ParamInfo>,
    list: Vec<u8>,
    /// A good image, partner of every fuzzed mask.
    image_path: PathBuf,
}

fn seeds(dir: &Path) -> Seeds {
    use image::ImageFormat::{Bmp, Jpeg, Png, Tiff};
    let gray = DynamicImage::ImageLuma8(GrayImage::from_fn(13, 9, |x, y| Luma([(x * 19 + y * 7) as u8])));
    let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(12, 10, |x, y| Rgb([(x * 20) as u8, (y * 25) as u8, 90])));
    let rgba =
        DynamicImage::ImageRgba8(RgbaImage::from_fn(7, 11, |x, y| Rgba([(x * 30) as u8, 40, (y * 20) as u8, 200])));
    let deep = DynamicImage::ImageLuma16(ImageBuffer::from_fn(9, 9, |x, y| Luma([(x * 7000 + y * 300) as u16])));
    let images = vec![
        encoded(&gray, Png),
        encoded(&rgb, Jpeg),
        encoded(&rgba, Png),
        encoded(&deep, Png),
        encoded(&rgb, Bmp),
        encoded(&gray, Tiff),
    ];
    let binary = DynamicImage::ImageLuma8(GrayImage::from_fn(13, 9, |x, _| Luma([if x > 6 { 255 } else { 0 }])));
    let ids = DynamicImage::ImageLuma8(GrayImage::from_fn(13, 9, |x, y| Luma([((x + y) % 3) as u8])));
    let masks = vec![encoded(&binary, Png), encoded(&ids, Png), encoded(&ids, Bmp)];

    let image_path = dir.join("good.png");
    std::fs::write(&image_path, &images[0]).unwrap();
    let cfg = ModelConfig {
        arch: Arch::Unet,
        size: 16,
        channels: 1,
        filters: 2,
        dropout: 0.1,
        classes: 1,
        activation: Activation::Relu,
        normalise: Normalisation::Unit,
    };
    let params = compile(&cfg.build(1), Mode::Inference).params;
    let values: Vec<Vec<f32>> =
        params.iter().map(|p| (0..p.shape.iter().product()).map(|i| i as f32 * 0.01).collect()).collect();
    let weights_path = dir.join("seed.safetensors");
    checkpoint::save_weights(&weights_path, &params, &values).unwrap();
    let list_path = dir.join("seed.txt");
    let mask_path = dir.join("good_mask.png");
    std::fs::write(&mask_path, &masks[0]).unwrap();
    let pairs = vec![Pair { image: image_path.clone(), mask: mask_path.clone() }; 3];
    split::write_list(&list_path, &pairs).unwrap();

    // The seeds themselves load: mutations start from files the loaders accept.
    let seed_dir = dir.join("seed-run");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::write(seed_dir.join("model.json"), MODEL_JSON).unwrap();
    checkpoint::load_record(&seed_dir).expect("the seed model.json is out of date: update MODEL_JSON");
    assert_eq!(checkpoint::load_weights(&weights_path, &params).unwrap(), values);
    assert_eq!(split::read_list(&list_path).unwrap(), pairs);
    let pre = Preprocess { size: 16, channels: 3, normalise: Normalisation::Unit };
    for (i, bytes) in images.iter().enumerate() {
        let path = dir.join(format!("seed-image-{i}"));
        std::fs::write(&path, bytes).unwrap();
        load::load_image(&path, &pre).unwrap_or_else(|e| panic!("seed image {i}: {e:#}"));
    }

    Seeds {
        images,
        masks,
        model_json: MODEL_JSON.as_bytes().to_vec(),
        weights: std::fs::read(&weights_path).unwrap(),
        params,
        list: std::fs::read(&list_path).unwrap(),
        image_path,
    }
}

/// Random bytes, or `valid` bit-flipped, truncated, with a chunk of `donor` (another valid
/// file, or itself) spliced in over a random range, with a header-like field set to an
/// extreme, or with one of its lines dropped or repeated.
fn mutate(rng: &mut Pcg64, valid: &[u8], donor: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    match rng.random_range(0..6) {
        0 => {
            let len = rng.random_range(0..600);
            return (0..len).map(|_| rng.random()).collect();
        }
        1 => {
            for _ in 0..rng.random_range(1..8) {
                if !bytes.is_empty() {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
            }
        }
        2 => bytes.truncate(rng.random_range(0..=bytes.len())),
        3 => {
            let start = rng.random_range(0..=bytes.len());
            let end = rng.random_range(start..=bytes.len());
            let from = rng.random_range(0..=donor.len());
            let to = rng.random_range(from..=donor.len().min(from + 256));
            bytes.splice(start..end, donor[from..to].iter().copied());
        }
        4 => {
            let mut lines: Vec<&[u8]> = valid.split_inclusive(|&b| b == b'\n').collect();
            let at = rng.random_range(0..lines.len());
            if rng.random() {
                lines.remove(at);
            } else {
                lines.insert(at, lines[at]);
            }
            return lines.concat();
        }
        _ => {
            // A header field overwritten with an extreme value: sizes, lengths, counts.
            if bytes.len() >= 4 {
                let at = rng.random_range(0..bytes.len() - 3);
                let value: [u8; 4] =
                    [[0xff; 4], [0; 4], [0x7f, 0xff, 0xff, 0xff], [0, 0, 0, 1]][rng.random_range(0..4)];
                bytes[at..at + 4].copy_from_slice(&value);
            }
        }
    }
    bytes
}

/// Runs `load` on `bytes` written to `path`; a panic saves the input and fails the test.
fn survives(name: &str, seed: u64, round: usize, path: &Path, bytes: &[u8], load: impl FnOnce(&Path)) {
    std::fs::write(path, bytes).unwrap();
    if panic::catch_unwind(AssertUnwindSafe(|| load(path))).is_err() {
        let kept = std::env::temp_dir().join(format!("wgunet-fuzz-panic-{name}-{seed}-{round}.bin"));
        std::fs::write(&kept, bytes).unwrap();
        panic!("{name} panicked on round {round} (WGUNET_SEED={seed}); the input is saved in {}", kept.display());
    }
}

#[test]
fn loaders_answer_ok_or_err_and_never_panic() {
    let seed = common::seed();
    let dir = std::env::temp_dir().join(format!("wgunet-fuzz-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = seeds(&dir);
    let mut rng = Pcg64::seed_from_u64(seed);
    let pick = |rng: &mut Pcg64, files: &[Vec<u8>]| files[rng.random_range(0..files.len())].clone();
    let all: Vec<Vec<u8>> =
        [s.images.clone(), s.masks.clone(), vec![s.model_json.clone(), s.weights.clone(), s.list.clone()]].concat();
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut accepted = [0usize; 5];
    for round in 0..rounds() {
        let donor = pick(&mut rng, &all);
        let pre = Preprocess { size: 16, channels: if round % 2 == 0 { 1 } else { 3 }, normalise: Normalisation::Unit };

        let valid = pick(&mut rng, &s.images);
        let bytes = mutate(&mut rng, &valid, &donor);
        survives("image_decode", seed, round, &dir.join("image"), &bytes, |p| {
            accepted[0] += usize::from(load::load_image(p, &pre).is_ok());
        });

        let valid = pick(&mut rng, &s.masks);
        let bytes = mutate(&mut rng, &valid, &donor);
        let classes = if round % 2 == 0 { 1 } else { 3 };
        survives("mask_decode", seed, round, &dir.join("mask"), &bytes, |p| {
            let pair = Pair { image: s.image_path.clone(), mask: p.to_path_buf() };
            accepted[1] += usize::from(load::load_sample_with_classes(&pair, &pre, classes).is_ok());
        });

        let bytes = mutate(&mut rng, &s.model_json, &donor);
        survives("load_record", seed, round, &run_dir.join("model.json"), &bytes, |_| {
            accepted[2] += usize::from(checkpoint::load_record(&run_dir).is_ok());
        });

        let bytes = mutate(&mut rng, &s.weights, &donor);
        survives("load_weights", seed, round, &dir.join("weights.safetensors"), &bytes, |p| {
            accepted[3] += usize::from(checkpoint::load_weights(p, &s.params).is_ok());
        });

        let bytes = mutate(&mut rng, &s.list, &donor);
        survives("read_list", seed, round, &dir.join("list.txt"), &bytes, |p| {
            accepted[4] += usize::from(split::read_list(p).is_ok());
        });
    }
    // Some mutations keep a file valid (a flipped pixel bit, a dropped list line): the loaders
    // were exercised past their first check, not just refusing everything. (model.json
    // survives a mutation only a few times in 300, too seldom to demand.)
    let [images, masks, _, weights, lists] = accepted;
    assert!(
        [images, masks, weights, lists].iter().all(|&n| n > 0),
        "some loader accepted no mutated input: {accepted:?} (WGUNET_SEED={seed})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
