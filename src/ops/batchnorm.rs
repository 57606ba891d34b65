//! Batch normalisation over NCHW, per channel (`shaders/batchnorm.wgsl`), as Keras'
//! `BatchNormalization(axis=1)`: training mode normalises with the batch statistics and updates
//! the running ones; inference mode uses the running statistics.
//!
//! Training forward saves the batch mean and biased variance in `stats` [c, 2] for backward.
//! The running variance is updated with the *unbiased* batch variance (× m/(m − 1), m = N·H·W),
//! as PyTorch and TensorFlow's fused kernel do (Keras 3's own path uses the biased one; the two
//! differ by a factor m/(m − 1), negligible at U-Net sizes). With m = 1 the biased one (0) is used.

use anyhow::{bail, Result};

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::{float, OnnxNode};
use crate::graph::rule::op_kernel;
use crate::graph::{Backward, BufId, CpuBuffers, Forward, GpuBuffers, Graph, Init, Kernel, Layer, ParamId, TensorId};
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    /// Added to the variance (Keras: 1e-3).
    pub eps: f32,
    /// running = momentum·running + (1 − momentum)·batch (Keras: 0.99).
    pub momentum: f32,
}

uniform! {
    struct Params {
        n: u32,
        c: u32,
        hw: u32,
        eps: f32,
        momentum: f32,
    }
}

impl BatchNorm {
    /// Keras' defaults: ε = 1e-3, momentum 0.99.
    pub fn keras(n: usize, c: usize, hw: usize) -> BatchNorm {
        BatchNorm { n, c, hw, eps: 1e-3, momentum: 0.99 }
    }

    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn params(&self) -> Result<Params> {
        if self.is_empty() {
            bail!("batch norm with an empty dimension: {self:?}");
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            bail!("batch norm needs ε > 0 (a constant channel would divide by zero): {self:?}");
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            bail!("batch norm momentum must be in [0, 1]: {self:?}");
        }
        Ok(Params { n: self.n as u32, c: self.c as u32, hw: self.hw as u32, eps: self.eps, momentum: self.momentum })
    }

    /// `tensors` bound to batchnorm.wgsl's variables of those names, each with the elements its
    /// variable holds: a tensor's, a channel's (γ, β, running statistics and their gradients) or
    /// the saved statistics' [c, 2].
    fn bindings<'a>(&self, tensors: &[(&'a str, &'a BufferView)]) -> Vec<(&'a str, &'a BufferView, usize)> {
        let elems = |variable| match variable {
            "x" | "y" | "dy" | "dx" => self.len(),
            "stats" => 2 * self.c,
            _ => self.c,
        };
        tensors.iter().map(|&(variable, view)| (variable, view, elems(variable))).collect()
    }

    /// One workgroup per channel (a reduction over its N·H·W values).
    fn per_channel(&self, gpu: &Gpu, entry: &'static str, tensors: &[(&str, &BufferView)]) -> Result<Dispatch> {
        let spec = KernelSpec::per_element("batchnorm", entry).workgroup_memory(WG * 8);
        launch(gpu, &spec, &self.params()?, &self.bindings(tensors), [self.c as u32, 1, 1])
    }

    fn elementwise(&self, gpu: &Gpu, entry: &'static str, tensors: &[(&str, &BufferView)]) -> Result<Dispatch> {
        let spec = KernelSpec::per_element("batchnorm", entry);
        launch(gpu, &spec, &self.params()?, &self.bindings(tensors), grid_1d(self.len(), WG))
    }

    /// Training mode, two dispatches: the batch mean and biased variance of each channel into
    /// `stats` `[c, 2]` with `running_mean` / `running_var` `[c]` updated in place, then
    /// y = γ·(x − μ)/√(σ² + ε) + β.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_train(
        &self,
        gpu: &Gpu,
        x: &BufferView,
        gamma: &BufferView,
        beta: &BufferView,
        y: &BufferView,
        stats: &BufferView,
        running_mean: &BufferView,
        running_var: &BufferView,
    ) -> Result<Vec<Dispatch>> {
        let statistics = [("x", x), ("stats", stats), ("running_mean", running_mean), ("running_var", running_var)];
        let normalize = [("x", x), ("gamma", gamma), ("beta", beta), ("stats", stats), ("y", y)];
        Ok(vec![
            self.per_channel(gpu, "batch_stats", &statistics)?,
            self.elementwise(gpu, "normalize_batch", &normalize)?,
        ])
    }

    /// Inference mode: y = γ·(x − running_mean)/√(running_var + ε) + β; nothing updated.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_infer(
        &self,
        gpu: &Gpu,
        x: &BufferView,
        gamma: &BufferView,
        beta: &BufferView,
        running_mean: &BufferView,
        running_var: &BufferView,
        y: &BufferView,
    ) -> Result<Dispatch> {
        let tensors = [
            ("x", x),
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
            ("y", y),
        ];
        self.elementwise(gpu, "normalize_running", &tensors)
    }

    /// Training-mode backward, two dispatches: dβ = Σdy and dγ = Σdy·x̂ per channel (written,
    /// not accumulated), then dx, which reads them back as the two sums it needs. `stats` is
    /// what [`forward_train`](Self::forward_train) saved for the same `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &BufferView,
        gamma: &BufferView,
        stats: &BufferView,
        dy: &BufferView,
        dx: &BufferView,
        dgamma: &BufferView,
        dbeta: &BufferView,
    ) -> Result<Vec<Dispatch>> {
        let sums = [("x", x), ("stats", stats), ("dy", dy), ("dgamma", dgamma), ("dbeta", dbeta)];
        let input = [&sums[..], &[("gamma", gamma), ("dx", dx)]].concat();
        Ok(vec![self.per_channel(gpu, "backward_sums", &sums)?, self.elementwise(gpu, "backward_input", &input)?])
    }
}

/// Per-channel batch normalisation: batch statistics in training programs (updating the
/// running ones), the running statistics otherwise.
#[derive(Clone, Debug)]
pub struct BatchNormLayer {
    pub x: TensorId,
    pub gamma: ParamId,
    pub beta: ParamId,
    pub mean: ParamId,
    pub var: ParamId,
    pub s: BatchNorm,
}

impl Layer for BatchNormLayer {
    fn name(&self) -> &'static str {
        "BatchNorm"
    }
    /// With the running statistics.
    fn onnx(&self, onnx: &mut OnnxNode) -> String {
        let inputs = [self.gamma, self.beta, self.mean, self.var].map(|p| onnx.param(p));
        let inputs: Vec<String> = std::iter::once(onnx.value(self.x)).chain(inputs).collect();
        onnx.single("BatchNormalization", &inputs, vec![float("epsilon", self.s.eps)])
    }
    fn forward(&self, cx: &mut Forward) {
        let Self { s, gamma, beta, mean, var, .. } = *self;
        let (x, y) = (cx.input(self.x), cx.output());
        if cx.training() {
            let stats = cx.buf("stats", 2 * s.c);
            cx.save(stats);
            cx.push(BatchNormTrain { s, x, gamma, beta, mean, var, y, stats });
        } else {
            cx.push(BatchNormInfer { s, x, gamma, beta, mean, var, y });
        }
    }
    fn backward(&self, cx: &mut Backward) {
        // The kernel always writes dx (its γ and β gradients are the sums dx needs).
        let dx = cx.gradient(self.x, self.s.len());
        let (x, stats, dy) = (cx.input(self.x), cx.saved(0), cx.dy());
        let Self { s, gamma, beta, .. } = *self;
        cx.push(BatchNormBackward { s, x, gamma, stats, dy, dx, dgamma: gamma, dbeta: beta });
        if cx.needs_grad(self.x) {
            cx.contribute(self.x, dx);
        }
    }
}

impl Graph {
    /// Batch normalisation with Keras' defaults (ε 1e-3, momentum 0.99): trained γ (ones) and
    /// β (zeros), and running statistics (mean zeros, variance ones) as untrained state.
    pub fn batch_norm(&mut self, name: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x);
        let [n, c, h, w] = shape;
        let gamma = self.param(format!("{name}.gamma"), vec![c], Init::Ones);
        let beta = self.param(format!("{name}.beta"), vec![c], Init::Zeros);
        let mean = self.state(format!("{name}.running_mean"), vec![c], Init::Zeros);
        let var = self.state(format!("{name}.running_var"), vec![c], Init::Ones);
        let s = BatchNorm::keras(n, c, h * w);
        self.push(name, BatchNormLayer { x, gamma, beta, mean, var, s }, shape)
    }
}

/// Batch statistics into `stats` [c, 2] (kept for backward), the running statistics `mean`
/// and `var` (untrained parameters) updated in place, and the normalised `y`.
#[derive(Clone, Debug)]
pub struct BatchNormTrain {
    pub s: BatchNorm,
    pub x: BufId,
    pub gamma: ParamId,
    pub beta: ParamId,
    pub mean: ParamId,
    pub var: ParamId,
    pub y: BufId,
    pub stats: BufId,
}

impl Kernel for BatchNormTrain {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x], vec![self.y, self.stats])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        let p = |id| g.param(id);
        let (x, y, stats) = (g.buf(self.x), g.buf(self.y), g.buf(self.stats));
        self.s.forward_train(g.gpu, x, p(self.gamma), p(self.beta), y, stats, p(self.mean), p(self.var))
    }
    fn reference(&self, c: &mut CpuBuffers) {
        let (mut rm, mut rv) = (c.params[self.mean].clone(), c.params[self.var].clone());
        let (gamma, beta) = (&c.params[self.gamma], &c.params[self.beta]);
        (c.buffers[self.y], c.buffers[self.stats]) =
            reference::forward_train(&self.s, &c.buffers[self.x], gamma, beta, &mut rm, &mut rv);
        (c.params[self.mean], c.params[self.var]) = (rm, rv);
    }
}

op_kernel!(
    /// Normalises with the running statistics.
    BatchNormInfer(BatchNorm): forward_infer(buf x, param gamma, param beta, param mean, param var) -> y,
        reference::forward_infer
);

/// dx, and the gradients of γ and β.
#[derive(Clone, Debug)]
pub struct BatchNormBackward {
    pub s: BatchNorm,
    pub x: BufId,
    pub gamma: ParamId,
    pub stats: BufId,
    pub dy: BufId,
    pub dx: BufId,
    pub dgamma: ParamId,
    pub dbeta: ParamId,
}

impl Kernel for BatchNormBackward {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x, self.stats, self.dy], vec![self.dx])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        let (x, gamma, stats) = (g.buf(self.x), g.param(self.gamma), g.buf(self.stats));
        let (dy, dx) = (g.buf(self.dy), g.buf(self.dx));
        self.s.backward(g.gpu, x, gamma, stats, dy, dx, g.grad(self.dgamma), g.grad(self.dbeta))
    }
    fn reference(&self, c: &mut CpuBuffers) {
        let (x, gamma, dy) = (&c.buffers[self.x], &c.params[self.gamma], &c.buffers[self.dy]);
        (c.buffers[self.dx], c.grads[self.dgamma], c.grads[self.dbeta]) = reference::backward(&self.s, x, gamma, dy);
    }
}

/// Plain f64 references, with ε and momentum as the GPU sees them (f32).
pub mod reference {
    use super::BatchNorm;

    /// Flat index of value `j` of channel `c` in image `n`.
    fn at(s: &BatchNorm, n: usize, c: usize, j: usize) -> usize {
        (n * s.c + c) * s.hw + j
    }

    /// Calls `f(index)` for every value of channel `c`.
    fn for_channel(s: &BatchNorm, c: usize, mut f: impl FnMut(usize)) {
        for n in 0..s.n {
            for j in 0..s.hw {
                f(at(s, n, c, j));
            }
        }
    }

    /// Per-channel (mean, biased variance), flattened [c, 2].
    pub fn batch_stats(s: &BatchNorm, x: &[f64]) -> Vec<f64> {
        let m = (s.n * s.hw) as f64;
        let mut stats = vec![0.0; 2 * s.c];
        for c in 0..s.c {
            let mut sum = 0.0;
            for_channel(s, c, |i| sum += x[i]);
            let mean = sum / m;
            let mut squares = 0.0;
            for_channel(s, c, |i| squares += (x[i] - mean).powi(2));
            stats[2 * c] = mean;
            stats[2 * c + 1] = squares / m;
        }
        stats
    }

    fn normalize(s: &BatchNorm, x: &[f64], gamma: &[f64], beta: &[f64], mean: &[f64], var: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; s.len()];
        for c in 0..s.c {
            let rstd = 1.0 / (var[c] + s.eps as f64).sqrt();
            for_channel(s, c, |i| y[i] = gamma[c] * (x[i] - mean[c]) * rstd + beta[c]);
        }
        y
    }

    /// (y, stats [c, 2]); running statistics updated in place, the variance with the unbiased
    /// batch variance (the biased one when N·H·W = 1).
    pub fn forward_train(
        s: &BatchNorm,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        running_mean: &mut [f64],
        running_var: &mut [f64],
    ) -> (Vec<f64>, Vec<f64>) {
        let stats = batch_stats(s, x);
        let mean: Vec<f64> = stats.iter().step_by(2).copied().collect();
        let var: Vec<f64> = stats.iter().skip(1).step_by(2).copied().collect();
        let m = (s.n * s.hw) as f64;
        let bessel = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
        let momentum = s.momentum as f64;
        for c in 0..s.c {
            running_mean[c] = momentum * running_mean[c] + (1.0 - momentum) * mean[c];
            running_var[c] = momentum * running_var[c] + (1.0 - momentum) * var[c] * bessel;
        }
        (normalize(s, x, gamma, beta, &mean, &var), stats)
    }

    pub fn forward_infer(
        s: &BatchNorm,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        running_mean: &[f64],
        running_var: &[f64],
    ) -> Vec<f64> {
        normalize(s, x, gamma, beta, running_mean, running_var)
    }

    /// Training-mode (dx, dγ, dβ): the gradient flows through the batch mean and variance too.
    pub fn backward(s: &BatchNorm, x: &[f64], gamma: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let stats = batch_stats(s, x);
        let m = (s.n * s.hw) as f64;
        let (mut dx, mut dgamma, mut dbeta) = (vec![0.0; s.len()], vec![0.0; s.c], vec![0.0; s.c]);
        for c in 0..s.c {
            let (mean, rstd) = (stats[2 * c], 1.0 / (stats[2 * c + 1] + s.eps as f64).sqrt());
            let xhat = |i: usize| (x[i] - mean) * rstd;
            for_channel(s, c, |i| {
                dbeta[c] += dy[i];
                dgamma[c] += dy[i] * xhat(i);
            });
            for_channel(s, c, |i| dx[i] = gamma[c] * rstd * (dy[i] - (dbeta[c] + xhat(i) * dgamma[c]) / m));
        }
        (dx, dgamma, dbeta)
    }
}

/// Training forward (y, stats, both running statistics), inference forward and the training
/// backward of `s` against the reference. Inputs are u + a per-channel offset of up to ±4, with u
/// uniform in [-1, 1), where a one-pass `E[x²] − E[x]²` would lose digits. dy = r + 0.5 + 0.5·u
/// (r random) has a mean and a component along x̂, so dβ = Σdy and dγ = Σdy·x̂ are not sums of
/// random signs that happen to nearly cancel (their relative error is unbounded, and channels = 1
/// compares a single value). Running variances start positive.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, s: &BatchNorm) -> Result<Vec<CaseReport>> {
    let shape = check::shape4(s.n, s.c, s.hw, 1);
    let offsets: Vec<f32> = check::random(rng, s.c).iter().map(|v| 4.0 * v).collect();
    let u = check::random(rng, s.len());
    let x: Vec<f32> = u.iter().enumerate().map(|(i, v)| v + offsets[i / s.hw % s.c]).collect();
    let dy: Vec<f32> = check::random(rng, s.len()).iter().zip(&u).map(|(r, u)| r + 0.5 + 0.5 * u).collect();
    let (gamma, beta) = (check::random(rng, s.c), check::random(rng, s.c));
    let running_mean = check::random(rng, s.c);
    let running_var: Vec<f32> = check::random(rng, s.c).iter().map(|v| 1.0 + v.abs()).collect();
    let [x64, gamma64, beta64, dy64] = [&x, &gamma, &beta, &dy].map(|v| check::to_f64(v));
    let (mut rm64, mut rv64) = (check::to_f64(&running_mean), check::to_f64(&running_var));

    let (gx, ggamma, gbeta, gdy) =
        (gpu.upload("x", &x)?, gpu.upload("gamma", &gamma)?, gpu.upload("beta", &beta)?, gpu.upload("dy", &dy)?);
    let (grm, grv) = (gpu.upload("running_mean", &running_mean)?, gpu.upload("running_var", &running_var)?);
    let read = |v: &BufferView| gpu.read::<f32>(v);
    let mut out = Vec::new();

    // Inference first, from the running statistics before training updates them. γ·x̂ + β may
    // nearly cancel, and with one value (1×1×1×1) nothing averages that out: bound the error by
    // the terms' magnitudes |γ·x̂| + |β|, as a sum's.
    let want = reference::forward_infer(s, &x64, &gamma64, &beta64, &rm64, &rv64);
    let magnitudes: Vec<f64> = (0..s.len())
        .map(|i| {
            let c = i / s.hw % s.c;
            (gamma64[c] * (x64[i] - rm64[c])).abs() / (rv64[c] + s.eps as f64).sqrt() + beta64[c].abs()
        })
        .collect();
    let y = check::poisoned(gpu, "y", s.len())?;
    gpu.run(&[&s.forward_infer(gpu, &gx, &ggamma, &gbeta, &grm, &grv, &y)?])?;
    let tolerance = check::summation_tolerance(&want, &magnitudes);
    out.push(check::compare_with("batchnorm forward_infer", &shape, &read(&y)?, &want, tolerance));

    let old_rm64 = rm64.clone();
    let (want_y, want_stats) = reference::forward_train(s, &x64, &gamma64, &beta64, &mut rm64, &mut rv64);
    let (y, stats) = (check::poisoned(gpu, "y", s.len())?, check::poisoned(gpu, "stats", 2 * s.c)?);
    let train = s.forward_train(gpu, &gx, &ggamma, &gbeta, &y, &stats, &grm, &grv)?;
    gpu.run(&train.iter().collect::<Vec<_>>())?;
    out.push(check::compare("batchnorm forward_train y", &shape, &read(&y)?, &want_y));
    out.push(check::compare("batchnorm forward_train stats", &shape, &read(&stats)?, &want_stats));
    // momentum·old + (1 − momentum)·mean cancels where the batch mean nears −old: with one
    // channel that is the whole tensor, so bound it by the terms' magnitudes, as a sum's.
    let magnitudes: Vec<f64> = (0..s.c)
        .map(|c| (s.momentum as f64 * old_rm64[c]).abs() + ((1.0 - s.momentum as f64) * want_stats[2 * c]).abs())
        .collect();
    let tolerance = check::summation_tolerance(&rm64, &magnitudes);
    out.push(check::compare_with("batchnorm running_mean", &shape, &read(&grm)?, &rm64, tolerance));
    out.push(check::compare("batchnorm running_var", &shape, &read(&grv)?, &rv64));

    let (want_dx, want_dgamma, want_dbeta) = reference::backward(s, &x64, &gamma64, &dy64);
    let dx = check::poisoned(gpu, "dx", s.len())?;
    let (dgamma, dbeta) = (check::poisoned(gpu, "dgamma", s.c)?, check::poisoned(gpu, "dbeta", s.c)?);
    let backward = s.backward(gpu, &gx, &ggamma, &stats, &gdy, &dx, &dgamma, &dbeta)?;
    gpu.run(&backward.iter().collect::<Vec<_>>())?;
    out.push(check::compare("batchnorm backward dx", &shape, &read(&dx)?, &want_dx));
    out.push(check::compare("batchnorm backward dgamma", &shape, &read(&dgamma)?, &want_dgamma));
    out.push(check::compare("batchnorm backward dbeta", &shape, &read(&dbeta)?, &want_dbeta));
    Ok(out)
}

/// The awkward shapes: batch 1 and 4, channels 1, 3, 5, 33, planes of 17·23 (more values than a
/// workgroup has invocations, not a multiple of it) and of 1, including N·H·W = 1, where the
/// variance is 0 and only ε keeps 1/√(σ² + ε) finite. Momentum 0.5 rather than Keras' 0.99, so
/// a wrong running update is not hidden in the last digits.
pub const CHECK_CASES: &[BatchNorm] = &[
    BatchNorm { n: 1, c: 3, hw: 17 * 23, eps: 1e-3, momentum: 0.5 },
    BatchNorm { n: 4, c: 5, hw: 17 * 23, eps: 1e-3, momentum: 0.5 },
    BatchNorm { n: 4, c: 1, hw: 17 * 23, eps: 1e-3, momentum: 0.5 },
    BatchNorm { n: 1, c: 33, hw: 17 * 23, eps: 1e-3, momentum: 0.5 },
    BatchNorm { n: 4, c: 33, hw: 1, eps: 1e-3, momentum: 0.5 },
    BatchNorm { n: 1, c: 5, hw: 1, eps: 1e-3, momentum: 0.5 },
    BatchNorm { n: 1, c: 1, hw: 1, eps: 1e-3, momentum: 0.5 },
];
