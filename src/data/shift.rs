//! `wgunet shift`: a dataset's images as another scanner might have recorded them — a gamma
//! curve, a contrast change and a smooth multiplicative bias field — with their masks copied, so
//! that `eval --data` measures how much a model loses to such a change before a real one
//! costs it.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageFormat};
use rayon::prelude::*;

use super::load::decode;
use super::pairs::Pair;

/// An intensity change of images in [0, 1]: `v ↦ clamp(((v^gamma − ½)·contrast + ½)·field)`,
/// where `field` runs linearly from 1 − bias at the top-left corner to 1 + bias at the
/// bottom-right (the slow intensity drift of an MRI receive coil).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shift {
    pub gamma: f32,
    pub contrast: f32,
    pub bias: f32,
}

impl Shift {
    pub const NONE: Shift = Shift { gamma: 1.0, contrast: 1.0, bias: 0.0 };

    /// `v` at pixel (x, y) of a `width`×`height` image.
    pub fn apply(&self, v: f32, (x, y): (u32, u32), (width, height): (u32, u32)) -> f32 {
        let along = |p: u32, n: u32| if n > 1 { p as f32 / (n - 1) as f32 } else { 0.5 };
        let field = 1.0 + self.bias * (along(x, width) + along(y, height) - 1.0);
        (((v.powf(self.gamma) - 0.5) * self.contrast + 0.5) * field).clamp(0.0, 1.0)
    }

    /// `image` shifted, as 8-bit gray or RGB (as it was gray or in colour).
    pub fn image(&self, image: &DynamicImage) -> DynamicImage {
        let size = (image.width(), image.height());
        let mut rgb = image.to_rgb32f();
        for (x, y, p) in rgb.enumerate_pixels_mut() {
            p.0 = p.0.map(|v| self.apply(v, (x, y), size));
        }
        let shifted = DynamicImage::ImageRgb32F(rgb);
        match image.color().has_color() {
            true => DynamicImage::ImageRgb8(shifted.to_rgb8()),
            false => DynamicImage::ImageLuma8(shifted.to_luma8()),
        }
    }
}

/// Writes each pair's image shifted to `out/images/STEM.png` and its mask, unchanged, to
/// `out/masks/` under its own name; returns how many pairs were written.
pub fn write_shifted(pairs: &[Pair], shift: Shift, out: &Path) -> Result<usize> {
    let mut stems = HashSet::new();
    for pair in pairs {
        let stem = pair.image.file_stem().unwrap_or_default();
        if !stems.insert(stem) {
            bail!(
                "two images are named {} (e.g. {}): the shifted copies would overwrite each other",
                stem.to_string_lossy(),
                pair.image.display()
            );
        }
    }
    let (images, masks) = (out.join("images"), out.join("masks"));
    for dir in [&images, &masks] {
        std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    }
    pairs.par_iter().try_for_each(|pair| -> Result<()> {
        let image = decode(&pair.image)?;
        let stem = pair.image.file_stem().unwrap_or_default().to_string_lossy();
        let path = images.join(format!("{stem}.png"));
        let mut bytes = Vec::new();
        shift.image(&image).write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)?;
        crate::checkpoint::write_atomic(&path, &bytes)?;
        let mask = masks.join(pair.mask.file_name().unwrap_or_default());
        let bytes = std::fs::read(&pair.mask).with_context(|| format!("could not read {}", pair.mask.display()))?;
        crate::checkpoint::write_atomic(&mask, &bytes)
    })?;
    Ok(pairs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_shift_is_the_identity_and_each_part_does_what_it_says() {
        let size = (11, 7);
        for v in [0.0, 0.1, 0.5, 0.93, 1.0] {
            assert!((Shift::NONE.apply(v, (3, 4), size) - v).abs() < 1e-6);
        }
        let gamma = Shift { gamma: 2.0, ..Shift::NONE };
        assert!((gamma.apply(0.5, (0, 0), size) - 0.25).abs() < 1e-6);
        let contrast = Shift { contrast: 2.0, ..Shift::NONE };
        assert!((contrast.apply(0.6, (0, 0), size) - 0.7).abs() < 1e-6);
        assert_eq!(contrast.apply(0.9, (0, 0), size), 1.0, "clamped");
        let bias = Shift { bias: 0.2, ..Shift::NONE };
        assert!((bias.apply(0.5, (0, 0), size) - 0.4).abs() < 1e-6, "1 − bias at the top left");
        assert!((bias.apply(0.5, (10, 6), size) - 0.6).abs() < 1e-6, "1 + bias at the bottom right");
        assert!((bias.apply(0.5, (5, 3), size) - 0.5).abs() < 1e-6, "1 in the middle");
    }
}
