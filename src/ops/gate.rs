//! Attention gating (`shaders/gate.wgsl`), as in Oktay et al. 2018's attention U-Net: a skip
//! tensor x [n, c, h, w] scaled by a per-pixel gate a [n, 1, h, w] (a sigmoid output), the same
//! factor for every channel: y[n, c, p] = x[n, c, p]·a[n, p].
//!
//! Backward: dx = dy·a (the forward kernel with dy for x) and da[n, p] = Σ_c dy·x.

use anyhow::{bail, Result};

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::OnnxNode;
use crate::graph::{Backward, BufId, CpuBuffers, Forward, GpuBuffers, Graph, Kernel, Layer, TensorId};
use crate::kernel::{grid_1d, BufferView, Dispatch, KernelSpec};
use crate::ops::conv2d::require_len;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    pub n: usize,
    /// Channels of x (the gate has one).
    pub c: usize,
    /// Pixels per channel plane.
    pub hw: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    hw: u32,
    _pad: u32,
}

const WG: u32 = 256;

impl Gate {
    /// Elements of x and y.
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of the gate.
    pub fn gate_len(&self) -> usize {
        self.n * self.hw
    }

    fn launch(
        &self,
        gpu: &Gpu,
        entry: &'static str,
        tensors: &[(u32, &BufferView)],
        threads: usize,
    ) -> Result<Dispatch> {
        if self.is_empty() {
            bail!("gate with an empty dimension: {self:?}");
        }
        let params = Params { n: self.n as u32, c: self.c as u32, hw: self.hw as u32, _pad: 0 };
        let spec = KernelSpec::new("gate", entry, [WG, 1, 1]);
        Dispatch::new(gpu, &spec, &params, tensors, grid_1d(threads, WG))
    }

    /// `y = x·a`, `a` broadcast over channels.
    pub fn forward(&self, gpu: &Gpu, x: &BufferView, a: &BufferView, y: &BufferView) -> Result<Dispatch> {
        for (t, len) in [(x, self.len()), (a, self.gate_len()), (y, self.len())] {
            require_len(t, len, "gate forward")?;
        }
        self.launch(gpu, "apply", &[(1, x), (2, a), (4, y)], self.len())
    }

    /// `dx = dy·a`.
    pub fn backward_input(&self, gpu: &Gpu, a: &BufferView, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
        for (t, len) in [(a, self.gate_len()), (dy, self.len()), (dx, self.len())] {
            require_len(t, len, "gate backward_input")?;
        }
        self.launch(gpu, "apply", &[(1, dy), (2, a), (4, dx)], self.len())
    }

    /// `da[n, p] = Σ_c dy[n, c, p]·x[n, c, p]`.
    pub fn backward_gate(&self, gpu: &Gpu, x: &BufferView, dy: &BufferView, da: &BufferView) -> Result<Dispatch> {
        for (t, len) in [(x, self.len()), (dy, self.len()), (da, self.gate_len())] {
            require_len(t, len, "gate backward_gate")?;
        }
        self.launch(gpu, "gate_grad", &[(1, x), (3, dy), (4, da)], self.gate_len())
    }
}

/// `x` [n, c, h, w] times the gate `a` [n, 1, h, w], broadcast over channels.
#[derive(Clone, Debug)]
pub struct GateLayer {
    pub x: TensorId,
    pub a: TensorId,
    pub s: Gate,
}

impl Layer for GateLayer {
    fn name(&self) -> &'static str {
        "Gate"
    }
    /// [n, c, h, w] × [n, 1, h, w]: ONNX broadcasting spreads the gate over the channels.
    fn onnx(&self, onnx: &mut OnnxNode) -> String {
        onnx.single("Mul", &[onnx.value(self.x), onnx.value(self.a)], vec![])
    }
    fn forward(&self, cx: &mut Forward) {
        cx.push(GateForward { s: self.s, x: cx.input(self.x), a: cx.input(self.a), y: cx.output() });
    }
    fn backward(&self, cx: &mut Backward) {
        let (s, x, a, dy) = (self.s, cx.input(self.x), cx.input(self.a), cx.dy());
        cx.propagate(self.x, s.len(), |dx| GateBackwardInput { s, a, dy, dx });
        cx.propagate(self.a, s.gate_len(), |da| GateBackwardGate { s, x, dy, da });
    }
}

impl Graph {
    /// `x` scaled per pixel by the one-channel `a` of the same batch and spatial size.
    pub fn gate(&mut self, name: &str, x: TensorId, a: TensorId) -> TensorId {
        let shape = self.shape(x);
        let [n, c, h, w] = shape;
        assert_eq!(self.shape(a), [n, 1, h, w], "gate {name}: the gate must be one channel of x's size");
        self.push(name, GateLayer { x, a, s: Gate { n, c, hw: h * w } }, shape)
    }
}

#[derive(Clone, Debug)]
pub struct GateForward {
    pub s: Gate,
    pub x: BufId,
    pub a: BufId,
    pub y: BufId,
}

impl Kernel for GateForward {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x, self.a], vec![self.y])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.forward(g.gpu, g.buf(self.x), g.buf(self.a), g.buf(self.y))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.y] = reference::forward(&self.s, &c.buffers[self.x], &c.buffers[self.a]);
    }
}

/// dx = dy·a.
#[derive(Clone, Debug)]
pub struct GateBackwardInput {
    pub s: Gate,
    pub a: BufId,
    pub dy: BufId,
    pub dx: BufId,
}

impl Kernel for GateBackwardInput {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.a, self.dy], vec![self.dx])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.backward_input(g.gpu, g.buf(self.a), g.buf(self.dy), g.buf(self.dx))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        // dx = dy·a is the forward with dy for x.
        c.buffers[self.dx] = reference::forward(&self.s, &c.buffers[self.dy], &c.buffers[self.a]);
    }
}

/// da = Σ_c dy·x.
#[derive(Clone, Debug)]
pub struct GateBackwardGate {
    pub s: Gate,
    pub x: BufId,
    pub dy: BufId,
    pub da: BufId,
}

impl Kernel for GateBackwardGate {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x, self.dy], vec![self.da])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.backward_gate(g.gpu, g.buf(self.x), g.buf(self.dy), g.buf(self.da))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.da] = reference::gate_grad(&self.s, &c.buffers[self.x], &c.buffers[self.dy]);
    }
}

/// Plain f64 references.
pub mod reference {
    use super::Gate;

    /// Index of the gate value that scales element `i` of x.
    fn gate_index(s: &Gate, i: usize) -> usize {
        i / (s.c * s.hw) * s.hw + i % s.hw
    }

    pub fn forward(s: &Gate, x: &[f64], a: &[f64]) -> Vec<f64> {
        (0..s.len()).map(|i| x[i] * a[gate_index(s, i)]).collect()
    }

    /// da[n, p] = Σ_c dy[n, c, p]·x[n, c, p].
    pub fn gate_grad(s: &Gate, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let mut da = vec![0.0; s.gate_len()];
        for i in 0..s.len() {
            da[gate_index(s, i)] += dy[i] * x[i];
        }
        da
    }

    /// (dx, da): dx = dy·a is the forward with dy for x.
    pub fn backward(s: &Gate, x: &[f64], a: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        (forward(s, dy, a), gate_grad(s, x, dy))
    }
}

/// Forward and both gradients of `s` against the reference on random inputs.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, s: &Gate) -> Result<Vec<CaseReport>> {
    let shape = check::shape4(s.n, s.c, s.hw, 1);
    let (x, a, dy) = (check::random(rng, s.len()), check::random(rng, s.gate_len()), check::random(rng, s.len()));
    let [x64, a64, dy64] = [&x, &a, &dy].map(|v| check::to_f64(v));
    let (gx, ga, gdy) = (gpu.upload("x", &x)?, gpu.upload("a", &a)?, gpu.upload("dy", &dy)?);
    let y = check::poisoned(gpu, "y", s.len())?;
    let dx = check::poisoned(gpu, "dx", s.len())?;
    let da = check::poisoned(gpu, "da", s.gate_len())?;
    gpu.run(&[
        &s.forward(gpu, &gx, &ga, &y)?,
        &s.backward_input(gpu, &ga, &gdy, &dx)?,
        &s.backward_gate(gpu, &gx, &gdy, &da)?,
    ])?;
    let (want_dx, want_da) = reference::backward(s, &x64, &a64, &dy64);
    Ok(vec![
        check::compare("gate forward", &shape, &gpu.read::<f32>(&y)?, &reference::forward(s, &x64, &a64)),
        check::compare("gate backward_input", &shape, &gpu.read::<f32>(&dx)?, &want_dx),
        check::compare("gate backward_gate", &shape, &gpu.read::<f32>(&da)?, &want_da),
    ])
}

/// Batch 1 and 4, channels 1, 3, 5, 33, planes of 17·23 (odd, over a workgroup) and of 1.
pub fn check_all(gpu: &Gpu, rng: &mut CheckRng) -> Result<Vec<CaseReport>> {
    let mut out = Vec::new();
    for (n, c, hw) in [(1, 1, 1), (1, 3, 17 * 23), (4, 5, 17 * 23), (4, 1, 17 * 23), (2, 33, 9 * 7), (4, 33, 1)] {
        out.extend(check(gpu, rng, &Gate { n, c, hw })?);
    }
    Ok(out)
}
