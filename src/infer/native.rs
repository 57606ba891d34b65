//! Images and masks at their own size, for tiled inference and for scores at native
//! resolution: `data::load`'s decoding, colour conversion, mask binarisation and class ids,
//! without the resize (a test holds the two together).

use std::path::Path;

use anyhow::{bail, Result};

use crate::data::load::{binarize, class_ids, decode};
use crate::data::normalise::Normalisation;

/// `[channels, height, width]` in [0, 1], then normalised: colour becomes luma for 1 channel,
/// gray is replicated for 3.
pub struct NativeImage {
    pub pixels: Vec<f32>,
    pub width: u32,
    pub height: u32,
}

pub fn load_image(path: &Path, channels: usize, normalise: &Normalisation) -> Result<NativeImage> {
    let decoded = decode(path)?;
    let (width, height) = (decoded.width(), decoded.height());
    let planar = match channels {
        1 => decoded.to_luma32f().into_raw(),
        3 => {
            let interleaved = decoded.to_rgb32f().into_raw();
            (0..3).flat_map(|c| interleaved.iter().skip(c).step_by(3).copied()).collect()
        }
        _ => bail!("images must have 1 or 3 channels, not {channels}"),
    };
    let mut pixels: Vec<f32> = planar.into_iter().map(|v| v.clamp(0.0, 1.0)).collect();
    normalise.apply(&mut pixels, channels);
    Ok(NativeImage { pixels, width, height })
}

/// A mask file as foreground flags, row-major, and its (width, height): foreground where any
/// channel exceeds half the range; a mask whose largest value is 1 (a 0/1 label mask) is
/// foreground wherever it is not 0 — `data::load`'s rule.
pub fn load_mask(path: &Path) -> Result<(Vec<bool>, (u32, u32))> {
    let mask = binarize(&decode(path)?);
    let size = mask.dimensions();
    Ok((mask.into_raw().into_iter().map(|v| v == 1).collect(), size))
}

/// A class-id mask file as ids below `classes`, row-major, and its (width, height) —
/// `data::load`'s rule for K-class models.
pub fn load_labels(path: &Path, classes: usize) -> Result<(Vec<u8>, (u32, u32))> {
    let ids = class_ids(&decode(path)?, classes, path)?;
    let size = ids.dimensions();
    Ok((ids.into_raw(), size))
}

/// Ids (0/1 or class ids) of a `from` (width, height) mask at the `to` size of its image:
/// unchanged when they agree, else resized by nearest neighbour.
pub fn resize_ids(ids: Vec<u8>, from: (u32, u32), to: (u32, u32)) -> Vec<u8> {
    if from == to {
        return ids;
    }
    let mask = image::GrayImage::from_raw(from.0, from.1, ids).expect("one id per pixel");
    image::imageops::resize(&mask, to.0, to.1, image::imageops::FilterType::Nearest).into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load::{self, Preprocess};
    use crate::data::pairs::Pair;
    use image::DynamicImage;

    #[test]
    fn masks_of_another_size_are_scored_at_their_image_size() {
        assert_eq!(resize_ids(vec![0, 2, 1], (3, 1), (3, 1)), [0, 2, 1]);
        assert_eq!(resize_ids(vec![0, 1, 2, 0], (2, 2), (4, 2)), [0, 0, 1, 1, 2, 2, 0, 0]);
        // Shrinking samples at the new pixels' centres: row 1, columns 1 and 3.
        assert_eq!(resize_ids(vec![0, 0, 1, 1, 2, 2, 0, 0], (4, 2), (2, 1)), [2, 0]);
    }

    /// At the native size the loader's resize is the identity, so both must agree exactly.
    #[test]
    fn agrees_with_the_loader_at_native_size() {
        let dir = std::env::temp_dir().join(format!("wgunet-native-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let side = 12u32;
        let rgb = image::RgbImage::from_fn(side, side, |x, y| image::Rgb([(x * 20) as u8, (y * 20) as u8, 90]));
        let image_path = dir.join("a.png");
        rgb.save(&image_path).unwrap();
        let cases: [(&str, DynamicImage); 3] = [
            (
                "gray",
                DynamicImage::ImageLuma8(image::GrayImage::from_fn(side, side, |x, y| {
                    image::Luma([((x + y) * 11) as u8])
                })),
            ),
            (
                "zero-one",
                DynamicImage::ImageLuma8(image::GrayImage::from_fn(side, side, |x, _| image::Luma([(x % 2) as u8]))),
            ),
            (
                "colour",
                DynamicImage::ImageRgb8(image::RgbImage::from_fn(side, side, |x, y| {
                    image::Rgb([0, (x * 23) as u8, (y * 5) as u8])
                })),
            ),
        ];
        for (name, mask) in cases {
            let mask_path = dir.join(format!("{name}_mask.png"));
            mask.save(&mask_path).unwrap();
            let pair = Pair { image: image_path.clone(), mask: mask_path };
            for channels in [1, 3] {
                let pre = Preprocess { size: side as usize, channels, normalise: Normalisation::Zscore };
                let sample = load::load_sample(&pair, &pre).unwrap();
                let native = load_image(&pair.image, channels, &pre.normalise).unwrap();
                assert_eq!((native.width, native.height), sample.native_size);
                assert_eq!(native.pixels, sample.image, "{channels}-channel image");
                let (bits, size) = load_mask(&pair.mask).unwrap();
                assert_eq!(size, (side, side));
                let want: Vec<bool> = sample.mask.iter().map(|&m| m > 0.5).collect();
                assert_eq!(bits, want, "{name} mask");
            }
        }
        // Class ids 0..3 in a gray mask read the same both ways.
        let ids = image::GrayImage::from_fn(side, side, |x, y| image::Luma([((x + 2 * y) % 3) as u8]));
        let mask_path = dir.join("ids_mask.png");
        ids.save(&mask_path).unwrap();
        let pair = Pair { image: image_path.clone(), mask: mask_path };
        let sample = load::load_sample_with_classes(
            &pair,
            &Preprocess { size: side as usize, channels: 1, normalise: Normalisation::Unit },
            3,
        )
        .unwrap();
        let (labels, size) = load_labels(&pair.mask, 3).unwrap();
        assert_eq!(size, (side, side));
        assert_eq!(labels, ids.as_raw().as_slice());
        assert_eq!(sample.mask, labels.iter().map(|&v| f32::from(v)).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
