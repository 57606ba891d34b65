//! Overlap-tile inference (the U-Net paper's overlap-tile strategy, MONAI's sliding-window
//! inference): where tiles of the model's size sit on an image of any size, how much each
//! tile's pixels count where tiles overlap, and blending the tiles' probability maps into one
//! map. Plain CPU arithmetic; only the tiles go to the GPU.

use anyhow::{ensure, Result};

/// How a tile's pixels are weighted where tiles overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Blend {
    /// A Gaussian centred on the tile: predictions near a tile's border, which saw the least
    /// context, count least (MONAI's and nnU-Net's default).
    Gaussian,
    /// Every pixel of every tile counts the same: a plain mean of the overlapping tiles.
    Constant,
}

impl Blend {
    pub fn name(self) -> &'static str {
        match self {
            Blend::Gaussian => "gaussian",
            Blend::Constant => "constant",
        }
    }
}

/// σ of the Gaussian window as a fraction of the tile side: MONAI's and nnU-Net's 1/8.
pub const GAUSSIAN_SIGMA_FRACTION: f64 = 0.125;

/// Starts of the tiles along an axis of `length` pixels: a stride of `tile × (1 − overlap)`
/// (at least 1), with the last tile moved back to end flush with the image, so every pixel is
/// covered and no tile hangs over the edge. An axis no longer than a tile gets one tile at 0
/// (the image is padded to the tile).
pub fn tile_starts(length: usize, tile: usize, overlap: f64) -> Vec<usize> {
    if length <= tile {
        return vec![0];
    }
    let stride = ((tile as f64 * (1.0 - overlap)).round() as usize).max(1);
    let mut starts: Vec<usize> = (0..).map(|k| k * stride).take_while(|&s| s + tile < length).collect();
    starts.push(length - tile);
    starts
}

/// Weights of a `tile`×`tile` tile's pixels, row-major. Gaussian weights are the product of
/// two 1-D Gaussians about the tile's centre, 1 at the centre and never 0 (σ = tile/8 puts the
/// corners at e^-32 at worst, far above f32's smallest normal number).
pub fn window(tile: usize, blend: Blend) -> Vec<f32> {
    match blend {
        Blend::Constant => vec![1.0; tile * tile],
        Blend::Gaussian => {
            let centre = (tile as f64 - 1.0) / 2.0;
            let sigma = GAUSSIAN_SIGMA_FRACTION * tile as f64;
            let g: Vec<f64> = (0..tile).map(|i| (-(i as f64 - centre).powi(2) / (2.0 * sigma * sigma)).exp()).collect();
            (0..tile * tile).map(|k| (g[k / tile] * g[k % tile]) as f32).collect()
        }
    }
}

/// Position `i` of an axis of `n` pixels continued past its far edge by mirroring, without
/// repeating the edge pixel (numpy's "reflect"): for n = 4, 0 1 2 3 2 1 0 1 2 …
pub fn reflect(i: usize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i % period;
    if m < n {
        m
    } else {
        period - m
    }
}

/// The tiles covering a `height`×`width` image.
#[derive(Clone, Debug, PartialEq)]
pub struct TilePlan {
    pub height: usize,
    pub width: usize,
    pub tile: usize,
    /// Top-left corners (y, x), row by row.
    pub origins: Vec<(usize, usize)>,
}

impl TilePlan {
    pub fn new(height: usize, width: usize, tile: usize, overlap: f64) -> Result<TilePlan> {
        ensure!((0.0..1.0).contains(&overlap), "--overlap must be at least 0 and below 1, not {overlap}");
        ensure!(height > 0 && width > 0 && tile > 0, "cannot tile a {width}×{height} image with {tile}-pixel tiles");
        let (ys, xs) = (tile_starts(height, tile, overlap), tile_starts(width, tile, overlap));
        let origins = ys.iter().flat_map(|&y| xs.iter().map(move |&x| (y, x))).collect();
        Ok(TilePlan { height, width, tile, origins })
    }

    /// Tile `index` of a `[channels, height, width]` image as `[channels, tile, tile]`; parts
    /// beyond the image (only where the image is smaller than a tile) are mirrored in.
    pub fn cut(&self, image: &[f32], channels: usize, index: usize) -> Vec<f32> {
        let (y0, x0) = self.origins[index];
        let (t, h, w) = (self.tile, self.height, self.width);
        assert_eq!(image.len(), channels * h * w, "cut: image is not [{channels}, {h}, {w}]");
        let mut out = Vec::with_capacity(channels * t * t);
        for c in 0..channels {
            for y in 0..t {
                let row = c * h * w + reflect(y0 + y, h) * w;
                out.extend((0..t).map(|x| image[row + reflect(x0 + x, w)]));
            }
        }
        out
    }
}

/// Running weighted sums of tile probability maps over an image: one plane for a binary model,
/// one per class for a K-class model (every plane blended alike).
pub struct Blender {
    planes: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Blender {
    pub fn new(plan: &TilePlan, planes: usize) -> Blender {
        let pixels = plan.height * plan.width;
        Blender { planes, sum: vec![0.0; planes * pixels], weight: vec![0.0; pixels] }
    }

    /// Adds tile `index`'s `[planes, tile, tile]` maps with `window`'s weights; pixels in the
    /// padding are dropped.
    pub fn add(&mut self, plan: &TilePlan, index: usize, prob: &[f32], window: &[f32]) {
        let (y0, x0) = plan.origins[index];
        let t = plan.tile;
        let pixels = plan.height * plan.width;
        assert!(
            prob.len() == self.planes * t * t && window.len() == t * t,
            "add: tile maps must be [{}, {t}, {t}]",
            self.planes
        );
        for y in 0..t.min(plan.height - y0) {
            for x in 0..t.min(plan.width - x0) {
                let (k, at) = (y * t + x, (y0 + y) * plan.width + x0 + x);
                for c in 0..self.planes {
                    self.sum[c * pixels + at] += window[k] * prob[c * t * t + k];
                }
                self.weight[at] += window[k];
            }
        }
    }

    /// The blended `[planes, height, width]` maps: Σ w·p / Σ w at every pixel.
    pub fn finish(self) -> Vec<f32> {
        let pixels = self.weight.len();
        self.sum.iter().enumerate().map(|(i, s)| s / self.weight[i % pixels]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_cover_the_axis_and_end_flush() {
        assert_eq!(tile_starts(64, 32, 0.0), vec![0, 32]);
        assert_eq!(tile_starts(64, 32, 0.25), vec![0, 24, 32]);
        assert_eq!(tile_starts(100, 32, 0.5), vec![0, 16, 32, 48, 64, 68]);
        assert_eq!(tile_starts(32, 32, 0.25), vec![0]);
        assert_eq!(tile_starts(10, 32, 0.25), vec![0]);
        assert_eq!(tile_starts(33, 32, 0.0), vec![0, 1]);
        for (length, tile, overlap) in [(517, 64, 0.25), (100, 7, 0.9), (65, 64, 0.0), (300, 128, 0.5)] {
            let s = tile_starts(length, tile, overlap);
            assert_eq!(s[0], 0);
            assert_eq!(*s.last().unwrap() + tile, length, "{length} {tile} {overlap}: {s:?}");
            assert!(s.windows(2).all(|p| p[0] < p[1] && p[1] <= p[0] + tile), "{s:?} leaves a gap");
        }
    }

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        let seq: Vec<usize> = (0..10).map(|i| reflect(i, 4)).collect();
        assert_eq!(seq, vec![0, 1, 2, 3, 2, 1, 0, 1, 2, 3]);
        assert!((0..5).all(|i| reflect(i, 1) == 0));
    }

    #[test]
    fn gaussian_window_peaks_in_the_middle_and_is_symmetric() {
        let t = 16;
        let w = window(t, Blend::Gaussian);
        assert!(w.iter().all(|&v| v > 0.0 && v <= 1.0));
        for y in 0..t {
            for x in 0..t {
                let v = w[y * t + x];
                assert_eq!(v, w[x * t + y]);
                assert_eq!(v, w[(t - 1 - y) * t + x]);
                assert_eq!(v, w[y * t + t - 1 - x]);
            }
        }
        assert!(w[8 * t + 8] > w[8 * t + 12] && w[8 * t + 12] > w[8 * t + 15]);
        // σ = 2 pixels; the centre lies between pixels 7 and 8, so pixel (7, 7) is 0.5 off it each way.
        let ratio = w[0] as f64 / w[7 * t + 7] as f64;
        let expected = (-(7.5f64.powi(2) - 0.5f64.powi(2)) / 4.0).exp();
        assert!((ratio / expected - 1.0).abs() < 1e-5, "{ratio} vs {expected}");
        assert!(window(3, Blend::Constant).iter().all(|&v| v == 1.0));
        // The largest tile corner stays a normal f32.
        assert!(window(512, Blend::Gaussian)[0] > f32::MIN_POSITIVE);
    }

    #[test]
    fn cut_pads_small_images_by_reflection() {
        // A 2-channel 2×3 image in a 4×4 tile.
        let image: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let plan = TilePlan::new(2, 3, 4, 0.25).unwrap();
        assert_eq!(plan.origins, vec![(0, 0)]);
        let tile = plan.cut(&image, 2, 0);
        #[rustfmt::skip]
        let want = [
            0., 1., 2., 1.,   3., 4., 5., 4.,   0., 1., 2., 1.,   3., 4., 5., 4.,
            6., 7., 8., 7.,   9., 10., 11., 10., 6., 7., 8., 7.,  9., 10., 11., 10.,
        ];
        assert_eq!(tile, want);
    }

    #[test]
    fn blending_averages_overlaps_by_weight() {
        // 1×6 image, tiles of 4 at 0 and 2: pixels 2 and 3 are covered twice.
        let plan = TilePlan::new(1, 6, 4, 0.5).unwrap();
        assert_eq!(plan.origins, vec![(0, 0), (0, 2)]);
        let image: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(plan.cut(&image, 1, 1)[..4], [2., 3., 4., 5.]);
        let mut blender = Blender::new(&plan, 1);
        // Each tile is 4 wide and 4 tall (rows 1..4 mirror row 0 of the 1-row image and are dropped).
        let ones = vec![1.0; 16];
        blender.add(&plan, 0, &[0.2; 16], &ones);
        let mut weights = vec![1.0; 16];
        weights[..4].copy_from_slice(&[3.0, 3.0, 3.0, 3.0]);
        blender.add(&plan, 1, &[0.6; 16], &weights);
        let got = blender.finish();
        let want = [0.2, 0.2, (0.2 + 3.0 * 0.6) / 4.0, (0.2 + 3.0 * 0.6) / 4.0, 0.6, 0.6];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} != {want:?}");
        }
    }

    #[test]
    fn exact_tiling_without_overlap_reassembles_the_tiles() {
        let (h, w, t) = (6, 9, 3);
        let image: Vec<f32> = (0..h * w).map(|v| v as f32 * 0.5).collect();
        let plan = TilePlan::new(h, w, t, 0.0).unwrap();
        assert_eq!(plan.origins.len(), 6);
        let mut blender = Blender::new(&plan, 1);
        for i in 0..plan.origins.len() {
            blender.add(&plan, i, &plan.cut(&image, 1, i), &window(t, Blend::Constant));
        }
        assert_eq!(blender.finish(), image);
    }

    #[test]
    fn every_plane_blends_alike() {
        // Two planes (classes) of a 1×6 image, tiles of 4 at 0 and 2, constant weights.
        let plan = TilePlan::new(1, 6, 4, 0.5).unwrap();
        let mut blender = Blender::new(&plan, 2);
        let ones = vec![1.0; 16];
        let tile = |a: f32, b: f32| [vec![a; 16], vec![b; 16]].concat();
        blender.add(&plan, 0, &tile(0.2, 0.8), &ones);
        blender.add(&plan, 1, &tile(0.6, 0.4), &ones);
        let got = blender.finish();
        let want = [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 0.6, 0.6, 0.4, 0.4];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} != {want:?}");
        }
    }

    #[test]
    fn bad_overlap_is_an_error() {
        assert!(TilePlan::new(10, 10, 4, 1.0).is_err());
        assert!(TilePlan::new(10, 10, 4, -0.1).is_err());
    }
}
