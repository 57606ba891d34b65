//! What an op is to the compiler, the GPU executor and the CPU interpreter: two traits that
//! each op implements once, beside its kernels in `src/ops/`.
//!
//! - A [`Layer`] is a graph op: the steps of its forward pass for a program's mode, and its
//!   backward rule (the steps that turn its output's gradient into its inputs').
//! - A [`Kernel`] is one step of a program: the buffers it reads and writes (for the memory
//!   plan), its dispatches on the GPU, and its effect in f64 on the CPU (its reference).
//!
//! The compiler keeps what is common to every op: buffer allocation, summing the gradients of a
//! tensor with several consumers, and the loss.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use anyhow::Result;

use super::compile::Compiler;
use super::ir::{numel, BufId, Graph, Op, ParamId, TensorId};
use crate::device::Gpu;
use crate::export::OnnxNode;
use crate::kernel::{BufferView, Dispatch};
use crate::ops::elementwise::Add;

/// One kernel launch (or a short fixed sequence of them) over logical buffers. Parameters live
/// in one arena (`ParamId`s index it); their gradients in another of the same layout; untrained
/// state (running statistics) beside them (see [`crate::executor::ParamArena`]).
pub trait Kernel: Debug + Send + Sync + Any {
    /// (buffers read, buffers written): the memory plan's view of the step.
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>);
    /// Its dispatches, built once and recorded every run.
    fn dispatch(&self, gpu: &GpuBuffers) -> Result<Vec<Dispatch>>;
    /// The same step in f64 with the op's reference functions.
    fn reference(&self, cpu: &mut CpuBuffers);
}

/// A step of a [`Program`](super::Program): shared, so programs clone cheaply.
#[derive(Clone, Debug)]
pub struct Step(Arc<dyn Kernel>);

impl Step {
    pub fn new(kernel: impl Kernel) -> Step {
        Step(Arc::new(kernel))
    }

    pub fn kernel(&self) -> &dyn Kernel {
        self.0.as_ref()
    }

    /// (buffers read, buffers written).
    pub fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        self.0.buffers()
    }

    /// The step as kernel type `K`, if it is one.
    pub fn get<K: Kernel>(&self) -> Option<&K> {
        (self.kernel() as &dyn Any).downcast_ref()
    }
}

/// A graph op: its forward steps and its backward rule.
pub trait Layer: Debug + Send + Sync + Any {
    /// As `wgunet info` lists it.
    fn name(&self) -> &'static str;
    /// Pushes the steps that compute the node's output.
    fn forward(&self, cx: &mut Forward);
    /// Pushes the steps that turn the output's gradient into the inputs' gradients, and hands
    /// those to [`Backward::contribute`]. Called only when the output has a gradient.
    fn backward(&self, cx: &mut Backward);
    /// The op's inference form as ONNX nodes (`wgunet export`); returns the ONNX value that holds
    /// its output.
    fn onnx(&self, onnx: &mut OnnxNode) -> String;
    /// Forward multiply-adds × 2 for the whole batch.
    fn flops(&self) -> u64 {
        0
    }
    /// The input whose buffer is this node's output in programs that do not train (an op that
    /// is the identity there, like dropout): no step, no buffer of its own.
    fn identity_outside_training(&self) -> Option<TensorId> {
        None
    }
}

impl Op {
    /// The op as layer type `L`, if it is one.
    pub fn layer<L: Layer>(&self) -> Option<&L> {
        match self {
            Op::Input => None,
            Op::Layer(l) => (l.as_ref() as &dyn Any).downcast_ref(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "Input",
            Op::Layer(l) => l.name(),
        }
    }
}

/// What a layer's forward rule sees: its node's buffers, the mode, and where its steps go.
pub struct Forward<'a> {
    pub(super) compiler: &'a mut Compiler,
    pub(super) act: &'a [BufId],
    pub(super) name: &'a str,
    pub(super) output: BufId,
    pub(super) train: bool,
    pub(super) steps: &'a mut Vec<Step>,
    /// Buffers this node's backward rule reads ([`Backward::saved`]).
    pub(super) saved: Vec<BufId>,
}

impl Forward<'_> {
    /// The buffer of tensor `t`.
    pub fn input(&self, t: TensorId) -> BufId {
        self.act[t]
    }
    pub fn output(&self) -> BufId {
        self.output
    }
    /// A training program (batch statistics, dropout) rather than evaluation or inference.
    pub fn training(&self) -> bool {
        self.train
    }
    /// A new buffer named after the node: "`node` `what`".
    pub fn buf(&mut self, what: &str, len: usize) -> BufId {
        self.compiler.buf(format!("{} {what}", self.name), len)
    }
    /// Keeps `b` for the node's backward rule.
    pub fn save(&mut self, b: BufId) {
        self.saved.push(b);
    }
    pub fn push(&mut self, kernel: impl Kernel) {
        self.steps.push(Step::new(kernel));
    }
}

/// What a layer's backward rule sees: the forward buffers, its output's gradient, and the
/// gradients accumulated so far.
pub struct Backward<'a> {
    pub(super) compiler: &'a mut Compiler,
    pub(super) graph: &'a Graph,
    pub(super) act: &'a [BufId],
    pub(super) node: TensorId,
    pub(super) dy: BufId,
    pub(super) saved: &'a [BufId],
    pub(super) steps: &'a mut Vec<Step>,
    pub(super) grad: &'a mut Vec<Option<BufId>>,
}

impl Backward<'_> {
    /// The forward buffer of tensor `t`.
    pub fn input(&self, t: TensorId) -> BufId {
        self.act[t]
    }
    /// The node's forward output.
    pub fn output(&self) -> BufId {
        self.act[self.node]
    }
    /// Elements of the node's output (and of its gradient).
    pub fn output_len(&self) -> usize {
        numel(&self.graph.nodes[self.node].shape)
    }
    /// The gradient of the node's output.
    pub fn dy(&self) -> BufId {
        self.dy
    }
    /// The `i`th buffer the forward rule saved.
    pub fn saved(&self, i: usize) -> BufId {
        self.saved[i]
    }
    /// The input image needs no gradient; everything computed from parameters does.
    pub fn needs_grad(&self, t: TensorId) -> bool {
        !matches!(self.graph.nodes[t].op, Op::Input)
    }
    /// A new buffer for a gradient of tensor `t`: "d `t`".
    pub fn gradient(&mut self, t: TensorId, len: usize) -> BufId {
        self.compiler.buf(format!("d {}", self.graph.nodes[t].name), len)
    }
    /// A new intermediate buffer of the node's backward: "d `node` `what`".
    pub fn scratch(&mut self, what: &str, len: usize) -> BufId {
        self.compiler.buf(format!("d {} {what}", self.graph.nodes[self.node].name), len)
    }
    pub fn push(&mut self, kernel: impl Kernel) {
        self.steps.push(Step::new(kernel));
    }
    /// If `t` needs a gradient: a gradient buffer of `len`, the step `step(buffer)` that writes
    /// it, and its contribution to `t`'s gradient.
    pub fn propagate<K: Kernel>(&mut self, t: TensorId, len: usize, step: impl FnOnce(BufId) -> K) {
        if self.needs_grad(t) {
            let dx = self.gradient(t, len);
            self.push(step(dx));
            self.contribute(t, dx);
        }
    }
    /// Adds `g` to tensor `t`'s gradient. A tensor used by several nodes (a skip connection, a
    /// residual) receives several contributions, summed with [`Add`] into a new buffer:
    /// no step writes into a gradient once made.
    pub fn contribute(&mut self, t: TensorId, g: BufId) {
        self.grad[t] = Some(match self.grad[t] {
            None => g,
            Some(prev) => {
                let name = format!("d {} (sum)", self.graph.nodes[t].name);
                let sum = self.compiler.buf(name, self.compiler.buffers[g].len);
                self.push(Add { a: prev, b: g, y: sum });
                sum
            }
        });
    }
}

/// The device buffers a [`Kernel`] dispatches over.
pub struct GpuBuffers<'a> {
    pub gpu: &'a Gpu,
    /// By [`BufId`].
    pub buffers: &'a [BufferView],
    /// Each parameter's (or state tensor's) value, by [`ParamId`].
    pub params: &'a [BufferView],
    /// Each trained parameter's gradient, by [`ParamId`].
    pub grads: &'a [Option<BufferView>],
    /// The (seed, step) every dropout mask derives from.
    pub dropout_rng: &'a BufferView,
}

impl GpuBuffers<'_> {
    pub fn buf(&self, b: BufId) -> &BufferView {
        &self.buffers[b]
    }
    pub fn param(&self, p: ParamId) -> &BufferView {
        &self.params[p]
    }
    pub fn grad(&self, p: ParamId) -> &BufferView {
        self.grads[p].as_ref().expect("only trained parameters have gradients")
    }
}

/// The CPU interpreter's state, in f64.
pub struct CpuBuffers {
    /// By [`BufId`].
    pub buffers: Vec<Vec<f64>>,
    /// Parameter gradients, by [`ParamId`].
    pub grads: Vec<Vec<f64>>,
    /// Parameter values (training batch norms update their running statistics in place).
    pub params: Vec<Vec<f64>>,
    /// Dropout's (seed, step).
    pub seed: u64,
    pub step: u32,
}

/// Declares a [`Kernel`] that writes one buffer with one driver call, and computes it on the CPU
/// with one reference function:
///
/// `op_kernel!(Name(Op): driver(buf x, param w) -> y, reference::f)` is
/// `struct Name { s: Op, x: BufId, w: ParamId, y: BufId }`, dispatching `s.driver(gpu, x, w, y)`
/// and setting `y = reference::f(&s, x, w)`. Without `(Op)` the driver and the reference are
/// free functions of the buffers alone. Inputs are buffers (`buf`) or parameters (`param`).
macro_rules! op_kernel {
    ($(#[$doc:meta])* $name:ident($op:ty): $driver:ident($($kind:ident $input:ident),*) -> $output:ident, $reference:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            pub s: $op,
            $(pub $input: $crate::graph::rule::op_kernel!(@id $kind),)*
            pub $output: $crate::graph::BufId,
        }

        impl $crate::graph::Kernel for $name {
            fn buffers(&self) -> (Vec<$crate::graph::BufId>, Vec<$crate::graph::BufId>) {
                let read = [$($crate::graph::rule::op_kernel!(@read $kind, self.$input)),*];
                (read.into_iter().flatten().collect(), vec![self.$output])
            }
            fn dispatch(&self, g: &$crate::graph::GpuBuffers) -> anyhow::Result<Vec<$crate::kernel::Dispatch>> {
                let output = g.buf(self.$output);
                Ok(vec![self.s.$driver(g.gpu, $($crate::graph::rule::op_kernel!(@gpu g, $kind, self.$input),)* output)?])
            }
            fn reference(&self, c: &mut $crate::graph::CpuBuffers) {
                c.buffers[self.$output] = $reference(&self.s, $(&$crate::graph::rule::op_kernel!(@cpu c, $kind, self.$input)),*);
            }
        }
    };
    ($(#[$doc:meta])* $name:ident: $driver:ident($(buf $input:ident),*) -> $output:ident, $reference:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            $(pub $input: $crate::graph::BufId,)*
            pub $output: $crate::graph::BufId,
        }

        impl $crate::graph::Kernel for $name {
            fn buffers(&self) -> (Vec<$crate::graph::BufId>, Vec<$crate::graph::BufId>) {
                (vec![$(self.$input),*], vec![self.$output])
            }
            fn dispatch(&self, g: &$crate::graph::GpuBuffers) -> anyhow::Result<Vec<$crate::kernel::Dispatch>> {
                Ok(vec![$driver(g.gpu, $(g.buf(self.$input),)* g.buf(self.$output))?])
            }
            fn reference(&self, c: &mut $crate::graph::CpuBuffers) {
                c.buffers[self.$output] = $reference($(&c.buffers[self.$input]),*);
            }
        }
    };
    (@id buf) => { $crate::graph::BufId };
    (@id param) => { $crate::graph::ParamId };
    (@read buf, $id:expr) => { Some($id) };
    (@read param, $id:expr) => { None };
    (@gpu $g:ident, buf, $id:expr) => { $g.buf($id) };
    (@gpu $g:ident, param, $id:expr) => { $g.param($id) };
    (@cpu $c:ident, buf, $id:expr) => { $c.buffers[$id] };
    (@cpu $c:ident, param, $id:expr) => { $c.params[$id] };
}
pub(crate) use op_kernel;
