//! Decoding and resizing images and masks on CPU threads, into the f32 layouts the GPU wants.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use image::imageops::{self, FilterType};
use image::{ColorType, DynamicImage, GrayImage, ImageError, ImageReader, Limits};
use rayon::prelude::*;

use super::normalise::Normalisation;
use super::pairs::Pair;
use super::skipped::Unusable;
use crate::model::ModelConfig;

/// The widest and tallest image decoded: larger ones (or decompression bombs, a few bytes
/// declaring 100000×100000 pixels) are refused before anything is allocated.
pub const MAX_SIDE: u32 = 16384;
/// The most memory one image's decoding may allocate.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// How an image file becomes the network's input: shared by training, evaluation and prediction.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    /// Side of the square every image and mask is resized to.
    pub size: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Applied to the resized image in [0, 1].
    pub normalise: Normalisation,
}

impl Preprocess {
    /// What `model` was trained on.
    pub fn for_model(model: &ModelConfig) -> Preprocess {
        Preprocess { size: model.size, channels: model.channels, normalise: model.normalise }
    }

    fn validate(&self) -> Result<()> {
        if self.size == 0 {
            bail!("the image size must be at least 1 pixel");
        }
        if self.channels != 1 && self.channels != 3 {
            bail!("images must have 1 or 3 channels, not {}", self.channels);
        }
        Ok(())
    }
}

/// A decoded sample: resized to the model's square, or at its own size for patch training
/// ([`decode_pairs_native`]).
#[derive(Clone, Debug)]
pub struct Sample {
    /// `[channels, size, size]` (or `[channels, height, width]` at native size): in [0, 1],
    /// then normalised (see [`Preprocess::normalise`]).
    pub image: Vec<f32>,
    /// `[size, size]` (or `[height, width]`): each 0 or 1, or for a K-class model each a class
    /// id below K.
    pub mask: Vec<f32>,
    /// (width, height) of the image file, to scale predictions back.
    pub native_size: (u32, u32),
}

/// A pair for a binary model: the mask binarised (see [`binarize`]).
pub fn load_sample(pair: &Pair, pre: &Preprocess) -> Result<Sample> {
    load_sample_with_classes(pair, pre, 1)
}

/// A pair for a model of `classes` classes: 1 binarises the mask; K ≥ 2 reads its pixel values
/// as class ids (see [`class_ids`]). Masks are resized by nearest neighbour either way, also
/// when their size differs from their image's.
pub fn load_sample_with_classes(pair: &Pair, pre: &Preprocess, classes: usize) -> Result<Sample> {
    pre.validate()?;
    Ok(decode_pair(pair, pre, Side::Square, classes)?.0)
}

/// What decoding resizes an image and its mask to.
#[derive(Clone, Copy)]
enum Side {
    /// The model's square ([`Preprocess::size`]).
    Square,
    /// The image's own size; only the mask is resized if it differs.
    Native,
}

/// [`load_sample_with_classes`] for a validated `pre`, and whether the mask's size differed
/// from the image's.
fn decode_pair(pair: &Pair, pre: &Preprocess, side: Side, classes: usize) -> Result<(Sample, bool), Unusable> {
    let decoded = decode(&pair.image)?;
    let native_size = (decoded.width(), decoded.height());
    let (width, height) = match side {
        Side::Square => (pre.size as u32, pre.size as u32),
        Side::Native => native_size,
    };
    let image = resized_image(&decoded, (width, height), pre);
    let mask_image = decode(&pair.mask)?;
    let resized = (mask_image.width(), mask_image.height()) != native_size;
    let targets = mask_targets(&mask_image, classes, &pair.mask)?;
    let mask = match targets.dimensions() == (width, height) {
        true => targets,
        false => imageops::resize(&targets, width, height, FilterType::Nearest),
    };
    Ok((Sample { image, mask: mask.into_raw().into_iter().map(f32::from).collect(), native_size }, resized))
}

/// Image only (for prediction): `[channels, size, size]` in [0, 1], normalised, and its (width, height).
/// Resized with a bilinear filter (widened when shrinking, so no aliasing); colour becomes
/// luma for 1 channel, gray is replicated for 3.
pub fn load_image(path: &Path, pre: &Preprocess) -> Result<(Vec<f32>, (u32, u32))> {
    pre.validate()?;
    let decoded = decode(path)?;
    let side = pre.size as u32;
    Ok((resized_image(&decoded, (side, side), pre), (decoded.width(), decoded.height())))
}

/// `decoded` at `(width, height)`, planar, in [0, 1], then normalised.
fn resized_image(decoded: &DynamicImage, (width, height): (u32, u32), pre: &Preprocess) -> Vec<f32> {
    let same = (decoded.width(), decoded.height()) == (width, height);
    let planar = if pre.channels == 1 {
        let luma = decoded.to_luma32f();
        if same { luma } else { imageops::resize(&luma, width, height, FilterType::Triangle) }.into_raw()
    } else {
        let rgb = decoded.to_rgb32f();
        let interleaved =
            if same { rgb } else { imageops::resize(&rgb, width, height, FilterType::Triangle) }.into_raw();
        (0..3).flat_map(|c| interleaved.iter().skip(c).step_by(3).copied()).collect()
    };
    // The triangle filter can overshoot by rounding; keep the promised range.
    let mut image: Vec<f32> = planar.into_iter().map(|v| v.clamp(0.0, 1.0)).collect();
    pre.normalise.apply(&mut image, pre.channels);
    image
}

/// Decodes every pair in parallel for a binary model, returning samples in the order of `pairs`.
pub fn load_all(pairs: &[Pair], pre: &Preprocess) -> Result<Vec<Sample>> {
    load_all_with_classes(pairs, pre, 1)
}

/// Decodes every pair in parallel for a model of `classes` classes (see
/// [`load_sample_with_classes`]), returning samples in the order of `pairs`; the first
/// unusable file is an error (see [`decode_pairs`] to skip them).
pub fn load_all_with_classes(pairs: &[Pair], pre: &Preprocess, classes: usize) -> Result<Vec<Sample>> {
    let decoded = decode_pairs(pairs, pre, classes)?;
    match decoded.skipped.into_iter().next() {
        Some(first) => Err(first.into()),
        None => Ok(decoded.samples),
    }
}

/// Pairs decoded, the unusable ones left out.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The pairs that decoded, in the order given, and their samples.
    pub pairs: Vec<Pair>,
    pub samples: Vec<Sample>,
    /// One file of each pair left out (the image if both are bad) and why.
    pub skipped: Vec<Unusable>,
    /// Masks whose size differed from their image's (they are resized all the same).
    pub resized_masks: Vec<PathBuf>,
}

/// Decodes every pair in parallel for a model of `classes` classes (see
/// [`load_sample_with_classes`]), keeping the order of `pairs` and leaving out, with the reason,
/// those with an unusable file: empty, truncated, not an image, too large, an unsupported
/// pixel format, a class id out of range.
pub fn decode_pairs(pairs: &[Pair], pre: &Preprocess, classes: usize) -> Result<Decoded> {
    decode_pairs_at(pairs, pre, Side::Square, classes)
}

/// [`decode_pairs`] at each image's own size (`pre.size` unused), for patch training: a
/// sample's image is `[channels, height, width]` with `native_size` = (width, height).
pub fn decode_pairs_native(pairs: &[Pair], pre: &Preprocess, classes: usize) -> Result<Decoded> {
    decode_pairs_at(pairs, pre, Side::Native, classes)
}

fn decode_pairs_at(pairs: &[Pair], pre: &Preprocess, side: Side, classes: usize) -> Result<Decoded> {
    pre.validate()?;
    let results: Vec<_> = pairs.par_iter().map(|pair| decode_pair(pair, pre, side, classes)).collect();
    let mut decoded = Decoded::default();
    for (pair, result) in pairs.iter().zip(results) {
        match result {
            Ok((sample, resized)) => {
                if resized {
                    decoded.resized_masks.push(pair.mask.clone());
                }
                decoded.pairs.push(pair.clone());
                decoded.samples.push(sample);
            }
            Err(fault) => decoded.skipped.push(fault),
        }
    }
    Ok(decoded)
}

/// 1 if the first few readable images are all gray (or colour files with R = G = B), 3 if
/// any is in colour; None if no image can be read.
pub fn channels_of(pairs: &[Pair]) -> Option<usize> {
    const LOOKED_AT: usize = 8;
    let mut gray = Vec::with_capacity(LOOKED_AT);
    // Unreadable images are passed over (they are skipped later): a few at a time, in order.
    for group in pairs.chunks(LOOKED_AT) {
        let readable: Vec<bool> =
            group.par_iter().filter_map(|pair| decode(&pair.image).ok().map(|image| is_gray(&image))).collect();
        gray.extend(readable.into_iter().take(LOOKED_AT - gray.len()));
        if gray.len() == LOOKED_AT {
            break;
        }
    }
    match gray.is_empty() {
        true => None,
        false => Some(if gray.iter().all(|&g| g) { 1 } else { 3 }),
    }
}

/// [`channels_of`], with no readable image an error.
pub fn detect_channels(pairs: &[Pair]) -> Result<usize> {
    match channels_of(pairs) {
        Some(channels) => Ok(channels),
        None if pairs.is_empty() => bail!("no images to look at for their channel count"),
        None => bail!("none of the {} images can be read, e.g. {}", pairs.len(), pairs[0].image.display()),
    }
}

pub(crate) fn is_gray(image: &DynamicImage) -> bool {
    // JPEG chroma rounding can leave gray pixels a level or two apart.
    const TOLERANCE: f32 = 2.5 / 255.0;
    !image.color().has_color()
        || image.to_rgb32f().pixels().all(|p| {
            let [r, g, b] = p.0;
            (r - g).abs() <= TOLERANCE && (g - b).abs() <= TOLERANCE
        })
}

/// Foreground where any channel exceeds half the range (> 127 of 255); a mask whose largest
/// value is 1 (a 0/1 label mask) is foreground wherever it is not 0. Returns 0/1 pixels.
pub(crate) fn binarize(mask: &DynamicImage) -> GrayImage {
    let full_scale = match mask.color() {
        ColorType::L8 | ColorType::La8 | ColorType::Rgb8 | ColorType::Rgba8 => Some(255.0),
        ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16 => Some(65535.0),
        _ => None, // float masks are already on a 0..1 scale
    };
    let rgb = mask.to_rgb32f();
    let largest = rgb.as_raw().iter().fold(0.0f32, |m, &v| m.max(v));
    let zero_one = full_scale.is_some_and(|scale| (largest * scale).round() == 1.0);
    let threshold = if zero_one { 0.0 } else { 0.5 };
    GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        image::Luma([u8::from(rgb.get_pixel(x, y).0.iter().any(|&v| v > threshold))])
    })
}

/// The mask a model of `classes` classes trains on: 0/1 pixels ([`binarize`]) for 1, class ids
/// ([`class_ids`]) for K ≥ 2.
pub(crate) fn mask_targets(mask: &DynamicImage, classes: usize, path: &Path) -> Result<GrayImage, Unusable> {
    if classes == 1 {
        Ok(binarize(mask))
    } else {
        class_ids(mask, classes, path)
    }
}

/// A class-id mask: each pixel's gray value is its class, below `classes`. 8- or 16-bit gray, or
/// colour with R = G = B; a colour pixel (a palette-coloured mask would be misread), another
/// pixel format or an id of `classes` or more is an error naming the file.
pub(crate) fn class_ids(mask: &DynamicImage, classes: usize, path: &Path) -> Result<GrayImage, Unusable> {
    let fault = |reason: String| Err(Unusable::new(path, reason));
    let rgb: Vec<[u16; 3]> = match mask.color() {
        ColorType::L8 | ColorType::La8 => mask.to_luma8().pixels().map(|p| [u16::from(p.0[0]); 3]).collect(),
        ColorType::L16 | ColorType::La16 => mask.to_luma16().pixels().map(|p| [p.0[0]; 3]).collect(),
        ColorType::Rgb8 | ColorType::Rgba8 => mask.to_rgb8().pixels().map(|p| p.0.map(u16::from)).collect(),
        ColorType::Rgb16 | ColorType::Rgba16 => mask.to_rgb16().pixels().map(|p| p.0).collect(),
        other => {
            return fault(format!(
                "is a {other:?} mask: class-id masks must be 8- or 16-bit images whose gray value is the class id"
            ))
        }
    };
    let width = mask.width() as usize;
    let mut ids = Vec::with_capacity(rgb.len());
    for (k, &[r, g, b]) in rgb.iter().enumerate() {
        let (x, y) = (k % width, k / width);
        if r != g || g != b {
            return fault(format!(
                "has a colour pixel ({r}, {g}, {b}) at ({x}, {y}): class-id masks hold the class id as a gray value"
            ));
        }
        if usize::from(r) >= classes {
            let hint = if usize::from(r) < crate::model::MAX_CLASSES {
                format!("use --classes {} or more if the masks have that many classes", r + 1)
            } else {
                "is it a 0/255 binary mask? Those train without --classes".to_string()
            };
            return fault(format!(
                "has class id {r} at ({x}, {y}), but --classes {classes} allows ids 0 to {}: {hint}",
                classes - 1
            ));
        }
        ids.push(r as u8);
    }
    Ok(GrayImage::from_raw(mask.width(), mask.height(), ids).expect("one id per pixel"))
}

/// Opens an image by its contents (a JPEG named .png still decodes), within [`MAX_SIDE`] and
/// [`MAX_DECODE_BYTES`]; what is wrong with a file that will not decode is its [`Unusable`]
/// reason. The one place images and masks are decoded.
pub(crate) fn decode(path: &Path) -> Result<DynamicImage, Unusable> {
    let fault = |reason: String| Unusable::new(path, reason);
    let bytes = std::fs::read(path).map_err(|e| fault(format!("cannot be read: {e}")))?;
    if bytes.is_empty() {
        return Err(fault("is empty (0 bytes)".into()));
    }
    // By the contents, not the name: a text file called .png is not an image at all.
    let format = image::guess_format(&bytes)
        .map_err(|_| fault("is not an image (its contents are not png, jpeg, bmp or tiff)".into()))?;
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    reader.limits(decode_limits());
    reader.decode().map_err(|e| match e {
        ImageError::Limits(_) => fault(format!(
            "{}, over the decoding limit of {MAX_SIDE}×{MAX_SIDE} pixels and {} MiB (a decompression bomb?): shrink it or remove it",
            declared_size(path),
            MAX_DECODE_BYTES >> 20
        )),
        ImageError::Unsupported(e) => fault(format!("has a pixel format wgunet cannot read: {e}")),
        e => fault(format!("is not a readable image: {e}")),
    })
}

fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// "declares 100000×100000 pixels", from the header alone (nothing is decoded), or "is too
/// large" where even the header cannot be read.
fn declared_size(path: &Path) -> String {
    let reader = ImageReader::open(path).and_then(|r| r.with_guessed_format()).map_err(ImageError::from);
    match reader.and_then(|mut reader| {
        reader.no_limits();
        reader.into_dimensions()
    }) {
        Ok((width, height)) => format!("declares {width}×{height} pixels"),
        Err(_) => "is too large".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb};

    fn ids(mask: DynamicImage, classes: usize) -> Result<Vec<u8>, Unusable> {
        class_ids(&mask, classes, Path::new("m.png")).map(GrayImage::into_raw)
    }

    #[test]
    fn class_ids_read_gray_values_and_name_what_is_wrong() {
        let gray = GrayImage::from_fn(3, 2, |x, y| Luma([(x + y) as u8]));
        assert_eq!(ids(DynamicImage::ImageLuma8(gray.clone()), 4).unwrap(), [0, 1, 2, 1, 2, 3]);
        let wide: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(3, 1, |x, _| Luma([x as u16]));
        assert_eq!(ids(DynamicImage::ImageLuma16(wide), 3).unwrap(), [0, 1, 2]);
        let rgb = image::RgbImage::from_fn(2, 1, |x, _| Rgb([x as u8; 3]));
        assert_eq!(ids(DynamicImage::ImageRgb8(rgb), 2).unwrap(), [0, 1]);

        let err = format!("{:#}", ids(DynamicImage::ImageLuma8(gray), 3).unwrap_err());
        assert!(err.contains("m.png") && err.contains("class id 3 at (2, 1)") && err.contains("--classes 4"), "{err}");
        let binary = GrayImage::from_fn(2, 1, |x, _| Luma([if x == 1 { 255 } else { 0 }]));
        let err = format!("{:#}", ids(DynamicImage::ImageLuma8(binary), 3).unwrap_err());
        assert!(err.contains("0/255 binary mask"), "{err}");
        let colour = image::RgbImage::from_fn(2, 1, |x, _| Rgb([x as u8, 0, 0]));
        let err = format!("{:#}", ids(DynamicImage::ImageRgb8(colour), 3).unwrap_err());
        assert!(err.contains("colour pixel (1, 0, 0) at (1, 0)"), "{err}");
    }
}
