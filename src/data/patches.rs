//! Training patches at native resolution: a P×P crop of an image and its mask at their own size
//! instead of the whole slice shrunk to P, so a lesion a few pixels across keeps its pixels.
//!
//! Random crops of a slice whose foreground is 0.1 % of it almost never contain any, so a set
//! share of patches (nnU-Net's one third) is centred on a random foreground pixel instead. An
//! image smaller than the patch is mirrored past its far edges, as `--tile` inference pads it
//! ([`reflect`]), so training and tiled inference see the same borders.

use rand::Rng;

use crate::infer::tiling::reflect;

/// nnU-Net's share of patches forced to contain foreground.
pub const FOREGROUND_SHARE: f64 = 1.0 / 3.0;

/// An image and its mask at their own resolution, with where its foreground is.
#[derive(Clone, Debug)]
pub struct NativeSample {
    /// `[channels, height, width]`.
    pub image: Vec<f32>,
    /// `[height, width]`: 0 background, anything else foreground (0/1, or class ids).
    pub mask: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Row-major indices of the foreground pixels, found once.
    foreground: Vec<usize>,
}

impl NativeSample {
    pub fn new(image: Vec<f32>, mask: Vec<f32>, channels: usize, height: usize, width: usize) -> NativeSample {
        assert_eq!(image.len(), channels * height * width, "image is not [{channels}, {height}, {width}]");
        assert_eq!(mask.len(), height * width, "mask is not [{height}, {width}]");
        let foreground = mask.iter().enumerate().filter(|(_, &m)| m != 0.0).map(|(k, _)| k).collect();
        NativeSample { image, mask, channels, height, width, foreground }
    }

    /// Foreground pixels.
    pub fn foreground_pixels(&self) -> usize {
        self.foreground.len()
    }
}

/// A crop: `[channels, patch, patch]` and `[patch, patch]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub image: Vec<f32>,
    pub mask: Vec<f32>,
    /// Top-left corner (y, x) in the sample.
    pub origin: (usize, usize),
    /// Whether it was centred on a foreground pixel rather than placed at random.
    pub centred_on_foreground: bool,
}

/// Draws P×P training patches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PatchSampler {
    /// P, the patch side.
    pub patch: usize,
    /// Share of patches centred on a random foreground pixel (of samples that have one).
    pub foreground_share: f64,
}

impl PatchSampler {
    pub fn new(patch: usize) -> PatchSampler {
        PatchSampler { patch, foreground_share: FOREGROUND_SHARE }
    }

    /// A patch of `sample`: with probability `foreground_share` (if it has foreground) centred on
    /// a foreground pixel drawn uniformly, otherwise at a uniformly random position.
    pub fn sample(&self, sample: &NativeSample, rng: &mut impl Rng) -> Patch {
        let p = self.patch;
        let forced = !sample.foreground.is_empty() && rng.random_bool(self.foreground_share);
        let origin = if forced {
            let k = sample.foreground[rng.random_range(0..sample.foreground.len())];
            (origin_around(k / sample.width, sample.height, p), origin_around(k % sample.width, sample.width, p))
        } else {
            (
                rng.random_range(0..=sample.height.saturating_sub(p)),
                rng.random_range(0..=sample.width.saturating_sub(p)),
            )
        };
        Patch { centred_on_foreground: forced, ..crop(sample, p, origin) }
    }
}

/// The origin of a `patch`-long window on an axis of `length` that puts `centre` in its middle,
/// moved as little as needed to stay inside the axis (at 0 where the axis is shorter).
pub fn origin_around(centre: usize, length: usize, patch: usize) -> usize {
    centre.saturating_sub(patch / 2).min(length.saturating_sub(patch))
}

/// The `patch`×`patch` window of `sample` at `origin` (y, x); rows and columns past the image's
/// far edges (only where it is smaller than the patch) are mirrored in.
pub fn crop(sample: &NativeSample, patch: usize, origin: (usize, usize)) -> Patch {
    let (h, w) = (sample.height, sample.width);
    let (y0, x0) = origin;
    let rows: Vec<usize> = (0..patch).map(|y| reflect(y0 + y, h)).collect();
    let cols: Vec<usize> = (0..patch).map(|x| reflect(x0 + x, w)).collect();
    let window = |plane: &[f32]| -> Vec<f32> {
        rows.iter().flat_map(|&y| cols.iter().map(move |&x| plane[y * w + x])).collect::<Vec<f32>>()
    };
    Patch {
        image: sample.image.chunks(h * w).flat_map(window).collect(),
        mask: window(&sample.mask),
        origin,
        centred_on_foreground: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_pcg::Pcg64;

    /// A `height`×`width` sample whose pixel (y, x) of channel c is c·1000 + y·100 + x, with
    /// foreground at `lesion` (y, x) pixels.
    fn sample(channels: usize, height: usize, width: usize, lesion: &[(usize, usize)]) -> NativeSample {
        let image = (0..channels * height * width)
            .map(|k| ((k / (height * width)) * 1000 + (k / width % height) * 100 + k % width) as f32)
            .collect();
        let mut mask = vec![0.0; height * width];
        lesion.iter().for_each(|&(y, x)| mask[y * width + x] = 1.0);
        NativeSample::new(image, mask, channels, height, width)
    }

    #[test]
    fn a_crop_inside_the_image_is_the_window_in_every_channel() {
        let s = sample(2, 6, 7, &[(3, 4)]);
        let p = crop(&s, 3, (2, 3));
        assert_eq!(
            p.image,
            [
                203., 204., 205., 303., 304., 305., 403., 404., 405., 1203., 1204., 1205., 1303., 1304., 1305., 1403.,
                1404., 1405.
            ]
        );
        assert_eq!(p.mask, [0., 0., 0., 0., 1., 0., 0., 0., 0.]);
    }

    #[test]
    fn a_smaller_image_is_mirrored_past_its_far_edges() {
        let s = sample(1, 2, 3, &[(1, 2)]);
        let p = crop(&s, 4, (0, 0));
        // Rows 0 1 0 1, columns 0 1 2 1 (numpy's reflect, as tiled inference pads).
        assert_eq!(p.image, [0., 1., 2., 1., 100., 101., 102., 101., 0., 1., 2., 1., 100., 101., 102., 101.]);
        assert_eq!(p.mask, [0., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0., 0., 0., 0., 1., 0.]);
        let mut rng = Pcg64::seed_from_u64(1);
        let drawn = PatchSampler::new(4).sample(&s, &mut rng);
        assert_eq!((drawn.image.len(), drawn.mask.len(), drawn.origin), (16, 16, (0, 0)));
    }

    #[test]
    fn windows_around_a_pixel_stay_inside_the_axis() {
        assert_eq!(origin_around(50, 100, 32), 34);
        assert_eq!(origin_around(3, 100, 32), 0);
        assert_eq!(origin_around(98, 100, 32), 68);
        assert_eq!(origin_around(5, 20, 32), 0);
    }

    #[test]
    fn a_set_share_of_patches_is_centred_on_foreground() {
        // A 3×3 lesion in a 256² slice: a random 32² patch holds part of it about 2 % of the time.
        let lesion: Vec<(usize, usize)> = (0..9).map(|k| (200 + k / 3, 40 + k % 3)).collect();
        let s = sample(1, 256, 256, &lesion);
        assert_eq!(s.foreground_pixels(), 9);
        for share in [FOREGROUND_SHARE, 0.0, 0.8] {
            let sampler = PatchSampler { patch: 32, foreground_share: share };
            let mut rng = Pcg64::seed_from_u64(42);
            let draws = 6000;
            let (mut centred, mut holding) = (0, 0);
            for _ in 0..draws {
                let p = sampler.sample(&s, &mut rng);
                assert_eq!((p.image.len(), p.mask.len()), (32 * 32, 32 * 32));
                assert!(p.origin.0 <= 256 - 32 && p.origin.1 <= 256 - 32);
                let has = p.mask.iter().any(|&m| m != 0.0);
                if p.centred_on_foreground {
                    centred += 1;
                    assert_eq!(p.mask[16 * 32 + 16], 1.0, "a forced patch is centred on the lesion");
                }
                holding += usize::from(has);
            }
            let centred = centred as f64 / draws as f64;
            let holding = holding as f64 / draws as f64;
            // Binomial standard error at 6000 draws is at most 0.0065: 3 of them is 0.02.
            assert!((centred - share).abs() < 0.02, "share {share}: {centred:.3} centred on foreground");
            let by_chance = 34.0 * 34.0 / (225.0 * 225.0);
            let expected = share + (1.0 - share) * by_chance;
            assert!(
                (holding - expected).abs() < 0.02,
                "share {share}: {holding:.3} hold foreground, expected {expected:.3}"
            );
        }
    }

    #[test]
    fn a_sample_without_foreground_is_cropped_at_random() {
        let s = sample(1, 40, 40, &[]);
        let mut rng = Pcg64::seed_from_u64(3);
        let sampler = PatchSampler { patch: 16, foreground_share: 1.0 };
        let origins: Vec<(usize, usize)> = (0..50).map(|_| sampler.sample(&s, &mut rng).origin).collect();
        assert!(origins.iter().all(|&(y, x)| y <= 24 && x <= 24));
        assert!(origins.iter().any(|&o| o != origins[0]), "origins vary");
    }
}
