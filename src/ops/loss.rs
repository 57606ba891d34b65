//! Losses and their gradients w.r.t. the logits (`shaders/loss.wgsl`): sigmoid + binary
//! cross-entropy, softmax + cross-entropy (with the softmax itself, for predictions), soft Dice,
//! and [`ReduceSum`], which turns per-element
//! losses into the step loss (and an epoch's running total) without a readback per step.
//!
//! Each loss writes its per-element loss unscaled and its gradient already divided by the count
//! the loss is averaged over and multiplied by `grad_scale`, so BCE and Dice can be summed into one
//! gradient buffer.

use anyhow::Result;
use rand::Rng;

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::graph::{BufId, CpuBuffers, GpuBuffers, Kernel};
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

uniform! {
    struct Params {
        count: u32,
        classes: u32,
        pixels: u32,
        index: u32,
        scale: f32,
    }
}

impl Params {
    fn new(count: usize, scale: f64) -> Self {
        Params { count: count as u32, classes: 0, pixels: 0, index: 0, scale: scale as f32 }
    }
}

fn accumulate_flag(accumulate: bool) -> f64 {
    if accumulate {
        1.0
    } else {
        0.0
    }
}

/// Sigmoid + binary cross-entropy from logits z and 0/1 targets t, mean over all `elems`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SigmoidBce {
    pub elems: usize,
}

impl SigmoidBce {
    /// `loss[i] = max(z,0) − z·t + log1p(exp(−|z|))` (finite for any z); `grad[i] = grad_scale·(σ(z) − t)/elems`.
    /// Loss values are per element and unscaled.
    pub fn forward_backward(
        &self,
        gpu: &Gpu,
        logits: &BufferView,
        target: &BufferView,
        loss: &BufferView,
        grad: &BufferView,
        grad_scale: f32,
    ) -> Result<Dispatch> {
        let n = self.elems;
        let spec = KernelSpec::per_element("loss", "sigmoid_bce");
        let params = Params::new(n, grad_scale as f64 / n as f64);
        let bindings = [("logits", logits, n), ("targets", target, n), ("loss", loss, n), ("grad", grad, n)];
        launch(gpu, &spec, &params, &bindings, grid_1d(n, WG))
    }
}

/// Softmax + cross-entropy over K classes: logits [n, k, hw], labels [n, hw] as u32 class ids
/// (each < k); mean over the n·hw pixels. Training masks hold class ids as f32 (the augmentation
/// warps them like images); [`SoftmaxCe::labels`] turns them into the u32 labels first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxCe {
    pub n: usize,
    pub k: usize,
    pub hw: usize,
}

impl SoftmaxCe {
    fn pixel_params(&self, scale: f64) -> Params {
        Params { classes: self.k as u32, pixels: self.hw as u32, ..Params::new(self.n * self.hw, scale) }
    }

    /// `labels[pixel] = u32(target[pixel])`: class ids stored as f32 → u32 labels, `[n, hw]`.
    pub fn labels(&self, gpu: &Gpu, target: &BufferView, labels: &BufferView) -> Result<Dispatch> {
        let pixels = self.n * self.hw;
        let spec = KernelSpec::per_element("loss", "class_labels");
        let bindings = [("targets", target, pixels), ("labels_out", labels, pixels)];
        launch(gpu, &spec, &self.pixel_params(0.0), &bindings, grid_1d(pixels, WG))
    }

    /// probs = softmax of the logits over the k channels of each pixel, [n, k, hw].
    pub fn probabilities(&self, gpu: &Gpu, logits: &BufferView, probs: &BufferView) -> Result<Dispatch> {
        let pixels = self.n * self.hw;
        let spec = KernelSpec::per_element("loss", "softmax");
        let bindings = [("logits", logits, pixels * self.k), ("probs", probs, pixels * self.k)];
        launch(gpu, &spec, &self.pixel_params(0.0), &bindings, grid_1d(pixels, WG))
    }

    /// `loss[pixel] = logsumexp(z) − z[label]` (max-subtracted), unscaled;
    /// grad = grad_scale·(softmax − onehot)/(n·hw).
    pub fn forward_backward(
        &self,
        gpu: &Gpu,
        logits: &BufferView,
        labels: &BufferView,
        loss: &BufferView,
        grad: &BufferView,
        grad_scale: f32,
    ) -> Result<Dispatch> {
        let pixels = self.n * self.hw;
        let spec = KernelSpec::per_element("loss", "softmax_ce");
        let params = self.pixel_params(grad_scale as f64 / pixels as f64);
        let bindings = [
            ("logits", logits, pixels * self.k),
            ("labels", labels, pixels),
            ("loss", loss, pixels),
            ("grad", grad, pixels * self.k),
        ];
        launch(gpu, &spec, &params, &bindings, grid_1d(pixels, WG))
    }
}

/// Soft Dice loss per image, averaged over images: p = σ(z); D_i = (2Σp·t + 1)/(Σp + Σt + 1);
/// loss = mean_i(1 − D_i). The +1 keeps an empty mask with an empty prediction at loss 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftDice {
    pub images: usize,
    pub pixels: usize,
}

impl SoftDice {
    /// Per-image sums (Σp·t, Σp, Σt) into `sums` [images, 3]: one workgroup per image.
    pub fn sums(&self, gpu: &Gpu, logits: &BufferView, target: &BufferView, sums: &BufferView) -> Result<Dispatch> {
        let n = self.images * self.pixels;
        let spec = KernelSpec::per_element("loss", "dice_sums").workgroup_memory(WG * 16);
        let params = Params { pixels: self.pixels as u32, ..Params::new(self.images, 0.0) };
        let bindings = [("logits", logits, n), ("targets", target, n), ("sums", sums, 3 * self.images)];
        launch(gpu, &spec, &params, &bindings, [self.images as u32, 1, 1])
    }

    /// The gradient w.r.t. z (through σ) times grad_scale, added into `grad` when `accumulate`
    /// (bce+dice, after the BCE dispatch wrote it), else written; and 1 − D_i into `loss` `[images]`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        logits: &BufferView,
        target: &BufferView,
        sums: &BufferView,
        loss: &BufferView,
        grad: &BufferView,
        grad_scale: f32,
        accumulate: bool,
    ) -> Result<Dispatch> {
        let n = self.images * self.pixels;
        let spec = KernelSpec::per_element("loss", "dice_backward").constant("ACCUMULATE", accumulate_flag(accumulate));
        let params = Params { pixels: self.pixels as u32, ..Params::new(n, grad_scale as f64 / self.images as f64) };
        let bindings = [
            ("logits", logits, n),
            ("targets", target, n),
            ("image_sums", sums, 3 * self.images),
            ("loss", loss, self.images),
            ("grad", grad, n),
        ];
        launch(gpu, &spec, &params, &bindings, grid_1d(n, WG))
    }
}

/// `out[index]` (= or +=) `scale · Σ x[..n]`, in one workgroup (grid-stride loop + tree reduction).
/// Turns per-element losses into the step loss, and accumulates an epoch's loss on the GPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReduceSum {
    pub n: usize,
    pub scale: f32,
    pub index: usize,
    pub accumulate: bool,
}

impl ReduceSum {
    pub fn dispatch(&self, gpu: &Gpu, x: &BufferView, out: &BufferView) -> Result<Dispatch> {
        let spec = KernelSpec::per_element("loss", "reduce_sum")
            .workgroup_memory(WG * 4)
            .constant("ACCUMULATE", accumulate_flag(self.accumulate));
        let params = Params { index: self.index as u32, ..Params::new(self.n, self.scale as f64) };
        launch(gpu, &spec, &params, &[("x", x, self.n), ("out", out, self.index + 1)], [1, 1, 1])
    }
}

/// A loss gradient times `grad_scale`.
fn scaled(grad: &[f64], grad_scale: f32) -> Vec<f64> {
    grad.iter().map(|v| v * grad_scale as f64).collect()
}

/// [`SigmoidBce`] over the program's buffers.
#[derive(Clone, Debug)]
pub struct SigmoidBceLoss {
    pub elems: usize,
    pub logits: BufId,
    pub target: BufId,
    pub loss: BufId,
    pub grad: BufId,
    pub grad_scale: f32,
}

impl Kernel for SigmoidBceLoss {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.logits, self.target], vec![self.loss, self.grad])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        let (logits, target, loss, grad) = (g.buf(self.logits), g.buf(self.target), g.buf(self.loss), g.buf(self.grad));
        Ok(vec![SigmoidBce { elems: self.elems }.forward_backward(
            g.gpu,
            logits,
            target,
            loss,
            grad,
            self.grad_scale,
        )?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        let (l, d) = reference::sigmoid_bce(&c.buffers[self.logits], &c.buffers[self.target]);
        c.buffers[self.loss] = l;
        c.buffers[self.grad] = scaled(&d, self.grad_scale);
    }
}

/// Per-image soft Dice sums Σσ(z)·t, Σσ(z), Σt.
#[derive(Clone, Debug)]
pub struct SoftDiceSums {
    pub images: usize,
    pub pixels: usize,
    pub logits: BufId,
    pub target: BufId,
    pub sums: BufId,
}

impl Kernel for SoftDiceSums {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.logits, self.target], vec![self.sums])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        let dice = SoftDice { images: self.images, pixels: self.pixels };
        Ok(vec![dice.sums(g.gpu, g.buf(self.logits), g.buf(self.target), g.buf(self.sums))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        c.buffers[self.sums] =
            reference::dice_sums(self.images, self.pixels, &c.buffers[self.logits], &c.buffers[self.target]);
    }
}

/// Per-image Dice loss and the logits' gradient (added to `grad` when `accumulate`).
#[derive(Clone, Debug)]
pub struct SoftDiceGrad {
    pub images: usize,
    pub pixels: usize,
    pub logits: BufId,
    pub target: BufId,
    pub sums: BufId,
    pub loss: BufId,
    pub grad: BufId,
    pub grad_scale: f32,
    pub accumulate: bool,
}

impl Kernel for SoftDiceGrad {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        let mut read = vec![self.logits, self.target, self.sums];
        if self.accumulate {
            read.push(self.grad);
        }
        (read, vec![self.loss, self.grad])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        let dice = SoftDice { images: self.images, pixels: self.pixels };
        let (logits, target, sums) = (g.buf(self.logits), g.buf(self.target), g.buf(self.sums));
        let (loss, grad) = (g.buf(self.loss), g.buf(self.grad));
        Ok(vec![dice.backward(g.gpu, logits, target, sums, loss, grad, self.grad_scale, self.accumulate)?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        let (l, d) = reference::soft_dice(self.images, self.pixels, &c.buffers[self.logits], &c.buffers[self.target]);
        c.buffers[self.loss] = l;
        let d = scaled(&d, self.grad_scale);
        let grad = &c.buffers[self.grad];
        c.buffers[self.grad] = if self.accumulate { crate::ops::elementwise::reference::add(grad, &d) } else { d };
    }
}

/// Class ids stored as f32 in `target` [n, hw] → u32 `labels` for [`SoftmaxCeLoss`].
#[derive(Clone, Debug)]
pub struct ClassLabels {
    pub s: SoftmaxCe,
    pub target: BufId,
    pub labels: BufId,
}

impl Kernel for ClassLabels {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.target], vec![self.labels])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.labels(g.gpu, g.buf(self.target), g.buf(self.labels))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        // Labels live in an f64 buffer like every other; they are whole numbers, kept exactly.
        c.buffers[self.labels] = reference::class_labels(&c.buffers[self.target]).into_iter().map(f64::from).collect();
    }
}

/// Per-pixel softmax cross-entropy losses and the logits' gradient.
#[derive(Clone, Debug)]
pub struct SoftmaxCeLoss {
    pub s: SoftmaxCe,
    pub logits: BufId,
    pub labels: BufId,
    pub loss: BufId,
    pub grad: BufId,
    pub grad_scale: f32,
}

impl Kernel for SoftmaxCeLoss {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.logits, self.labels], vec![self.loss, self.grad])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        let (logits, labels, loss, grad) = (g.buf(self.logits), g.buf(self.labels), g.buf(self.loss), g.buf(self.grad));
        Ok(vec![self.s.forward_backward(g.gpu, logits, labels, loss, grad, self.grad_scale)?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        let ids = reference::class_labels(&c.buffers[self.labels]);
        let s = &self.s;
        let (l, d) = reference::softmax_ce(s.n, s.k, s.hw, &c.buffers[self.logits], &ids);
        c.buffers[self.loss] = l;
        c.buffers[self.grad] = scaled(&d, self.grad_scale);
    }
}

/// `out[index] (+)= scale · Σ x`: a batch-mean loss into the program's loss sum.
#[derive(Clone, Debug)]
pub struct LossSum {
    pub n: usize,
    pub scale: f32,
    pub x: BufId,
    pub out: BufId,
    pub index: usize,
    pub accumulate: bool,
}

impl Kernel for LossSum {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (if self.accumulate { vec![self.x, self.out] } else { vec![self.x] }, vec![self.out])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        let reduce = ReduceSum { n: self.n, scale: self.scale, index: self.index, accumulate: self.accumulate };
        Ok(vec![reduce.dispatch(g.gpu, g.buf(self.x), g.buf(self.out))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        let sum: f64 = c.buffers[self.x].iter().sum::<f64>() * self.scale as f64;
        let out = &mut c.buffers[self.out][self.index];
        *out = if self.accumulate { *out + sum } else { sum };
    }
}

/// Plain f64 references. Gradients are of the mean loss the GPU ops average (grad_scale = 1).
pub mod reference {
    fn sigmoid(z: f64) -> f64 {
        if z >= 0.0 {
            1.0 / (1.0 + (-z).exp())
        } else {
            z.exp() / (1.0 + z.exp())
        }
    }

    /// (per-element loss, gradient of the mean loss).
    pub fn sigmoid_bce(z: &[f64], t: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let n = z.len() as f64;
        let loss = z.iter().zip(t).map(|(&z, &t)| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()).collect();
        let grad = z.iter().zip(t).map(|(&z, &t)| (sigmoid(z) - t) / n).collect();
        (loss, grad)
    }

    /// (per-pixel loss [n·hw], gradient of the mean loss [n, k, hw]).
    pub fn softmax_ce(n: usize, k: usize, hw: usize, z: &[f64], labels: &[u32]) -> (Vec<f64>, Vec<f64>) {
        let mut loss = vec![0.0; n * hw];
        let mut grad = vec![0.0; n * k * hw];
        let count = (n * hw) as f64;
        for img in 0..n {
            for q in 0..hw {
                let at = |c: usize| img * k * hw + c * hw + q;
                let label = labels[img * hw + q] as usize;
                let m = (0..k).map(|c| z[at(c)]).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..k).map(|c| (z[at(c)] - m).exp()).sum();
                loss[img * hw + q] = s.ln() + m - z[at(label)];
                for c in 0..k {
                    let onehot = if c == label { 1.0 } else { 0.0 };
                    grad[at(c)] = ((z[at(c)] - m).exp() / s - onehot) / count;
                }
            }
        }
        (loss, grad)
    }

    /// Softmax over the k channels of each pixel of z [n, k, hw].
    pub fn softmax(n: usize, k: usize, hw: usize, z: &[f64]) -> Vec<f64> {
        let mut p = vec![0.0; n * k * hw];
        for img in 0..n {
            for q in 0..hw {
                let at = |c: usize| img * k * hw + c * hw + q;
                let m = (0..k).map(|c| z[at(c)]).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..k).map(|c| (z[at(c)] - m).exp()).sum();
                for c in 0..k {
                    p[at(c)] = (z[at(c)] - m).exp() / s;
                }
            }
        }
        p
    }

    /// Class ids stored as f64 (as masks hold them) as u32 labels.
    pub fn class_labels(target: &[f64]) -> Vec<u32> {
        target.iter().map(|&t| t as u32).collect()
    }

    /// Per image (Σσ(z)·t, Σσ(z), Σt), flattened [images, 3].
    pub fn dice_sums(images: usize, pixels: usize, z: &[f64], t: &[f64]) -> Vec<f64> {
        let mut sums = vec![0.0; 3 * images];
        for i in 0..images {
            for j in i * pixels..(i + 1) * pixels {
                let p = sigmoid(z[j]);
                sums[3 * i] += p * t[j];
                sums[3 * i + 1] += p;
                sums[3 * i + 2] += t[j];
            }
        }
        sums
    }

    /// (per-image loss 1 − D_i, gradient of mean_i(1 − D_i) w.r.t. z).
    pub fn soft_dice(images: usize, pixels: usize, z: &[f64], t: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let sums = dice_sums(images, pixels, z, t);
        let mut loss = vec![0.0; images];
        let mut grad = vec![0.0; images * pixels];
        for i in 0..images {
            let denom = sums[3 * i + 1] + sums[3 * i + 2] + 1.0;
            let dice = (2.0 * sums[3 * i] + 1.0) / denom;
            loss[i] = 1.0 - dice;
            for j in i * pixels..(i + 1) * pixels {
                let p = sigmoid(z[j]);
                // ∂D/∂p_j = (2t_j − D)/denom, dp/dz = p(1 − p).
                grad[j] = -(2.0 * t[j] - dice) / denom * p * (1.0 - p) / images as f64;
            }
        }
        (loss, grad)
    }
}

/// Every loss kernel on `images` images of `pixels` pixels (`classes` for softmax CE), with
/// logits of magnitude up to 4 (useful gradients) and up to 100 (saturation: no NaN or inf).
pub fn check(
    gpu: &Gpu,
    rng: &mut CheckRng,
    &(images, classes, pixels): &(usize, usize, usize),
) -> Result<Vec<CaseReport>> {
    let mut out = Vec::new();
    for amplitude in [4.0f32, 100.0] {
        out.extend(check_binary(gpu, rng, images, pixels, amplitude)?);
        out.extend(check_softmax(gpu, rng, images, classes, pixels, amplitude)?);
    }
    Ok(out)
}

/// BCE, soft Dice and bce+dice (as training runs it) on logits of up to ±`amplitude`.
fn check_binary(
    gpu: &Gpu,
    rng: &mut CheckRng,
    images: usize,
    pixels: usize,
    amplitude: f32,
) -> Result<Vec<CaseReport>> {
    let mut out = Vec::new();
    let n = images * pixels;
    let shape = format!("{images}x{pixels} |z|<{amplitude}");
    let z: Vec<f32> = check::random(rng, n).iter().map(|v| v * amplitude).collect();
    let t = check::random_mask(rng, n);
    let (z64, t64) = (check::to_f64(&z), check::to_f64(&t));
    let gz = gpu.upload("logits", &z)?;
    let gt = gpu.upload("target", &t)?;
    let bce = SigmoidBce { elems: n };
    let dice = SoftDice { images, pixels };

    let (bce_loss, bce_grad) = reference::sigmoid_bce(&z64, &t64);
    let loss = check::poisoned(gpu, "bce loss", n)?;
    let grad = check::poisoned(gpu, "bce grad", n)?;
    gpu.run(&[&bce.forward_backward(gpu, &gz, &gt, &loss, &grad, 0.5)?])?;
    out.push(check::compare("loss::sigmoid_bce loss", &shape, &gpu.read::<f32>(&loss)?, &bce_loss));
    out.push(check::compare("loss::sigmoid_bce grad", &shape, &gpu.read::<f32>(&grad)?, &scaled(&bce_grad, 0.5)));

    let (dice_loss, dice_grad) = reference::soft_dice(images, pixels, &z64, &t64);
    let sums = check::poisoned(gpu, "dice sums", 3 * images)?;
    let loss = check::poisoned(gpu, "dice loss", images)?;
    let grad = check::poisoned(gpu, "dice grad", n)?;
    gpu.run(&[&dice.sums(gpu, &gz, &gt, &sums)?, &dice.backward(gpu, &gz, &gt, &sums, &loss, &grad, 0.5, false)?])?;
    let want_sums = reference::dice_sums(images, pixels, &z64, &t64);
    out.push(check::compare("loss::dice_sums", &shape, &gpu.read::<f32>(&sums)?, &want_sums));
    out.push(check::compare("loss::dice_backward loss", &shape, &gpu.read::<f32>(&loss)?, &dice_loss));
    out.push(check::compare("loss::dice_backward grad", &shape, &gpu.read::<f32>(&grad)?, &scaled(&dice_grad, 0.5)));

    // bce+dice as training runs it: BCE writes the gradient, Dice adds to it.
    let bce_loss_buf = check::poisoned(gpu, "bce loss", n)?;
    let dice_loss_buf = check::poisoned(gpu, "dice loss", images)?;
    let grad = check::poisoned(gpu, "bce+dice grad", n)?;
    gpu.run(&[
        &bce.forward_backward(gpu, &gz, &gt, &bce_loss_buf, &grad, 1.0)?,
        &dice.sums(gpu, &gz, &gt, &sums)?,
        &dice.backward(gpu, &gz, &gt, &sums, &dice_loss_buf, &grad, 1.0, true)?,
    ])?;
    let want: Vec<f64> = bce_grad.iter().zip(&dice_grad).map(|(a, b)| a + b).collect();
    out.push(check::compare("loss::bce+dice grad", &shape, &gpu.read::<f32>(&grad)?, &want));
    Ok(out)
}

/// Softmax cross-entropy, with the class-id conversion training uses, and the softmax itself.
fn check_softmax(
    gpu: &Gpu,
    rng: &mut CheckRng,
    images: usize,
    classes: usize,
    pixels: usize,
    amplitude: f32,
) -> Result<Vec<CaseReport>> {
    let mut out = Vec::new();
    let n = images * pixels;
    let ce = SoftmaxCe { n: images, k: classes, hw: pixels };
    let shape = format!("{images}x{classes}x{pixels} |z|<{amplitude}");
    let z: Vec<f32> = check::random(rng, images * classes * pixels).iter().map(|v| v * amplitude).collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes as u32)).collect();
    let (ce_loss, ce_grad) = reference::softmax_ce(images, classes, pixels, &check::to_f64(&z), &labels);
    let gz = gpu.upload("logits", &z)?;
    let glabels = gpu.upload("labels", &labels)?;
    let loss = check::poisoned(gpu, "ce loss", n)?;
    let grad = check::poisoned(gpu, "ce grad", z.len())?;
    gpu.run(&[&ce.forward_backward(gpu, &gz, &glabels, &loss, &grad, 0.5)?])?;
    out.push(check::compare("loss::softmax_ce loss", &shape, &gpu.read::<f32>(&loss)?, &ce_loss));
    out.push(check::compare("loss::softmax_ce grad", &shape, &gpu.read::<f32>(&grad)?, &scaled(&ce_grad, 0.5)));

    // As training runs it: class ids stored as f32 in the mask, turned into labels first. The
    // labels buffer starts as NaN bits, an out-of-range class, so an unwritten label shows.
    let ids: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    let gids = gpu.upload("class ids", &ids)?;
    let converted = check::poisoned(gpu, "labels", n)?;
    let loss = check::poisoned(gpu, "ce loss", n)?;
    let grad = check::poisoned(gpu, "ce grad", z.len())?;
    gpu.run(&[&ce.labels(gpu, &gids, &converted)?, &ce.forward_backward(gpu, &gz, &converted, &loss, &grad, 1.0)?])?;
    let want_labels = reference::class_labels(&check::to_f64(&ids));
    let (ce_loss, ce_grad) = reference::softmax_ce(images, classes, pixels, &check::to_f64(&z), &want_labels);
    out.push(check::compare("loss::class_labels+softmax_ce loss", &shape, &gpu.read::<f32>(&loss)?, &ce_loss));
    out.push(check::compare("loss::class_labels+softmax_ce grad", &shape, &gpu.read::<f32>(&grad)?, &ce_grad));

    let probs = check::poisoned(gpu, "probabilities", z.len())?;
    gpu.run(&[&ce.probabilities(gpu, &gz, &probs)?])?;
    let want = reference::softmax(images, classes, pixels, &check::to_f64(&z));
    out.push(check::compare("loss::softmax", &shape, &gpu.read::<f32>(&probs)?, &want));
    Ok(out)
}

/// [`ReduceSum`] of `n` non-negative values (losses are) into one element of a small output,
/// written then accumulated; the other elements must stay untouched.
pub fn check_reduce_sum(gpu: &Gpu, rng: &mut CheckRng, &n: &usize) -> Result<Vec<CaseReport>> {
    let x: Vec<f32> = check::random(rng, n).iter().map(|v| v.abs()).collect();
    let sum: f64 = x.iter().map(|&v| v as f64).sum();
    let gx = gpu.upload("x", &x)?;
    let index = 2;
    let before = check::random(rng, 5);
    let mut out = Vec::new();
    for accumulate in [false, true] {
        let scale = 1.0 / n as f32;
        let mut init = before.clone();
        if !accumulate {
            init[index] = f32::NAN;
        }
        let gout = gpu.upload("out", &init)?;
        gpu.run(&[&ReduceSum { n, scale, index, accumulate }.dispatch(gpu, &gx, &gout)?])?;
        let mut want = check::to_f64(&before);
        let reduced = scale as f64 * sum;
        want[index] = if accumulate { want[index] + reduced } else { reduced };
        let kernel = if accumulate { "loss::reduce_sum +=" } else { "loss::reduce_sum" };
        out.push(check::compare(kernel, &format!("{n}"), &gpu.read::<f32>(&gout)?, &want));
    }
    Ok(out)
}

/// K = 2, 3, 5, pixel counts that are not multiples of the workgroup size, one and several
/// images: (images, classes, pixels).
pub const CHECK_CASES: &[(usize, usize, usize)] = &[(1, 2, 17 * 23), (3, 3, 7 * 9), (2, 5, 1000)];

/// [`ReduceSum`] over 1, 1000 and 70001 values.
pub const REDUCE_SUM_CASES: &[usize] = &[1, 1000, 70001];
