//! Convolution throughput at the U-Net's own layer shapes, for each kernel variant:
//! `cargo bench --bench kernels`.
//!
//! The shapes come from the model graph (`unet` at 128² F32 and 64² F8, batch 8, RGB), so they
//! follow the network as it changes; only the drivers' public API is used, so the bench follows
//! the kernels as they change. Each distinct layer is timed once per pass (the passes a training
//! step runs: no input gradient for the first layer); each variant ends with `all layers` rows:
//! each pass summed over the network, and all convolutions of one training step.
//!
//! Environment: `WGUNET_BENCH_DEVICE=gpu|cpu|…` (default auto); `WGUNET_KERNELS=cpu|gpu` times
//! one variant (default: every variant); `WGUNET_BENCH_MODELS=128:32,64:8` (size:filters);
//! `WGUNET_BENCH_BATCH=8`; `WGUNET_BENCH_REPS=2` (launches timed per kernel, after one warm-up).

use std::time::Instant;

use wgunet::data::Normalisation;
use wgunet::graph::{Graph, Op};
use wgunet::kernel::{BufferView, Dispatch, Recorder};
use wgunet::model::{Activation, Arch, ModelConfig};
use wgunet::ops::conv::{ConvLayer, Convolution};
use wgunet::ops::conv2d::Conv2d;
use wgunet::ops::conv_transpose2d::ConvTranspose2d;
use wgunet::{Gpu, KernelVariant};

fn time(gpu: &Gpu, dispatches: &[Dispatch], reps: usize) -> f64 {
    let run = |n: usize| {
        let mut recorder = Recorder::new(gpu);
        for _ in 0..n {
            dispatches.iter().for_each(|d| recorder.dispatch(d));
        }
        recorder.submit(gpu);
        gpu.wait().unwrap();
    };
    run(1);
    let t0 = Instant::now();
    run(reps);
    t0.elapsed().as_secs_f64() / reps as f64
}

/// (op, pass): what the `all layers` rows sum over.
type OpPass = (&'static str, &'static str);

/// One pass of one layer (its dispatches), built on the device it is given (for the variant it
/// builds).
type Pass = (&'static str, Box<dyn Fn(&Gpu) -> Vec<Dispatch>>);

/// One distinct convolution of the network: its label, forward FLOPs, how many layers share
/// it, and the passes a training step runs for it.
struct Layer {
    op: &'static str,
    shape: String,
    flops: f64,
    count: usize,
    passes: Vec<Pass>,
}

type Forward<S> = fn(&S, &Gpu, &BufferView, &BufferView, &BufferView, &BufferView) -> anyhow::Result<Vec<Dispatch>>;
type Backward<S> = fn(&S, &Gpu, &BufferView, &BufferView, &BufferView) -> anyhow::Result<Vec<Dispatch>>;

/// The passes of a convolution `s` (both kinds have the same driver signatures), on fresh
/// buffers of `[input, weight, bias, output]` lengths. They hold zeros: throughput does not
/// depend on the values.
fn passes<S: Copy + 'static>(
    gpu: &Gpu,
    s: S,
    lens: [usize; 4],
    input_gradient: bool,
    forward: Forward<S>,
    backward_input: Backward<S>,
    backward_weight: Backward<S>,
) -> Vec<Pass> {
    let [x, w, b, y] = lens.map(|n| gpu.buffer("bench", n).unwrap());
    let mut out: Vec<Pass> = Vec::new();
    let (x1, w1, y1) = (x.clone(), w.clone(), y.clone());
    out.push(("forward", Box::new(move |g| forward(&s, g, &x1, &w1, &b, &y1).unwrap())));
    if input_gradient {
        let (x2, w2, y2) = (x.clone(), w.clone(), y.clone());
        out.push(("input gradient", Box::new(move |g| backward_input(&s, g, &y2, &w2, &x2).unwrap())));
    }
    out.push(("weight gradient", Box::new(move |g| backward_weight(&s, g, &x, &y, &w).unwrap())));
    out
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{name}={s}: not a valid value")))
        .unwrap_or(default)
}

/// The distinct convolutions of `graph`, in network order.
fn layers(gpu: &Gpu, graph: &Graph) -> Vec<Layer> {
    let mut out: Vec<Layer> = Vec::new();
    for node in &graph.nodes {
        // A training step computes no gradient for the network's input.
        let input_gradient = |x: usize| !matches!(graph.nodes[x].op, Op::Input);
        // Both kinds of convolution have the same driver API.
        macro_rules! layer {
            ($op:literal, $driver:ty, $s:expr, $x:expr, $shape:expr) => {
                Layer {
                    op: $op,
                    shape: $shape,
                    flops: $s.flops() as f64,
                    count: 1,
                    passes: passes(
                        gpu,
                        *$s,
                        [$s.input_len(), $s.weight_len(), $s.cout, $s.output_len()],
                        input_gradient(*$x),
                        <$driver as Convolution>::forward,
                        <$driver as Convolution>::backward_input,
                        <$driver as Convolution>::backward_weight,
                    ),
                }
            };
        }
        let layer = if let Some(ConvLayer { x, s, .. }) = node.op.layer::<ConvLayer<Conv2d>>() {
            layer!("conv2d", Conv2d, s, x, format!("{}x{}x{}x{} -> {} k{}", s.n, s.cin, s.h, s.w, s.cout, s.k))
        } else if let Some(ConvLayer { x, s, .. }) = node.op.layer::<ConvLayer<ConvTranspose2d>>() {
            layer!(
                "conv_transpose2d",
                ConvTranspose2d,
                s,
                x,
                format!("{}x{}x{}x{} -> {} 2x2 s2", s.n, s.cin, s.h, s.w, s.cout)
            )
        } else {
            continue;
        };
        let same = |l: &&mut Layer| l.op == layer.op && l.shape == layer.shape && l.passes.len() == layer.passes.len();
        match out.iter_mut().find(same) {
            Some(l) => l.count += 1,
            None => out.push(layer),
        }
    }
    out
}

fn main() {
    let reps: usize = env_or("WGUNET_BENCH_REPS", 2);
    let batch: usize = env_or("WGUNET_BENCH_BATCH", 8);
    let models: String = env_or("WGUNET_BENCH_MODELS", "128:32,64:8".to_string());
    let variants = match KernelVariant::forced().unwrap() {
        Some(v) => vec![v],
        None => KernelVariant::ALL.to_vec(),
    };
    let mut gpu = Gpu::open_for_bench().expect("an adapter");
    println!("GFLOP/s: 2 FLOPs per multiply-add of the forward convolution, the same count for each pass.");
    for model in models.split(',') {
        let (size, filters) = model.split_once(':').expect("WGUNET_BENCH_MODELS: size:filters,…");
        let cfg = ModelConfig {
            arch: Arch::Unet,
            size: size.parse().unwrap(),
            channels: 3,
            filters: filters.parse().unwrap(),
            dropout: 0.0,
            classes: 1,
            activation: Activation::Relu,
            normalise: Normalisation::Unit,
        };
        cfg.validate().unwrap();
        let graph = cfg.build(batch);
        let layers = layers(&gpu, &graph);
        println!("\nunet {size}² F{filters} batch {batch} (RGB): {} distinct convolutions", layers.len());
        println!(
            "{:<8} {:<17} {:<16} {:<28} {:>6} {:>10} {:>9}",
            "kernels", "op", "pass", "shape (NxCxHxW -> Cout)", "layers", "ms", "GFLOP/s"
        );
        let row = |variant: KernelVariant, op: &str, pass: &str, shape: &str, layers: usize, s: f64, flops: f64| {
            println!(
                "{:<8} {:<17} {:<16} {:<28} {:>6} {:>10.2} {:>9.2}",
                variant.name(),
                op,
                pass,
                shape,
                layers,
                s * 1e3,
                flops / s / 1e9
            )
        };
        for &variant in &variants {
            gpu = gpu.with_kernels(variant);
            // (op, pass) → (layers, seconds, FLOPs) over the whole network, in first-seen order.
            let mut totals: Vec<(OpPass, (usize, f64, f64))> = Vec::new();
            for l in &layers {
                for (pass, build) in &l.passes {
                    let t = time(&gpu, &build(&gpu), reps);
                    row(variant, l.op, pass, &l.shape, l.count, t, l.flops);
                    let key = (l.op, *pass);
                    let slot = match totals.iter().position(|(k, _)| *k == key) {
                        Some(i) => i,
                        None => {
                            totals.push((key, (0, 0.0, 0.0)));
                            totals.len() - 1
                        }
                    };
                    let total = &mut totals[slot].1;
                    total.0 += l.count;
                    total.1 += t * l.count as f64;
                    total.2 += l.flops * l.count as f64;
                }
            }
            for ((op, pass), (count, s, flops)) in &totals {
                row(variant, op, pass, "all layers", *count, *s, *flops);
            }
            let (s, flops) = totals.iter().fold((0.0, 0.0), |(s, f), (_, t)| (s + t.1, f + t.2));
            let count = layers.iter().map(|l| l.count).sum();
            row(variant, "all convolutions", "training step", "all layers", count, s, flops);
        }
    }
}
