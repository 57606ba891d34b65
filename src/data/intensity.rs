//! Intensity augmentation (`train --intensity`): each training image, each time it is drawn,
//! under random intensity changes, so that a model meets another scanner's intensities in
//! training rather than first at test time. `nnunet` draws nnU-Net's gamma, contrast and
//! brightness changes; `scanner` adds what a scanner and its 8-bit export do besides — a smooth
//! bias field, blur, noise, a wider gamma and contrast, and saturation at the range's ends.
//!
//! The images are already normalised when they are drawn, so every change is relative to each
//! channel's own range: gamma applies to the channel rescaled to [0, 1] by its own minimum and
//! maximum, then mapped back (nnU-Net's way), the bias field scales distances above the minimum,
//! and saturation clips to the range the channel had before; a [0, 1] image stays in [0, 1].
//! `scanner` then z-scores a z-scored image again, as the scanner's change came before it.

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize};

use super::Normalisation;

/// The intensity augmentation a `train` command line asks for (`--intensity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IntensityPreset {
    /// The training images' intensities as they are.
    #[default]
    None,
    /// nnU-Net's gamma, contrast and brightness changes ([`NNUNET`]).
    Nnunet,
    /// nnU-Net's set widened to what scanners do ([`SCANNER`]).
    Scanner,
}

impl IntensityPreset {
    /// As `--intensity` spells it.
    pub fn name(self) -> &'static str {
        match self {
            IntensityPreset::None => "none",
            IntensityPreset::Nnunet => "nnunet",
            IntensityPreset::Scanner => "scanner",
        }
    }

    /// The changes to draw, or None when training sees the intensities unchanged.
    pub fn config(self) -> Option<IntensityAugment> {
        match self {
            IntensityPreset::None => None,
            IntensityPreset::Nnunet => Some(NNUNET),
            IntensityPreset::Scanner => Some(SCANNER),
        }
    }
}

/// Reads a preset by name, or as runs recorded the option when it was a switch: `true` was
/// [`NNUNET`], `false` none.
impl<'de> Deserialize<'de> for IntensityPreset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(on) => Ok(if on { IntensityPreset::Nnunet } else { IntensityPreset::None }),
            serde_json::Value::String(name) => {
                <Self as clap::ValueEnum>::from_str(&name, false).map_err(D::Error::custom)
            }
            other => Err(D::Error::custom(format!("intensity {other}: neither a preset's name nor true/false"))),
        }
    }
}

/// A value drawn with probability `p` (else the change is not made), uniformly between `low`
/// and `high` or, with `log`, uniformly in their logarithms (a factor as likely halved as
/// doubled).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    pub low: f32,
    pub high: f32,
    pub log: bool,
    pub p: f64,
}

impl Draw {
    const fn uniform(low: f32, high: f32, p: f64) -> Draw {
        Draw { low, high, log: false, p }
    }

    fn sample(&self, rng: &mut impl Rng) -> Option<f32> {
        rng.random_bool(self.p).then(|| match self.log {
            true => rng.random_range(self.low.ln()..=self.high.ln()).exp(),
            false => rng.random_range(self.low..=self.high),
        })
    }
}

/// Where a contrast change scales about.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ContrastCentre {
    /// The channel's mean (nnU-Net's).
    Mean,
    /// A point drawn uniformly between the channel's mean and the middle of its range: a display
    /// window's level is a choice of whoever exported the images, not the image's mean.
    MeanToMidRange,
}

/// The changes drawn for each image; a change that is None is never made (and draws nothing).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntensityAugment {
    pub gamma: Option<Draw>,
    /// Scale about [`contrast_centre`](Self::contrast_centre).
    pub contrast: Option<Draw>,
    pub contrast_centre: ContrastCentre,
    /// Scale of every value.
    pub brightness: Option<Draw>,
    /// Additive Gaussian noise: its standard deviation as a share of the image's.
    pub noise: Option<Draw>,
    /// Gaussian blur: its standard deviation in pixels.
    pub blur: Option<Draw>,
    /// Smooth multiplicative bias field: the largest |ln field| over the image.
    pub bias: Option<Draw>,
    /// Clip each channel to the range it had before the changes, as an 8-bit image saturates
    /// at black and white.
    pub saturate: bool,
    /// The changes stand for a scanner's, which come before the normalisation: a per-image one
    /// (z-score, rank) is applied again after them, as it is to a test image from another
    /// scanner. Without, a z-scored model trains on contrasts and brightnesses its inputs never have.
    pub renormalise: bool,
}

/// nnU-Net's ranges (gamma 0.7–1.5, contrast and brightness 0.75–1.25), each with
/// probability 0.3 (gamma: nnU-Net's 0.3, contrast and brightness its 0.15 doubled for the few
/// epochs a CPU adapter trains). Runs recorded `intensity: true` resume with it, so it stays as
/// it is.
pub const NNUNET: IntensityAugment = IntensityAugment {
    gamma: Some(Draw::uniform(0.7, 1.5, 0.3)),
    contrast: Some(Draw::uniform(0.75, 1.25, 0.3)),
    contrast_centre: ContrastCentre::Mean,
    brightness: Some(Draw::uniform(0.75, 1.25, 0.3)),
    noise: None,
    blur: None,
    bias: None,
    saturate: false,
    renormalise: false,
};

/// A scanner's and its 8-bit export's changes, before the normalisation: gamma and contrast
/// anywhere from halved to doubled (log-uniform: a scanner's curve or window is as likely
/// steeper as flatter), the contrast about a random window level, values saturating at the
/// channel's range, brightness ×0.75–1.25; nnU-Net's noise (σ up to 0.1 of the image's) and
/// blur (σ 0.5–1 px); an MRI receive coil's bias field (up to ×1.5 or ÷1.5 at its extremes).
/// Each with nnU-Net's probabilities or less (gamma, contrast 0.2; brightness 0.15; noise, blur
/// and the field 0.1), so that about 40 % of the images stay unchanged: at 0.3 and 0.2 (a fifth
/// unchanged) colin27's 60 epochs stopped early with a clean Dice 0.07 below the plain run's.
pub const SCANNER: IntensityAugment = IntensityAugment {
    gamma: Some(Draw { low: 0.5, high: 2.0, log: true, p: 0.2 }),
    contrast: Some(Draw { low: 0.5, high: 2.0, log: true, p: 0.2 }),
    contrast_centre: ContrastCentre::MeanToMidRange,
    brightness: Some(Draw::uniform(0.75, 1.25, 0.15)),
    noise: Some(Draw::uniform(0.0, 0.1, 0.1)),
    blur: Some(Draw::uniform(0.5, 1.0, 0.1)),
    bias: Some(Draw::uniform(0.0, 0.4, 0.1)),
    saturate: true,
    renormalise: true,
};

/// One image's drawn changes.
struct Drawn {
    gamma: Option<f32>,
    /// Factor, and where between the mean (0) and the mid-range (1) it scales about.
    contrast: Option<(f32, f32)>,
    brightness: Option<f32>,
    /// Per pixel, shared by the channels.
    bias_field: Option<Vec<f32>>,
    blur_sigma: Option<f32>,
    /// Per pixel, shared by the channels, already scaled to the image's spread.
    noise: Option<Vec<f32>>,
}

impl IntensityAugment {
    /// Changes `image` (`[channels, size, size]`, normalised by `normalisation`), every channel
    /// alike.
    pub fn apply(
        &self,
        image: &mut [f32],
        channels: usize,
        size: usize,
        normalisation: &Normalisation,
        rng: &mut impl Rng,
    ) {
        let pixels = size * size;
        assert_eq!(image.len(), channels * pixels, "an image of {channels} channels of {size}×{size}");
        let drawn = self.draw(image, size, rng);
        for plane in image.chunks_mut(pixels) {
            let (lo, hi) = range(plane);
            if let Some(field) = &drawn.bias_field {
                plane.iter_mut().zip(field).for_each(|(v, f)| *v = lo + (*v - lo) * f);
            }
            if let Some(sigma) = drawn.blur_sigma {
                gaussian_blur(plane, size, sigma);
            }
            if let Some(noise) = &drawn.noise {
                plane.iter_mut().zip(noise).for_each(|(v, n)| *v += n);
            }
            if let Some(g) = drawn.gamma {
                apply_gamma(plane, g);
            }
            if let Some((c, towards_mid_range)) = drawn.contrast {
                let mean = plane.iter().map(|&v| v as f64).sum::<f64>() as f32 / plane.len().max(1) as f32;
                let centre = mean + towards_mid_range * ((lo + hi) / 2.0 - mean);
                plane.iter_mut().for_each(|v| *v = (*v - centre) * c + centre);
            }
            if let Some(b) = drawn.brightness {
                plane.iter_mut().for_each(|v| *v *= b);
            }
            if self.saturate {
                plane.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
            }
        }
        if self.renormalise && normalisation.per_image() {
            normalisation.apply(image, channels);
        }
    }

    /// Draws one image's changes: gamma, contrast and brightness first, in the order runs of
    /// [`NNUNET`] drew them.
    fn draw(&self, image: &[f32], size: usize, rng: &mut impl Rng) -> Drawn {
        let mut sample = |d: Option<Draw>| d.and_then(|d| d.sample(rng));
        let (gamma, contrast, brightness) = (sample(self.gamma), sample(self.contrast), sample(self.brightness));
        let (bias, blur_sigma, noise) = (sample(self.bias), sample(self.blur), sample(self.noise));
        let contrast = contrast.map(|c| match self.contrast_centre {
            ContrastCentre::Mean => (c, 0.0),
            ContrastCentre::MeanToMidRange => (c, rng.random_range(0.0..=1.0)),
        });
        let bias_field = bias.map(|strength| bias_field(size, strength, rng));
        let noise = noise.map(|share| {
            let spread = share * super::normalise::mean_std(image).1 as f32;
            gaussian_noise(size * size, rng).into_iter().map(|n| n * spread).collect()
        });
        Drawn { gamma, contrast, brightness, bias_field, blur_sigma, noise }
    }
}

fn range(plane: &[f32]) -> (f32, f32) {
    plane.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `v ↦ lo + (hi − lo)·((v − lo)/(hi − lo))^gamma` over the plane's own range [lo, hi].
fn apply_gamma(plane: &mut [f32], gamma: f32) {
    let (lo, hi) = range(plane);
    let range = hi - lo;
    if range > 0.0 {
        plane.iter_mut().for_each(|v| *v = lo + range * ((*v - lo) / range).powf(gamma));
    }
}

/// A `size`×`size` field `exp(strength · p(x, y) / max |p|)`, `p` a random polynomial of degree
/// at most 2 in x and y (Legendre terms over [−1, 1], coefficients uniform in [−1, 1], no
/// constant): smooth, positive, between e^−strength and e^strength, reaching one of them.
fn bias_field(size: usize, strength: f32, rng: &mut impl Rng) -> Vec<f32> {
    let c: [f32; 5] = std::array::from_fn(|_| rng.random_range(-1.0..=1.0));
    let at = |i: usize| if size > 1 { 2.0 * i as f32 / (size - 1) as f32 - 1.0 } else { 0.0 };
    let legendre2 = |t: f32| 1.5 * t * t - 0.5;
    let poly: Vec<f32> = (0..size * size)
        .map(|k| {
            let (x, y) = (at(k % size), at(k / size));
            c[0] * x + c[1] * y + c[2] * x * y + c[3] * legendre2(x) + c[4] * legendre2(y)
        })
        .collect();
    let largest = poly.iter().fold(0.0f32, |m, p| m.max(p.abs()));
    let scale = if largest > 0.0 { strength / largest } else { 0.0 };
    poly.into_iter().map(|p| (p * scale).exp()).collect()
}

/// `n` standard normal values (Box–Muller).
fn gaussian_noise(n: usize, rng: &mut impl Rng) -> Vec<f32> {
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        // 1 − u keeps the logarithm's argument in (0, 1].
        let radius = (-2.0 * (1.0 - rng.random::<f32>()).ln()).sqrt();
        let angle = std::f32::consts::TAU * rng.random::<f32>();
        values.extend([radius * angle.cos(), radius * angle.sin()]);
    }
    values.truncate(n);
    values
}

/// Blurs a `size`×`size` plane with a Gaussian of standard deviation `sigma` pixels (separable,
/// truncated at 3σ, weights summing to 1), mirroring the plane past its edges.
fn gaussian_blur(plane: &mut [f32], size: usize, sigma: f32) {
    let radius = (3.0 * sigma).ceil() as isize;
    let weights: Vec<f32> = (-radius..=radius).map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = weights.iter().sum();
    let weights: Vec<f32> = weights.iter().map(|w| w / total).collect();
    // Symmetric mirroring (the edge pixel repeated), over any distance past the edge.
    let mirror = |i: isize| {
        let m = i.rem_euclid(2 * size as isize) as usize;
        if m < size {
            m
        } else {
            2 * size - 1 - m
        }
    };
    let pass = |src: &[f32], dst: &mut [f32], index: &dyn Fn(usize, usize) -> usize| {
        for row in 0..size {
            for col in 0..size {
                let taps = weights.iter().zip(-radius..).map(|(w, d)| w * src[index(row, mirror(col as isize + d))]);
                dst[index(row, col)] = taps.sum();
            }
        }
    };
    let mut along_x = vec![0.0; plane.len()];
    pass(plane, &mut along_x, &|y, x| y * size + x);
    pass(&along_x, plane, &|x, y| y * size + x);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const NOTHING: IntensityAugment = IntensityAugment {
        gamma: None,
        contrast: None,
        contrast_centre: ContrastCentre::Mean,
        brightness: None,
        noise: None,
        blur: None,
        bias: None,
        saturate: false,
        renormalise: false,
    };

    fn always(value: f32) -> Option<Draw> {
        Some(Draw::uniform(value, value, 1.0))
    }

    /// A `size`×`size` plane of fresh random values in [0, 1], and the seed that drew them.
    fn random_plane(size: usize) -> (Vec<f32>, u64) {
        let seed = rand::random();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        ((0..size * size).map(|_| rng.random()).collect(), seed)
    }

    #[test]
    fn gamma_keeps_the_range_and_bends_the_middle() {
        let mut plane = vec![-1.0, 0.0, 1.0, 3.0];
        apply_gamma(&mut plane, 2.0);
        // (v + 1)/4 squared, mapped back: -1 → -1, 0 → -0.75, 1 → 0, 3 → 3.
        assert_eq!(plane, vec![-1.0, -0.75, 0.0, 3.0]);
        let mut flat = vec![0.5; 6];
        apply_gamma(&mut flat, 0.7);
        assert_eq!(flat, vec![0.5; 6], "a flat plane has no range to bend");
    }

    #[test]
    fn each_change_is_drawn_at_its_rate_and_within_its_range() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(4);
        let only_brightness = IntensityAugment { brightness: Some(Draw::uniform(0.5, 2.0, 0.3)), ..NOTHING };
        let (mut changed, trials) = (0, 4000);
        for _ in 0..trials {
            let mut image = vec![1.0f32; 4];
            only_brightness.apply(&mut image, 1, 2, &Normalisation::Unit, &mut rng);
            assert!(image.iter().all(|&v| (0.5..=2.0).contains(&v) && v == image[0]), "{image:?}");
            changed += usize::from(image[0] != 1.0);
        }
        let rate = changed as f64 / trials as f64;
        assert!((rate - 0.3).abs() < 0.03, "brightness changed {rate} of the images, not 0.3");
        let log = Draw { low: 0.5, high: 2.0, log: true, p: 1.0 };
        let below_one = (0..trials).filter(|_| log.sample(&mut rng).unwrap() < 1.0).count() as f64 / trials as f64;
        assert!((below_one - 0.5).abs() < 0.03, "a log-uniform factor in [½, 2] was below 1 {below_one} of the time");
        let never = IntensityAugment {
            gamma: Some(Draw { p: 0.0, ..log }),
            noise: Some(Draw { p: 0.0, ..log }),
            blur: Some(Draw { p: 0.0, ..log }),
            ..NOTHING
        };
        let mut image: Vec<f32> = (0..32).map(|i| i as f32 / 31.0).collect();
        let before = image.clone();
        never.apply(&mut image, 2, 4, &Normalisation::Unit, &mut rng);
        assert_eq!(image, before);
    }

    #[test]
    fn contrast_keeps_each_channels_mean() {
        let contrast = IntensityAugment { contrast: Some(Draw::uniform(0.75, 1.25, 1.0)), ..NOTHING };
        let mut rng = rand_pcg::Pcg64::seed_from_u64(5);
        let mut image: Vec<f32> = vec![0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0];
        contrast.apply(&mut image, 2, 2, &Normalisation::Unit, &mut rng);
        let means: Vec<f32> = image.chunks(4).map(|c| c.iter().sum::<f32>() / 4.0).collect();
        assert!((means[0] - 2.0).abs() < 1e-5 && (means[1] - 25.0).abs() < 1e-4, "{means:?}");
        assert_ne!(image[0], 0.0, "the contrast was not changed");
    }

    #[test]
    fn saturated_contrast_clips_to_the_channels_range_about_a_level_between_mean_and_mid_range() {
        let doubled = IntensityAugment {
            contrast: always(2.0),
            contrast_centre: ContrastCentre::MeanToMidRange,
            saturate: true,
            ..NOTHING
        };
        let (plane, seed) = random_plane(16);
        let (lo, hi) = range(&plane);
        let mean = plane.iter().sum::<f32>() / plane.len() as f32;
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        let mut image = plane.clone();
        doubled.apply(&mut image, 1, 16, &Normalisation::Unit, &mut rng);
        assert!(image.iter().all(|v| (lo..=hi).contains(v)), "seed {seed}: out of [{lo}, {hi}]");
        assert!(image.contains(&lo) && image.contains(&hi), "seed {seed}: nothing saturated");
        // Unsaturated values moved away from one centre by their doubled distance: v' = 2v − centre.
        let centres: Vec<f32> =
            plane.iter().zip(&image).filter(|(_, &a)| a > lo && a < hi).map(|(&v, &a)| 2.0 * v - a).collect();
        let centre = centres[0];
        assert!(centres.iter().all(|c| (c - centre).abs() < 1e-5), "seed {seed}: not one centre");
        let (near, far) = (mean.min((lo + hi) / 2.0), mean.max((lo + hi) / 2.0));
        assert!((near - 1e-5..=far + 1e-5).contains(&centre), "seed {seed}: centre {centre} not in [{near}, {far}]");
    }

    #[test]
    fn renormalised_changes_leave_a_z_scored_image_z_scored_and_others_as_changed() {
        let doubled = IntensityAugment { contrast: always(2.0), renormalise: true, ..NOTHING };
        let (plane, seed) = random_plane(8);
        let mut z_scored = [plane.clone(), plane.iter().map(|v| v * v).collect()].concat();
        Normalisation::Zscore.apply(&mut z_scored, 2);
        for normalisation in [Normalisation::Zscore, Normalisation::Unit] {
            let mut image = z_scored.clone();
            doubled.apply(&mut image, 2, 8, &normalisation, &mut rand_pcg::Pcg64::seed_from_u64(seed));
            let expected_spread = if normalisation == Normalisation::Zscore { 1.0 } else { 2.0 };
            for channel in image.chunks(64) {
                let (mean, spread) = crate::data::normalise::mean_std(channel);
                assert!(mean.abs() < 1e-5, "seed {seed}, {normalisation:?}: mean {mean}");
                assert!((spread - expected_spread).abs() < 1e-4, "seed {seed}, {normalisation:?}: spread {spread}");
            }
        }
    }

    #[test]
    fn noise_has_the_drawn_share_of_the_images_spread() {
        let (plane, seed) = random_plane(64);
        let spread = crate::data::normalise::mean_std(&plane).1 as f32;
        let noisy = IntensityAugment { noise: always(0.1), ..NOTHING };
        let mut image = plane.clone();
        noisy.apply(&mut image, 1, 64, &Normalisation::Unit, &mut rand_pcg::Pcg64::seed_from_u64(seed));
        let added: Vec<f32> = image.iter().zip(&plane).map(|(a, v)| a - v).collect();
        let (mean, std) = crate::data::normalise::mean_std(&added);
        let expected = 0.1 * spread as f64;
        // 4096 samples: the mean within 4 standard errors, the spread within 5 %.
        assert!(mean.abs() < 4.0 * expected / 64.0, "seed {seed}: noise mean {mean}");
        assert!((std / expected - 1.0).abs() < 0.05, "seed {seed}: noise spread {std}, not {expected}");
        let within_one = added.iter().filter(|&&n| (n as f64).abs() < expected).count() as f64 / added.len() as f64;
        assert!((within_one - 0.683).abs() < 0.03, "seed {seed}: {within_one} within 1σ: not Gaussian");
    }

    #[test]
    fn blur_keeps_a_constant_and_spreads_an_impulse_as_a_gaussian() {
        for sigma in [0.5, 0.8, 1.0] {
            let mut constant = vec![0.37f32; 11 * 11];
            gaussian_blur(&mut constant, 11, sigma);
            assert!(constant.iter().all(|v| (v - 0.37).abs() < 1e-6), "sigma {sigma}: {constant:?}");
            let (size, centre) = (15, 7 * 15 + 7);
            let mut impulse = vec![0.0f32; size * size];
            impulse[centre] = 2.0;
            gaussian_blur(&mut impulse, size, sigma);
            let total: f32 = impulse.iter().sum();
            assert!((total - 2.0).abs() < 1e-5, "sigma {sigma}: the impulse sums to {total}");
            let falloff = (-1.0 / (2.0 * sigma * sigma)).exp();
            for neighbour in [centre - 1, centre + 1, centre - size, centre + size] {
                let ratio = impulse[neighbour] / impulse[centre];
                assert!((ratio - falloff).abs() < 1e-5, "sigma {sigma}: neighbour ratio {ratio}, not {falloff}");
            }
            let diagonal = impulse[centre + size + 1] / impulse[centre];
            assert!((diagonal - falloff * falloff).abs() < 1e-5, "sigma {sigma}: not separable");
        }
    }

    #[test]
    fn bias_field_is_smooth_positive_and_within_its_strength() {
        let seed = rand::random();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        for size in [1, 2, 23, 64] {
            let strength = rng.random_range(0.05..0.5f32);
            let log_field: Vec<f32> = bias_field(size, strength, &mut rng).iter().map(|f| f.ln()).collect();
            let largest = log_field.iter().fold(0.0f32, |m, l| m.max(l.abs()));
            let reaches = size == 1 || (largest - strength).abs() < 1e-5;
            assert!(largest <= strength + 1e-5 && reaches, "seed {seed}, size {size}: |ln field| up to {largest}");
            // Quadratic in x along a row: constant second differences. A polynomial of degree 2
            // bounded by 1 on [−1, 1] has a slope of at most 4 there (Markov), so one pixel's
            // step is at most strength · 4 · 2/(size − 1).
            let step = if size > 1 { strength * 8.0 / (size - 1) as f32 } else { 0.0 };
            for row in log_field.chunks(size) {
                let second: Vec<f32> = row.windows(3).map(|w| w[2] - 2.0 * w[1] + w[0]).collect();
                assert!(second.iter().all(|s| (s - second[0]).abs() < 1e-4), "seed {seed}: row {row:?} not quadratic");
                assert!(row.windows(2).all(|w| (w[1] - w[0]).abs() <= step + 1e-5), "seed {seed}: steep {row:?}");
            }
        }
        let mut image = vec![0.0, 0.5, 1.0, 0.25];
        let biased = IntensityAugment { bias: always(0.3), ..NOTHING };
        biased.apply(&mut image, 1, 2, &Normalisation::Unit, &mut rand_pcg::Pcg64::seed_from_u64(seed));
        assert_eq!(image[0], 0.0, "seed {seed}: the channel's minimum moved");
    }

    #[test]
    fn every_change_applies_to_every_channel_alike_and_is_decided_by_the_seed() {
        let all = IntensityAugment {
            gamma: Some(Draw { p: 1.0, ..SCANNER.gamma.unwrap() }),
            contrast: Some(Draw { p: 1.0, ..SCANNER.contrast.unwrap() }),
            brightness: Some(Draw { p: 1.0, ..SCANNER.brightness.unwrap() }),
            noise: Some(Draw { p: 1.0, ..SCANNER.noise.unwrap() }),
            blur: Some(Draw { p: 1.0, ..SCANNER.blur.unwrap() }),
            bias: Some(Draw { p: 1.0, ..SCANNER.bias.unwrap() }),
            ..SCANNER
        };
        let (plane, seed) = random_plane(19);
        let three_alike = [plane.clone(), plane.clone(), plane.clone()].concat();
        let augmented = |seed: u64| {
            let mut image = three_alike.clone();
            all.apply(&mut image, 3, 19, &Normalisation::Unit, &mut rand_pcg::Pcg64::seed_from_u64(seed));
            image
        };
        let image = augmented(seed);
        let channels: Vec<&[f32]> = image.chunks(plane.len()).collect();
        assert!(channels[0] == channels[1] && channels[1] == channels[2], "seed {seed}: channels differ");
        assert_ne!(channels[0], &plane[..], "seed {seed}: nothing changed");
        assert_eq!(image, augmented(seed), "seed {seed}: another image from the same seed");
        assert_ne!(image, augmented(seed ^ 1), "seed {seed}: the same image from another seed");
    }

    #[test]
    fn presets_read_by_name_and_as_the_switch_runs_recorded() {
        let read = |json: &str| serde_json::from_str::<IntensityPreset>(json).unwrap();
        assert_eq!(read("true"), IntensityPreset::Nnunet);
        assert_eq!(read("false"), IntensityPreset::None);
        for preset in [IntensityPreset::None, IntensityPreset::Nnunet, IntensityPreset::Scanner] {
            assert_eq!(read(&serde_json::to_string(&preset).unwrap()), preset);
        }
        assert_eq!(serde_json::to_string(&IntensityPreset::Scanner).unwrap(), "\"scanner\"");
        assert!(serde_json::from_str::<IntensityPreset>("\"strong\"").is_err());
        assert_eq!(IntensityPreset::None.config(), None);
    }
}
