//! The whole network on the GPU executor equals the f64 CPU interpreter of the same program:
//! logits, loss, every parameter's gradient and the updated batch-norm running statistics, for
//! every architecture and loss (K-class softmax cross-entropy included); evaluation programs use
//! the running statistics and no dropout.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use wgunet::data::Normalisation;
use wgunet::executor::{Executor, MemoryPlan, ParamArena};
use wgunet::graph::{compile, reference, Graph, Loss, Mode, Program, Step};
use wgunet::kernel::Recorder;
use wgunet::model::{Activation, Arch, ModelConfig};
use wgunet::ops::batchnorm::{BatchNormInfer, BatchNormLayer, BatchNormTrain};
use wgunet::ops::conv::ConvLayer;
use wgunet::ops::conv2d::Conv2d;
use wgunet::ops::dropout::DropoutForward;
use wgunet::ops::elementwise::{LeakyRelu, Relu};
use wgunet::ops::pool::MaxPoolForward;
use wgunet::{Gpu, KernelVariant};

fn rel_err(gpu: &[f32], cpu: &[f64]) -> f64 {
    diff_norm(gpu, cpu) / norm(cpu).max(1e-15)
}

fn diff_norm(gpu: &[f32], cpu: &[f64]) -> f64 {
    gpu.iter().zip(cpu).map(|(g, c)| (*g as f64 - c).powi(2)).sum::<f64>().sqrt()
}

/// For a parameter `NODE.bias` (a convolution's) or `NODE.beta` (a batch norm's): per channel,
/// the sum of the magnitudes of the terms its gradient adds up, |d NODE| over the batch and
/// pixels, from the reference's buffers (the node's summed gradient where several consumers
/// contribute; an upper bound behind a fused ReLU, which zeroes some terms). None for other
/// parameters, and where the node's gradient has no buffer of its own (an addition hands its
/// output's gradient on unchanged): those keep the relative error.
fn bias_term_magnitudes(graph: &Graph, program: &Program, buffers: &[Vec<f64>], param: &str) -> Option<Vec<f64>> {
    let owner = param.strip_suffix(".bias").or_else(|| param.strip_suffix(".beta"))?;
    let node = graph.nodes.iter().find(|n| n.name == owner)?;
    let [_, channels, h, w] = node.shape;
    let gradient_names = [format!("d {} (sum)", node.name), format!("d {}", node.name)];
    let dy = gradient_names
        .iter()
        .find_map(|name| program.buffers.iter().rposition(|b| &b.name == name))
        .map(|b| &buffers[b])?;
    let mut magnitudes = vec![0.0; channels];
    for (plane, values) in dy.chunks(h * w).enumerate() {
        magnitudes[plane % channels] += values.iter().map(|v| v.abs()).sum::<f64>();
    }
    Some(magnitudes)
}

fn config(arch: Arch, size: usize, channels: usize, filters: usize, classes: usize) -> ModelConfig {
    let dropout = wgunet::model::DEFAULT_DROPOUT;
    ModelConfig {
        arch,
        size,
        channels,
        filters,
        dropout,
        classes,
        activation: Activation::Relu,
        normalise: Normalisation::Unit,
    }
}

/// f32 rounding moves a value by about 1e-6 of its tensor's scale after a few layers: a value
/// closer than this (relative to its tensor's RMS) to a kink may fall on the other side of it on
/// the GPU than in f64, where the gradient takes another, equally right, branch.
const KINK_MARGIN: f64 = 1e-6;

/// How close the reference's forward pass comes to a kink of the network: the smallest distance
/// of a ReLU's input from 0, or of a max-pool window's runner-up from its maximum, relative to
/// that tensor's RMS. Exact ties (all-zero windows after a ReLU) are exact in f32 too.
fn kink_margin(p: &Program, buffers: &[Vec<f64>]) -> f64 {
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt().max(1e-30);
    let mut margin = f64::INFINITY;
    for step in &p.forward {
        let relu_input = step.get::<Relu>().map(|r| r.x).or(step.get::<LeakyRelu>().map(|r| r.x));
        if let Some(x) = relu_input {
            let (x, scale) = (&buffers[x], rms(&buffers[x]));
            margin = x.iter().filter(|v| **v != 0.0).fold(margin, |m, v| m.min(v.abs() / scale));
        }
        if let Some(pool) = step.get::<MaxPoolForward>() {
            let (x, s) = (&buffers[pool.x], pool.s);
            let scale = rms(x);
            for plane in x.chunks(s.h * s.w) {
                for (oy, ox) in (0..s.h / 2).flat_map(|oy| (0..s.w / 2).map(move |ox| (oy, ox))) {
                    let mut window =
                        [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(dy, dx)| plane[(2 * oy + dy) * s.w + 2 * ox + dx]);
                    window.sort_by(|a, b| b.total_cmp(a));
                    if window[0] > window[1] {
                        margin = margin.min((window[0] - window[1]) / scale);
                    }
                }
            }
        }
    }
    margin
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A tiny network with its parameters on the GPU: Keras initialisation, except small positive
/// biases (which keep the ReLUs of so narrow a net alive, so gradients reach every layer) and
/// running statistics away from their (0, 1) start, so using them is visible.
struct Net {
    graph: Graph,
    params: Arc<ParamArena>,
    values: Vec<Vec<f32>>,
}

fn net(
    gpu: &Gpu,
    (arch, activation): (Arch, Activation),
    size: usize,
    channels: usize,
    classes: usize,
    batch: usize,
    rng: &mut rand_pcg::Pcg64,
) -> Net {
    let graph = ModelConfig { activation, ..config(arch, size, channels, 3, classes) }.build(batch);
    let params = Arc::new(ParamArena::new(gpu, &graph.params).unwrap());
    let mut values = params.initial_values(rng.random());
    for (v, info) in values.iter_mut().zip(&graph.params) {
        let range = if info.name.ends_with(".bias") {
            0.05..0.2
        } else if info.name.ends_with(".running_mean") {
            -0.5..0.5
        } else if info.name.ends_with(".running_var") {
            0.5..2.0
        } else {
            continue;
        };
        v.iter_mut().for_each(|b| *b = rng.random_range(range.clone()));
    }
    params.load(gpu, &values).unwrap();
    Net { graph, params, values }
}

/// Runs `exec`'s program once (a training step without optimizer, or an evaluation) on the GPU
/// with dropout masks from (mask_seed, step).
fn run_gpu(gpu: &Gpu, exec: &Executor, input: &[f32], target: &[f32], mask_seed: u64, step: u32) {
    gpu.write(exec.input(), input);
    gpu.write(exec.target(), target);
    gpu.write(exec.loss_sum(), &[0.0f32]);
    exec.set_step(gpu, mask_seed, step);
    let mut recorder = Recorder::new(gpu);
    // Forward, loss and (for a training program) backward: these executors have no optimizer.
    exec.record_train_step(&mut recorder);
    recorder.submit(gpu);
}

/// Biases of convolutions followed by batch norm: the normalisation subtracts any per-channel
/// constant, so their gradient is exactly zero (in exact arithmetic).
fn absorbed_biases(g: &Graph) -> HashSet<String> {
    g.nodes
        .iter()
        .filter_map(|n| {
            let bn = n.op.layer::<BatchNormLayer>()?;
            let conv = g.nodes[bn.x].op.layer::<ConvLayer<Conv2d>>()?;
            Some(g.params[conv.b].name.clone())
        })
        .collect()
}

/// [`gradients_match_with`] for every kernel variant (a user may force either on any adapter).
/// One seed for both, so a failure names the one seed that reproduces it.
fn gradients_match(arch: Arch, size: usize, channels: usize, loss: Loss) {
    gradients_match_activated(arch, Activation::Relu, size, channels, loss);
}

fn gradients_match_activated(arch: Arch, activation: Activation, size: usize, channels: usize, loss: Loss) {
    let seed = common::seed();
    for variant in KernelVariant::ALL {
        gradients_match_with(common::gpu_for(variant), seed, (arch, activation), size, channels, loss);
    }
}

fn gradients_match_with(gpu: &Gpu, seed: u64, model: (Arch, Activation), size: usize, channels: usize, loss: Loss) {
    let (arch, activation) = model;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let batch = 2;
    // Softmax cross-entropy trains a 3-class head on class ids; the other losses one channel on 0/1.
    let classes = if loss == Loss::Ce { 3 } else { 1 };
    let net = net(gpu, model, size, channels, classes, batch, &mut rng);
    let program = compile(&net.graph, Mode::Train(loss));
    let exec = Executor::new(gpu, program.clone(), net.params.clone(), None).unwrap();
    assert_eq!(exec.logits().elems(), classes * exec.target().elems(), "one logit per class and pixel");
    let cpu_params: Vec<Vec<f64>> = net.values.iter().map(|v| to64(v)).collect();
    // Batches are drawn until the reference passes no kink within f32 rounding of it (about
    // one draw in ten at these sizes has one; WGUNET_SEED=4157100830592366360 came within
    // 1.6e-8 of a tie and moved one weight gradient by 5e-4).
    let (input, target, mask_seed, step, cpu) = (0..16)
        .map(|_| {
            let input: Vec<f32> = (0..exec.input().elems()).map(|_| rng.random::<f32>()).collect();
            let target: Vec<f32> = (0..exec.target().elems())
                .map(|_| match classes {
                    1 => f32::from(u8::from(rng.random_bool(0.3))),
                    _ => rng.random_range(0..classes) as f32,
                })
                .collect();
            let (mask_seed, step) = (rng.random::<u64>(), rng.random_range(1..1000));
            let cpu = reference::run(&program, &cpu_params, &to64(&input), &to64(&target), mask_seed, step);
            (input, target, mask_seed, step, cpu)
        })
        .find(|(.., cpu)| kink_margin(&program, &cpu.buffers) > KINK_MARGIN)
        .unwrap_or_else(|| panic!("WGUNET_SEED={seed}: 16 batches each passed within {KINK_MARGIN} of a kink"));
    run_gpu(gpu, &exec, &input, &target, mask_seed, step);
    let gpu_grads = net.params.read(gpu, &net.params.grads).unwrap();
    let gpu_values = net.params.read(gpu, &net.params.values).unwrap();
    let gpu_logits: Vec<f32> = gpu.read(exec.logits()).unwrap();
    let gpu_loss = gpu.read::<f32>(exec.loss_sum()).unwrap()[0] as f64;

    let what = format!(
        "{arch:?} {activation:?} channels {channels} loss {loss:?}, {} kernels (WGUNET_SEED={seed})",
        gpu.kernels()
    );
    let e = rel_err(&gpu_logits, &cpu.buffers[program.logits]);
    assert!(e < 1e-5, "{what}: logits differ, rel err {e:.2e}");
    assert!(
        (gpu_loss - cpu.loss(&program)).abs() < 1e-5 * cpu.loss(&program).abs().max(1.0),
        "{what}: loss {gpu_loss} vs {}",
        cpu.loss(&program)
    );
    let absorbed = absorbed_biases(&net.graph);
    for (id, info) in program.params.iter().enumerate() {
        let (g, c) = (&gpu_grads[id], &cpu.param_grads[id]);
        if !info.trained {
            // Running statistics: no gradient, updated by the step like the reference's.
            assert!(c.iter().all(|&x| x == 0.0), "{what}: {} has a gradient", info.name);
            let e = rel_err(&gpu_values[id], &cpu.params[id]);
            assert!(e < 1e-5, "{what}: {} after the step differs, rel err {e:.2e}", info.name);
            assert!(rel_err(&net.values[id], &cpu.params[id]) > 1e-4, "{what}: the step left {} unchanged", info.name);
        } else if absorbed.contains(&info.name) {
            let weight = info.name.replace(".bias", ".weight");
            let w = program.params.iter().position(|p| p.name == weight).unwrap();
            let scale = norm(&cpu.param_grads[w]);
            assert!(norm(c) < 1e-9 * scale, "{what}: reference gradient of {} is not ~0", info.name);
            assert!(norm(&to64(g)) < 1e-4 * scale, "{what}: gradient of {} is not ~0", info.name);
        } else if norm(c) == 0.0 && info.name.contains(".att.") && dead_gate_is_possible(&net.graph, &info.name) {
            // The ReLU after a narrow gate's θ (2 channels at this test's filters) sees only
            // non-negative inputs: weights and bias of one sign make it dead at every pixel for
            // an occasional seed, and then nothing reaches θ. The GPU must agree.
            assert!(g.iter().all(|&x| x == 0.0), "{what}: gradient of {} is not 0 like the reference's", info.name);
        } else {
            assert!(
                norm(c) > 0.0,
                "{what}: reference gradient of {} is zero; the check would prove nothing",
                info.name
            );
            // A bias's gradient sums its output's gradient over the batch and pixels: where the
            // terms cancel, f32 rounding of them is large against the sum, so the error is
            // measured against the sum of their magnitudes (WGUNET_SEED=13564498269050785462:
            // a 1-channel attention gate's bias, 1.4e-4 of its gradient).
            let scale = bias_term_magnitudes(&net.graph, &program, &cpu.buffers, &info.name)
                .map_or(norm(c), |magnitudes| norm(&magnitudes));
            let e = diff_norm(g, c) / scale;
            assert!(e < 1e-4, "{what}: gradient of {} differs, error {e:.2e} of its scale {scale:.3e}", info.name);
        }
    }
}

/// Whether the attention gate holding `param` has a θ of at most 2 channels, whose ReLU a
/// random network can leave dead at every pixel.
fn dead_gate_is_possible(g: &Graph, param: &str) -> bool {
    let theta = format!("{}.att.theta", param.split(".att.").next().unwrap_or_default());
    g.nodes.iter().any(|n| n.name == theta && n.shape[1] <= 2)
}

#[test]
fn unet_transposed_conv_gradients_match_reference() {
    gradients_match(Arch::Unet, 16, 1, Loss::Bce);
}

#[test]
fn unet_upsample_gradients_match_reference() {
    gradients_match(Arch::UnetUpsample, 16, 3, Loss::Bce);
}

#[test]
fn dice_losses_gradients_match_reference() {
    gradients_match(Arch::Unet, 16, 1, Loss::BceDice);
    gradients_match(Arch::UnetUpsample, 16, 1, Loss::Dice);
}

/// Batch norm in training mode, dropout masks from (seed, step), residual sums. Size 32, as
/// at 16 the bridge normalises N·H·W = 2 values per channel, where the output is ±1 whatever
/// the input and dx cancels to almost nothing, leaving f32 rounding as large as the gradient.
#[test]
fn resunet_gradients_match_reference() {
    gradients_match(Arch::Resunet, 32, 3, Loss::Bce);
}

/// A 3-class head: class ids → labels, softmax cross-entropy, and its gradient through the net.
#[test]
fn multiclass_unet_gradients_match_reference() {
    gradients_match(Arch::Unet, 16, 1, Loss::Ce);
}

/// LeakyReLU after unfused convolutions, in both U-Net decoders. Not the residual U-Net: there
/// LeakyReLU follows batch norm, whose zero-mean outputs put an element within f32 rounding of
/// the kink in about one run in 25, and f32 and f64 then take different slopes there (its
/// layer is the same one tested here).
#[test]
fn leaky_relu_gradients_match_reference() {
    gradients_match_activated(Arch::Unet, Activation::LeakyRelu, 16, 1, Loss::Bce);
    gradients_match_activated(Arch::UnetUpsample, Activation::LeakyRelu, 16, 3, Loss::BceDice);
}

/// Attention gates: concat, fused-ReLU 1×1 conv, sigmoid, gating.
#[test]
fn attention_unet_gradients_match_reference() {
    gradients_match(Arch::AttentionUnet, 16, 1, Loss::BceDice);
}

fn has(p: &Program, f: impl Fn(&Step) -> bool) -> bool {
    p.steps().any(f)
}

/// Evaluation programs normalise with the running statistics and apply no dropout: the GPU
/// equals the CPU interpreter in the same mode, the dropout seed and step change nothing, and
/// each image's logits are independent of the other images in the batch (batch statistics would
/// couple them).
#[test]
fn resunet_evaluation_uses_running_statistics_and_no_dropout() {
    let seed = common::seed();
    let gpu = common::gpu();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let batch = 2;
    let net = net(gpu, (Arch::Resunet, Activation::Relu), 16, 1, 1, batch, &mut rng);
    let program = compile(&net.graph, Mode::Evaluate(Loss::Bce));
    assert!(!has(&program, |s| s.get::<DropoutForward>().is_some() || s.get::<BatchNormTrain>().is_some()));
    assert!(has(&program, |s| s.get::<BatchNormInfer>().is_some()));
    let train = compile(&net.graph, Mode::Train(Loss::Bce));
    assert!(has(&train, |s| s.get::<DropoutForward>().is_some()), "the training program has no dropout");

    let exec = Executor::new(gpu, program.clone(), net.params.clone(), None).unwrap();
    let mut input: Vec<f32> = (0..exec.input().elems()).map(|_| rng.random::<f32>()).collect();
    let target: Vec<f32> = (0..exec.target().elems()).map(|_| if rng.random_bool(0.3) { 1.0 } else { 0.0 }).collect();
    run_gpu(gpu, &exec, &input, &target, 1, 1);
    let logits: Vec<f32> = gpu.read(exec.logits()).unwrap();
    let gpu_loss = gpu.read::<f32>(exec.loss_sum()).unwrap()[0] as f64;

    let cpu_params: Vec<Vec<f64>> = net.values.iter().map(|v| to64(v)).collect();
    let cpu = reference::run(&program, &cpu_params, &to64(&input), &to64(&target), 1, 1);
    let what = format!("WGUNET_SEED={seed}");
    let e = rel_err(&logits, &cpu.buffers[program.logits]);
    assert!(e < 1e-5, "{what}: evaluation logits differ from the reference, rel err {e:.2e}");
    let cpu_loss = cpu.loss(&program);
    assert!((gpu_loss - cpu_loss).abs() < 1e-5 * cpu_loss.max(1.0), "{what}: loss {gpu_loss} vs {cpu_loss}");
    assert_eq!(cpu.params, cpu_params, "{what}: evaluation changed the running statistics");
    assert_eq!(net.params.read(gpu, &net.params.values).unwrap(), net.values, "{what}: GPU running statistics changed");

    // Another dropout step, and another second image: the first image's logits stay the same.
    let image = input.len() / batch;
    input[image..].iter_mut().for_each(|v| *v = rng.random());
    run_gpu(gpu, &exec, &input, &target, 2, 7);
    let again: Vec<f32> = gpu.read(exec.logits()).unwrap();
    let plane = logits.len() / batch;
    assert_eq!(logits[..plane], again[..plane], "{what}: image 0's logits depend on the dropout step or on image 1");
    assert_ne!(logits[plane..], again[plane..], "{what}: image 1's logits ignore its input");
}

/// The memory plan shares storage, and never between two buffers alive at the same step.
#[test]
fn memory_plan_shares_only_disjoint_lifetimes() {
    for (arch, classes, loss) in [
        (Arch::Unet, 1, Loss::BceDice),
        (Arch::Resunet, 1, Loss::BceDice),
        (Arch::AttentionUnet, 1, Loss::BceDice),
        (Arch::Unet, 4, Loss::Ce),
    ] {
        let p = compile(&config(arch, 64, 1, 8, classes).build(4), Mode::Train(loss));
        let plan = MemoryPlan::new(&p);
        assert!(plan.planned_bytes() < plan.unplanned_elems as u64 * 4 * 3 / 4, "{arch:?}: plan saves under 25%");
        let steps: Vec<_> = p.steps().collect();
        let mut first = vec![usize::MAX; p.buffers.len()];
        let mut last = vec![0; p.buffers.len()];
        for (i, s) in steps.iter().enumerate() {
            let (r, w) = s.buffers();
            for b in r.into_iter().chain(w) {
                first[b] = first[b].min(i);
                last[b] = last[b].max(i);
            }
        }
        for a in 0..p.buffers.len() {
            assert!(plan.slot_elems[plan.slot_of[a]] >= p.buffers[a].len, "slot too small for {}", p.buffers[a].name);
            for b in a + 1..p.buffers.len() {
                if plan.slot_of[a] != plan.slot_of[b] {
                    continue;
                }
                assert!(!p.buffers[a].pinned && !p.buffers[b].pinned, "pinned buffer shares a slot");
                let overlap = first[a] <= last[b] && first[b] <= last[a];
                assert!(!overlap, "{} and {} share a slot while both alive", p.buffers[a].name, p.buffers[b].name);
            }
        }
    }
}
