//! Attention gating (`shaders/gate.wgsl`), as in Oktay et al. 2018's attention U-Net: a skip
//! tensor x [n, c, h, w] scaled by a per-pixel gate a [n, 1, h, w] (a sigmoid output), the same
//! factor for every channel: y[n, c, p] = x[n, c, p]·a[n, p].
//!
//! Backward: dx = dy·a (the forward kernel with dy for x) and da[n, p] = Σ_c dy·x.

use anyhow::{bail, Result};

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::OnnxNode;
use crate::graph::rule::op_kernel;
use crate::graph::{Backward, Forward, Graph, Layer, TensorId};
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    pub n: usize,
    /// Channels of x (the gate has one).
    pub c: usize,
    /// Pixels per channel plane.
    pub hw: usize,
}

uniform! {
    struct Params {
        n: u32,
        c: u32,
        hw: u32,
    }
}

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

    fn params(&self) -> Result<Params> {
        if self.is_empty() {
            bail!("gate with an empty dimension: {self:?}");
        }
        Ok(Params { n: self.n as u32, c: self.c as u32, hw: self.hw as u32 })
    }

    /// `y = x·a`, `a` broadcast over channels.
    pub fn forward(&self, gpu: &Gpu, x: &BufferView, a: &BufferView, y: &BufferView) -> Result<Dispatch> {
        let bindings = [("x", x, self.len()), ("a", a, self.gate_len()), ("out", y, self.len())];
        let spec = KernelSpec::per_element("gate", "apply");
        launch(gpu, &spec, &self.params()?, &bindings, grid_1d(self.len(), WG))
    }

    /// `dx = dy·a`: the forward kernel with dy for x.
    pub fn backward_input(&self, gpu: &Gpu, a: &BufferView, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
        let bindings = [("x", dy, self.len()), ("a", a, self.gate_len()), ("out", dx, self.len())];
        let spec = KernelSpec::per_element("gate", "apply");
        launch(gpu, &spec, &self.params()?, &bindings, grid_1d(self.len(), WG))
    }

    /// `da[n, p] = Σ_c dy[n, c, p]·x[n, c, p]`.
    pub fn backward_gate(&self, gpu: &Gpu, x: &BufferView, dy: &BufferView, da: &BufferView) -> Result<Dispatch> {
        let bindings = [("x", x, self.len()), ("dy", dy, self.len()), ("out", da, self.gate_len())];
        let spec = KernelSpec::per_element("gate", "gate_grad");
        launch(gpu, &spec, &self.params()?, &bindings, grid_1d(self.gate_len(), WG))
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

op_kernel!(
    /// `y = x·a`.
    GateForward(Gate): forward(buf x, buf a) -> y, reference::forward
);
op_kernel!(
    /// `dx = dy·a`.
    GateBackwardInput(Gate): backward_input(buf a, buf dy) -> dx, reference::backward_input
);
op_kernel!(
    /// `da = Σ_c dy·x`.
    GateBackwardGate(Gate): backward_gate(buf x, buf dy) -> da, reference::backward_gate
);

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

    /// dx = dy·a is the forward with dy for x.
    pub fn backward_input(s: &Gate, a: &[f64], dy: &[f64]) -> Vec<f64> {
        forward(s, dy, a)
    }

    /// da[n, p] = Σ_c dy[n, c, p]·x[n, c, p].
    pub fn backward_gate(s: &Gate, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let mut da = vec![0.0; s.gate_len()];
        for i in 0..s.len() {
            da[gate_index(s, i)] += dy[i] * x[i];
        }
        da
    }

    /// (dx, da).
    pub fn backward(s: &Gate, x: &[f64], a: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        (backward_input(s, a, dy), backward_gate(s, x, dy))
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
pub const CHECK_CASES: &[Gate] = &[
    Gate { n: 1, c: 1, hw: 1 },
    Gate { n: 1, c: 3, hw: 17 * 23 },
    Gate { n: 4, c: 5, hw: 17 * 23 },
    Gate { n: 4, c: 1, hw: 17 * 23 },
    Gate { n: 2, c: 33, hw: 9 * 7 },
    Gate { n: 4, c: 33, hw: 1 },
];
