//! `wgunet bench`: training-step and inference throughput on random data after warm-up.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::{Rng, SeedableRng};

use crate::device::Gpu;
use crate::executor::{Executor, OptimizerConfig, ParamArena};
use crate::graph::{compile, Loss, Mode};
use crate::kernel::Recorder;
use crate::model::ModelConfig;
use crate::ops::adam::AdamHyper;

/// When `main` started: the origin of "first step finished after" figures.
static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Records the process start; `main` calls it first thing.
pub fn mark_process_start() {
    PROCESS_START.get_or_init(Instant::now);
}

/// Time since [`mark_process_start`] (or since the first call, in a process that never marked).
pub fn since_process_start() -> Duration {
    PROCESS_START.get_or_init(Instant::now).elapsed()
}

/// Prints when the first training step finished; call it right after waiting for that step.
pub fn print_first_step() {
    println!("{}", first_step_line(since_process_start()));
}

fn first_step_line(after: Duration) -> String {
    format!("first step finished {:.2} s after start", after.as_secs_f64())
}

/// `--profile` prints the kernels that took longest, this many (every entry point's total follows).
const PROFILE_KERNELS_SHOWN: usize = 15;

/// One kernel at one grid size: its dispatches' summed time in a training step.
pub struct ProfiledKernel {
    /// `shader::entry`.
    pub label: String,
    pub workgroups: [u32; 3],
    pub ms: f64,
}

pub struct BenchResult {
    pub adapter: String,
    pub config: String,
    pub train_images_per_s: f64,
    pub train_ms_per_step: f64,
    /// ms per step / megapixels per step (batch × H × W / 10⁶): flat across sizes when the
    /// kernels scale with the work.
    pub train_ms_per_megapixel: f64,
    /// From process start to the end of the first training step (pipelines, uploads included).
    pub first_step_after: Duration,
    pub train_gflops: f64,
    pub infer_images_per_s: f64,
    pub planned_memory: String,
    /// Kernels by grid size, slowest first, when profiled.
    pub profile: Vec<ProfiledKernel>,
}

impl BenchResult {
    pub fn print(&self) {
        println!("adapter: {}", self.adapter);
        println!("model:   {}", self.config);
        println!("memory:  {}", self.planned_memory);
        println!(
            "train:   {:.2} images/s, {:.1} ms/step, {:.1} ms/megapixel, {:.1} GFLOP/s (analytic, 3x forward)",
            self.train_images_per_s, self.train_ms_per_step, self.train_ms_per_megapixel, self.train_gflops
        );
        println!("{}", first_step_line(self.first_step_after));
        println!("infer:   {:.2} images/s", self.infer_images_per_s);
        if !self.profile.is_empty() {
            let total: f64 = self.profile.iter().map(|k| k.ms).sum();
            println!("per kernel and grid (each dispatch submitted alone; total {total:.1} ms):");
            for k in self.profile.iter().take(PROFILE_KERNELS_SHOWN) {
                println!("  {:9.2} ms {:5.1}%  {} {:?}", k.ms, 100.0 * k.ms / total, k.label, k.workgroups);
            }
            // Where the shapes above spread one kernel thin, its total says what a change to it buys.
            println!("per kernel, all grids:");
            for (label, ms) in by_label(&self.profile) {
                println!("  {ms:9.2} ms {:5.1}%  {label}", 100.0 * ms / total);
            }
        }
    }
}

/// Seconds per step after `warmup` steps, and when the first step finished (from process start).
/// With no warm-up the first step is one of the timed ones.
fn time_steps(gpu: &Gpu, warmup: usize, steps: usize, record: impl Fn(&mut Recorder)) -> Result<(f64, Duration)> {
    let steps = steps.max(1);
    let run = |n: usize| -> Result<()> {
        for _ in 0..n {
            let mut recorder = Recorder::new(gpu);
            record(&mut recorder);
            recorder.submit(gpu);
        }
        gpu.wait()
    };
    let mut t0 = Instant::now();
    run(1)?;
    let first = since_process_start();
    let timed = if warmup == 0 {
        steps - 1
    } else {
        run(warmup - 1)?;
        t0 = Instant::now();
        steps
    };
    run(timed)?;
    Ok((t0.elapsed().as_secs_f64() / steps as f64, first))
}

/// Time of each dispatch of a training step, summed by kernel and grid size, slowest first.
fn profile(gpu: &Gpu, exec: &Executor) -> Result<Vec<ProfiledKernel>> {
    let mut by_grid: BTreeMap<(String, [u32; 3]), f64> = BTreeMap::new();
    for d in exec.train_dispatches() {
        let (seconds, _) = time_steps(gpu, 1, 2, |recorder| recorder.dispatch(d))?;
        *by_grid.entry((d.label.clone(), d.workgroups)).or_default() += seconds * 1e3;
    }
    let mut out: Vec<ProfiledKernel> =
        by_grid.into_iter().map(|((label, workgroups), ms)| ProfiledKernel { label, workgroups, ms }).collect();
    out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(out)
}

/// Each kernel's time over all its grid sizes, slowest first.
fn by_label(profile: &[ProfiledKernel]) -> Vec<(&str, f64)> {
    let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
    for k in profile {
        *totals.entry(k.label.as_str()).or_default() += k.ms;
    }
    let mut out: Vec<(&str, f64)> = totals.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

pub fn run(
    gpu: &Gpu,
    cfg: &ModelConfig,
    batch: usize,
    warmup: usize,
    steps: usize,
    with_profile: bool,
) -> Result<BenchResult> {
    let graph = cfg.build(batch);
    let flops = graph.flops() as f64;
    let program = compile(&graph, Mode::Train(Loss::monitor(cfg.classes)));
    let params = Arc::new(ParamArena::new(gpu, &program.params)?);
    params.load(gpu, &params.initial_values(1))?;
    let train =
        Executor::new(gpu, program, params.clone(), Some(OptimizerConfig { weight_decay: 0.0, decoupled: true }))?;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
    let image: Vec<f32> = (0..train.input().elems()).map(|_| rng.random::<f32>()).collect();
    // 0/1 for a binary model, class ids for K classes.
    let mask: Vec<f32> = (0..train.target().elems()).map(|_| rng.random_range(0..cfg.classes.max(2)) as f32).collect();
    gpu.write(train.input(), &image);
    gpu.write(train.target(), &mask);
    train.set_hyper(gpu, AdamHyper::new(1e-4, 0.0, 1));
    let (train_s, first_step_after) = time_steps(gpu, warmup, steps, |pass| train.record_train_step(pass))?;
    let profile = if with_profile { profile(gpu, &train)? } else { Vec::new() };
    let infer = Executor::new(gpu, compile(&graph, Mode::Inference), params, None)?;
    gpu.write(infer.input(), &image);
    let (infer_s, _) = time_steps(gpu, warmup, steps, |pass| infer.record_forward(pass))?;
    Ok(BenchResult {
        adapter: gpu.describe(),
        config: format!(
            "{} size {} filters {} channels {}{} batch {batch}",
            cfg.arch.name(),
            cfg.size,
            cfg.filters,
            cfg.channels,
            if cfg.multiclass() { format!(" classes {}", cfg.classes) } else { String::new() }
        ),
        train_images_per_s: batch as f64 / train_s,
        train_ms_per_step: train_s * 1e3,
        train_ms_per_megapixel: train_s * 1e3 / (batch * cfg.size * cfg.size) as f64 * 1e6,
        first_step_after,
        train_gflops: 3.0 * flops / train_s / 1e9,
        infer_images_per_s: batch as f64 / infer_s,
        planned_memory: train.memory_summary(),
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_totals_sum_every_grid_and_sort_slowest_first() {
        let k = |label: &str, x: u32, ms: f64| ProfiledKernel { label: label.into(), workgroups: [x, 1, 1], ms };
        let profile =
            [k("conv::forward", 8, 3.0), k("pool::max", 2, 4.0), k("conv::forward", 16, 2.5), k("add", 1, 0.5)];
        assert_eq!(by_label(&profile), vec![("conv::forward", 5.5), ("pool::max", 4.0), ("add", 0.5)]);
    }
}
