//! The architectures, built as graphs: the seed notebook's U-Net with either decoder, its
//! residual U-Net with batch norm and dropout, and a U-Net with attention-gated skips.

use serde::{Deserialize, Serialize};

use crate::data::normalise::Normalisation;
use crate::graph::{Graph, TensorId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// U-Net with 2×2 transposed-convolution up-sampling (the seed's first cell).
    Unet,
    /// U-Net with nearest ×2 up-sampling (the seed's training cell, Keras UpSampling2D).
    UnetUpsample,
    /// Residual U-Net with batch norm and dropout (the seed's `build_resunet`).
    Resunet,
    /// U-Net whose skip connections pass through attention gates (Oktay et al. 2018).
    AttentionUnet,
}

impl Arch {
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Unet => "unet",
            Arch::UnetUpsample => "unet-upsample",
            Arch::Resunet => "resunet",
            Arch::AttentionUnet => "attention-unet",
        }
    }
}

/// The nonlinearity of the conv blocks (every architecture's; attention gates keep their ReLU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// max(x, 0), fused into the convolution where one precedes it (the seed's).
    #[default]
    Relu,
    /// x for x > 0, else 0.01·x ([`LEAKY_RELU_SLOPE`](crate::ops::elementwise::LEAKY_RELU_SLOPE)):
    /// no unit stops learning for good. A step of its own after each convolution.
    LeakyRelu,
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
    /// Dropout probability of the residual U-Net (ignored by the others).
    #[serde(default = "default_dropout")]
    pub dropout: f32,
    /// 1: a binary mask from one sigmoid output. K ≥ 2: K output channels and a softmax, for
    /// masks whose pixel values are class ids 0..K. Runs saved before K-class models load as 1.
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// Runs saved before the choice load as ReLU.
    #[serde(default)]
    pub activation: Activation,
    /// The input's intensity normalisation, with the training set's statistics; runs saved
    /// before it load as `unit`.
    #[serde(default)]
    pub normalise: Normalisation,
}

fn default_dropout() -> f32 {
    DEFAULT_DROPOUT
}

fn default_classes() -> usize {
    1
}

/// The most classes a model may have: what an 8-bit class-id mask holds, and what the metrics
/// kernel counts.
pub const MAX_CLASSES: usize = crate::ops::metrics::MAX_CLASSES;

/// Name of the final 1×1 convolution that maps features to the logits (its parameters are
/// `head.weight` and `head.bias`).
pub const HEAD: &str = "head";

/// Levels of the encoder; the input side must divide by 2^DEPTH.
pub const DEPTH: usize = 4;

/// The residual U-Net's dropout probability (the seed's `dropout=0.1`).
pub const DEFAULT_DROPOUT: f32 = 0.1;

impl ModelConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let step = 1 << DEPTH;
        anyhow::ensure!(
            self.size >= step && self.size.is_multiple_of(step),
            "--size {} is not a multiple of {step}: a depth-{DEPTH} U-Net halves the image {DEPTH} times (try {})",
            self.size,
            (self.size / step).max(1) * step
        );
        anyhow::ensure!(self.channels == 1 || self.channels == 3, "--channels must be 1 or 3, not {}", self.channels);
        anyhow::ensure!(self.filters >= 1, "--filters must be at least 1");
        anyhow::ensure!((0.0..1.0).contains(&self.dropout), "--dropout must be in [0, 1), not {}", self.dropout);
        anyhow::ensure!(
            self.classes == 1 || (2..=MAX_CLASSES).contains(&self.classes),
            "--classes must be 1 (a binary mask) or 2 to {MAX_CLASSES} (class-id masks), not {}",
            self.classes
        );
        Ok(())
    }

    /// K-class segmentation (softmax head) rather than binary (sigmoid head).
    pub fn multiclass(&self) -> bool {
        self.classes >= 2
    }

    /// The network for `batch` images. Its last node is the logit map: 1 channel for a binary
    /// model, `classes` channels otherwise.
    pub fn build(&self, batch: usize) -> Graph {
        match self.arch {
            Arch::Resunet => self.build_resunet(batch, self.dropout),
            Arch::Unet | Arch::UnetUpsample | Arch::AttentionUnet => self.build_unet(batch),
        }
    }

    fn build_unet(&self, batch: usize) -> Graph {
        let mut g = Graph::default();
        let f = self.filters;
        let mut x = g.input([batch, self.channels, self.size, self.size]);
        let mut skips = Vec::new();
        for level in 0..DEPTH {
            let c = conv_block(&mut g, &format!("enc{}", level + 1), x, f << level, self.activation);
            skips.push(c);
            x = g.max_pool(&format!("pool{}", level + 1), c);
        }
        x = conv_block(&mut g, "bridge", x, f << DEPTH, self.activation);
        for level in (0..DEPTH).rev() {
            let name = format!("dec{}", DEPTH - level);
            let up = match self.arch {
                Arch::UnetUpsample => g.upsample(&format!("{name}.up"), x),
                _ => g.conv_transpose(&format!("{name}.up"), x, f << level),
            };
            let skip = match self.arch {
                Arch::AttentionUnet => attention_gate(&mut g, &format!("{name}.att"), skips[level], up),
                _ => skips[level],
            };
            // Up-sampled features first, then the skip, as Keras' Concatenate()([x, skip]).
            let cat = g.concat(&format!("{name}.concat"), &[up, skip]);
            x = conv_block(&mut g, &name, cat, f << level, self.activation);
        }
        g.conv(HEAD, x, self.classes, 1, false);
        g
    }

    /// The seed's `build_resunet`: residual blocks, dropout after encoder blocks 2–4 (before
    /// pooling, so the skip is the dropped map too) and after decoder blocks 1–3.
    fn build_resunet(&self, batch: usize, dropout: f32) -> Graph {
        let mut g = Graph::default();
        let f = self.filters;
        let mut x = g.input([batch, self.channels, self.size, self.size]);
        let mut skips = Vec::new();
        for level in 0..DEPTH {
            let name = format!("enc{}", level + 1);
            let mut c = residual_block(&mut g, &name, x, f << level, self.activation);
            if level > 0 && dropout > 0.0 {
                c = g.dropout(&format!("{name}.dropout"), c, dropout);
            }
            skips.push(c);
            x = g.max_pool(&format!("pool{}", level + 1), c);
        }
        x = residual_block(&mut g, "bridge", x, f << DEPTH, self.activation);
        for level in (0..DEPTH).rev() {
            let name = format!("dec{}", DEPTH - level);
            let up = g.conv_transpose(&format!("{name}.up"), x, f << level);
            let cat = g.concat(&format!("{name}.concat"), &[up, skips[level]]);
            x = residual_block(&mut g, &name, cat, f << level, self.activation);
            if level > 0 && dropout > 0.0 {
                x = g.dropout(&format!("{name}.dropout"), x, dropout);
            }
        }
        g.conv(HEAD, x, self.classes, 1, false);
        g
    }
}

/// Two 3×3 convolutions, each with the activation.
fn conv_block(g: &mut Graph, name: &str, x: TensorId, filters: usize, act: Activation) -> TensorId {
    let mut x = x;
    for i in 1..=2 {
        let conv = format!("{name}.conv{i}");
        x = match act {
            Activation::Relu => g.conv(&conv, x, filters, 3, true),
            Activation::LeakyRelu => {
                // Unfused, the convolution starts from Glorot like the residual U-Net's.
                let z = g.conv(&conv, x, filters, 3, false);
                g.leaky_relu(&format!("{name}.leaky_relu{i}"), z)
            }
        };
    }
    x
}

/// The activation as its own node, named `block`.relu`suffix` (or leaky_relu`suffix`).
fn activate(g: &mut Graph, block: &str, suffix: &str, x: TensorId, act: Activation) -> TensorId {
    match act {
        Activation::Relu => g.relu(&format!("{block}.relu{suffix}"), x),
        Activation::LeakyRelu => g.leaky_relu(&format!("{block}.leaky_relu{suffix}"), x),
    }
}

/// The seed's `residual_block`: (3×3 conv → batch norm → activation) twice, plus a 1×1
/// projection of the input with batch norm, added, then the activation. The convolutions keep
/// their biases, as Keras' do by default, although the batch norm after each cancels it.
fn residual_block(g: &mut Graph, name: &str, x: TensorId, filters: usize, act: Activation) -> TensorId {
    let res = g.conv(&format!("{name}.proj"), x, filters, 1, false);
    let res = g.batch_norm(&format!("{name}.proj_bn"), res);
    let mut y = x;
    for i in 1..=2 {
        y = g.conv(&format!("{name}.conv{i}"), y, filters, 3, false);
        y = g.batch_norm(&format!("{name}.bn{i}"), y);
        y = activate(g, name, &i.to_string(), y, act);
    }
    let sum = g.add(&format!("{name}.add"), y, res);
    activate(g, name, "", sum, act)
}

/// An additive attention gate (Oktay et al. 2018) on the skip `x`, driven by the up-sampled
/// decoder features `gating` of the same size: α = σ(ψ(ReLU(W_x·x + W_g·g + b))), returned as
/// x·α. W_x·x + W_g·g is one 1×1 convolution over concat(x, g); its width is half the skip's
/// channels (at least 1); ψ is a 1×1 convolution to one channel.
fn attention_gate(g: &mut Graph, name: &str, x: TensorId, gating: TensorId) -> TensorId {
    let inter = (g.shape(x)[1] / 2).max(1);
    let both = g.concat(&format!("{name}.concat"), &[x, gating]);
    let q = g.conv(&format!("{name}.theta"), both, inter, 1, true);
    let psi = g.conv(&format!("{name}.psi"), q, 1, 1, false);
    let alpha = g.sigmoid(&format!("{name}.alpha"), psi);
    g.gate(&format!("{name}.gate"), x, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_saved_before_classes_load_as_binary() {
        let old = r#"{ "arch": "unet", "size": 64, "channels": 1, "filters": 8, "dropout": 0.1 }"#;
        let cfg: ModelConfig = serde_json::from_str(old).unwrap();
        assert_eq!(cfg.classes, 1);
        assert_eq!(cfg.activation, Activation::Relu, "runs saved before the choice used ReLU");
        assert!(!cfg.multiclass());
        let head = |cfg: &ModelConfig| cfg.build(1).nodes.last().unwrap().shape;
        assert_eq!(head(&cfg), [1, 1, 64, 64]);
        let three = ModelConfig { classes: 3, ..cfg };
        assert_eq!(head(&three), [1, 3, 64, 64]);
        assert!(three.validate().is_ok());
        for bad in [0, 256] {
            assert!(ModelConfig { classes: bad, ..three.clone() }.validate().is_err(), "{bad} classes");
        }
    }
}
