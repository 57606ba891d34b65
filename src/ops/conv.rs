//! What every convolution shares, whichever its geometry ([`Conv2d`](super::conv2d::Conv2d),
//! [`ConvTranspose2d`](super::conv_transpose2d::ConvTranspose2d)): the [`Convolution`] driver
//! API, one graph layer with its forward and backward rule, the four steps it compiles to, and
//! the f64 references written once over a convolution's taps.

use anyhow::Result;

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::OnnxNode;
use crate::graph::{Backward, BufId, CpuBuffers, Forward, GpuBuffers, Kernel, Layer, ParamId, TensorId};
use crate::kernel::{BufferView, Dispatch};
use crate::ops::elementwise::ReluBackward;

/// What the steps of a convolution need of it: [`Conv2d`](crate::ops::conv2d::Conv2d) and
/// [`ConvTranspose2d`](crate::ops::conv_transpose2d::ConvTranspose2d) share the driver API, the
/// references and the backward rule, so one layer and one set of kernels serve both.
pub trait Convolution: Taps + Copy + std::fmt::Debug + Send + Sync + 'static {
    /// As `wgunet info` lists the layer.
    const NAME: &'static str;
    fn input_len(&self) -> usize;
    fn weight_len(&self) -> usize;
    fn flops(&self) -> u64;
    /// Whether the forward applies ReLU, so the backward must first mask dy with it.
    fn fused_relu(&self) -> bool;
    fn forward(
        &self,
        gpu: &Gpu,
        x: &BufferView,
        w: &BufferView,
        b: &BufferView,
        y: &BufferView,
    ) -> Result<Vec<Dispatch>>;
    fn backward_input(&self, gpu: &Gpu, dy: &BufferView, w: &BufferView, dx: &BufferView) -> Result<Vec<Dispatch>>;
    /// One dispatch, or more where it sums in parts (conv2d's split K).
    fn backward_weight(&self, gpu: &Gpu, x: &BufferView, dy: &BufferView, dw: &BufferView) -> Result<Vec<Dispatch>>;
    fn backward_bias(&self, gpu: &Gpu, dy: &BufferView, db: &BufferView) -> Result<Dispatch>;
    /// The f64 forward with its activation; the gradients' references are [`tap_reference`]'s,
    /// the same for every convolution.
    fn reference_forward(&self, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64>;
    /// Its ONNX node(s) over `inputs` (x, weight, bias); returns the output value.
    fn onnx(&self, onnx: &mut OnnxNode, inputs: [String; 3]) -> String;
}

/// A convolution node: its input, weight and bias parameters.
#[derive(Clone, Debug)]
pub struct ConvLayer<S> {
    pub x: TensorId,
    pub w: ParamId,
    pub b: ParamId,
    pub s: S,
}

impl<S: Convolution> Layer for ConvLayer<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }
    fn onnx(&self, onnx: &mut OnnxNode) -> String {
        let inputs = [onnx.value(self.x), onnx.param(self.w), onnx.param(self.b)];
        self.s.onnx(onnx, inputs)
    }
    fn forward(&self, cx: &mut Forward) {
        cx.push(ConvForward { s: self.s, x: cx.input(self.x), w: self.w, b: self.b, y: cx.output() });
    }
    fn backward(&self, cx: &mut Backward) {
        let s = self.s;
        // The kernels take the gradient of the pre-activation output.
        let dy = if s.fused_relu() {
            let (y, dy, len) = (cx.output(), cx.dy(), cx.output_len());
            let dz = cx.scratch("pre-relu", len);
            cx.push(ReluBackward { y, dy, dx: dz });
            dz
        } else {
            cx.dy()
        };
        cx.push(ConvBackwardWeight { s, x: cx.input(self.x), dy, dw: self.w });
        cx.push(ConvBackwardBias { s, dy, db: self.b });
        let w = self.w;
        cx.propagate(self.x, s.input_len(), |dx| ConvBackwardInput { s, dy, w, dx });
    }
    fn flops(&self) -> u64 {
        self.s.flops()
    }
}

/// `y = act(conv(x, w) + b)`.
#[derive(Clone, Debug)]
pub struct ConvForward<S> {
    pub s: S,
    pub x: BufId,
    pub w: ParamId,
    pub b: ParamId,
    pub y: BufId,
}

impl<S: Convolution> Kernel for ConvForward<S> {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x], vec![self.y])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        self.s.forward(g.gpu, g.buf(self.x), g.param(self.w), g.param(self.b), g.buf(self.y))
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.y] = self.s.reference_forward(&c.buffers[self.x], &c.params[self.w], &c.params[self.b]);
    }
}

/// dx from the pre-activation gradient `dy`.
#[derive(Clone, Debug)]
pub struct ConvBackwardInput<S> {
    pub s: S,
    pub dy: BufId,
    pub w: ParamId,
    pub dx: BufId,
}

impl<S: Convolution> Kernel for ConvBackwardInput<S> {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.dy], vec![self.dx])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        self.s.backward_input(g.gpu, g.buf(self.dy), g.param(self.w), g.buf(self.dx))
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.dx] = tap_reference::backward_input(&self.s, &c.params[self.w], &c.buffers[self.dy]);
    }
}

/// The weight gradient from `x` and the pre-activation gradient `dy`.
#[derive(Clone, Debug)]
pub struct ConvBackwardWeight<S> {
    pub s: S,
    pub x: BufId,
    pub dy: BufId,
    pub dw: ParamId,
}

impl<S: Convolution> Kernel for ConvBackwardWeight<S> {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x, self.dy], vec![])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        self.s.backward_weight(g.gpu, g.buf(self.x), g.buf(self.dy), g.grad(self.dw))
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.grads[self.dw] = tap_reference::backward_weight(&self.s, &c.buffers[self.x], &c.buffers[self.dy]);
    }
}

/// The bias gradient from the pre-activation gradient `dy`.
#[derive(Clone, Debug)]
pub struct ConvBackwardBias<S> {
    pub s: S,
    pub dy: BufId,
    pub db: ParamId,
}

impl<S: Convolution> Kernel for ConvBackwardBias<S> {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.dy], vec![])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.backward_bias(g.gpu, g.buf(self.dy), g.grad(self.db))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.grads[self.db] = tap_reference::backward_bias(&self.s, &c.buffers[self.dy]);
    }
}

/// What the f64 references of a convolution need: every multiply-add it makes, and its sizes.
/// Conv2d and ConvTranspose2d differ only here; [`tap_reference`] does the rest once.
pub trait Taps {
    /// Calls `f(y index, x index, w index)` for every multiply-add.
    fn for_each_tap(&self, f: impl FnMut(usize, usize, usize));
    fn sizes(&self) -> TapSizes;
}

/// Lengths of a convolution's tensors, and the layout of its output.
pub struct TapSizes {
    pub input: usize,
    pub weight: usize,
    pub output: usize,
    pub out_channels: usize,
    /// Pixels in one output channel's plane.
    pub out_plane: usize,
}

/// Forward (with its activation) and all three gradients of `s` against the f64 references,
/// the same way for every convolution; `op` and `shape` name the cases.
pub fn check<S: Convolution>(gpu: &Gpu, rng: &mut CheckRng, s: &S, op: &str, shape: &str) -> Result<Vec<CaseReport>> {
    let sizes = s.sizes();
    let (x, w, b, dy) = (
        check::random(rng, sizes.input),
        check::random(rng, sizes.weight),
        check::random(rng, sizes.out_channels),
        check::random(rng, sizes.output),
    );
    let (x64, w64, b64, dy64) = (check::to_f64(&x), check::to_f64(&w), check::to_f64(&b), check::to_f64(&dy));
    let (gx, gw, gb, gdy) = (gpu.upload("x", &x)?, gpu.upload("w", &w)?, gpu.upload("b", &b)?, gpu.upload("dy", &dy)?);
    let (dx, dw, db) = tap_reference::backward(s, &x64, &w64, &dy64);
    let abs_dy: Vec<f64> = dy64.iter().map(|v| v.abs()).collect();
    let bias_tolerance = check::summation_tolerance(&db, &tap_reference::backward_bias(s, &abs_dy));
    let y = s.reference_forward(&x64, &w64, &b64);
    Ok(vec![
        check::run_case(gpu, &format!("{op} forward"), shape, &y, |y| s.forward(gpu, &gx, &gw, &gb, y))?,
        check::run_case(gpu, &format!("{op} backward_input"), shape, &dx, |dx| s.backward_input(gpu, &gdy, &gw, dx))?,
        check::run_case(gpu, &format!("{op} backward_weight"), shape, &dw, |dw| s.backward_weight(gpu, &gx, &gdy, dw))?,
        check::run_case_with(gpu, &format!("{op} backward_bias"), shape, &db, bias_tolerance, |db| {
            s.backward_bias(gpu, &gdy, db)
        })?,
    ])
}

/// The f64 references of any [`Taps`] convolution.
pub mod tap_reference {
    use super::Taps;

    /// `y = b + Σ x·w`, without an activation.
    pub fn forward<S: Taps>(s: &S, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let n = s.sizes();
        let mut y: Vec<f64> = (0..n.output).map(|i| b[i / n.out_plane % n.out_channels]).collect();
        s.for_each_tap(|yi, xi, wi| y[yi] += x[xi] * w[wi]);
        y
    }

    /// dx from the gradient `dz` of the output (before any activation).
    pub fn backward_input<S: Taps>(s: &S, w: &[f64], dz: &[f64]) -> Vec<f64> {
        let mut dx = vec![0.0; s.sizes().input];
        s.for_each_tap(|yi, xi, wi| dx[xi] += dz[yi] * w[wi]);
        dx
    }

    pub fn backward_weight<S: Taps>(s: &S, x: &[f64], dz: &[f64]) -> Vec<f64> {
        let mut dw = vec![0.0; s.sizes().weight];
        s.for_each_tap(|yi, xi, wi| dw[wi] += dz[yi] * x[xi]);
        dw
    }

    pub fn backward_bias<S: Taps>(s: &S, dz: &[f64]) -> Vec<f64> {
        let n = s.sizes();
        let mut db = vec![0.0; n.out_channels];
        for (i, g) in dz.iter().enumerate() {
            db[i / n.out_plane % n.out_channels] += g;
        }
        db
    }

    /// `(dx, dw, db)`.
    pub fn backward<S: Taps>(s: &S, x: &[f64], w: &[f64], dz: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        (backward_input(s, w, dz), backward_weight(s, x, dz), backward_bias(s, dz))
    }
}
