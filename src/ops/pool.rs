//! Pooling and up-sampling kernels (`shaders/pool.wgsl`): 2×2 max pooling with stride 2 (the
//! U-Net's down-sampling) and nearest-neighbour 2× up-sampling (Keras `UpSampling2D`), each with
//! its backward.

use anyhow::{ensure, Result};

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::{ints, string, OnnxNode};
use crate::graph::{Backward, BufId, CpuBuffers, Forward, GpuBuffers, Graph, Kernel, Layer, TensorId};
use crate::kernel::{grid_1d, BufferView, Dispatch, KernelSpec};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
}

const WG: u32 = 256;

/// One launch over `threads` elements; `n, c, h, w` is the input shape of the op.
fn launch(
    gpu: &Gpu,
    entry: &'static str,
    [n, c, h, w]: [usize; 4],
    threads: usize,
    tensors: &[(u32, &BufferView)],
) -> Result<Dispatch> {
    let spec = KernelSpec::new("pool", entry, [WG, 1, 1]);
    let params = Params { n: n as u32, c: c as u32, h: h as u32, w: w as u32 };
    Dispatch::new(gpu, &spec, &params, tensors, grid_1d(threads, WG))
}

fn ensure_len(t: &BufferView, elems: usize, op: &str) -> Result<()> {
    ensure!(t.elems() >= elems, "{op}: tensor '{}' holds {} elements, needs {elems}", t.name, t.elems());
    Ok(())
}

/// 2×2 max pooling, stride 2, over an `n × c × h × w` input. The output is `h/2 × w/2` (floor,
/// like Keras 'valid'): a trailing odd row or column is dropped and gets zero gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl MaxPool2d {
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c * (self.h / 2) * (self.w / 2)
    }
    fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    pub fn forward(&self, gpu: &Gpu, x: &BufferView, y: &BufferView) -> Result<Dispatch> {
        ensure_len(x, self.input_len(), "max_pool")?;
        ensure_len(y, self.output_len(), "max_pool")?;
        launch(gpu, "max_pool", self.dims(), self.output_len(), &[(1, x), (3, y)])
    }

    /// dx: gradient to the arg-max of each window; ties go to the FIRST maximum in row-major
    /// window order (top-left, top-right, bottom-left, bottom-right). Recomputes the arg-max from
    /// x (no index buffer). Writes every dx element.
    pub fn backward(&self, gpu: &Gpu, x: &BufferView, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
        ensure_len(x, self.input_len(), "max_pool_backward")?;
        ensure_len(dy, self.output_len(), "max_pool_backward")?;
        ensure_len(dx, self.input_len(), "max_pool_backward")?;
        launch(gpu, "max_pool_backward", self.dims(), self.input_len(), &[(1, x), (2, dy), (3, dx)])
    }
}

/// Nearest-neighbour 2× up-sampling of an `n × c × h × w` input to `n × c × 2h × 2w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upsample2x {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Upsample2x {
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        4 * self.input_len()
    }
    fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    pub fn forward(&self, gpu: &Gpu, x: &BufferView, y: &BufferView) -> Result<Dispatch> {
        ensure_len(x, self.input_len(), "upsample")?;
        ensure_len(y, self.output_len(), "upsample")?;
        launch(gpu, "upsample", self.dims(), self.output_len(), &[(1, x), (3, y)])
    }

    /// dx: the sum of the gradients of the 4 outputs each input element was copied to.
    pub fn backward(&self, gpu: &Gpu, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
        ensure_len(dy, self.output_len(), "upsample_backward")?;
        ensure_len(dx, self.input_len(), "upsample_backward")?;
        launch(gpu, "upsample_backward", self.dims(), self.input_len(), &[(2, dy), (3, dx)])
    }
}

#[derive(Clone, Debug)]
pub struct MaxPoolLayer {
    pub x: TensorId,
    pub s: MaxPool2d,
}

impl Layer for MaxPoolLayer {
    fn name(&self) -> &'static str {
        "MaxPool"
    }
    fn onnx(&self, onnx: &mut OnnxNode) -> String {
        let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
        onnx.single("MaxPool", &[onnx.value(self.x)], attrs)
    }
    fn forward(&self, cx: &mut Forward) {
        cx.push(MaxPoolForward { s: self.s, x: cx.input(self.x), y: cx.output() });
    }
    fn backward(&self, cx: &mut Backward) {
        let (s, x, dy) = (self.s, cx.input(self.x), cx.dy());
        cx.propagate(self.x, s.input_len(), |dx| MaxPoolBackward { s, x, dy, dx });
    }
}

#[derive(Clone, Debug)]
pub struct UpsampleLayer {
    pub x: TensorId,
    pub s: Upsample2x,
}

impl Layer for UpsampleLayer {
    fn name(&self) -> &'static str {
        "Upsample"
    }
    /// Output pixel i copies input pixel floor(i / 2), as the upsample kernel does.
    fn onnx(&self, onnx: &mut OnnxNode) -> String {
        let scales = format!("{}.scales", onnx.name());
        onnx.constant(&scales, &[1.0, 1.0, 2.0, 2.0]);
        let attrs = vec![
            string("mode", "nearest"),
            string("coordinate_transformation_mode", "asymmetric"),
            string("nearest_mode", "floor"),
        ];
        onnx.single("Resize", &[onnx.value(self.x), String::new(), scales], attrs)
    }
    fn forward(&self, cx: &mut Forward) {
        cx.push(UpsampleForward { s: self.s, x: cx.input(self.x), y: cx.output() });
    }
    fn backward(&self, cx: &mut Backward) {
        let (s, dy) = (self.s, cx.dy());
        cx.propagate(self.x, s.input_len(), |dx| UpsampleBackward { s, dy, dx });
    }
}

impl Graph {
    pub fn max_pool(&mut self, name: &str, x: TensorId) -> TensorId {
        let [n, c, h, w] = self.shape(x);
        self.push(name, MaxPoolLayer { x, s: MaxPool2d { n, c, h, w } }, [n, c, h / 2, w / 2])
    }

    pub fn upsample(&mut self, name: &str, x: TensorId) -> TensorId {
        let [n, c, h, w] = self.shape(x);
        self.push(name, UpsampleLayer { x, s: Upsample2x { n, c, h, w } }, [n, c, 2 * h, 2 * w])
    }
}

#[derive(Clone, Debug)]
pub struct MaxPoolForward {
    pub s: MaxPool2d,
    pub x: BufId,
    pub y: BufId,
}

impl Kernel for MaxPoolForward {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x], vec![self.y])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.forward(g.gpu, g.buf(self.x), g.buf(self.y))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.y] = reference::max_pool_forward(&self.s, &c.buffers[self.x]);
    }
}

#[derive(Clone, Debug)]
pub struct MaxPoolBackward {
    pub s: MaxPool2d,
    pub x: BufId,
    pub dy: BufId,
    pub dx: BufId,
}

impl Kernel for MaxPoolBackward {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x, self.dy], vec![self.dx])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.backward(g.gpu, g.buf(self.x), g.buf(self.dy), g.buf(self.dx))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.dx] = reference::max_pool_backward(&self.s, &c.buffers[self.x], &c.buffers[self.dy]);
    }
}

#[derive(Clone, Debug)]
pub struct UpsampleForward {
    pub s: Upsample2x,
    pub x: BufId,
    pub y: BufId,
}

impl Kernel for UpsampleForward {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.x], vec![self.y])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.forward(g.gpu, g.buf(self.x), g.buf(self.y))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.y] = reference::upsample_forward(&self.s, &c.buffers[self.x]);
    }
}

#[derive(Clone, Debug)]
pub struct UpsampleBackward {
    pub s: Upsample2x,
    pub dy: BufId,
    pub dx: BufId,
}

impl Kernel for UpsampleBackward {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.dy], vec![self.dx])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.backward(g.gpu, g.buf(self.dy), g.buf(self.dx))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.dx] = reference::upsample_backward(&self.s, &c.buffers[self.dy]);
    }
}

/// Plain f64 references.
pub mod reference {
    use super::{MaxPool2d, Upsample2x};

    /// Input index of the maximum of window (oy, ox) of plane `plane`; ties go to the first
    /// maximum in row-major window order.
    fn window_argmax(s: &MaxPool2d, x: &[f64], plane: usize, oy: usize, ox: usize) -> usize {
        let mut best = (plane * s.h + 2 * oy) * s.w + 2 * ox;
        for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
            let i = (plane * s.h + 2 * oy + dy) * s.w + 2 * ox + dx;
            if x[i] > x[best] {
                best = i;
            }
        }
        best
    }

    pub fn max_pool_forward(s: &MaxPool2d, x: &[f64]) -> Vec<f64> {
        let (oh, ow) = (s.h / 2, s.w / 2);
        let mut y = vec![0.0; s.output_len()];
        for plane in 0..s.n * s.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    y[(plane * oh + oy) * ow + ox] = x[window_argmax(s, x, plane, oy, ox)];
                }
            }
        }
        y
    }

    pub fn max_pool_backward(s: &MaxPool2d, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let (oh, ow) = (s.h / 2, s.w / 2);
        let mut dx = vec![0.0; s.input_len()];
        for plane in 0..s.n * s.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    dx[window_argmax(s, x, plane, oy, ox)] += dy[(plane * oh + oy) * ow + ox];
                }
            }
        }
        dx
    }

    pub fn upsample_forward(s: &Upsample2x, x: &[f64]) -> Vec<f64> {
        let (oh, ow) = (2 * s.h, 2 * s.w);
        let mut y = vec![0.0; s.output_len()];
        for plane in 0..s.n * s.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    y[(plane * oh + oy) * ow + ox] = x[(plane * s.h + oy / 2) * s.w + ox / 2];
                }
            }
        }
        y
    }

    pub fn upsample_backward(s: &Upsample2x, dy: &[f64]) -> Vec<f64> {
        let (oh, ow) = (2 * s.h, 2 * s.w);
        let mut dx = vec![0.0; s.input_len()];
        for plane in 0..s.n * s.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    dx[(plane * s.h + oy / 2) * s.w + ox / 2] += dy[(plane * oh + oy) * ow + ox];
                }
            }
        }
        dx
    }
}

/// Max pooling forward and backward on random inputs, then on inputs quantised to 3 levels so
/// that many windows hold equal maxima and the GPU must follow the reference's tie rule.
pub fn check_max_pool(gpu: &Gpu, rng: &mut CheckRng, s: &MaxPool2d) -> Result<Vec<CaseReport>> {
    let shape = check::shape4(s.n, s.c, s.h, s.w);
    let random = check::random(rng, s.input_len());
    let quantised: Vec<f32> = random.iter().map(|v| v.round()).collect();
    let dy = check::random(rng, s.output_len());
    let gdy = gpu.upload("dy", &dy)?;
    let mut out = Vec::new();
    for (x, suffix) in [(random, ""), (quantised, " (ties)")] {
        let x64 = check::to_f64(&x);
        let gx = gpu.upload("x", &x)?;
        let y = check::poisoned(gpu, "y", s.output_len())?;
        let dx = check::poisoned(gpu, "dx", s.input_len())?;
        gpu.run(&[&s.forward(gpu, &gx, &y)?, &s.backward(gpu, &gx, &gdy, &dx)?])?;
        let want_y = reference::max_pool_forward(s, &x64);
        let want_dx = reference::max_pool_backward(s, &x64, &check::to_f64(&dy));
        out.push(check::compare(&format!("max_pool{suffix}"), &shape, &gpu.read::<f32>(&y)?, &want_y));
        out.push(check::compare(&format!("max_pool_backward{suffix}"), &shape, &gpu.read::<f32>(&dx)?, &want_dx));
    }
    Ok(out)
}

/// Up-sampling forward and backward on random inputs.
pub fn check_upsample(gpu: &Gpu, rng: &mut CheckRng, s: &Upsample2x) -> Result<Vec<CaseReport>> {
    let shape = check::shape4(s.n, s.c, s.h, s.w);
    let x = check::random(rng, s.input_len());
    let dy = check::random(rng, s.output_len());
    let (gx, gdy) = (gpu.upload("x", &x)?, gpu.upload("dy", &dy)?);
    let (x, dy) = (check::to_f64(&x), check::to_f64(&dy));
    let y = check::poisoned(gpu, "y", s.output_len())?;
    let dx = check::poisoned(gpu, "dx", s.input_len())?;
    gpu.run(&[&s.forward(gpu, &gx, &y)?, &s.backward(gpu, &gdy, &dx)?])?;
    Ok(vec![
        check::compare("upsample", &shape, &gpu.read::<f32>(&y)?, &reference::upsample_forward(s, &x)),
        check::compare("upsample_backward", &shape, &gpu.read::<f32>(&dx)?, &reference::upsample_backward(s, &dy)),
    ])
}

/// Max pooling over the awkward shapes: odd 17×23 (a dropped row and column), even 16×16,
/// channels 1, 3, 5, 33, batch 1 and 2.
pub fn check_all_max_pool(gpu: &Gpu, rng: &mut CheckRng) -> Result<Vec<CaseReport>> {
    let mut out = Vec::new();
    for (n, c, h, w) in [(1, 1, 16, 16), (2, 3, 17, 23), (1, 5, 3, 5), (2, 33, 16, 16), (1, 1, 17, 23)] {
        out.extend(check_max_pool(gpu, rng, &MaxPool2d { n, c, h, w })?);
    }
    Ok(out)
}

/// Up-sampling over the awkward shapes, including a 1×1 input.
pub fn check_all_upsample(gpu: &Gpu, rng: &mut CheckRng) -> Result<Vec<CaseReport>> {
    let mut out = Vec::new();
    for (n, c, h, w) in [(1, 1, 1, 1), (2, 3, 17, 23), (1, 5, 8, 8), (2, 33, 9, 7)] {
        out.extend(check_upsample(gpu, rng, &Upsample2x { n, c, h, w })?);
    }
    Ok(out)
}
