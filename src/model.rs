//! The architectures, built as graphs: the seed notebook's U-Net with either decoder.

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, TensorId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// U-Net with 2×2 transposed-convolution up-sampling (the seed's first cell).
    Unet,
    /// U-Net with nearest ×2 up-sampling (the seed's training cell, Keras UpSampling2D).
    UnetUpsample,
}

impl Arch {
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Unet => "unet",
            Arch::UnetUpsample => "unet-upsample",
        }
    }
}

/// Everything needed to rebuild a model: saved as `model.json` beside the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Input side in pixels (a multiple of 16); images are resized to it.
    pub size: usize,
    /// Input channels: 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Base filters F: the encoder has F, 2F, 4F, 8F, the bridge 16F.
    pub filters: usize,
}

/// Levels of the encoder; the input side must divide by 2^DEPTH.
pub const DEPTH: usize = 4;

impl ModelConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let step = 1 << DEPTH;
        anyhow::ensure!(
            self.size >= step && self.size % step == 0,
            "--size {} is not a multiple of {step}: a depth-{DEPTH} U-Net halves the image {DEPTH} times (try {})",
            self.size,
            (self.size / step).max(1) * step
        );
        anyhow::ensure!(self.channels == 1 || self.channels == 3, "--channels must be 1 or 3, not {}", self.channels);
        anyhow::ensure!(self.filters >= 1, "--filters must be at least 1");
        Ok(())
    }

    /// The network for `batch` images. Its last node is the 1-channel logit map.
    pub fn build(&self, batch: usize) -> Graph {
        let mut g = Graph::default();
        let f = self.filters;
        let mut x = g.input([batch, self.channels, self.size, self.size]);
        let mut skips = Vec::new();
        for level in 0..DEPTH {
            let c = conv_block(&mut g, &format!("enc{}", level + 1), x, f << level);
            skips.push(c);
            x = g.max_pool(&format!("pool{}", level + 1), c);
        }
        x = conv_block(&mut g, "bridge", x, f << DEPTH);
        for level in (0..DEPTH).rev() {
            let name = format!("dec{}", DEPTH - level);
            let up = match self.arch {
                Arch::Unet => g.conv_transpose(&format!("{name}.up"), x, f << level),
                Arch::UnetUpsample => g.upsample(&format!("{name}.up"), x),
            };
            // Up-sampled features first, then the skip, as Keras' Concatenate()([x, skip]).
            let cat = g.concat(&format!("{name}.concat"), &[up, skips[level]]);
            x = conv_block(&mut g, &name, cat, f << level);
        }
        g.conv("head", x, 1, 1, false);
        g
    }
}

/// Two 3×3 convolutions with ReLU.
fn conv_block(g: &mut Graph, name: &str, x: TensorId, filters: usize) -> TensorId {
    let x = g.conv(&format!("{name}.conv1"), x, filters, 3, true);
    g.conv(&format!("{name}.conv2"), x, filters, 3, true)
}
