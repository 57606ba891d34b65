//! The graph IR: tensors, parameters and nodes, and the [`Graph`] with the builder methods
//! common to every op. Each op's own builder method (`conv`, `relu`, …) is an `impl Graph`
//! block beside its layer in `src/ops/`.

use std::sync::Arc;

use super::Layer;

pub type TensorId = usize;
pub type ParamId = usize;
/// A logical buffer of a [`Program`](super::compile::Program).
pub type BufId = usize;

/// `[n, c, h, w]`.
pub type Shape = [usize; 4];

pub fn numel(s: &Shape) -> usize {
    s.iter().product()
}

#[derive(Clone, Debug)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Updated by the optimizer. The others (batch norm's running statistics) are state that
    /// training-mode forward steps update in place; they are saved and loaded like parameters.
    pub trained: bool,
}

impl ParamInfo {
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Parameter initialisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform in ±sqrt(6 / fan_in) (He et al. 2015): keeps the signal's variance through a
    /// ReLU, so a deep U-Net starts learning at once rather than after many epochs of
    /// predicting background (Keras' Glorot default shrinks it by about √2 a layer).
    HeUniform {
        fan_in: usize,
    },
    /// Uniform in ±sqrt(6 / (fan_in + fan_out)).
    GlorotUniform {
        fan_in: usize,
        fan_out: usize,
    },
    Zeros,
    Ones,
}

/// What a node computes: the network's input, or a layer.
#[derive(Clone, Debug)]
pub enum Op {
    Input,
    Layer(Arc<dyn Layer>),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub shape: Shape,
}

/// A network for one batch size. Node `i` produces tensor `i`.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub params: Vec<ParamInfo>,
}

impl Graph {
    pub fn shape(&self, t: TensorId) -> Shape {
        self.nodes[t].shape
    }

    /// Appends a node computing `layer`.
    pub(crate) fn push(&mut self, name: &str, layer: impl Layer, shape: Shape) -> TensorId {
        self.nodes.push(Node { name: name.into(), op: Op::Layer(Arc::new(layer)), shape });
        self.nodes.len() - 1
    }

    /// A trained parameter.
    pub(crate) fn param(&mut self, name: String, shape: Vec<usize>, init: Init) -> ParamId {
        self.params.push(ParamInfo { name, shape, init, trained: true });
        self.params.len() - 1
    }

    /// Untrained state saved with the parameters.
    pub(crate) fn state(&mut self, name: String, shape: Vec<usize>, init: Init) -> ParamId {
        self.params.push(ParamInfo { name, shape, init, trained: false });
        self.params.len() - 1
    }

    pub fn input(&mut self, shape: Shape) -> TensorId {
        self.nodes.push(Node { name: "input".into(), op: Op::Input, shape });
        self.nodes.len() - 1
    }

    /// Trained parameters (what the optimizer updates).
    pub fn param_count(&self) -> usize {
        self.params.iter().filter(|p| p.trained).map(|p| p.elems()).sum()
    }

    /// Untrained state saved with the parameters (batch norm's running statistics).
    pub fn state_count(&self) -> usize {
        self.params.iter().filter(|p| !p.trained).map(|p| p.elems()).sum()
    }

    /// Forward multiply-adds × 2 for the whole batch.
    pub fn flops(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Input => 0,
                Op::Layer(l) => l.flops(),
            })
            .sum()
    }
}
