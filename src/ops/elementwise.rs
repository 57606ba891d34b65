//! Element-wise kernels (`shaders/elementwise.wgsl`): ReLU, LeakyReLU, sigmoid and their
//! backwards, add. `add` sums gradients where a tensor feeds several consumers, and joins
//! residual paths.

use anyhow::Result;

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::{float, OnnxNode};
use crate::graph::rule::op_kernel;
use crate::graph::{Backward, Forward, Graph, Layer, TensorId};
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

uniform! {
    struct Params {
        n: u32,
    }
}

/// LeakyReLU's slope for negative inputs (Keras' `LeakyReLU` default is 0.3; 0.01 is Maas et
/// al.'s, and keeps the net close to a ReLU one).
pub const LEAKY_RELU_SLOPE: f64 = 0.01;

/// `entry` over the elements of `out`, reading as many of `a` (and `b`, if any), a vec4 an
/// invocation.
fn apply(gpu: &Gpu, entry: &'static str, a: &BufferView, b: Option<&BufferView>, out: &BufferView) -> Result<Dispatch> {
    let n = out.elems();
    let vec4s = n.div_ceil(4);
    let mut spec = KernelSpec::per_element("elementwise", entry);
    if entry.starts_with("leaky_relu") {
        spec = spec.constant("LEAKY_SLOPE", LEAKY_RELU_SLOPE);
    }
    let mut bindings = vec![("a", a, n), ("out", out, n)];
    if let Some(b) = b {
        bindings.push(("b", b, n));
    }
    launch(gpu, &spec, &Params { n: vec4s as u32 }, &bindings, grid_1d(vec4s, WG))
}

/// `y = max(x, 0)`.
pub fn relu(gpu: &Gpu, x: &BufferView, y: &BufferView) -> Result<Dispatch> {
    apply(gpu, "relu", x, None, y)
}

/// `dx = dy` where the ReLU output `y > 0`, else 0.
pub fn relu_backward(gpu: &Gpu, y: &BufferView, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
    apply(gpu, "relu_backward", y, Some(dy), dx)
}

/// `y = x` where `x > 0`, else `LEAKY_RELU_SLOPE·x`.
pub fn leaky_relu(gpu: &Gpu, x: &BufferView, y: &BufferView) -> Result<Dispatch> {
    apply(gpu, "leaky_relu", x, None, y)
}

/// `dx = dy` where the LeakyReLU output `y > 0`, else `LEAKY_RELU_SLOPE·dy`.
pub fn leaky_relu_backward(gpu: &Gpu, y: &BufferView, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
    apply(gpu, "leaky_relu_backward", y, Some(dy), dx)
}

/// `y = 1 / (1 + exp(-x))`.
pub fn sigmoid(gpu: &Gpu, x: &BufferView, y: &BufferView) -> Result<Dispatch> {
    apply(gpu, "sigmoid", x, None, y)
}

/// `dx = dy·y·(1 − y)` from the sigmoid output `y`.
pub fn sigmoid_backward(gpu: &Gpu, y: &BufferView, dy: &BufferView, dx: &BufferView) -> Result<Dispatch> {
    apply(gpu, "sigmoid_backward", y, Some(dy), dx)
}

/// `y = a + b` (y may not alias a or b).
pub fn add(gpu: &Gpu, a: &BufferView, b: &BufferView, y: &BufferView) -> Result<Dispatch> {
    apply(gpu, "add", a, Some(b), y)
}

/// `y = a + b` (a residual join).
#[derive(Clone, Debug)]
pub struct AddLayer {
    pub a: TensorId,
    pub b: TensorId,
}

impl Layer for AddLayer {
    fn name(&self) -> &'static str {
        "Add"
    }
    fn onnx(&self, onnx: &mut OnnxNode) -> String {
        onnx.single("Add", &[onnx.value(self.a), onnx.value(self.b)], vec![])
    }
    fn forward(&self, cx: &mut Forward) {
        cx.push(Add { a: cx.input(self.a), b: cx.input(self.b), y: cx.output() });
    }
    fn backward(&self, cx: &mut Backward) {
        // Both inputs receive dy itself.
        for t in [self.a, self.b] {
            if cx.needs_grad(t) {
                cx.contribute(t, cx.dy());
            }
        }
    }
}

/// An activation layer `y = f(x)`: its forward kernel, its backward kernel (which reads the
/// output `y`), and its ONNX operator with attributes.
macro_rules! activation_layer {
    ($name:ident, $onnx:literal, $forward:ident, $backward:ident, $attributes:expr) => {
        #[derive(Clone, Debug)]
        pub struct $name {
            pub x: TensorId,
        }

        impl Layer for $name {
            fn name(&self) -> &'static str {
                $onnx
            }
            fn onnx(&self, onnx: &mut OnnxNode) -> String {
                onnx.single($onnx, &[onnx.value(self.x)], $attributes)
            }
            fn forward(&self, cx: &mut Forward) {
                cx.push($forward { x: cx.input(self.x), y: cx.output() });
            }
            fn backward(&self, cx: &mut Backward) {
                let (y, dy, len) = (cx.output(), cx.dy(), cx.output_len());
                cx.propagate(self.x, len, |dx| $backward { y, dy, dx });
            }
        }
    };
}

activation_layer!(ReluLayer, "Relu", Relu, ReluBackward, vec![]);
activation_layer!(
    LeakyReluLayer,
    "LeakyRelu",
    LeakyRelu,
    LeakyReluBackward,
    vec![float("alpha", LEAKY_RELU_SLOPE as f32)]
);
activation_layer!(SigmoidLayer, "Sigmoid", Sigmoid, SigmoidBackward, vec![]);

impl Graph {
    pub fn add(&mut self, name: &str, a: TensorId, b: TensorId) -> TensorId {
        let shape = self.shape(a);
        assert_eq!(shape, self.shape(b), "add {name}: shapes differ");
        self.push(name, AddLayer { a, b }, shape)
    }

    pub fn relu(&mut self, name: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x);
        self.push(name, ReluLayer { x }, shape)
    }

    pub fn leaky_relu(&mut self, name: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x);
        self.push(name, LeakyReluLayer { x }, shape)
    }

    pub fn sigmoid(&mut self, name: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x);
        self.push(name, SigmoidLayer { x }, shape)
    }
}

op_kernel!(
    /// `y = a + b`: a residual join, and the sum of a tensor's gradients from several consumers.
    Add: add(buf a, buf b) -> y, reference::add
);
op_kernel!(Relu: relu(buf x) -> y, reference::relu);
op_kernel!(ReluBackward: relu_backward(buf y, buf dy) -> dx, reference::relu_backward);
op_kernel!(LeakyRelu: leaky_relu(buf x) -> y, reference::leaky_relu);
op_kernel!(LeakyReluBackward: leaky_relu_backward(buf y, buf dy) -> dx, reference::leaky_relu_backward);
op_kernel!(Sigmoid: sigmoid(buf x) -> y, reference::sigmoid);
op_kernel!(SigmoidBackward: sigmoid_backward(buf y, buf dy) -> dx, reference::sigmoid_backward);

/// Plain f64 references.
pub mod reference {
    pub fn relu(x: &[f64]) -> Vec<f64> {
        x.iter().map(|&v| v.max(0.0)).collect()
    }
    pub fn relu_backward(y: &[f64], dy: &[f64]) -> Vec<f64> {
        y.iter().zip(dy).map(|(&y, &g)| if y > 0.0 { g } else { 0.0 }).collect()
    }
    pub fn leaky_relu(x: &[f64]) -> Vec<f64> {
        x.iter().map(|&v| if v > 0.0 { v } else { super::LEAKY_RELU_SLOPE * v }).collect()
    }
    pub fn leaky_relu_backward(y: &[f64], dy: &[f64]) -> Vec<f64> {
        y.iter().zip(dy).map(|(&y, &g)| if y > 0.0 { g } else { super::LEAKY_RELU_SLOPE * g }).collect()
    }
    pub fn sigmoid(x: &[f64]) -> Vec<f64> {
        x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect()
    }
    pub fn sigmoid_backward(y: &[f64], dy: &[f64]) -> Vec<f64> {
        y.iter().zip(dy).map(|(&y, &g)| g * y * (1.0 - y)).collect()
    }
    pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| x + y).collect()
    }
}

/// One element, and odd sizes over a workgroup.
pub const CHECK_CASES: &[usize] = &[1, 3 * 17 * 23, 2 * 33 * 9 * 7];

/// Runs every element-wise kernel on `n` random elements against the reference.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, &n: &usize) -> Result<Vec<CaseReport>> {
    let shape = format!("{n}");
    let a = check::random(rng, n);
    let b = check::random(rng, n);
    // Large magnitudes exercise sigmoid's saturation.
    let big: Vec<f32> = a.iter().map(|v| v * 60.0).collect();
    let (a64, b64, big64) = (check::to_f64(&a), check::to_f64(&b), check::to_f64(&big));
    let ga = gpu.upload("a", &a)?;
    let gb = gpu.upload("b", &b)?;
    let gbig = gpu.upload("big", &big)?;
    let relu_y = reference::relu(&a64);
    let gy = gpu.upload("y", &relu_y.iter().map(|&v| v as f32).collect::<Vec<_>>())?;
    let leaky_y = reference::leaky_relu(&a64);
    let gleaky = gpu.upload("leaky y", &leaky_y.iter().map(|&v| v as f32).collect::<Vec<_>>())?;
    // The backward reads y; an f32 y near 1 keeps too few bits of 1 − y for a 1e-5 bound, so it
    // takes y of the unsaturated inputs.
    let sigmoid_a = reference::sigmoid(&a64);
    let gsig = gpu.upload("sigmoid y", &sigmoid_a.iter().map(|&v| v as f32).collect::<Vec<_>>())?;
    Ok(vec![
        check::run_case(gpu, "relu", &shape, &relu_y, |y| relu(gpu, &ga, y))?,
        check::run_case(gpu, "relu_backward", &shape, &reference::relu_backward(&relu_y, &b64), |dx| {
            relu_backward(gpu, &gy, &gb, dx)
        })?,
        check::run_case(gpu, "leaky_relu", &shape, &leaky_y, |y| leaky_relu(gpu, &ga, y))?,
        check::run_case(gpu, "leaky_relu_backward", &shape, &reference::leaky_relu_backward(&leaky_y, &b64), |dx| {
            leaky_relu_backward(gpu, &gleaky, &gb, dx)
        })?,
        check::run_case(gpu, "sigmoid", &shape, &reference::sigmoid(&big64), |y| sigmoid(gpu, &gbig, y))?,
        check::run_case(gpu, "sigmoid_backward", &shape, &reference::sigmoid_backward(&sigmoid_a, &b64), |dx| {
            sigmoid_backward(gpu, &gsig, &gb, dx)
        })?,
        check::run_case(gpu, "add", &shape, &reference::add(&a64, &b64), |y| add(gpu, &ga, &gb, y))?,
    ])
}
