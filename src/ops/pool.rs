//! Pooling and up-sampling kernels (`shaders/pool.wgsl`): 2×2 max pooling with stride 2 (the
//! U-Net's down-sampling) and nearest-neighbour 2× up-sampling (Keras `UpSampling2D`), each with
//! its backward.

use anyhow::Result;

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::{ints, string, OnnxNode};
use crate::graph::rule::op_kernel;
use crate::graph::{Backward, Forward, Graph, Layer, TensorId};
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

uniform! {
    /// The input shape of the op.
    struct Params {
        n: u32,
        c: u32,
        h: u32,
        w: u32,
    }
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
    fn params(&self) -> Params {
        Params { n: self.n as u32, c: self.c as u32, h: self.h as u32, w: self.w as u32 }
    }

    pub fn forward(&self, gpu: &Gpu, x: &BufferView, y: &BufferView) -> Result<Dispatch> {
        let bindings = [("x", x, self.input_len()), ("out", y, self.output_len())];
        let spec = KernelSpec::per_element("pool", "max_pool");
        launch(gpu, &spec, &self.params(), &bindings, grid_1d(self.output_len(), WG))
    }

    /// dx: gradient to the arg-max of each window; ties go to the FIRST maximum in row-major
    /// window order (top-left, top-right, bottom-left, bottom-right). Recomputes the arg-max from
    /// x (no index buffer). Writes every dx element, a window's four an invocation.
    pub fn backward(&self, gpu: &Gpu, x: &BufferView, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
        let bindings = [("x", x, self.input_len()), ("dy", dy, self.output_len()), ("out", dx, self.input_len())];
        let spec = KernelSpec::per_element("pool", "max_pool_backward");
        // Windows, and the trailing odd row and column that belong to none.
        let windows = self.n * self.c * self.h.div_ceil(2) * self.w.div_ceil(2);
        launch(gpu, &spec, &self.params(), &bindings, grid_1d(windows, WG))
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
    fn params(&self) -> Params {
        Params { n: self.n as u32, c: self.c as u32, h: self.h as u32, w: self.w as u32 }
    }

    pub fn forward(&self, gpu: &Gpu, x: &BufferView, y: &BufferView) -> Result<Dispatch> {
        let bindings = [("x", x, self.input_len()), ("out", y, self.output_len())];
        let spec = KernelSpec::per_element("pool", "upsample");
        launch(gpu, &spec, &self.params(), &bindings, grid_1d(self.output_len(), WG))
    }

    /// dx: the sum of the gradients of the 4 outputs each input element was copied to.
    pub fn backward(&self, gpu: &Gpu, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
        let bindings = [("dy", dy, self.output_len()), ("out", dx, self.input_len())];
        let spec = KernelSpec::per_element("pool", "upsample_backward");
        launch(gpu, &spec, &self.params(), &bindings, grid_1d(self.input_len(), WG))
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

op_kernel!(MaxPoolForward(MaxPool2d): forward(buf x) -> y, reference::max_pool_forward);
op_kernel!(MaxPoolBackward(MaxPool2d): backward(buf x, buf dy) -> dx, reference::max_pool_backward);
op_kernel!(UpsampleForward(Upsample2x): forward(buf x) -> y, reference::upsample_forward);
op_kernel!(UpsampleBackward(Upsample2x): backward(buf dy) -> dx, reference::upsample_backward);

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
pub const MAX_POOL_CASES: &[MaxPool2d] = &[
    MaxPool2d { n: 1, c: 1, h: 16, w: 16 },
    MaxPool2d { n: 2, c: 3, h: 17, w: 23 },
    MaxPool2d { n: 1, c: 5, h: 3, w: 5 },
    MaxPool2d { n: 2, c: 33, h: 16, w: 16 },
    MaxPool2d { n: 1, c: 1, h: 17, w: 23 },
];

/// Up-sampling over the awkward shapes, including a 1×1 input.
pub const UPSAMPLE_CASES: &[Upsample2x] = &[
    Upsample2x { n: 1, c: 1, h: 1, w: 1 },
    Upsample2x { n: 2, c: 3, h: 17, w: 23 },
    Upsample2x { n: 1, c: 5, h: 8, w: 8 },
    Upsample2x { n: 2, c: 33, h: 9, w: 7 },
];
