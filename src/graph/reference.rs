//! Runs a [`Program`] on the CPU in f64 with each op's reference function: the ground truth the
//! GPU executor's whole-network gradients are tested against.

use super::{CpuBuffers, Program};

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
    let mut cpu = CpuBuffers {
        buffers: p.buffers.iter().map(|i| vec![0.0; i.len]).collect(),
        grads: params.iter().map(|v| vec![0.0; v.len()]).collect(),
        params: params.to_vec(),
        seed,
        step,
    };
    cpu.buffers[p.input].copy_from_slice(input);
    cpu.buffers[p.target].copy_from_slice(target);
    for s in p.steps() {
        s.kernel().reference(&mut cpu);
    }
    CpuRun { buffers: cpu.buffers, param_grads: cpu.grads, params: cpu.params }
}
