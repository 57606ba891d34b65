//! The model as a static graph, and its compilation into a [`Program`]: the forward steps, the
//! loss, and the backward steps derived by reverse-mode differentiation over our op set.
//!
//! A [`Program`] is a flat list of kernel [`Step`]s over numbered logical buffers. Two
//! interpreters run it: [`crate::executor`] on the GPU (one `Dispatch` per step, buffers placed
//! by a memory plan) and [`reference::run`] on the CPU in f64 with the ops' reference functions
//! — the test that the whole network's gradients agree compares the two.

use crate::ops::batchnorm::BatchNorm;
use crate::ops::concat::ChannelSlice;
use crate::ops::conv2d::Conv2d;
use crate::ops::conv_transpose2d::ConvTranspose2d;
use crate::ops::dropout::Dropout;
use crate::ops::gate::Gate;
use crate::ops::loss::SoftmaxCe;
use crate::ops::pool::{MaxPool2d, Upsample2x};

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

#[derive(Clone, Debug)]
pub enum Op {
    Input,
    Conv2d {
        x: TensorId,
        w: ParamId,
        b: ParamId,
        s: Conv2d,
    },
    ConvTranspose2d {
        x: TensorId,
        w: ParamId,
        b: ParamId,
        s: ConvTranspose2d,
    },
    MaxPool {
        x: TensorId,
        s: MaxPool2d,
    },
    Upsample {
        x: TensorId,
        s: Upsample2x,
    },
    Concat {
        parts: Vec<TensorId>,
    },
    /// Per-channel batch normalisation: batch statistics in training programs (updating the
    /// running ones), the running statistics otherwise.
    BatchNorm {
        x: TensorId,
        gamma: ParamId,
        beta: ParamId,
        mean: ParamId,
        var: ParamId,
        s: BatchNorm,
    },
    /// Inverted dropout in training programs; the identity otherwise.
    Dropout {
        x: TensorId,
        s: Dropout,
    },
    Add {
        a: TensorId,
        b: TensorId,
    },
    Relu {
        x: TensorId,
    },
    Sigmoid {
        x: TensorId,
    },
    /// `x` [n, c, h, w] times the gate `a` [n, 1, h, w], broadcast over channels.
    Gate {
        x: TensorId,
        a: TensorId,
        s: Gate,
    },
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

    fn push(&mut self, name: String, op: Op, shape: Shape) -> TensorId {
        self.nodes.push(Node { name, op, shape });
        self.nodes.len() - 1
    }

    fn param(&mut self, name: String, shape: Vec<usize>, init: Init) -> ParamId {
        self.params.push(ParamInfo { name, shape, init, trained: true });
        self.params.len() - 1
    }

    fn state(&mut self, name: String, shape: Vec<usize>, init: Init) -> ParamId {
        self.params.push(ParamInfo { name, shape, init, trained: false });
        self.params.len() - 1
    }

    pub fn input(&mut self, shape: Shape) -> TensorId {
        self.push("input".into(), Op::Input, shape)
    }

    /// `k`×`k` convolution, padding "same", with bias and optional fused ReLU.
    pub fn conv(&mut self, name: &str, x: TensorId, cout: usize, k: usize, relu: bool) -> TensorId {
        let [n, cin, h, w] = self.shape(x);
        let s = Conv2d { n, cin, cout, h, w, k, relu };
        let wp = self.param(
            format!("{name}.weight"),
            vec![cout, cin, k, k],
            if relu {
                Init::HeUniform { fan_in: cin * k * k }
            } else {
                Init::GlorotUniform { fan_in: cin * k * k, fan_out: cout * k * k }
            },
        );
        let bp = self.param(format!("{name}.bias"), vec![cout], Init::Zeros);
        self.push(name.into(), Op::Conv2d { x, w: wp, b: bp, s }, [n, cout, h, w])
    }

    /// 2×2 transposed convolution with stride 2 (doubles H and W).
    pub fn conv_transpose(&mut self, name: &str, x: TensorId, cout: usize) -> TensorId {
        let [n, cin, h, w] = self.shape(x);
        let s = ConvTranspose2d { n, cin, cout, h, w };
        // Keras computes the fans of a transposed kernel from its (k, k, out, in) shape.
        let wp = self.param(
            format!("{name}.weight"),
            vec![cin, cout, 2, 2],
            Init::GlorotUniform { fan_in: cout * 4, fan_out: cin * 4 },
        );
        let bp = self.param(format!("{name}.bias"), vec![cout], Init::Zeros);
        self.push(name.into(), Op::ConvTranspose2d { x, w: wp, b: bp, s }, [n, cout, 2 * h, 2 * w])
    }

    pub fn max_pool(&mut self, name: &str, x: TensorId) -> TensorId {
        let [n, c, h, w] = self.shape(x);
        self.push(name.into(), Op::MaxPool { x, s: MaxPool2d { n, c, h, w } }, [n, c, h / 2, w / 2])
    }

    pub fn upsample(&mut self, name: &str, x: TensorId) -> TensorId {
        let [n, c, h, w] = self.shape(x);
        self.push(name.into(), Op::Upsample { x, s: Upsample2x { n, c, h, w } }, [n, c, 2 * h, 2 * w])
    }

    pub fn concat(&mut self, name: &str, parts: &[TensorId]) -> TensorId {
        let [n, _, h, w] = self.shape(parts[0]);
        for &p in parts {
            let [pn, _, ph, pw] = self.shape(p);
            assert!((pn, ph, pw) == (n, h, w), "concat {name}: parts differ in batch or spatial size");
        }
        let c = parts.iter().map(|&p| self.shape(p)[1]).sum();
        self.push(name.into(), Op::Concat { parts: parts.to_vec() }, [n, c, h, w])
    }

    /// Batch normalisation with Keras' defaults (ε 1e-3, momentum 0.99): trained γ (ones) and
    /// β (zeros), and running statistics (mean zeros, variance ones) as untrained state.
    pub fn batch_norm(&mut self, name: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x);
        let [n, c, h, w] = shape;
        let gamma = self.param(format!("{name}.gamma"), vec![c], Init::Ones);
        let beta = self.param(format!("{name}.beta"), vec![c], Init::Zeros);
        let mean = self.state(format!("{name}.running_mean"), vec![c], Init::Zeros);
        let var = self.state(format!("{name}.running_var"), vec![c], Init::Ones);
        let s = BatchNorm::keras(n, c, h * w);
        self.push(name.into(), Op::BatchNorm { x, gamma, beta, mean, var, s }, shape)
    }

    /// Dropout with drop probability `p`; each dropout layer draws its own mask stream.
    pub fn dropout(&mut self, name: &str, x: TensorId, p: f32) -> TensorId {
        let shape = self.shape(x);
        let stream = self.nodes.iter().filter(|n| matches!(n.op, Op::Dropout { .. })).count() as u32;
        self.push(name.into(), Op::Dropout { x, s: Dropout { n: numel(&shape), p, stream } }, shape)
    }

    pub fn add(&mut self, name: &str, a: TensorId, b: TensorId) -> TensorId {
        let shape = self.shape(a);
        assert_eq!(shape, self.shape(b), "add {name}: shapes differ");
        self.push(name.into(), Op::Add { a, b }, shape)
    }

    pub fn relu(&mut self, name: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x);
        self.push(name.into(), Op::Relu { x }, shape)
    }

    pub fn sigmoid(&mut self, name: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x);
        self.push(name.into(), Op::Sigmoid { x }, shape)
    }

    /// `x` scaled per pixel by the one-channel `a` of the same batch and spatial size.
    pub fn gate(&mut self, name: &str, x: TensorId, a: TensorId) -> TensorId {
        let shape = self.shape(x);
        let [n, c, h, w] = shape;
        assert_eq!(self.shape(a), [n, 1, h, w], "gate {name}: the gate must be one channel of x's size");
        self.push(name.into(), Op::Gate { x, a, s: Gate { n, c, hw: h * w } }, shape)
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
                Op::Conv2d { s, .. } => s.flops(),
                Op::ConvTranspose2d { s, .. } => s.flops(),
                _ => 0,
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

/// One kernel launch (or a short fixed sequence of them) over logical buffers. Parameters live in
/// one arena (`ParamId`s index it); their gradients in another of the same layout; untrained
/// state (running statistics) beside them (see [`crate::executor::ParamArena`]).
#[derive(Clone, Debug)]
pub enum Step {
    Conv2dForward {
        s: Conv2d,
        x: BufId,
        w: ParamId,
        b: ParamId,
        y: BufId,
    },
    Conv2dBackwardInput {
        s: Conv2d,
        dz: BufId,
        w: ParamId,
        dx: BufId,
    },
    Conv2dBackwardWeight {
        s: Conv2d,
        x: BufId,
        dz: BufId,
        dw: ParamId,
    },
    Conv2dBackwardBias {
        s: Conv2d,
        dz: BufId,
        db: ParamId,
    },
    ConvTForward {
        s: ConvTranspose2d,
        x: BufId,
        w: ParamId,
        b: ParamId,
        y: BufId,
    },
    ConvTBackwardInput {
        s: ConvTranspose2d,
        dy: BufId,
        w: ParamId,
        dx: BufId,
    },
    ConvTBackwardWeight {
        s: ConvTranspose2d,
        x: BufId,
        dy: BufId,
        dw: ParamId,
    },
    ConvTBackwardBias {
        s: ConvTranspose2d,
        dy: BufId,
        db: ParamId,
    },
    MaxPoolForward {
        s: MaxPool2d,
        x: BufId,
        y: BufId,
    },
    MaxPoolBackward {
        s: MaxPool2d,
        x: BufId,
        dy: BufId,
        dx: BufId,
    },
    UpsampleForward {
        s: Upsample2x,
        x: BufId,
        y: BufId,
    },
    UpsampleBackward {
        s: Upsample2x,
        dy: BufId,
        dx: BufId,
    },
    SliceInsert {
        s: ChannelSlice,
        part: BufId,
        whole: BufId,
    },
    SliceExtract {
        s: ChannelSlice,
        whole: BufId,
        part: BufId,
    },
    ReluBackward {
        y: BufId,
        dy: BufId,
        dx: BufId,
    },
    Add {
        a: BufId,
        b: BufId,
        y: BufId,
    },
    Relu {
        x: BufId,
        y: BufId,
    },
    Sigmoid {
        x: BufId,
        y: BufId,
    },
    SigmoidBackward {
        y: BufId,
        dy: BufId,
        dx: BufId,
    },
    /// Batch statistics into `stats` [c, 2] (kept for backward), the running statistics `mean`
    /// and `var` (untrained parameters) updated in place, and the normalised `y`.
    BatchNormTrain {
        s: BatchNorm,
        x: BufId,
        gamma: ParamId,
        beta: ParamId,
        mean: ParamId,
        var: ParamId,
        y: BufId,
        stats: BufId,
    },
    /// Normalises with the running statistics.
    BatchNormInfer {
        s: BatchNorm,
        x: BufId,
        gamma: ParamId,
        beta: ParamId,
        mean: ParamId,
        var: ParamId,
        y: BufId,
    },
    /// dx, and the gradients of γ and β.
    BatchNormBackward {
        s: BatchNorm,
        x: BufId,
        gamma: ParamId,
        stats: BufId,
        dy: BufId,
        dx: BufId,
        dgamma: ParamId,
        dbeta: ParamId,
    },
    /// Its mask comes from the executor's one dropout rng buffer (seed, step) and `s.stream`.
    DropoutForward {
        s: Dropout,
        x: BufId,
        y: BufId,
    },
    DropoutBackward {
        s: Dropout,
        dy: BufId,
        dx: BufId,
    },
    GateForward {
        s: Gate,
        x: BufId,
        a: BufId,
        y: BufId,
    },
    GateBackwardInput {
        s: Gate,
        a: BufId,
        dy: BufId,
        dx: BufId,
    },
    GateBackwardGate {
        s: Gate,
        x: BufId,
        dy: BufId,
        da: BufId,
    },
    /// Writes per-element losses and the logits' gradient.
    SigmoidBce {
        elems: usize,
        logits: BufId,
        target: BufId,
        loss: BufId,
        grad: BufId,
        grad_scale: f32,
    },
    /// Per-image soft Dice sums Σσ(z)·t, Σσ(z), Σt.
    SoftDiceSums {
        images: usize,
        pixels: usize,
        logits: BufId,
        target: BufId,
        sums: BufId,
    },
    /// Per-image Dice loss and the logits' gradient (added to `grad` when `accumulate`).
    SoftDiceGrad {
        images: usize,
        pixels: usize,
        logits: BufId,
        target: BufId,
        sums: BufId,
        loss: BufId,
        grad: BufId,
        grad_scale: f32,
        accumulate: bool,
    },
    /// Class ids stored as f32 in `target` [n, hw] → u32 `labels` for [`Step::SoftmaxCe`].
    ClassLabels {
        s: SoftmaxCe,
        target: BufId,
        labels: BufId,
    },
    /// Per-pixel softmax cross-entropy losses and the logits' gradient.
    SoftmaxCe {
        s: SoftmaxCe,
        logits: BufId,
        labels: BufId,
        loss: BufId,
        grad: BufId,
        grad_scale: f32,
    },
    /// `out[index] (+)= scale · Σ x`.
    ReduceSum {
        n: usize,
        scale: f32,
        x: BufId,
        out: BufId,
        index: usize,
        accumulate: bool,
    },
}

impl Step {
    /// (buffers read, buffers written) — the memory plan's view of a step.
    pub fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        use Step::*;
        match *self {
            Conv2dForward { x, y, .. } | ConvTForward { x, y, .. } => (vec![x], vec![y]),
            Conv2dBackwardInput { dz, dx, .. } => (vec![dz], vec![dx]),
            Conv2dBackwardWeight { x, dz, .. } => (vec![x, dz], vec![]),
            Conv2dBackwardBias { dz, .. } => (vec![dz], vec![]),
            ConvTBackwardInput { dy, dx, .. } => (vec![dy], vec![dx]),
            ConvTBackwardWeight { x, dy, .. } => (vec![x, dy], vec![]),
            ConvTBackwardBias { dy, .. } => (vec![dy], vec![]),
            MaxPoolForward { x, y, .. } | UpsampleForward { x, y, .. } => (vec![x], vec![y]),
            MaxPoolBackward { x, dy, dx, .. } => (vec![x, dy], vec![dx]),
            UpsampleBackward { dy, dx, .. } => (vec![dy], vec![dx]),
            SliceInsert { part, whole, .. } => (vec![part], vec![whole]),
            SliceExtract { whole, part, .. } => (vec![whole], vec![part]),
            ReluBackward { y, dy, dx } => (vec![y, dy], vec![dx]),
            Add { a, b, y } => (vec![a, b], vec![y]),
            Relu { x, y } | Sigmoid { x, y } => (vec![x], vec![y]),
            SigmoidBackward { y, dy, dx } => (vec![y, dy], vec![dx]),
            BatchNormTrain { x, y, stats, .. } => (vec![x], vec![y, stats]),
            BatchNormInfer { x, y, .. } => (vec![x], vec![y]),
            BatchNormBackward { x, stats, dy, dx, .. } => (vec![x, stats, dy], vec![dx]),
            DropoutForward { x, y, .. } => (vec![x], vec![y]),
            DropoutBackward { dy, dx, .. } => (vec![dy], vec![dx]),
            GateForward { x, a, y, .. } => (vec![x, a], vec![y]),
            GateBackwardInput { a, dy, dx, .. } => (vec![a, dy], vec![dx]),
            GateBackwardGate { x, dy, da, .. } => (vec![x, dy], vec![da]),
            SigmoidBce { logits, target, loss, grad, .. } => (vec![logits, target], vec![loss, grad]),
            SoftDiceSums { logits, target, sums, .. } => (vec![logits, target], vec![sums]),
            ClassLabels { target, labels, .. } => (vec![target], vec![labels]),
            SoftmaxCe { logits, labels, loss, grad, .. } => (vec![logits, labels], vec![loss, grad]),
            SoftDiceGrad { logits, target, sums, loss, grad, accumulate, .. } => {
                let mut read = vec![logits, target, sums];
                if accumulate {
                    read.push(grad);
                }
                (read, vec![loss, grad])
            }
            ReduceSum { x, out, accumulate, .. } => (if accumulate { vec![x, out] } else { vec![x] }, vec![out]),
        }
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
    let mut act: Vec<BufId> = Vec::with_capacity(graph.nodes.len());
    for (i, n) in graph.nodes.iter().enumerate() {
        let len = numel(&n.shape);
        let b = match n.op {
            // Outside training dropout is the identity: its output is its input's buffer (pinned
            // if it is the program's output).
            Op::Dropout { x, .. } if !train => {
                c.buffers[act[x]].pinned |= i == out_node;
                act[x]
            }
            _ if matches!(n.op, Op::Input) || i == out_node => c.pinned(&n.name, len),
            _ => c.buf(n.name.clone(), len),
        };
        act.push(b);
    }
    let input = graph.nodes.iter().position(|n| matches!(n.op, Op::Input)).expect("graph has no input");
    let output_shape = graph.shape(out_node);
    let [n, _, h, w] = output_shape;
    let target = c.pinned("target", n * h * w);
    let loss_sum = c.pinned("loss sum", 1);

    let mut forward = Vec::new();
    // Training batch norms' saved statistics, by node.
    let mut bn_stats: Vec<Option<BufId>> = vec![None; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let y = act[i];
        match &node.op {
            Op::Input => {}
            Op::BatchNorm { x, gamma, beta, mean, var, s } => {
                let (x, gamma, beta, mean, var, s) = (act[*x], *gamma, *beta, *mean, *var, *s);
                if train {
                    let stats = c.buf(format!("{} stats", node.name), 2 * s.c);
                    bn_stats[i] = Some(stats);
                    forward.push(Step::BatchNormTrain { s, x, gamma, beta, mean, var, y, stats });
                } else {
                    forward.push(Step::BatchNormInfer { s, x, gamma, beta, mean, var, y });
                }
            }
            Op::Dropout { x, s } => {
                if train {
                    forward.push(Step::DropoutForward { s: *s, x: act[*x], y });
                }
            }
            Op::Add { a, b } => forward.push(Step::Add { a: act[*a], b: act[*b], y }),
            Op::Relu { x } => forward.push(Step::Relu { x: act[*x], y }),
            Op::Sigmoid { x } => forward.push(Step::Sigmoid { x: act[*x], y }),
            Op::Gate { x, a, s } => forward.push(Step::GateForward { s: *s, x: act[*x], a: act[*a], y }),
            Op::Conv2d { x, w, b, s } => forward.push(Step::Conv2dForward { s: *s, x: act[*x], w: *w, b: *b, y }),
            Op::ConvTranspose2d { x, w, b, s } => {
                forward.push(Step::ConvTForward { s: *s, x: act[*x], w: *w, b: *b, y })
            }
            Op::MaxPool { x, s } => forward.push(Step::MaxPoolForward { s: *s, x: act[*x], y }),
            Op::Upsample { x, s } => forward.push(Step::UpsampleForward { s: *s, x: act[*x], y }),
            Op::Concat { parts } => {
                for (part, s) in concat_slices(graph, node, parts) {
                    forward.push(Step::SliceInsert { s, part: act[part], whole: y });
                }
            }
        }
    }

    let (mut loss_steps, mut backward) = (Vec::new(), Vec::new());
    if let Some(loss) = loss {
        let logits = act[out_node];
        let elems = numel(&output_shape);
        let dlogits = c.buf("d logits".into(), elems);
        if loss == Loss::Ce {
            let s = SoftmaxCe { n, k: classes, hw: h * w };
            let labels = c.buf("labels".into(), n * h * w);
            c.buffers[labels].is_u32 = true;
            let per_pixel = c.buf("ce per pixel".into(), n * h * w);
            loss_steps.push(Step::ClassLabels { s, target, labels });
            loss_steps.push(Step::SoftmaxCe { s, logits, labels, loss: per_pixel, grad: dlogits, grad_scale: 1.0 });
            loss_steps.push(Step::ReduceSum {
                n: n * h * w,
                scale: 1.0 / (n * h * w) as f32,
                x: per_pixel,
                out: loss_sum,
                index: 0,
                accumulate: true,
            });
        }
        if matches!(loss, Loss::Bce | Loss::BceDice) {
            let per_elem = c.buf("bce per element".into(), elems);
            loss_steps.push(Step::SigmoidBce { elems, logits, target, loss: per_elem, grad: dlogits, grad_scale: 1.0 });
            loss_steps.push(Step::ReduceSum {
                n: elems,
                scale: 1.0 / elems as f32,
                x: per_elem,
                out: loss_sum,
                index: 0,
                accumulate: true,
            });
        }
        if matches!(loss, Loss::Dice | Loss::BceDice) {
            let sums = c.buf("dice sums".into(), n * 3);
            let per_image = c.buf("dice per image".into(), n);
            let pixels = h * w;
            loss_steps.push(Step::SoftDiceSums { images: n, pixels, logits, target, sums });
            loss_steps.push(Step::SoftDiceGrad {
                images: n,
                pixels,
                logits,
                target,
                sums,
                loss: per_image,
                grad: dlogits,
                grad_scale: 1.0,
                accumulate: loss == Loss::BceDice,
            });
            loss_steps.push(Step::ReduceSum {
                n,
                scale: 1.0 / n as f32,
                x: per_image,
                out: loss_sum,
                index: 0,
                accumulate: true,
            });
        }
        if matches!(mode, Mode::Train(_)) {
            backward = derive_backward(graph, &mut c, &act, &bn_stats, dlogits);
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

fn concat_slices(graph: &Graph, node: &Node, parts: &[TensorId]) -> Vec<(TensorId, ChannelSlice)> {
    let [n, c_total, h, w] = node.shape;
    let mut offset = 0;
    parts
        .iter()
        .map(|&p| {
            let c_part = graph.shape(p)[1];
            let s = ChannelSlice { n, c_part, c_total, offset, hw: h * w };
            offset += c_part;
            (p, s)
        })
        .collect()
}

/// Reverse-mode over the graph: visits nodes last to first; each node's rule turns the gradient
/// of its output into gradients of its inputs. A tensor used by several nodes (a skip
/// connection, a residual) receives several contributions, summed with `Add`. `bn_stats` holds
/// each batch norm's statistics saved by the forward.
fn derive_backward(
    graph: &Graph,
    c: &mut Compiler,
    act: &[BufId],
    bn_stats: &[Option<BufId>],
    dlogits: BufId,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut grad: Vec<Option<BufId>> = vec![None; graph.nodes.len()];
    grad[graph.nodes.len() - 1] = Some(dlogits);

    let contribute = |steps: &mut Vec<Step>, c: &mut Compiler, grad: &mut Vec<Option<BufId>>, t: TensorId, g: BufId| {
        grad[t] = Some(match grad[t] {
            None => g,
            Some(prev) => {
                let sum = c.buf(format!("d {} (sum)", graph.nodes[t].name), c.buffers[g].len);
                steps.push(Step::Add { a: prev, b: g, y: sum });
                sum
            }
        });
    };

    for (i, node) in graph.nodes.iter().enumerate().rev() {
        let Some(dy) = grad[i] else { continue };
        let name = &node.name;
        match &node.op {
            Op::Input => {}
            Op::Conv2d { x, w, b, s } => {
                let dz = if s.relu {
                    let dz = c.buf(format!("d {name} pre-relu"), s.output_len());
                    steps.push(Step::ReluBackward { y: act[i], dy, dx: dz });
                    dz
                } else {
                    dy
                };
                steps.push(Step::Conv2dBackwardWeight { s: *s, x: act[*x], dz, dw: *w });
                steps.push(Step::Conv2dBackwardBias { s: *s, dz, db: *b });
                if needs_grad(graph, *x) {
                    let dx = c.buf(format!("d {}", graph.nodes[*x].name), s.input_len());
                    steps.push(Step::Conv2dBackwardInput { s: *s, dz, w: *w, dx });
                    contribute(&mut steps, c, &mut grad, *x, dx);
                }
            }
            Op::ConvTranspose2d { x, w, b, s } => {
                steps.push(Step::ConvTBackwardWeight { s: *s, x: act[*x], dy, dw: *w });
                steps.push(Step::ConvTBackwardBias { s: *s, dy, db: *b });
                if needs_grad(graph, *x) {
                    let dx = c.buf(format!("d {}", graph.nodes[*x].name), s.input_len());
                    steps.push(Step::ConvTBackwardInput { s: *s, dy, w: *w, dx });
                    contribute(&mut steps, c, &mut grad, *x, dx);
                }
            }
            Op::MaxPool { x, s } => {
                let dx = c.buf(format!("d {}", graph.nodes[*x].name), s.input_len());
                steps.push(Step::MaxPoolBackward { s: *s, x: act[*x], dy, dx });
                contribute(&mut steps, c, &mut grad, *x, dx);
            }
            Op::Upsample { x, s } => {
                let dx = c.buf(format!("d {}", graph.nodes[*x].name), s.input_len());
                steps.push(Step::UpsampleBackward { s: *s, dy, dx });
                contribute(&mut steps, c, &mut grad, *x, dx);
            }
            Op::BatchNorm { x, gamma, beta, s, .. } => {
                // The kernel always writes dx (its γ and β gradients are the sums dx needs).
                let dx = c.buf(format!("d {}", graph.nodes[*x].name), s.len());
                let stats = bn_stats[i].expect("a training batch norm saved its statistics");
                steps.push(Step::BatchNormBackward {
                    s: *s,
                    x: act[*x],
                    gamma: *gamma,
                    stats,
                    dy,
                    dx,
                    dgamma: *gamma,
                    dbeta: *beta,
                });
                if needs_grad(graph, *x) {
                    contribute(&mut steps, c, &mut grad, *x, dx);
                }
            }
            Op::Dropout { x, s } => {
                if needs_grad(graph, *x) {
                    let dx = c.buf(format!("d {}", graph.nodes[*x].name), s.n);
                    steps.push(Step::DropoutBackward { s: *s, dy, dx });
                    contribute(&mut steps, c, &mut grad, *x, dx);
                }
            }
            Op::Add { a, b } => {
                // Both inputs receive dy itself; no step writes into a gradient once made.
                for t in [*a, *b] {
                    if needs_grad(graph, t) {
                        contribute(&mut steps, c, &mut grad, t, dy);
                    }
                }
            }
            Op::Relu { x } => {
                if needs_grad(graph, *x) {
                    let dx = c.buf(format!("d {}", graph.nodes[*x].name), numel(&node.shape));
                    steps.push(Step::ReluBackward { y: act[i], dy, dx });
                    contribute(&mut steps, c, &mut grad, *x, dx);
                }
            }
            Op::Sigmoid { x } => {
                if needs_grad(graph, *x) {
                    let dx = c.buf(format!("d {}", graph.nodes[*x].name), numel(&node.shape));
                    steps.push(Step::SigmoidBackward { y: act[i], dy, dx });
                    contribute(&mut steps, c, &mut grad, *x, dx);
                }
            }
            Op::Gate { x, a, s } => {
                if needs_grad(graph, *x) {
                    let dx = c.buf(format!("d {}", graph.nodes[*x].name), s.len());
                    steps.push(Step::GateBackwardInput { s: *s, a: act[*a], dy, dx });
                    contribute(&mut steps, c, &mut grad, *x, dx);
                }
                if needs_grad(graph, *a) {
                    let da = c.buf(format!("d {}", graph.nodes[*a].name), s.gate_len());
                    steps.push(Step::GateBackwardGate { s: *s, x: act[*x], dy, da });
                    contribute(&mut steps, c, &mut grad, *a, da);
                }
            }
            Op::Concat { parts } => {
                for (part, s) in concat_slices(graph, node, parts) {
                    if needs_grad(graph, part) {
                        let dp = c.buf(format!("d {}", graph.nodes[part].name), s.n * s.c_part * s.hw);
                        steps.push(Step::SliceExtract { s, whole: dy, part: dp });
                        contribute(&mut steps, c, &mut grad, part, dp);
                    }
                }
            }
        }
    }
    steps
}

/// The input image needs no gradient; everything computed from parameters does.
fn needs_grad(graph: &Graph, t: TensorId) -> bool {
    !matches!(graph.nodes[t].op, Op::Input)
}

pub mod reference;
