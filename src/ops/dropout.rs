//! Inverted dropout (`shaders/dropout.wgsl`), as Keras' `Dropout`: in training
//! y = x·keep/(1 − p), in inference the identity (the graph skips the op, or builds it with
//! p = 0).
//!
//! No mask is stored: a counter-based hash of (seed, step, stream, element index) decides each
//! element, so backward regenerates the forward's mask. The seed and step live in a small
//! uniform buffer the trainer rewrites each step ([`rng_words`]), so the dispatches are built
//! once; `stream` tells apart layers that share that buffer, which would otherwise drop the same
//! elements. [`keep`] is the same rule in Rust, bit for bit.

use anyhow::{bail, Result};
use rand::Rng;

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::OnnxNode;
use crate::graph::{numel, Backward, BufId, CpuBuffers, Forward, GpuBuffers, Graph, Kernel, Layer, TensorId};
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Elements.
    pub n: usize,
    /// Drop probability, in [0, 1).
    pub p: f32,
    /// Which mask stream of the shared (seed, step): a different one per dropout layer.
    pub stream: u32,
}

uniform! {
    struct Params {
        n: u32,
        threshold: u32,
        scale: f32,
        stream: u32,
    }
}

/// Words in the rng uniform buffer.
const RNG_WORDS: usize = 4;

/// The contents of the rng uniform buffer: `[seed_lo, seed_hi, step, 0]`.
pub fn rng_words(seed: u64, step: u32) -> [u32; RNG_WORDS] {
    [seed as u32, (seed >> 32) as u32, step, 0]
}

/// A uniform buffer for [`rng_words`], written with `gpu.write` before each step.
pub fn rng_buffer(gpu: &Gpu) -> BufferView {
    gpu.uniform_buffer("dropout rng", 4 * RNG_WORDS as u64)
}

/// Elements whose hash is below round(p·2³²) are dropped. p < 1, so this fits in a u32.
fn threshold(p: f32) -> u32 {
    (p as f64 * 4294967296.0).round() as u32
}

/// pcg4d (Jarzynski & Olano 2020), as in dropout.wgsl: wrapping u32 arithmetic.
fn pcg4d(v: [u32; 4]) -> [u32; 4] {
    let mut v = v.map(|x| x.wrapping_mul(1664525).wrapping_add(1013904223));
    let mix = |v: &mut [u32; 4]| {
        v[0] = v[0].wrapping_add(v[1].wrapping_mul(v[3]));
        v[1] = v[1].wrapping_add(v[2].wrapping_mul(v[0]));
        v[2] = v[2].wrapping_add(v[0].wrapping_mul(v[1]));
        v[3] = v[3].wrapping_add(v[1].wrapping_mul(v[2]));
    };
    mix(&mut v);
    v = v.map(|x| x ^ (x >> 16));
    mix(&mut v);
    v
}

/// Whether element `index` survives dropout with probability `p` at (seed, step, stream): the
/// rule dropout.wgsl applies.
pub fn keep(seed: u64, step: u32, stream: u32, index: u32, p: f32) -> bool {
    assert!((0.0..1.0).contains(&p), "dropout probability {p} is not in [0, 1)");
    let [seed_lo, seed_hi, step, _] = rng_words(seed, step);
    let key = pcg4d([seed_lo, seed_hi, step, stream]);
    pcg4d([key[0].wrapping_add(index), key[1], key[2], key[3]])[0] >= threshold(p)
}

impl Dropout {
    /// dst = src·keep/(1 − p): forward and backward alike.
    fn scale_kept(&self, gpu: &Gpu, rng: &BufferView, src: &BufferView, dst: &BufferView) -> Result<Dispatch> {
        if !(0.0..1.0).contains(&self.p) {
            bail!("dropout probability must be in [0, 1): {self:?}");
        }
        if self.n == 0 {
            bail!("dropout over no elements: {self:?}");
        }
        let params = Params {
            n: self.n as u32,
            threshold: threshold(self.p),
            scale: (1.0 / (1.0 - self.p as f64)) as f32,
            stream: self.stream,
        };
        let bindings = [("rng", rng, RNG_WORDS), ("src", src, self.n), ("dst", dst, self.n)];
        launch(gpu, &KernelSpec::per_element("dropout", "dropout"), &params, &bindings, grid_1d(self.n, WG))
    }

    /// Training: y = x·keep/(1 − p). `rng` is a uniform buffer holding [`rng_words`] (from
    /// [`rng_buffer`]).
    pub fn forward(&self, gpu: &Gpu, rng: &BufferView, x: &BufferView, y: &BufferView) -> Result<Dispatch> {
        self.scale_kept(gpu, rng, x, y)
    }

    /// dx = dy·keep/(1 − p), with the mask of the forward that ran with the same rng words.
    pub fn backward(&self, gpu: &Gpu, rng: &BufferView, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
        self.scale_kept(gpu, rng, dy, dx)
    }
}

/// Inverted dropout in training programs; the identity otherwise.
#[derive(Clone, Debug)]
pub struct DropoutLayer {
    pub x: TensorId,
    pub s: Dropout,
}

impl Layer for DropoutLayer {
    fn name(&self) -> &'static str {
        "Dropout"
    }
    /// The identity at inference: no node, its input's value passed on.
    fn onnx(&self, onnx: &mut OnnxNode) -> String {
        onnx.value(self.x)
    }
    fn forward(&self, cx: &mut Forward) {
        if cx.training() {
            cx.push(DropoutForward { s: self.s, x: cx.input(self.x), y: cx.output() });
        }
    }
    fn backward(&self, cx: &mut Backward) {
        let (s, dy) = (self.s, cx.dy());
        cx.propagate(self.x, s.n, |dx| DropoutBackward { s, dy, dx });
    }
    fn identity_outside_training(&self) -> Option<TensorId> {
        Some(self.x)
    }
}

impl Graph {
    /// Dropout with drop probability `p`; each dropout layer draws its own mask stream.
    pub fn dropout(&mut self, name: &str, x: TensorId, p: f32) -> TensorId {
        let shape = self.shape(x);
        let stream = self.nodes.iter().filter(|n| n.op.layer::<DropoutLayer>().is_some()).count() as u32;
        self.push(name, DropoutLayer { x, s: Dropout { n: numel(&shape), p, stream } }, shape)
    }
}

/// Its mask comes from the executor's one dropout rng buffer (seed, step) and `s.stream`.
#[derive(Clone, Debug)]
pub struct DropoutForward {
    pub s: Dropout,
    pub x: BufId,
    pub y: BufId,
}

impl Kernel for DropoutForward {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x], vec![self.y])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.forward(g.gpu, g.dropout_rng, g.buf(self.x), g.buf(self.y))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.y] = reference::forward(&self.s, c.seed, c.step, &c.buffers[self.x]);
    }
}

#[derive(Clone, Debug)]
pub struct DropoutBackward {
    pub s: Dropout,
    pub dy: BufId,
    pub dx: BufId,
}

impl Kernel for DropoutBackward {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.dy], vec![self.dx])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.backward(g.gpu, g.dropout_rng, g.buf(self.dy), g.buf(self.dx))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.dx] = reference::backward(&self.s, c.seed, c.step, &c.buffers[self.dy]);
    }
}

/// Plain f64 references.
pub mod reference {
    use super::{keep, Dropout};

    pub fn forward(s: &Dropout, seed: u64, step: u32, x: &[f64]) -> Vec<f64> {
        let scale = 1.0 / (1.0 - s.p as f64);
        x.iter()
            .enumerate()
            .map(|(i, &v)| if keep(seed, step, s.stream, i as u32, s.p) { v * scale } else { 0.0 })
            .collect()
    }

    /// The forward is linear in x, with the same mask.
    pub fn backward(s: &Dropout, seed: u64, step: u32, dy: &[f64]) -> Vec<f64> {
        forward(s, seed, step, dy)
    }
}

/// Forward and backward of `s` against the reference at a random seed (all 64 bits) and step,
/// through one pair of dispatches over two steps with the rng buffer rewritten in between.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, s: &Dropout) -> Result<Vec<CaseReport>> {
    let (x, dy) = (check::random(rng, s.n), check::random(rng, s.n));
    let (gx, gdy) = (gpu.upload("x", &x)?, gpu.upload("dy", &dy)?);
    let (y, dx) = (check::poisoned(gpu, "y", s.n)?, check::poisoned(gpu, "dx", s.n)?);
    let words = rng_buffer(gpu);
    let (forward, backward) = (s.forward(gpu, &words, &gx, &y)?, s.backward(gpu, &words, &gdy, &dx)?);
    let seed: u64 = rng.random();
    let mut out = Vec::new();
    for step in [rng.random_range(0..1000), u32::MAX] {
        gpu.write(&words, &rng_words(seed, step));
        gpu.run(&[&forward, &backward])?;
        let shape = format!("{} p={} stream {} step {step}", s.n, s.p, s.stream);
        // The mask is exact and the scale is the only rounding: far inside the usual bound.
        let want_y = reference::forward(s, seed, step, &check::to_f64(&x));
        out.push(check::compare_with("dropout forward", &shape, &gpu.read::<f32>(&y)?, &want_y, 1e-6));
        let want_dx = reference::backward(s, seed, step, &check::to_f64(&dy));
        out.push(check::compare_with("dropout backward", &shape, &gpu.read::<f32>(&dx)?, &want_dx, 1e-6));
    }
    Ok(out)
}

/// One element, odd sizes, 10⁵ elements, p = 0 (identity), a high p, and two streams.
pub const CHECK_CASES: &[Dropout] = &[
    Dropout { n: 1, p: 0.5, stream: 0 },
    Dropout { n: 3 * 17 * 23, p: 0.3, stream: 0 },
    Dropout { n: 100_000, p: 0.5, stream: 1 },
    Dropout { n: 2 * 33 * 9 * 7, p: 0.0, stream: 2 },
    Dropout { n: 1000, p: 0.9, stream: 3 },
];
