//! `--patch P`: each time an epoch takes a training image it draws a P×P patch of it at its
//! own size (see [`PatchSampler`]), so structures a few pixels across keep their pixels. The
//! per-epoch test metrics are on one fixed patch per test image, drawn the same way from a
//! seed of their own; `wgunet train` then scores the whole test images in tiles.

use rand::SeedableRng;

use super::Dataset;
use crate::data::load::Sample;
use crate::data::patches::{NativeSample, Patch, PatchSampler};

/// Salt of the seed the fixed test patches are drawn with (the run's `--seed` ^ this).
const TEST_PATCH_SALT: u64 = 0x7e57;

pub(super) struct TrainPatches {
    sampler: PatchSampler,
    train: Vec<NativeSample>,
}

impl TrainPatches {
    /// Takes `data`'s training samples (decoded at their own size) and replaces its test
    /// samples by one patch each.
    pub fn new(patch: usize, data: &mut Dataset, seed: u64) -> TrainPatches {
        let sampler = PatchSampler::new(patch);
        let channels = data.channels;
        let train = data.train.drain(..).map(|s| native(s, channels)).collect();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed ^ TEST_PATCH_SALT);
        data.test = std::mem::take(&mut data.test)
            .into_iter()
            .map(|s| {
                let p = sampler.sample(&native(s, channels), &mut rng);
                Sample { image: p.image, mask: p.mask, native_size: (patch as u32, patch as u32) }
            })
            .collect();
        let foreground = data.test.iter().filter(|s| s.mask.iter().any(|&m| m != 0.0)).count();
        println!(
            "training on {patch}x{patch} patches at the images' own size ({:.0} % centred on foreground); per-epoch test metrics on one patch per test image ({foreground} of {} hold foreground)",
            sampler.foreground_share * 100.0,
            data.test.len()
        );
        TrainPatches { sampler, train }
    }

    pub fn len(&self) -> usize {
        self.train.len()
    }

    /// A patch of training image `k`.
    pub fn draw(&self, k: usize, rng: &mut impl rand::Rng) -> Patch {
        self.sampler.sample(&self.train[k], rng)
    }
}

fn native(s: Sample, channels: usize) -> NativeSample {
    let (width, height) = (s.native_size.0 as usize, s.native_size.1 as usize);
    NativeSample::new(s.image, s.mask, channels, height, width)
}
