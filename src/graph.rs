//! The model as a static graph, and its compilation into a [`Program`]: the forward steps, the
//! loss, and the backward steps derived by reverse-mode differentiation over our op set.
//!
//! Read in parts: [`ir`] (tensors, parameters, nodes, the graph), [`rule`] (what an op is: a
//! [`Layer`] in the graph, [`Kernel`]s in the program), [`compile`](mod@compile) (graph →
//! program: buffers, forward steps, loss) and [`autodiff`] (the backward steps).
//!
//! A graph node holds a [`Layer`] and a [`Program`] is a flat list of [`Step`]s, each holding a
//! [`Kernel`], over numbered logical buffers. Each op's layer and kernels live beside its WGSL
//! in `src/ops/`; this module knows none of them by name but `Add` (which sums gradients) and
//! the loss kernels. Two interpreters run a program: [`crate::executor`] on the GPU (one
//! `Dispatch` per step, buffers placed by a memory plan) and [`reference::run`] on the CPU in
//! f64 with the ops' reference functions — the test that the whole network's gradients agree
//! compares the two.

pub mod autodiff;
pub mod compile;
pub mod ir;
pub mod reference;
pub mod rule;

pub use crate::config::Loss;
pub use compile::{compile, BufInfo, Mode, Program};
pub use ir::{numel, BufId, Graph, Init, Node, Op, ParamId, ParamInfo, Shape, TensorId};
pub use rule::{Backward, CpuBuffers, Forward, GpuBuffers, Kernel, Layer, Step};
