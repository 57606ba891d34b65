//! The whole U-Net on the GPU executor equals the f64 CPU interpreter of the same program:
//! logits, loss and every parameter's gradient, for both decoders and every loss.

mod common;

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use wgunet::executor::{Executor, MemoryPlan, ParamArena};
use wgunet::graph::{compile, reference, Loss, Mode};
use wgunet::model::{Arch, ModelConfig};

fn rel_err(gpu: &[f32], cpu: &[f64]) -> f64 {
    let diff: f64 = gpu.iter().zip(cpu).map(|(g, c)| (*g as f64 - c).powi(2)).sum();
    let norm: f64 = cpu.iter().map(|c| c * c).sum();
    (diff / norm.max(1e-30)).sqrt()
}

fn gradients_match(arch: Arch, channels: usize, loss: Loss) {
    let seed = common::seed();
    let gpu = common::gpu();
    let cfg = ModelConfig { arch, size: 16, channels, filters: 3 };
    let batch = 2;
    let program = compile(&cfg.build(batch), Mode::Train(loss));
    let params = Arc::new(ParamArena::new(gpu, &program.params).unwrap());
    let mut values = params.initial_values(seed);
    // Small positive biases keep the ReLUs of so narrow a net alive, so gradients reach every layer.
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    for (v, info) in values.iter_mut().zip(&program.params) {
        if info.name.ends_with(".bias") {
            v.iter_mut().for_each(|b| *b = rng.random_range(0.05..0.2));
        }
    }
    params.load(gpu, &values).unwrap();
    let exec = Executor::new(gpu, program.clone(), params.clone(), None).unwrap();
    let input: Vec<f32> = (0..exec.input().elems()).map(|_| rng.random::<f32>()).collect();
    let target: Vec<f32> = (0..exec.target().elems()).map(|_| if rng.random_bool(0.3) { 1.0 } else { 0.0 }).collect();
    gpu.write(exec.input(), &input);
    gpu.write(exec.target(), &target);
    gpu.write(exec.loss_sum(), &[0.0f32]);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        exec.record_train_step(&mut pass);
    }
    gpu.queue.submit([enc.finish()]);
    let gpu_grads = params.read(gpu, &params.grads).unwrap();
    let gpu_logits: Vec<f32> = gpu.read(exec.logits()).unwrap();
    let gpu_loss = gpu.read::<f32>(exec.loss_sum()).unwrap()[0] as f64;

    let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let cpu_params: Vec<Vec<f64>> = values.iter().map(|v| to64(v)).collect();
    let cpu = reference::run(&program, &cpu_params, &to64(&input), &to64(&target));

    let what = format!("{arch:?} channels {channels} loss {loss:?} (WGUNET_SEED={seed})");
    let e = rel_err(&gpu_logits, &cpu.buffers[program.logits]);
    assert!(e < 1e-5, "{what}: logits differ, rel err {e:.2e}");
    assert!(
        (gpu_loss - cpu.loss(&program)).abs() < 1e-5 * cpu.loss(&program).abs().max(1.0),
        "{what}: loss {gpu_loss} vs {}",
        cpu.loss(&program)
    );
    for ((info, g), c) in program.params.iter().zip(&gpu_grads).zip(&cpu.param_grads) {
        let norm: f64 = c.iter().map(|x| x * x).sum();
        assert!(norm > 0.0, "{what}: reference gradient of {} is zero; the check would prove nothing", info.name);
        let e = rel_err(g, c);
        assert!(e < 1e-4, "{what}: gradient of {} differs, rel err {e:.2e}", info.name);
    }
}

#[test]
fn unet_transposed_conv_gradients_match_reference() {
    gradients_match(Arch::Unet, 1, Loss::Bce);
}

#[test]
fn unet_upsample_gradients_match_reference() {
    gradients_match(Arch::UnetUpsample, 3, Loss::Bce);
}

#[test]
fn dice_losses_gradients_match_reference() {
    gradients_match(Arch::Unet, 1, Loss::BceDice);
    gradients_match(Arch::UnetUpsample, 1, Loss::Dice);
}

/// The memory plan shares storage, and never between two buffers alive at the same step.
#[test]
fn memory_plan_shares_only_disjoint_lifetimes() {
    let cfg = ModelConfig { arch: Arch::Unet, size: 64, channels: 1, filters: 8 };
    let p = compile(&cfg.build(4), Mode::Train(Loss::BceDice));
    let plan = MemoryPlan::new(&p);
    assert!(plan.planned_bytes() < plan.unplanned_elems as u64 * 4 * 3 / 4, "plan saves under 25%");
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
