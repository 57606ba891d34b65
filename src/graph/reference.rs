//! Runs a [`Program`] on the CPU in f64 with each op's reference function: the ground truth the
//! GPU executor's whole-network gradients are tested against.

use super::{Program, Step};
use crate::ops::{batchnorm, concat, conv2d, conv_transpose2d, dropout, elementwise, gate, loss, pool};

/// Buffers after a run, parameter gradients, and the loss.
pub struct CpuRun {
    pub buffers: Vec<Vec<f64>>,
    pub param_grads: Vec<Vec<f64>>,
    /// Parameter values after the run: the inputs, with training batch norms' running
    /// statistics updated.
    pub params: Vec<Vec<f64>>,
}

impl CpuRun {
    pub fn loss(&self, p: &Program) -> f64 {
        self.buffers[p.loss_sum][0]
    }
}

/// Runs `p` once. Dropout masks are those of the GPU executor after
/// [`set_step(gpu, seed, step)`](crate::executor::Executor::set_step).
pub fn run(p: &Program, params: &[Vec<f64>], input: &[f64], target: &[f64], seed: u64, step: u32) -> CpuRun {
    let mut b: Vec<Vec<f64>> = p.buffers.iter().map(|i| vec![0.0; i.len]).collect();
    let mut g: Vec<Vec<f64>> = params.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut params = params.to_vec();
    b[p.input].copy_from_slice(input);
    b[p.target].copy_from_slice(target);
    for kernel_step in p.steps() {
        use Step::*;
        match kernel_step {
            Conv2dForward { s, x, w, b: bias, y } => {
                b[*y] = conv2d::reference::forward(s, &b[*x], &params[*w], &params[*bias])
            }
            Conv2dBackwardInput { s, dz, w, dx } => {
                let zeros = vec![0.0; s.input_len()];
                b[*dx] = conv2d::reference::backward(s, &zeros, &params[*w], &b[*dz]).0;
            }
            Conv2dBackwardWeight { s, x, dz, dw } => {
                g[*dw] = conv2d::reference::backward(s, &b[*x], &vec![0.0; s.weight_len()], &b[*dz]).1
            }
            Conv2dBackwardBias { s, dz, db } => {
                let zeros = vec![0.0; s.input_len()];
                g[*db] = conv2d::reference::backward(s, &zeros, &vec![0.0; s.weight_len()], &b[*dz]).2
            }
            ConvTForward { s, x, w, b: bias, y } => {
                b[*y] = conv_transpose2d::reference::forward(s, &b[*x], &params[*w], &params[*bias])
            }
            ConvTBackwardInput { s, dy, w, dx } => {
                let zeros = vec![0.0; s.input_len()];
                b[*dx] = conv_transpose2d::reference::backward(s, &zeros, &params[*w], &b[*dy]).0
            }
            ConvTBackwardWeight { s, x, dy, dw } => {
                g[*dw] = conv_transpose2d::reference::backward(s, &b[*x], &vec![0.0; s.weight_len()], &b[*dy]).1
            }
            ConvTBackwardBias { s, dy, db } => {
                let zeros = vec![0.0; s.input_len()];
                g[*db] = conv_transpose2d::reference::backward(s, &zeros, &vec![0.0; s.weight_len()], &b[*dy]).2
            }
            MaxPoolForward { s, x, y } => b[*y] = pool::reference::max_pool_forward(s, &b[*x]),
            MaxPoolBackward { s, x, dy, dx } => b[*dx] = pool::reference::max_pool_backward(s, &b[*x], &b[*dy]),
            UpsampleForward { s, x, y } => b[*y] = pool::reference::upsample_forward(s, &b[*x]),
            UpsampleBackward { s, dy, dx } => b[*dx] = pool::reference::upsample_backward(s, &b[*dy]),
            SliceInsert { s, part, whole } => {
                let mut pieces = slice_pieces(s, &b[*whole]);
                pieces[1] = b[*part].clone();
                let rest = s.c_total - s.offset - s.c_part;
                b[*whole] = concat::reference::concat(
                    s.n,
                    s.hw,
                    &[(&pieces[0], s.offset), (&pieces[1], s.c_part), (&pieces[2], rest)],
                );
            }
            SliceExtract { s, whole, part } => b[*part] = slice_pieces(s, &b[*whole]).swap_remove(1),
            ReluBackward { y, dy, dx } => b[*dx] = elementwise::reference::relu_backward(&b[*y], &b[*dy]),
            Add { a, b: bb, y } => b[*y] = elementwise::reference::add(&b[*a], &b[*bb]),
            Relu { x, y } => b[*y] = elementwise::reference::relu(&b[*x]),
            Sigmoid { x, y } => b[*y] = elementwise::reference::sigmoid(&b[*x]),
            SigmoidBackward { y, dy, dx } => b[*dx] = elementwise::reference::sigmoid_backward(&b[*y], &b[*dy]),
            BatchNormTrain { s, x, gamma, beta, mean, var, y, stats } => {
                let (mut rm, mut rv) = (params[*mean].clone(), params[*var].clone());
                (b[*y], b[*stats]) =
                    batchnorm::reference::forward_train(s, &b[*x], &params[*gamma], &params[*beta], &mut rm, &mut rv);
                (params[*mean], params[*var]) = (rm, rv);
            }
            BatchNormInfer { s, x, gamma, beta, mean, var, y } => {
                b[*y] = batchnorm::reference::forward_infer(
                    s,
                    &b[*x],
                    &params[*gamma],
                    &params[*beta],
                    &params[*mean],
                    &params[*var],
                )
            }
            BatchNormBackward { s, x, gamma, dy, dx, dgamma, dbeta, .. } => {
                (b[*dx], g[*dgamma], g[*dbeta]) = batchnorm::reference::backward(s, &b[*x], &params[*gamma], &b[*dy]);
            }
            DropoutForward { s, x, y } => b[*y] = dropout::reference::forward(s, seed, step, &b[*x]),
            DropoutBackward { s, dy, dx } => b[*dx] = dropout::reference::backward(s, seed, step, &b[*dy]),
            GateForward { s, x, a, y } => b[*y] = gate::reference::forward(s, &b[*x], &b[*a]),
            // dx = dy·a is the forward with dy for x.
            GateBackwardInput { s, a, dy, dx } => b[*dx] = gate::reference::forward(s, &b[*dy], &b[*a]),
            GateBackwardGate { s, x, dy, da } => b[*da] = gate::reference::gate_grad(s, &b[*x], &b[*dy]),
            SigmoidBce { logits, target, loss, grad, grad_scale, .. } => {
                let (l, d) = loss::reference::sigmoid_bce(&b[*logits], &b[*target]);
                b[*loss] = l;
                b[*grad] = d.iter().map(|v| v * *grad_scale as f64).collect();
            }
            SoftDiceSums { images, pixels, logits, target, sums } => {
                b[*sums] = loss::reference::dice_sums(*images, *pixels, &b[*logits], &b[*target])
            }
            SoftDiceGrad { images, pixels, logits, target, loss, grad, grad_scale, accumulate, .. } => {
                let (l, d) = loss::reference::soft_dice(*images, *pixels, &b[*logits], &b[*target]);
                b[*loss] = l;
                let scaled: Vec<f64> = d.iter().map(|v| v * *grad_scale as f64).collect();
                b[*grad] = if *accumulate { elementwise::reference::add(&b[*grad], &scaled) } else { scaled };
            }
            // Labels live in an f64 buffer like every other; they are whole numbers, kept exactly.
            ClassLabels { target, labels, .. } => {
                b[*labels] = loss::reference::class_labels(&b[*target]).into_iter().map(f64::from).collect()
            }
            SoftmaxCe { s, logits, labels, loss, grad, grad_scale } => {
                let ids = loss::reference::class_labels(&b[*labels]);
                let (l, d) = loss::reference::softmax_ce(s.n, s.k, s.hw, &b[*logits], &ids);
                b[*loss] = l;
                b[*grad] = d.iter().map(|v| v * *grad_scale as f64).collect();
            }
            ReduceSum { scale, x, out, index, accumulate, .. } => {
                let sum: f64 = b[*x].iter().sum::<f64>() * *scale as f64;
                b[*out][*index] = if *accumulate { b[*out][*index] + sum } else { sum };
            }
        }
    }
    CpuRun { buffers: b, param_grads: g, params }
}

/// `whole` cut into the channels before the slice, the slice, and those after it.
fn slice_pieces(s: &concat::ChannelSlice, whole: &[f64]) -> Vec<Vec<f64>> {
    concat::reference::split(s.n, s.hw, whole, &[s.offset, s.c_part, s.c_total - s.offset - s.c_part])
}
