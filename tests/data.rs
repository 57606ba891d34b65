//! The CPU data layer: splits, pair lists, decoding and resizing, the synthetic dataset.

mod common;

use std::path::Path;

use common::TempDir;
use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
use wgunet::data::{
    detect_channels, find_pairs, load_all, load_image, load_sample, read_list, split, synth, write_list, Normalisation,
    Pair, Preprocess,
};

fn fake_pairs(n: usize) -> Vec<Pair> {
    (0..n)
        .map(|i| Pair { image: format!("/d/images/{i}.png").into(), mask: format!("/d/masks/{i}.png").into() })
        .collect()
}

const GRAY: Preprocess = Preprocess { size: 16, channels: 1, normalise: Normalisation::Unit };

#[test]
fn split_is_reproducible_and_seed_dependent() {
    let pairs = fake_pairs(20);
    let a = split(&pairs, 0.7, 42, None).unwrap();
    let b = split(&pairs, 0.7, 42, None).unwrap();
    let c = split(&pairs, 0.7, 43, None).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    // The order pairs are found in does not matter: they are sorted first.
    let mut reversed = pairs.clone();
    reversed.reverse();
    assert_eq!(split(&reversed, 0.7, 42, None).unwrap(), a);
}

#[test]
fn split_is_seventy_thirty_and_loses_nothing() {
    let pairs = fake_pairs(20);
    let (train, test) = split(&pairs, 0.7, 1, None).unwrap();
    assert_eq!((train.len(), test.len()), (14, 6));
    let mut all: Vec<Pair> = train.iter().chain(&test).cloned().collect();
    all.sort();
    let mut expected = pairs.clone();
    expected.sort();
    assert_eq!(all, expected);

    let (train, test) = split(&fake_pairs(152), 0.7, 42, None).unwrap();
    assert_eq!((train.len(), test.len()), (106, 46));
}

#[test]
fn max_images_takes_the_first_pairs_after_sorting() {
    let mut pairs = fake_pairs(30);
    pairs.reverse();
    let (train, test) = split(&pairs, 0.7, 3, Some(10)).unwrap();
    assert_eq!((train.len(), test.len()), (7, 3));
    let mut sorted = pairs.clone();
    sorted.sort();
    let mut used: Vec<Pair> = train.into_iter().chain(test).collect();
    used.sort();
    assert_eq!(used, sorted[..10]);
}

#[test]
fn split_rejects_bad_fractions_and_empty_sides() {
    let pairs = fake_pairs(10);
    for bad in [0.0, -0.5, 1.5, f64::NAN] {
        assert!(split(&pairs, bad, 0, None).is_err(), "train = {bad}");
    }
    let e = split(&fake_pairs(2), 0.9, 0, None).unwrap_err().to_string();
    assert!(e.contains("no test pairs"), "{e}");
    let e = split(&fake_pairs(3), 0.1, 0, None).unwrap_err().to_string();
    assert!(e.contains("no training pairs"), "{e}");
    assert!(split(&[], 0.7, 0, None).is_err());
    // A fraction of 1 asks for no test set.
    let (train, test) = split(&pairs, 1.0, 0, None).unwrap();
    assert_eq!((train.len(), test.len()), (10, 0));
}

#[test]
fn pair_lists_round_trip_with_absolute_paths() {
    let dir = TempDir::new("lists");
    let mut pairs = Vec::new();
    for i in 0..5 {
        let (image, mask) = (dir.path(&format!("img {i}.png")), dir.path(&format!("img {i}_mask.png")));
        GrayImage::new(4, 4).save(&image).unwrap();
        GrayImage::new(4, 4).save(&mask).unwrap();
        pairs.push(Pair { image, mask });
    }
    let list = dir.path("lists/train.txt");
    write_list(&list, &pairs).unwrap();
    assert_eq!(read_list(&list).unwrap(), pairs);
    let text = std::fs::read_to_string(&list).unwrap();
    assert_eq!(text.lines().count(), 5);
    for line in text.lines() {
        let (image, mask) = line.split_once('\t').unwrap();
        assert!(Path::new(image).is_absolute() && Path::new(mask).is_absolute(), "{line}");
    }
    // No temporary file is left beside the list.
    assert_eq!(std::fs::read_dir(dir.path("lists")).unwrap().count(), 1);
}

#[test]
fn reading_bad_lists_names_the_file_and_line() {
    let dir = TempDir::new("bad-lists");
    let image = dir.path("a.png");
    GrayImage::new(4, 4).save(&image).unwrap();
    let good = format!("{}\t{}", image.display(), image.display());

    let list = dir.path("bad.txt");
    std::fs::write(&list, format!("{good}\nonly one field\n")).unwrap();
    let e = format!("{:#}", read_list(&list).unwrap_err());
    assert!(e.contains("bad.txt line 2") && e.contains("image<TAB>mask"), "{e}");

    std::fs::write(&list, format!("{good}\n\n{}\t{}\n", image.display(), dir.path("gone.png").display())).unwrap();
    let e = format!("{:#}", read_list(&list).unwrap_err());
    assert!(e.contains("bad.txt line 3") && e.contains("gone.png") && e.contains("does not exist"), "{e}");

    let e = format!("{:#}", read_list(&dir.path("missing.txt")).unwrap_err());
    assert!(e.contains("missing.txt"), "{e}");
}

/// Writes `image` and `mask` as PNGs named NAME.png and NAME_mask.png.
fn write_pair(dir: &TempDir, name: &str, image: &image::DynamicImage, mask: &image::DynamicImage) -> Pair {
    let pair = Pair { image: dir.path(&format!("{name}.png")), mask: dir.path(&format!("{name}_mask.png")) };
    image.save(&pair.image).unwrap();
    mask.save(&pair.mask).unwrap();
    pair
}

#[test]
fn masks_binarize_from_0_255_0_1_and_rgb() {
    let dir = TempDir::new("binarize");
    let image = image::DynamicImage::ImageLuma8(GrayImage::new(4, 4));
    let pre = Preprocess { size: 4, channels: 1, normalise: Normalisation::Unit };
    let left_half = |on: u8, off: u8| GrayImage::from_fn(4, 4, |x, _| Luma([if x < 2 { on } else { off }]));
    let expected: Vec<f32> = (0..16).map(|i| if i % 4 < 2 { 1.0 } else { 0.0 }).collect();

    let cases = [
        ("u8_0_255", image::DynamicImage::ImageLuma8(left_half(255, 0))),
        // 127 is background; 128 is foreground.
        ("u8_threshold", image::DynamicImage::ImageLuma8(left_half(128, 127))),
        ("u8_0_1", image::DynamicImage::ImageLuma8(left_half(1, 0))),
        ("u16_0_1", image::DynamicImage::ImageLuma16(ImageBuffer::from_fn(4, 4, |x, _| Luma([u16::from(x < 2)])))),
        // Any channel over half counts (pure red marks), a dark gray does not.
        (
            "rgb",
            image::DynamicImage::ImageRgb8(RgbImage::from_fn(4, 4, |x, _| {
                if x < 2 {
                    Rgb([200, 0, 0])
                } else {
                    Rgb([100, 100, 100])
                }
            })),
        ),
    ];
    for (name, mask) in cases {
        let pair = write_pair(&dir, name, &image, &mask);
        let sample = load_sample(&pair, &pre).unwrap();
        assert_eq!(sample.mask, expected, "{name}");
    }
}

#[test]
fn gray_and_rgb_convert_both_ways() {
    let dir = TempDir::new("channels");
    let gray = GrayImage::from_fn(4, 4, |x, y| Luma([(x * 60 + y) as u8]));
    let gray_path = dir.path("gray.png");
    gray.save(&gray_path).unwrap();
    let rgb = RgbImage::from_pixel(4, 4, Rgb([255, 0, 0]));
    let rgb_path = dir.path("red.png");
    rgb.save(&rgb_path).unwrap();

    // Gray → RGB: three identical planes, equal to the gray values.
    let (planes, native) =
        load_image(&gray_path, &Preprocess { size: 4, channels: 3, normalise: Normalisation::Unit }).unwrap();
    assert_eq!(native, (4, 4));
    assert_eq!(planes.len(), 3 * 16);
    let expected: Vec<f32> = gray.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    for c in 0..3 {
        for (got, want) in planes[c * 16..(c + 1) * 16].iter().zip(&expected) {
            assert!((got - want).abs() < 1e-6, "plane {c}: {got} vs {want}");
        }
    }
    // RGB → gray: Rec. 709 luma of pure red.
    let (luma, _) =
        load_image(&rgb_path, &Preprocess { size: 4, channels: 1, normalise: Normalisation::Unit }).unwrap();
    assert!(luma.iter().all(|&v| (v - 0.2126).abs() < 1e-3), "{luma:?}");
    // RGB kept as RGB: planar, red plane first.
    let (planes, _) =
        load_image(&rgb_path, &Preprocess { size: 4, channels: 3, normalise: Normalisation::Unit }).unwrap();
    assert!(planes[..16].iter().all(|&v| v == 1.0) && planes[16..].iter().all(|&v| v == 0.0));
}

#[test]
fn resize_gives_the_requested_shape_and_keeps_the_native_size() {
    let dir = TempDir::new("resize");
    let image = image::DynamicImage::ImageLuma8(GrayImage::from_fn(181, 217, |x, y| Luma([((x + y) % 256) as u8])));
    let mask =
        image::DynamicImage::ImageLuma8(GrayImage::from_fn(181, 217, |x, _| Luma([if x > 90 { 255 } else { 0 }])));
    let pair = write_pair(&dir, "slice", &image, &mask);
    for (size, channels) in [(64, 1), (128, 3), (48, 1)] {
        let sample = load_sample(&pair, &Preprocess { size, channels, normalise: Normalisation::Unit }).unwrap();
        assert_eq!(sample.image.len(), channels * size * size);
        assert_eq!(sample.mask.len(), size * size);
        assert_eq!(sample.native_size, (181, 217));
        assert!(sample.image.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(sample.mask.iter().all(|&v| v == 0.0 || v == 1.0), "nearest resize keeps the mask binary");
        // The right half is foreground, and stays so.
        assert_eq!(sample.mask[size - 1], 1.0);
        assert_eq!(sample.mask[0], 0.0);
    }
}

#[test]
fn load_all_keeps_order_and_detect_channels_looks_at_colour() {
    let dir = TempDir::new("load-all");
    let mask = image::DynamicImage::ImageLuma8(GrayImage::new(8, 8));
    let pairs: Vec<Pair> = (0..6u8)
        .map(|i| {
            let image = image::DynamicImage::ImageLuma8(GrayImage::from_pixel(8, 8, Luma([i * 40])));
            write_pair(&dir, &format!("g{i}"), &image, &mask)
        })
        .collect();
    let samples = load_all(&pairs, &GRAY).unwrap();
    for (i, sample) in samples.iter().enumerate() {
        assert!((sample.image[0] - (i as f32 * 40.0) / 255.0).abs() < 1e-6, "sample {i} out of order");
    }
    assert_eq!(detect_channels(&pairs).unwrap(), 1);

    let gray_in_rgb = image::DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([90, 90, 90])));
    let gray_rgb_pair = write_pair(&dir, "rgb_gray", &gray_in_rgb, &mask);
    assert_eq!(detect_channels(std::slice::from_ref(&gray_rgb_pair)).unwrap(), 1);

    let colour = image::DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([200, 90, 40])));
    let colour_pair = write_pair(&dir, "colour", &colour, &mask);
    assert_eq!(detect_channels(&[gray_rgb_pair, colour_pair]).unwrap(), 3);
    assert!(detect_channels(&[]).is_err());
}

#[test]
fn unreadable_files_are_named_in_errors() {
    let dir = TempDir::new("unreadable");
    let fake = dir.path("fake.png");
    std::fs::write(&fake, "this is text, not a picture").unwrap();
    let e = format!("{:#}", load_image(&fake, &GRAY).unwrap_err());
    assert!(e.contains("fake.png"), "{e}");

    let missing = dir.path("missing.png");
    let e = format!("{:#}", load_image(&missing, &GRAY).unwrap_err());
    assert!(e.contains("missing.png"), "{e}");

    // A mask of another size than its image is resized to the model's size all the same.
    let image = image::DynamicImage::ImageLuma8(GrayImage::new(8, 8));
    let small_mask =
        image::DynamicImage::ImageLuma8(GrayImage::from_fn(4, 8, |x, _| Luma([if x >= 2 { 255 } else { 0 }])));
    let pair = write_pair(&dir, "mismatch", &image, &small_mask);
    let sample = load_sample(&pair, &GRAY).unwrap();
    assert_eq!(sample.native_size, (8, 8));
    let row: Vec<f32> = sample.mask[..16].to_vec();
    assert_eq!(row, [[0.0; 8], [1.0; 8]].concat(), "the right half of the mask is foreground");

    let pair = Pair { image: dir.path("mismatch.png"), mask: fake };
    assert!(format!("{:#}", load_sample(&pair, &GRAY).unwrap_err()).contains("fake.png"));
    assert!(load_image(
        &dir.path("mismatch.png"),
        &Preprocess { size: 16, channels: 2, normalise: Normalisation::Unit }
    )
    .is_err());
}

#[test]
fn synthetic_slices_are_deterministic() {
    let (image, mask) = synth::generate(7, 3, 64);
    let (again_image, again_mask) = synth::generate(7, 3, 64);
    assert_eq!(image.as_raw(), again_image.as_raw());
    assert_eq!(mask.as_raw(), again_mask.as_raw());
    assert_eq!(image.dimensions(), (64, 64));
    assert!(mask.as_raw().iter().all(|&v| v == 0 || v == 255));
    assert_ne!(synth::generate(7, 4, 64).0.as_raw(), image.as_raw());
    assert_ne!(synth::generate(8, 3, 64).0.as_raw(), image.as_raw());

    let samples = synth::samples(7, 5, 64);
    assert_eq!(samples.len(), 5);
    let expected: Vec<f32> = image.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    assert_eq!(samples[3].image, expected);
    assert_eq!(samples[3].mask, mask.as_raw().iter().map(|&v| f32::from(v / 255)).collect::<Vec<_>>());
}

/// Tumour areas (pixels) of slices 0..100 at 64×64.
fn tumour_areas(seed: u64) -> Vec<usize> {
    synth::samples(seed, 100, 64).iter().map(|s| s.mask.iter().filter(|&&v| v > 0.5).count()).collect()
}

#[test]
fn about_fifteen_percent_of_slices_have_no_tumour_and_sizes_vary() {
    let areas = tumour_areas(11);
    let empty = areas.iter().filter(|&&a| a == 0).count();
    assert!((6..=25).contains(&empty), "{empty} of 100 slices without a tumour");
    let tumours: Vec<usize> = areas.into_iter().filter(|&a| a > 0).collect();
    let (smallest, largest) = (*tumours.iter().min().unwrap(), *tumours.iter().max().unwrap());
    assert!(smallest <= 60, "smallest tumour {smallest} px");
    assert!(largest >= 400 && largest >= 8 * smallest, "tumours from {smallest} to {largest} px");
}

#[test]
fn tumours_are_not_found_by_an_intensity_threshold_alone() {
    // The best single threshold (either polarity) over 100 slices, scored by Dice.
    let samples = synth::samples(5, 100, 64);
    let mut best = 0.0f64;
    for level in 1..20 {
        let t = level as f32 / 20.0;
        for brighter in [true, false] {
            let (mut hit, mut predicted, mut truth) = (0usize, 0usize, 0usize);
            for s in &samples {
                for (&v, &m) in s.image.iter().zip(&s.mask) {
                    let p = if brighter { v > t } else { v < t };
                    hit += usize::from(p && m > 0.5);
                    predicted += usize::from(p);
                    truth += usize::from(m > 0.5);
                }
            }
            best = best.max(2.0 * hit as f64 / (predicted + truth) as f64);
        }
    }
    assert!(best < 0.5, "an intensity threshold reaches Dice {best:.3}");
}

#[test]
fn synthetic_datasets_are_written_as_pairs_that_load_back() {
    let dir = TempDir::new("synth");
    assert_eq!(synth::write_dataset(&dir.0, 12, 9, 32).unwrap(), 12);
    let pairing = find_pairs(&dir.0).unwrap();
    assert_eq!(pairing.pairs.len(), 12);
    assert_eq!(pairing.pairs[0].image, dir.path("images/0000.png"));
    assert_eq!(pairing.pairs[11].mask, dir.path("masks/0011.png"));
    let loaded =
        load_all(&pairing.pairs, &Preprocess { size: 32, channels: 1, normalise: Normalisation::Unit }).unwrap();
    let direct = synth::samples(9, 12, 32);
    for (a, b) in loaded.iter().zip(&direct) {
        assert_eq!(a.image, b.image);
        assert_eq!(a.mask, b.mask);
    }
}
