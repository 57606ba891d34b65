//! Intensity augmentation (`train --intensity`): each training image, each time it is drawn,
//! under a random gamma, contrast and brightness change, as nnU-Net's recipe does, so that a
//! model meets another scanner's intensities in training rather than first at test time.
//!
//! The images are already normalised when they are drawn: gamma applies to each image rescaled
//! to [0, 1] by its own minimum and maximum, then mapped back (nnU-Net's way), so a z-scored
//! image stays about z-scored and a [0, 1] image stays in [0, 1].

use rand::Rng;

/// The ranges changes are drawn from (uniformly), each applied with probability `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntensityAugment {
    pub gamma: (f32, f32),
    /// Scale about the image's mean.
    pub contrast: (f32, f32),
    /// Scale of every value.
    pub brightness: (f32, f32),
    pub p: f64,
}

/// nnU-Net's ranges (gamma 0.7–1.5, contrast and brightness 0.75–1.25), each with
/// probability 0.3 (gamma: nnU-Net's 0.3, contrast and brightness its 0.15 doubled for the few
/// epochs a CPU adapter trains).
pub const NNUNET: IntensityAugment =
    IntensityAugment { gamma: (0.7, 1.5), contrast: (0.75, 1.25), brightness: (0.75, 1.25), p: 0.3 };

impl IntensityAugment {
    /// Changes `image` (`[channels, pixels]`), every channel alike.
    pub fn apply(&self, image: &mut [f32], channels: usize, rng: &mut impl Rng) {
        let draw = |rng: &mut dyn rand::RngCore, (lo, hi): (f32, f32), p: f64| {
            rng.random_bool(p).then(|| rng.random_range(lo..=hi))
        };
        let (gamma, contrast, brightness) =
            (draw(rng, self.gamma, self.p), draw(rng, self.contrast, self.p), draw(rng, self.brightness, self.p));
        for plane in image.chunks_mut(image.len() / channels.max(1)) {
            if let Some(g) = gamma {
                apply_gamma(plane, g);
            }
            if let Some(c) = contrast {
                let mean = plane.iter().map(|&v| v as f64).sum::<f64>() as f32 / plane.len().max(1) as f32;
                plane.iter_mut().for_each(|v| *v = (*v - mean) * c + mean);
            }
            if let Some(b) = brightness {
                plane.iter_mut().for_each(|v| *v *= b);
            }
        }
    }
}

/// `v ↦ lo + (hi − lo)·((v − lo)/(hi − lo))^gamma` over the plane's own range [lo, hi].
fn apply_gamma(plane: &mut [f32], gamma: f32) {
    let (lo, hi) = plane.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let range = hi - lo;
    if range > 0.0 {
        plane.iter_mut().for_each(|v| *v = lo + range * ((*v - lo) / range).powf(gamma));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
        let only_brightness = IntensityAugment { brightness: (0.5, 2.0), p: 0.3, ..NNUNET };
        let (mut changed, trials) = (0, 4000);
        for _ in 0..trials {
            let mut image = vec![1.0f32, 1.0, 1.0, 1.0];
            // A flat image: gamma and contrast leave it alone, brightness scales it.
            only_brightness.apply(&mut image, 1, &mut rng);
            assert!(image.iter().all(|&v| (0.5..=2.0).contains(&v) && v == image[0]), "{image:?}");
            changed += usize::from(image[0] != 1.0);
        }
        let rate = changed as f64 / trials as f64;
        assert!((rate - 0.3).abs() < 0.03, "brightness changed {rate} of the images, not 0.3");
        let never = IntensityAugment { p: 0.0, ..NNUNET };
        let mut image: Vec<f32> = (0..16).map(|i| i as f32 / 15.0).collect();
        let before = image.clone();
        never.apply(&mut image, 2, &mut rng);
        assert_eq!(image, before);
    }

    #[test]
    fn contrast_keeps_each_channels_mean() {
        let always = IntensityAugment { gamma: (1.0, 1.0), brightness: (1.0, 1.0), p: 1.0, ..NNUNET };
        let mut rng = rand_pcg::Pcg64::seed_from_u64(5);
        let mut image: Vec<f32> = vec![0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0];
        always.apply(&mut image, 2, &mut rng);
        let means: Vec<f32> = image.chunks(4).map(|c| c.iter().sum::<f32>() / 4.0).collect();
        assert!((means[0] - 2.0).abs() < 1e-5 && (means[1] - 25.0).abs() < 1e-4, "{means:?}");
        assert_ne!(image[0], 0.0, "the contrast was not changed");
    }
}
