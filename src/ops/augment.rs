//! Data augmentation on the GPU (`shaders/augment.wgsl`): random flips, quarter turns, small
//! rotations, scaling and U-Net-style elastic deformation, applied to a batch of images and their
//! masks together with one kernel launch.
//!
//! The host draws one [`ImageTransform`] per image — an affine map plus displacements on a
//! `GRID`×`GRID` control grid, 38 numbers — and writes them into a small buffer each step; the
//! kernel resamples every pixel. Samples that fall outside the image are mirrored back in, for the
//! image and the mask alike: the U-Net paper extrapolates missing border context the same way,
//! mirroring invents no artificial edges (as zero padding would) or smeared streaks (as clamping
//! would), and treating both tensors identically keeps the mask on the structures the image shows,
//! even in the mirrored margin.

use anyhow::Result;
use rand::Rng;

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

/// Which random transforms [`ImageTransform::random`] draws.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Horizontal and vertical flips, each with probability 1/2.
    pub flips: bool,
    /// Quarter turns: 0–3 of them, uniformly.
    pub rot90: bool,
    /// Rotations drawn uniformly from ±this many degrees.
    pub max_rotation_deg: f32,
    /// Zoom drawn uniformly from [1 − r, 1 + r] (0.1 → [0.9, 1.1]); keep it below 1.
    pub scale_range: f32,
    /// Standard deviation, in pixels, of the elastic control-point displacements (0 = off).
    pub elastic_pixels: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        // 4 pixels is about size/32 on the 128–256 pixel tiles we train on; small tiles get less
        // (see `ImageTransform::random`).
        AugmentConfig { flips: true, rot90: true, max_rotation_deg: 15.0, scale_range: 0.1, elastic_pixels: 4.0 }
    }
}

/// The augmentation a `train` command line asks for (`--augment`), from none to the U-Net
/// paper's full set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AugmentPreset {
    /// No augmentation: the network sees the training images as they are.
    None,
    /// Random horizontal and vertical flips, as the seed notebook.
    Flips,
    /// Flips and quarter turns: the 8 symmetries of the square, exact (nothing is interpolated).
    Dihedral,
    /// Dihedral plus ±15° rotations, ±10 % scaling and elastic deformation (the U-Net paper's).
    Full,
}

impl AugmentPreset {
    /// The transforms to draw, or None when training sees the images unchanged.
    pub fn config(self) -> Option<AugmentConfig> {
        let dihedral =
            AugmentConfig { flips: true, rot90: true, max_rotation_deg: 0.0, scale_range: 0.0, elastic_pixels: 0.0 };
        match self {
            AugmentPreset::None => None,
            AugmentPreset::Flips => Some(AugmentConfig { rot90: false, ..dihedral }),
            AugmentPreset::Dihedral => Some(dihedral),
            AugmentPreset::Full => Some(AugmentConfig::default()),
        }
    }
}

/// Elastic control points per side; they span the image corner to corner.
pub const GRID: usize = 4;

/// f32s per image in the transforms buffer: `a`, `t`, then `elastic`.
const STRIDE: usize = 4 + 2 + 2 * GRID * GRID;

/// Per-image transform: output pixel (x, y) samples the input at `A·(x, y) + t + elastic(x, y)`,
/// with `A = [[a[0], a[1]], [a[2], a[3]]]` (flips, quarter turns, rotation and scale about the
/// centre) and `elastic` the bilinear interpolation of the control-point displacements
/// `elastic[j * GRID + i] = [dx, dy]` (i along x, j along y). Coordinates are pixel centres.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageTransform {
    pub a: [f32; 4],
    pub t: [f32; 2],
    pub elastic: [[f32; 2]; GRID * GRID],
}

const HFLIP: [f32; 4] = [-1.0, 0.0, 0.0, 1.0];
const VFLIP: [f32; 4] = [1.0, 0.0, 0.0, -1.0];
const QUARTER_TURN: [f32; 4] = [0.0, -1.0, 1.0, 0.0];

/// 2×2 row-major matrix product.
fn mul(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
    [a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3], a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3]]
}

/// A standard normal sample (Box–Muller; rand 0.9 alone has no normal distribution).
fn normal(rng: &mut impl Rng) -> f32 {
    // 1 − u lies in (0, 1], so the logarithm is finite.
    let u: f32 = 1.0 - rng.random::<f32>();
    let v: f32 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

impl ImageTransform {
    pub fn identity(size: usize) -> Self {
        Self::about_centre(size, [1.0, 0.0, 0.0, 1.0])
    }

    /// `a` applied about the image centre, no elastic part. With integer `a` the translation is a
    /// whole number of pixels, computed exactly.
    fn about_centre(size: usize, a: [f32; 4]) -> Self {
        let c = (size.max(1) - 1) as f32 / 2.0;
        ImageTransform {
            a,
            t: [c - (a[0] * c + a[1] * c), c - (a[2] * c + a[3] * c)],
            elastic: [[0.0; 2]; GRID * GRID],
        }
    }

    pub fn random(rng: &mut impl Rng, size: usize, cfg: &AugmentConfig) -> Self {
        // Flips and quarter turns are exact integer matrices, so with no rotation, scaling or
        // elastic part a transform moves whole pixels and interpolates nothing.
        let mut a = [1.0, 0.0, 0.0, 1.0];
        if cfg.flips {
            if rng.random_bool(0.5) {
                a = mul(a, HFLIP);
            }
            if rng.random_bool(0.5) {
                a = mul(a, VFLIP);
            }
        }
        if cfg.rot90 {
            for _ in 0..rng.random_range(0..4) {
                a = mul(a, QUARTER_TURN);
            }
        }
        if cfg.max_rotation_deg != 0.0 || cfg.scale_range != 0.0 {
            let max = cfg.max_rotation_deg.abs();
            let angle = rng.random_range(-max..=max).to_radians();
            let r = cfg.scale_range.abs();
            // Zooming in by `zoom` samples the input on a grid 1/zoom as fine.
            let inv = 1.0 / rng.random_range(1.0 - r..=1.0 + r);
            let (sin, cos) = angle.sin_cos();
            a = mul([cos * inv, -sin * inv, sin * inv, cos * inv], a);
        }
        let mut t = Self::about_centre(size, a);
        if cfg.elastic_pixels > 0.0 {
            // Neighbouring control points moving towards each other by more than their spacing
            // would fold the image over itself; a σ of at most 1/6 of the spacing, with draws
            // clipped at 3σ, keeps the warp gentle and smooth on small tiles too.
            let spacing = (size.max(2) - 1) as f32 / (GRID - 1) as f32;
            let sigma = cfg.elastic_pixels.min(spacing / 6.0);
            for d in t.elastic.iter_mut().flatten() {
                *d = (sigma * normal(rng)).clamp(-3.0 * sigma, 3.0 * sigma);
            }
        }
        t
    }
}

/// The augmentation of a batch of `n` square images of `channels` channels and their 1-channel
/// masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub n: usize,
    pub channels: usize,
    pub size: usize,
    /// The masks hold class ids (K-class training): each output pixel takes the id of the
    /// nearest source pixel. Otherwise they are 0/1, interpolated and thresholded at 0.5.
    pub class_ids: bool,
}

uniform! {
    struct Params {
        n: u32,
        channels: u32,
        size: u32,
    }
}

impl Augment {
    /// f32s in the transforms buffer for one batch.
    pub fn transforms_len(&self) -> usize {
        self.n * STRIDE
    }

    /// f32s in an image tensor `[n, channels, size, size]`.
    pub fn image_len(&self) -> usize {
        self.n * self.channels * self.size * self.size
    }

    /// f32s in a mask tensor `[n, 1, size, size]`.
    pub fn mask_len(&self) -> usize {
        self.n * self.size * self.size
    }

    /// The transforms buffer's contents for one transform per image.
    pub fn pack(&self, t: &[ImageTransform]) -> Vec<f32> {
        assert_eq!(t.len(), self.n, "augment: one transform per image");
        let mut out = Vec::with_capacity(self.transforms_len());
        for t in t {
            out.extend(t.a);
            out.extend(t.t);
            out.extend(t.elastic.iter().flatten());
        }
        out
    }

    /// `image_in` → `image_out` (bilinear) and `mask_in` → `mask_out` (bilinear, then > 0.5 → 1
    /// else 0; or the nearest pixel's class id with `class_ids`), each image by its transform in
    /// `transforms` (written with [`Augment::pack`]). Outputs may not alias inputs.
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        transforms: &BufferView,
        image_in: &BufferView,
        mask_in: &BufferView,
        image_out: &BufferView,
        mask_out: &BufferView,
    ) -> Result<Dispatch> {
        let bindings = [
            ("transforms", transforms, self.transforms_len()),
            ("image_in", image_in, self.image_len()),
            ("mask_in", mask_in, self.mask_len()),
            ("image_out", image_out, self.image_len()),
            ("mask_out", mask_out, self.mask_len()),
        ];
        let spec = KernelSpec::per_element("augment", "augment")
            .constant("GRID", GRID as f64)
            .constant("NEAREST_MASK", f64::from(u8::from(self.class_ids)));
        let params = Params { n: self.n as u32, channels: self.channels as u32, size: self.size as u32 };
        launch(gpu, &spec, &params, &bindings, grid_1d(self.n * self.size * self.size, WG))
    }
}

/// Plain f64 references.
pub mod reference {
    use super::{Augment, ImageTransform, GRID};

    /// Folds `v` into [0, last] by mirroring about 0 and `last`.
    fn mirror(v: f64, last: f64) -> f64 {
        if last == 0.0 {
            return 0.0;
        }
        let q = v.rem_euclid(2.0 * last);
        if q > last {
            2.0 * last - q
        } else {
            q
        }
    }

    /// The bilinear cell of v in [0, len − 1]: lower index, upper index, fraction.
    fn cell(v: f64, len: usize) -> (usize, usize, f64) {
        let i0 = (v as usize).min(len.max(2) - 2);
        (i0, (i0 + 1).min(len - 1), v - i0 as f64)
    }

    /// Bilinear sample of a `len`×`len` row-major plane at (x, y) in [0, len − 1]².
    fn bilinear(plane: &[f64], len: usize, x: f64, y: f64) -> f64 {
        let ((x0, x1, fx), (y0, y1, fy)) = (cell(x, len), cell(y, len));
        let at = |x: usize, y: usize| plane[y * len + x];
        (1.0 - fy) * ((1.0 - fx) * at(x0, y0) + fx * at(x1, y0)) + fy * ((1.0 - fx) * at(x0, y1) + fx * at(x1, y1))
    }

    /// Where output pixel (x, y) samples its input, mirrored into the image.
    pub fn source(size: usize, t: &ImageTransform, x: usize, y: usize) -> (f64, f64) {
        let last = (size - 1) as f64;
        let to_grid = if size > 1 { (GRID - 1) as f64 / last } else { 0.0 };
        let field = |k: usize| -> Vec<f64> { t.elastic.iter().map(|d| d[k] as f64).collect() };
        let (gx, gy) = (x as f64 * to_grid, y as f64 * to_grid);
        let (ex, ey) = (bilinear(&field(0), GRID, gx, gy), bilinear(&field(1), GRID, gx, gy));
        let a: Vec<f64> = t.a.iter().map(|&v| v as f64).collect();
        let (x, y) = (x as f64, y as f64);
        let sx = a[0] * x + a[1] * y + t.t[0] as f64 + ex;
        let sy = a[2] * x + a[3] * y + t.t[1] as f64 + ey;
        (mirror(sx, last), mirror(sy, last))
    }

    /// The pixel nearest (x, y) in [0, len − 1]², as (x, y): the upper neighbour from a
    /// fraction of 0.5 on.
    pub fn nearest(len: usize, x: f64, y: f64) -> (usize, usize) {
        let pick = |(i0, i1, f): (usize, usize, f64)| if f >= 0.5 { i1 } else { i0 };
        (pick(cell(x, len)), pick(cell(y, len)))
    }

    /// Nearest-neighbour resampling of `[n, size, size]` class-id masks, image b by `t[b]`.
    pub fn warp_nearest(s: &Augment, t: &[ImageTransform], masks: &[f64]) -> Vec<f64> {
        let size = s.size;
        let mut out = vec![0.0; masks.len()];
        for (b, t) in t.iter().enumerate() {
            let off = b * size * size;
            for y in 0..size {
                for x in 0..size {
                    let (sx, sy) = source(size, t, x, y);
                    let (nx, ny) = nearest(size, sx, sy);
                    out[off + y * size + x] = masks[off + ny * size + nx];
                }
            }
        }
        out
    }

    /// Bilinear resampling of `[n, channels, size, size]` planes, image b by `t[b]`.
    pub fn warp(s: &Augment, t: &[ImageTransform], planes: &[f64], channels: usize) -> Vec<f64> {
        assert_eq!(t.len(), s.n, "augment: one transform per image");
        let size = s.size;
        let mut out = vec![0.0; planes.len()];
        for (b, t) in t.iter().enumerate() {
            for c in 0..channels {
                let off = (b * channels + c) * size * size;
                for y in 0..size {
                    for x in 0..size {
                        let (sx, sy) = source(size, t, x, y);
                        out[off + y * size + x] = bilinear(&planes[off..off + size * size], size, sx, sy);
                    }
                }
            }
        }
        out
    }

    /// (augmented image, augmented mask): the mask is warped like the image, then thresholded;
    /// class ids are sampled at the nearest pixel instead.
    pub fn augment(s: &Augment, t: &[ImageTransform], image: &[f64], mask: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mask = if s.class_ids {
            warp_nearest(s, t, mask)
        } else {
            warp(s, t, mask, 1).iter().map(|&v| if v > 0.5 { 1.0 } else { 0.0 }).collect()
        };
        (warp(s, t, image, s.channels), mask)
    }
}

/// `[n, channels, size, size]` planes with output (x, y) read from input `from(last, x, y)`.
fn permuted(s: &Augment, planes: &[f32], channels: usize, from: fn(usize, usize, usize) -> (usize, usize)) -> Vec<f64> {
    let size = s.size;
    let mut out = vec![0.0; planes.len()];
    for p in 0..s.n * channels {
        for y in 0..size {
            for x in 0..size {
                let (sx, sy) = from(size - 1, x, y);
                out[(p * size + y) * size + x] = planes[(p * size + sy) * size + sx] as f64;
            }
        }
    }
    out
}

/// Class ids 0..CHECK_CLASSES in the class-id masks of the check.
const CHECK_CLASSES: u32 = 5;

/// The mask the kernel wrote where the reference's choice is a near tie that f32 rounding of
/// the sample position (~1e-5 here) may tip either way, else `reference`: for 0/1 masks, pixels
/// whose exact interpolated value lies within 1e-4 of 0.5, if the kernel wrote 0 or 1; for class
/// ids, pixels whose source coordinate lies within 1e-4 of halfway between two pixels, if the
/// kernel wrote the id of one of the pixels around the source. Every other pixel must match
/// exactly.
fn forgive_near_ties(s: &Augment, t: &[ImageTransform], mask: &[f64], gpu_mask: &[f32], reference: &[f64]) -> Vec<f32> {
    let size = s.size;
    let soft = reference::warp(s, t, mask, 1);
    let near_half = |v: f64| (v.fract() - 0.5).abs() < 1e-4;
    (0..gpu_mask.len())
        .map(|k| {
            let (g, r) = (gpu_mask[k], reference[k]);
            let forgiven = if s.class_ids {
                let (b, x, y) = (k / (size * size), k % size, k / size % size);
                let (sx, sy) = reference::source(size, &t[b], x, y);
                let around = |v: f64| [v.floor() as usize, (v.ceil() as usize).min(size - 1)];
                (near_half(sx) || near_half(sy))
                    && around(sy)
                        .iter()
                        .any(|&py| around(sx).iter().any(|&px| mask[b * size * size + py * size + px] == g as f64))
            } else {
                (soft[k] - 0.5).abs() < 1e-4 && (g == 0.0 || g == 1.0)
            };
            if forgiven {
                r as f32
            } else {
                g
            }
        })
        .collect()
}

/// Runs the augment kernel on a random batch of shape `s` against the reference, for random
/// transforms, and checks that identity, flips and a quarter turn copy pixels exactly.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, s: &Augment) -> Result<Vec<CaseReport>> {
    let shape = format!("{}{}", check::shape4(s.n, s.channels, s.size, s.size), if s.class_ids { " ids" } else { "" });
    let image = check::random(rng, s.image_len());
    let mask = if s.class_ids {
        (0..s.mask_len()).map(|_| rng.random_range(0..CHECK_CLASSES) as f32).collect()
    } else {
        check::random_mask(rng, s.mask_len())
    };
    let (image64, mask64) = (check::to_f64(&image), check::to_f64(&mask));
    let image_in = gpu.upload("image_in", &image)?;
    let mask_in = gpu.upload("mask_in", &mask)?;
    let transforms = gpu.buffer("transforms", s.transforms_len())?;
    let run = |t: &[ImageTransform]| -> Result<(Vec<f32>, Vec<f32>)> {
        gpu.write(&transforms, &s.pack(t));
        let image_out = check::poisoned(gpu, "image_out", s.image_len())?;
        let mask_out = check::poisoned(gpu, "mask_out", s.mask_len())?;
        gpu.run(&[&s.dispatch(gpu, &transforms, &image_in, &mask_in, &image_out, &mask_out)?])?;
        Ok((gpu.read(&image_out)?, gpu.read(&mask_out)?))
    };
    let mut out = Vec::new();

    // The wild config (any angle, zoom down to 0.5) sends samples up to about an image width
    // outside it, far past the margin the default config reaches, to exercise the mirroring.
    let wild = AugmentConfig { max_rotation_deg: 180.0, scale_range: 0.5, ..AugmentConfig::default() };
    for (name, cfg) in [("augment", AugmentConfig::default()), ("augment wild", wild)] {
        let t: Vec<_> = (0..s.n).map(|_| ImageTransform::random(rng, s.size, &cfg)).collect();
        let (image_gpu, mask_gpu) = run(&t)?;
        let (image_ref, mask_ref) = reference::augment(s, &t, &image64, &mask64);
        out.push(check::compare(&format!("{name} image"), &shape, &image_gpu, &image_ref));
        // The masks are random noise — the harshest case, as interpolated 0/1 values cross 0.5
        // and nearest pixels change at almost every pixel; near ties (about 1 in 10^4 pixels)
        // may go either way.
        let mask_gpu = forgive_near_ties(s, &t, &mask64, &mask_gpu, &mask_ref);
        out.push(check::compare_with(&format!("{name} mask"), &shape, &mask_gpu, &mask_ref, 0.0));
    }

    // Random flips and quarter turns alone interpolate nothing: bit-exact against the reference.
    let dihedral =
        AugmentConfig { flips: true, rot90: true, max_rotation_deg: 0.0, scale_range: 0.0, elastic_pixels: 0.0 };
    let t: Vec<_> = (0..s.n).map(|_| ImageTransform::random(rng, s.size, &dihedral)).collect();
    let (image_gpu, mask_gpu) = run(&t)?;
    let (image_ref, mask_ref) = reference::augment(s, &t, &image64, &mask64);
    out.push(check::compare_with("augment flips+rot90 image", &shape, &image_gpu, &image_ref, 0.0));
    out.push(check::compare_with("augment flips+rot90 mask", &shape, &mask_gpu, &mask_ref, 0.0));

    // Against explicit index permutations (not the reference), exactly.
    type From = fn(usize, usize, usize) -> (usize, usize);
    let exact: [(&str, [f32; 4], From); 4] = [
        ("identity", [1.0, 0.0, 0.0, 1.0], |_, x, y| (x, y)),
        ("hflip", HFLIP, |last, x, y| (last - x, y)),
        ("vflip", VFLIP, |last, x, y| (x, last - y)),
        ("rot90", QUARTER_TURN, |last, x, y| (last - y, x)),
    ];
    for (name, a, from) in exact {
        let (image_gpu, mask_gpu) = run(&vec![ImageTransform::about_centre(s.size, a); s.n])?;
        let (image_want, mask_want) = (permuted(s, &image, s.channels, from), permuted(s, &mask, 1, from));
        out.push(check::compare_with(&format!("augment {name} image"), &shape, &image_gpu, &image_want, 0.0));
        out.push(check::compare_with(&format!("augment {name} mask"), &shape, &mask_gpu, &mask_want, 0.0));
    }
    Ok(out)
}

/// Batches of 1 and 3 images, 1 and 3 channels, sizes 16 and 24, and an odd size with 5
/// channels; binary masks, and class-id masks on three of the shapes.
pub const CHECK_CASES: &[Augment] = &[
    Augment { n: 1, channels: 1, size: 16, class_ids: false },
    Augment { n: 3, channels: 3, size: 24, class_ids: false },
    Augment { n: 1, channels: 3, size: 24, class_ids: false },
    Augment { n: 3, channels: 1, size: 16, class_ids: false },
    Augment { n: 2, channels: 5, size: 17, class_ids: false },
    Augment { n: 1, channels: 1, size: 16, class_ids: true },
    Augment { n: 3, channels: 3, size: 24, class_ids: true },
    Augment { n: 2, channels: 5, size: 17, class_ids: true },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<f64> {
        (0..len).map(|i| i as f64).collect()
    }

    #[test]
    fn reference_flips_and_turns_permute_pixels() {
        let s = Augment { n: 1, channels: 2, size: 5, class_ids: false };
        let image = pattern(s.image_len());
        let mask: Vec<f64> = (0..s.mask_len()).map(|i| (i % 3 == 0) as u8 as f64).collect();
        let t = [ImageTransform::about_centre(s.size, QUARTER_TURN)];
        let (out, out_mask) = reference::augment(&s, &t, &image, &mask);
        let as_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        assert_eq!(out, permuted(&s, &as_f32(&image), 2, |last, x, y| (last - y, x)));
        assert_eq!(out_mask, permuted(&s, &as_f32(&mask), 1, |last, x, y| (last - y, x)));
        let t = [ImageTransform::about_centre(s.size, HFLIP)];
        assert_eq!(reference::augment(&s, &t, &image, &mask).0, permuted(&s, &as_f32(&image), 2, |l, x, y| (l - x, y)));
    }

    #[test]
    fn reference_uniform_elastic_shift_translates_with_mirroring() {
        let s = Augment { n: 1, channels: 1, size: 6, class_ids: false };
        let image = pattern(s.image_len());
        let mut t = ImageTransform::identity(s.size);
        t.elastic = [[2.0, -1.0]; GRID * GRID];
        let (out, _) = reference::augment(&s, &[t], &image, &vec![0.0; s.mask_len()]);
        let mirror = |v: i64| {
            if v < 0 {
                -v
            } else if v > 5 {
                10 - v
            } else {
                v
            }
        };
        for y in 0..6i64 {
            for x in 0..6i64 {
                assert_eq!(out[(y * 6 + x) as usize], (mirror(y - 1) * 6 + mirror(x + 2)) as f64, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn reference_class_ids_are_sampled_not_blended() {
        // Classes 1 and 3 side by side: a blend would invent class 2 along the border.
        let s = Augment { n: 1, channels: 1, size: 8, class_ids: true };
        let mask: Vec<f64> = (0..s.mask_len()).map(|k| if k % 8 < 4 { 1.0 } else { 3.0 }).collect();
        let image = vec![0.0; s.image_len()];
        let mut rng = check::rng(3);
        let wild = AugmentConfig { max_rotation_deg: 180.0, scale_range: 0.5, ..AugmentConfig::default() };
        for _ in 0..20 {
            let t = ImageTransform::random(&mut rng, s.size, &wild);
            let (_, out) = reference::augment(&s, &[t], &image, &mask);
            assert!(out.iter().all(|&v| v == 1.0 || v == 3.0), "{out:?}");
        }
        // A shift by exactly half a pixel takes the upper neighbour, whole pixels copy.
        assert_eq!(reference::nearest(8, 2.5, 3.0), (3, 3));
        assert_eq!(reference::nearest(8, 2.49, 7.0), (2, 7));
        let t = [ImageTransform::about_centre(s.size, QUARTER_TURN)];
        let as_f32: Vec<f32> = mask.iter().map(|&v| v as f32).collect();
        assert_eq!(reference::augment(&s, &t, &image, &mask).1, permuted(&s, &as_f32, 1, |l, x, y| (l - y, x)));
    }

    #[test]
    fn random_draws_only_what_is_enabled() {
        let mut rng = check::rng(7);
        let off =
            AugmentConfig { flips: false, rot90: false, max_rotation_deg: 0.0, scale_range: 0.0, elastic_pixels: 0.0 };
        assert_eq!(ImageTransform::random(&mut rng, 64, &off), ImageTransform::identity(64));
        let cfg = AugmentConfig::default();
        for _ in 0..200 {
            let t = ImageTransform::random(&mut rng, 128, &cfg);
            // |det A| = 1/zoom², zoom in [0.9, 1.1].
            let det = (t.a[0] * t.a[3] - t.a[1] * t.a[2]).abs();
            assert!((1.0 / 1.1f32.powi(2) - 1e-5..=1.0 / 0.9f32.powi(2) + 1e-5).contains(&det), "det {det}");
            assert!(t.elastic.iter().flatten().all(|d| d.abs() <= 3.0 * cfg.elastic_pixels));
            // The centre stays put, up to the elastic displacement there.
            let c = 63.5;
            let moved = [t.a[0] * c + t.a[1] * c + t.t[0] - c, t.a[2] * c + t.a[3] * c + t.t[1] - c];
            assert!(moved.iter().all(|m| m.abs() < 1e-3), "centre moved by {moved:?}");
        }
        let dihedral = AugmentConfig { max_rotation_deg: 0.0, scale_range: 0.0, elastic_pixels: 0.0, ..cfg };
        for _ in 0..50 {
            let t = ImageTransform::random(&mut rng, 9, &dihedral);
            assert!(t.a.iter().chain(&t.t).all(|v| v.fract() == 0.0), "not whole pixels: {t:?}");
        }
    }
}
