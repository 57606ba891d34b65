//! Graph → [`Program`]: a buffer per tensor, each layer's forward steps for the program's
//! [`Mode`], the loss and its gradient, then the backward steps ([`super::autodiff`]).

use super::autodiff::derive_backward;
use super::ir::{numel, BufId, Graph, Op, ParamInfo, Shape};
use super::{Forward, Loss, Step};
use crate::ops::loss::{ClassLabels, LossSum, SigmoidBceLoss, SoftDiceGrad, SoftDiceSums, SoftmaxCe, SoftmaxCeLoss};

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

/// The program's buffers as compilation allocates them.
pub(super) struct Compiler {
    pub(super) buffers: Vec<BufInfo>,
}

impl Compiler {
    pub(super) fn buf(&mut self, name: String, len: usize) -> BufId {
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
