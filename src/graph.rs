//! The model as a static graph, and its compilation into a [`Program`]: the forward steps, the
//! loss, and the backward steps derived by reverse-mode differentiation over our op set.
//!
//! A graph node holds a [`Layer`] and a [`Program`] is a flat list of [`Step`]s, each holding a
//! [`Kernel`], over numbered logical buffers (see [`rule`]). Each op's layer and kernels live
//! beside its WGSL in `src/ops/`; this module knows none of them by name but `Add` (which sums
//! gradients) and the loss kernels. Two interpreters run a program: [`crate::executor`] on the
//! GPU (one `Dispatch` per step, buffers placed by a memory plan) and [`reference::run`] on the
//! CPU in f64 with the ops' reference functions — the test that the whole network's gradients
//! agree compares the two.

use std::sync::Arc;

use crate::ops::loss::{ClassLabels, LossSum, SigmoidBceLoss, SoftDiceGrad, SoftDiceSums, SoftmaxCe, SoftmaxCeLoss};

pub mod reference;
pub mod rule;

pub use rule::{Backward, CpuBuffers, Forward, GpuBuffers, Kernel, Layer, Step};

pub type TensorId = usize;
pub type ParamId = usize;
/// A logical buffer of a [`Program`].
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
    pub fn len(&self) -> usize {
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

/// A network for one batch size. Node `i` produces tensor `i`. Each op's builder method
/// (`conv`, `relu`, …) lives beside its layer in `src/ops/`.
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
        self.params.iter().filter(|p| p.trained).map(|p| p.len()).sum()
    }

    /// Untrained state saved with the parameters (batch norm's running statistics).
    pub fn state_count(&self) -> usize {
        self.params.iter().filter(|p| !p.trained).map(|p| p.len()).sum()
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

/// The loss a program ends in. Its gradient seeds the backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Sigmoid + binary cross-entropy (the seed's choice).
    Bce,
    /// Soft Dice, per image, averaged.
    Dice,
    /// BCE + soft Dice.
    #[value(name = "bce+dice", alias = "bce-dice")]
    #[serde(rename = "bce+dice")]
    BceDice,
    /// Softmax + cross-entropy over K classes, mean over pixels (models with `--classes K`).
    Ce,
}

impl Loss {
    /// The loss for a model of `classes` classes: `explicit` (from `--loss`) if it suits, else
    /// bce for a binary model and ce for K classes. A loss of the other kind is an error that
    /// says which to use.
    pub fn for_classes(explicit: Option<Loss>, classes: usize) -> anyhow::Result<Loss> {
        let multiclass = classes >= 2;
        match explicit {
            None => Ok(Loss::monitor(classes)),
            Some(l) if l.multiclass() == multiclass => Ok(l),
            Some(Loss::Ce) => anyhow::bail!(
                "--loss ce is softmax cross-entropy over classes: give --classes K (2 or more) for class-id masks, \
                 or use --loss bce, dice or bce+dice for binary masks"
            ),
            Some(l) => anyhow::bail!(
                "--loss {} is for binary masks (one sigmoid output); with --classes {classes} use --loss ce (the default)",
                l.name()
            ),
        }
    }

    /// The loss evaluation reports for a model of `classes` classes: the seed's BCE, or CE.
    pub fn monitor(classes: usize) -> Loss {
        if classes >= 2 {
            Loss::Ce
        } else {
            Loss::Bce
        }
    }

    /// As `--loss` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Bce => "bce",
            Loss::Dice => "dice",
            Loss::BceDice => "bce+dice",
            Loss::Ce => "ce",
        }
    }

    /// Whether this loss trains K-class (softmax) rather than binary (sigmoid) models.
    pub fn multiclass(self) -> bool {
        self == Loss::Ce
    }
}

#[derive(Clone, Debug)]
pub struct BufInfo {
    pub name: String,
    pub len: usize,
    /// Lives for the whole program (inputs, outputs the host reads, accumulators): never shares storage.
    pub pinned: bool,
    /// Holds u32 rather than f32 (only for documentation and the CPU interpreter).
    pub is_u32: bool,
}

/// A compiled network: forward, loss and backward steps over logical buffers.
#[derive(Clone, Debug)]
pub struct Program {
    pub buffers: Vec<BufInfo>,
    pub forward: Vec<Step>,
    /// Loss and its gradient (empty for inference programs).
    pub loss: Vec<Step>,
    pub backward: Vec<Step>,
    pub input: BufId,
    /// [n, 1, h, w]: 0/1 masks, or class ids (as f32) for a K-class model.
    pub target: BufId,
    pub logits: BufId,
    /// `[0]` accumulates batch-mean losses (`(+)=` each step); read by the host when it reports.
    pub loss_sum: BufId,
    pub params: Vec<ParamInfo>,
    pub input_shape: Shape,
    pub output_shape: Shape,
}

impl Program {
    /// Every step in execution order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.forward.iter().chain(&self.loss).chain(&self.backward)
    }
}

struct Compiler {
    buffers: Vec<BufInfo>,
}

impl Compiler {
    fn buf(&mut self, name: String, len: usize) -> BufId {
        self.buffers.push(BufInfo { name, len, pinned: false, is_u32: false });
        self.buffers.len() - 1
    }
    fn pinned(&mut self, name: &str, len: usize) -> BufId {
        let b = self.buf(name.into(), len);
        self.buffers[b].pinned = true;
        b
    }
}

/// What a program computes after the forward pass. Only training programs run batch norm on
/// batch statistics (updating the running ones) and apply dropout; the others normalise with the
/// running statistics and skip dropout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward only (predict).
    Inference,
    /// Forward and loss (evaluation).
    Evaluate(Loss),
    /// Forward, loss and every parameter's gradient.
    Train(Loss),
}

/// Compiles `graph` (whose last node is the output logits: 1 channel for the binary losses,

/// Compiles `graph` (whose last node is the output logits: 1 channel for the binary losses,
/// K ≥ 2 for [`Loss::Ce`]) into a program.
pub fn compile(graph: &Graph, mode: Mode) -> Program {
    let loss = match mode {
        Mode::Inference => None,
        Mode::Evaluate(l) | Mode::Train(l) => Some(l),
    };
    let classes = graph.shape(graph.nodes.len() - 1)[1];
    if let Some(l) = loss {
        assert_eq!(l.multiclass(), classes >= 2, "loss {l:?} does not suit a model with {classes} output channels");
    }
    let train = matches!(mode, Mode::Train(_));
    let mut c = Compiler { buffers: Vec::new() };
    let out_node = graph.nodes.len() - 1;
    let act = allocate_activations(graph, &mut c, train);
    let input = graph.nodes.iter().position(|n| matches!(n.op, Op::Input)).expect("graph has no input");
    let output_shape = graph.shape(out_node);
    let [n, _, h, w] = output_shape;
    let target = c.pinned("target", n * h * w);
    let loss_sum = c.pinned("loss sum", 1);

    let mut forward = Vec::new();
    // What each node's forward kept for its backward (batch norm's statistics).
    let mut saved: Vec<Vec<BufId>> = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut cx = Forward {
            compiler: &mut c,
            act: &act,
            name: &node.name,
            output: act[i],
            train,
            steps: &mut forward,
            saved: Vec::new(),
        };
        if let Op::Layer(layer) = &node.op {
            layer.forward(&mut cx);
        }
        saved.push(cx.saved);
    }

    let (mut loss_steps, mut backward) = (Vec::new(), Vec::new());
    if let Some(loss) = loss {
        let logits = act[out_node];
        let dlogits = c.buf("d logits".into(), numel(&output_shape));
        loss_steps = loss_and_gradient(&mut c, loss, output_shape, logits, target, loss_sum, dlogits);
        if train {
            backward = derive_backward(graph, &mut c, &act, &saved, dlogits);
        }
    }

    Program {
        buffers: c.buffers,
        forward,
        loss: loss_steps,
        backward,
        input: act[input],
        target,
        logits: act[out_node],
        loss_sum,
        params: graph.params.clone(),
        input_shape: graph.shape(input),
        output_shape,
    }
}

/// A buffer for each node's output. The input and the output are pinned; an op that is the
/// identity outside training shares its input's buffer there (pinned if it is the output).
fn allocate_activations(graph: &Graph, c: &mut Compiler, train: bool) -> Vec<BufId> {
    let out_node = graph.nodes.len() - 1;
    let mut act: Vec<BufId> = Vec::with_capacity(graph.nodes.len());
    for (i, n) in graph.nodes.iter().enumerate() {
        let identity_of = match &n.op {
            Op::Layer(l) if !train => l.identity_outside_training(),
            _ => None,
        };
        let b = match identity_of {
            Some(x) => {
                c.buffers[act[x]].pinned |= i == out_node;
                act[x]
            }
            None if matches!(n.op, Op::Input) || i == out_node => c.pinned(&n.name, numel(&n.shape)),
            None => c.buf(n.name.clone(), numel(&n.shape)),
        };
        act.push(b);
    }
    act
}

/// The steps that add the batch-mean `loss` of `logits` (of `shape`) to `loss_sum` and write
/// its gradient into `dlogits`.
fn loss_and_gradient(
    c: &mut Compiler,
    loss: Loss,
    shape: Shape,
    logits: BufId,
    target: BufId,
    loss_sum: BufId,
    dlogits: BufId,
) -> Vec<Step> {
    let [n, classes, h, w] = shape;
    let elems = numel(&shape);
    let mut steps = Vec::new();
    let add_mean = |steps: &mut Vec<Step>, x: BufId, count: usize| {
        steps.push(Step::new(LossSum {
            n: count,
            scale: 1.0 / count as f32,
            x,
            out: loss_sum,
            index: 0,
            accumulate: true,
        }))
    };
    if loss == Loss::Ce {
        let s = SoftmaxCe { n, k: classes, hw: h * w };
        let labels = c.buf("labels".into(), n * h * w);
        c.buffers[labels].is_u32 = true;
        let per_pixel = c.buf("ce per pixel".into(), n * h * w);
        steps.push(Step::new(ClassLabels { s, target, labels }));
        steps.push(Step::new(SoftmaxCeLoss { s, logits, labels, loss: per_pixel, grad: dlogits, grad_scale: 1.0 }));
        add_mean(&mut steps, per_pixel, n * h * w);
    }
    if matches!(loss, Loss::Bce | Loss::BceDice) {
        let per_elem = c.buf("bce per element".into(), elems);
        steps.push(Step::new(SigmoidBceLoss { elems, logits, target, loss: per_elem, grad: dlogits, grad_scale: 1.0 }));
        add_mean(&mut steps, per_elem, elems);
    }
    if matches!(loss, Loss::Dice | Loss::BceDice) {
        let sums = c.buf("dice sums".into(), n * 3);
        let per_image = c.buf("dice per image".into(), n);
        let pixels = h * w;
        steps.push(Step::new(SoftDiceSums { images: n, pixels, logits, target, sums }));
        steps.push(Step::new(SoftDiceGrad {
            images: n,
            pixels,
            logits,
            target,
            sums,
            loss: per_image,
            grad: dlogits,
            grad_scale: 1.0,
            accumulate: loss == Loss::BceDice,
        }));
        add_mean(&mut steps, per_image, n);
    }
    steps
}

/// Reverse-mode over the graph: visits nodes last to first; each node's layer turns the gradient
/// of its output into gradients of its inputs ([`Layer::backward`]), which
/// [`Backward::contribute`] sums. `saved` holds what each node's forward kept for it.
fn derive_backward(graph: &Graph, c: &mut Compiler, act: &[BufId], saved: &[Vec<BufId>], dlogits: BufId) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut grad: Vec<Option<BufId>> = vec![None; graph.nodes.len()];
    grad[graph.nodes.len() - 1] = Some(dlogits);
    for (i, node) in graph.nodes.iter().enumerate().rev() {
        let (Some(dy), Op::Layer(layer)) = (grad[i], &node.op) else { continue };
        layer.backward(&mut Backward {
            compiler: c,
            graph,
            act,
            node: i,
            dy,
            saved: &saved[i],
            steps: &mut steps,
            grad: &mut grad,
        });
    }
    steps
}
