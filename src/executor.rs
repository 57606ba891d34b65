//! Runs a [`Program`] on the GPU: a memory plan places its logical buffers in shared storage,
//! every step becomes one [`Dispatch`] built once, and a training step is recorded into a single
//! compute pass (forward, loss, backward, Adam) with no host readback.

use std::sync::Arc;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::device::{mib, Gpu};
use crate::graph::{GpuBuffers, Init, ParamInfo, Program, Step};
use crate::kernel::{BufferView, Dispatch, Recorder};
use crate::ops::adam::{Adam, AdamHyper};
use crate::ops::dropout;

/// All trained parameters in one buffer (and their gradients and Adam moments in three more of
/// the same layout), so one Adam dispatch updates the whole model. Each parameter starts at an
/// offset aligned for binding it on its own.
///
/// Untrained state (batch norm's running statistics) lives in a buffer of its own, `state`: the
/// optimizer never touches it, and an inference batch norm can bind its read-write running
/// statistics beside read-only parameters (one buffer may not be both in one dispatch). It is
/// loaded, read and saved with the parameters; it has no gradient or moments.
pub struct ParamArena {
    pub values: BufferView,
    pub grads: BufferView,
    pub m: BufferView,
    pub v: BufferView,
    pub state: BufferView,
    /// (first element, length) of each parameter in `values` (trained) or `state` (untrained).
    pub layout: Vec<(usize, usize)>,
    pub infos: Vec<ParamInfo>,
}

impl ParamArena {
    pub fn new(gpu: &Gpu, infos: &[ParamInfo]) -> Result<ParamArena> {
        // At least a 16-byte texel: any parameter can be copied into a texture (kernel::TextureUpload).
        let align = (gpu.limits.min_storage_buffer_offset_alignment as usize / 4).max(4);
        let mut layout = Vec::new();
        let mut end = [0, 0];
        for p in infos {
            let at = &mut end[p.trained as usize];
            layout.push((*at, p.elems()));
            *at = (*at + p.elems()).div_ceil(align) * align;
        }
        let [state, trained] = end;
        Ok(ParamArena {
            values: gpu.buffer("parameters", trained)?,
            grads: gpu.buffer("parameter gradients", trained)?,
            m: gpu.buffer("adam m", trained)?,
            v: gpu.buffer("adam v", trained)?,
            state: gpu.buffer("parameter state", state)?,
            layout,
            infos: infos.to_vec(),
        })
    }

    /// Elements of the trained arenas (values, grads, m, v), alignment padding included.
    pub fn total_elems(&self) -> usize {
        self.values.elems()
    }

    pub fn state_elems(&self) -> usize {
        self.state.elems()
    }

    /// The buffer that holds parameter `id`'s value.
    fn home(&self, id: usize) -> &BufferView {
        if self.infos[id].trained {
            &self.values
        } else {
            &self.state
        }
    }

    /// Parameter `id` as a view of `arena` (one of values / grads / m / v; or `state`, for an
    /// untrained `id`).
    pub fn view(&self, arena: &BufferView, id: usize) -> BufferView {
        let (start, len) = self.layout[id];
        assert!(
            Arc::ptr_eq(&arena.buffer, &self.home(id).buffer) || self.infos[id].trained,
            "'{}' is untrained state: it lives in `state` and has no gradient or moments",
            self.infos[id].name
        );
        BufferView {
            buffer: arena.buffer.clone(),
            offset: arena.offset + start as u64 * 4,
            bytes: len as u64 * 4,
            name: self.infos[id].name.clone(),
        }
    }

    /// Parameter `id`'s value, trained or not.
    pub fn value(&self, id: usize) -> BufferView {
        self.view(self.home(id), id)
    }

    /// Initial values (see [`Init`]), deterministic from `seed`.
    pub fn initial_values(&self, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        self.infos
            .iter()
            .map(|p| match p.init {
                Init::Zeros => vec![0.0; p.elems()],
                Init::Ones => vec![1.0; p.elems()],
                Init::GlorotUniform { fan_in, fan_out } => {
                    uniform(&mut rng, p.elems(), 6.0 / (fan_in + fan_out) as f64)
                }
                Init::HeUniform { fan_in } => uniform(&mut rng, p.elems(), 6.0 / fan_in as f64),
            })
            .collect()
    }

    /// Uploads every parameter's and state tensor's value (in `infos` order) and clears
    /// gradients and optimizer moments.
    pub fn load(&self, gpu: &Gpu, values: &[Vec<f32>]) -> Result<()> {
        let [state, trained] = self.flatten(values, true)?;
        gpu.write(&self.values, &trained);
        gpu.write(&self.state, &state);
        let zeros = vec![0.0f32; trained.len()];
        for b in [&self.grads, &self.m, &self.v] {
            gpu.write(b, &zeros);
        }
        Ok(())
    }

    /// Uploads Adam's moments as [`ParamArena::read`] gives them for `m` and `v` (after
    /// [`ParamArena::load`]), so an optimisation continues where it stopped.
    pub fn load_moments(&self, gpu: &Gpu, m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<()> {
        for (arena, moments) in [(&self.m, m), (&self.v, v)] {
            let [_, trained] = self.flatten(moments, false)?;
            gpu.write(arena, &trained);
        }
        Ok(())
    }

    /// Per-parameter tensors (in `infos` order) laid out as the arenas hold them: [state,
    /// trained]. Without `with_state`, untrained tensors are absent (empty), as moments are.
    fn flatten(&self, tensors: &[Vec<f32>], with_state: bool) -> Result<[Vec<f32>; 2]> {
        anyhow::ensure!(
            tensors.len() == self.infos.len(),
            "{} tensors for a model of {}",
            tensors.len(),
            self.infos.len()
        );
        let mut flat = [vec![0.0f32; self.state_elems()], vec![0.0f32; self.total_elems()]];
        for (((start, len), v), info) in self.layout.iter().zip(tensors).zip(&self.infos) {
            if !info.trained && !with_state {
                continue;
            }
            anyhow::ensure!(v.len() == *len, "'{}' has {} values, the model expects {len}", info.name, v.len());
            flat[info.trained as usize][*start..start + len].copy_from_slice(v);
        }
        Ok(flat)
    }

    /// Each parameter's slice of `arena` (values, grads, m or v). Reading `values` gives the
    /// untrained state too (from `state`): everything a checkpoint saves, in `infos` order. The
    /// other arenas hold nothing for state (an empty vector).
    pub fn read(&self, gpu: &Gpu, arena: &BufferView) -> Result<Vec<Vec<f32>>> {
        let flat: Vec<f32> = gpu.read(arena)?;
        let arena_is_values = Arc::ptr_eq(&arena.buffer, &self.values.buffer);
        let state: Vec<f32> = if arena_is_values { gpu.read(&self.state)? } else { Vec::new() };
        Ok(self
            .layout
            .iter()
            .zip(&self.infos)
            .map(|(&(s, l), info)| match (info.trained, arena_is_values) {
                (true, _) => flat[s..s + l].to_vec(),
                (false, true) => state[s..s + l].to_vec(),
                (false, false) => Vec::new(),
            })
            .collect())
    }
}

/// `n` values uniform in ±sqrt(`bound_squared`).
fn uniform(rng: &mut rand_pcg::Pcg64, n: usize, bound_squared: f64) -> Vec<f32> {
    let limit = bound_squared.sqrt() as f32;
    (0..n).map(|_| rng.random_range(-limit..limit)).collect()
}

/// Where each logical buffer lives: buffers whose lifetimes (first to last step that touches
/// them) do not overlap share a slot.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    pub slot_of: Vec<usize>,
    pub slot_elems: Vec<usize>,
    /// What one buffer per tensor would have taken, in elements.
    pub unplanned_elems: usize,
}

impl MemoryPlan {
    pub fn new(p: &Program) -> MemoryPlan {
        let steps: Vec<&Step> = p.steps().collect();
        let end = steps.len();
        let mut first = vec![usize::MAX; p.buffers.len()];
        let mut last = vec![0usize; p.buffers.len()];
        for (i, s) in steps.iter().enumerate() {
            let (read, written) = s.buffers();
            for &b in written.iter() {
                first[b] = first[b].min(i);
                last[b] = last[b].max(i);
            }
            for &b in read.iter() {
                assert!(
                    first[b] <= i || p.buffers[b].pinned,
                    "buffer '{}' is read before any step writes it",
                    p.buffers[b].name
                );
                last[b] = last[b].max(i);
            }
        }
        for (b, info) in p.buffers.iter().enumerate() {
            if info.pinned || first[b] == usize::MAX {
                first[b] = 0;
                last[b] = end;
            }
        }
        let mut order: Vec<usize> = (0..p.buffers.len()).collect();
        order.sort_by_key(|&b| (first[b], std::cmp::Reverse(p.buffers[b].len)));
        let mut slot_of = vec![usize::MAX; p.buffers.len()];
        let mut slot_elems: Vec<usize> = Vec::new();
        let mut slot_free_after: Vec<usize> = Vec::new();
        let mut slot_pinned: Vec<bool> = Vec::new();
        for b in order {
            let len = p.buffers[b].len;
            let free: Vec<usize> = if p.buffers[b].pinned {
                Vec::new()
            } else {
                (0..slot_elems.len()).filter(|&s| !slot_pinned[s] && slot_free_after[s] < first[b]).collect()
            };
            // Best fit: the smallest free slot that holds it, else the largest (which grows).
            let pick = free
                .iter()
                .copied()
                .filter(|&s| slot_elems[s] >= len)
                .min_by_key(|&s| slot_elems[s])
                .or_else(|| free.iter().copied().max_by_key(|&s| slot_elems[s]));
            let s = match pick {
                Some(s) => s,
                None => {
                    slot_elems.push(0);
                    slot_free_after.push(0);
                    slot_pinned.push(p.buffers[b].pinned);
                    slot_elems.len() - 1
                }
            };
            slot_elems[s] = slot_elems[s].max(len);
            slot_free_after[s] = last[b];
            slot_of[b] = s;
        }
        MemoryPlan { slot_of, slot_elems, unplanned_elems: p.buffers.iter().map(|b| b.len).sum() }
    }

    pub fn planned_bytes(&self) -> u64 {
        self.slot_elems.iter().map(|&e| e as u64 * 4).sum()
    }
}

/// Hyper-parameters of the optimizer the trainer steps with.
#[derive(Clone, Copy, Debug)]
pub struct OptimizerConfig {
    pub weight_decay: f32,
    /// AdamW (decoupled decay) rather than Adam with L2.
    pub decoupled: bool,
}

/// A program bound to device buffers, ready to record.
pub struct Executor {
    pub program: Program,
    pub plan: MemoryPlan,
    pub views: Vec<BufferView>,
    pub params: Arc<ParamArena>,
    forward: Vec<Dispatch>,
    loss: Vec<Dispatch>,
    backward: Vec<Dispatch>,
    optimizer: Option<(Dispatch, BufferView)>,
    /// The (seed, step) every dropout layer's mask derives from ([`Executor::set_step`]).
    dropout_rng: BufferView,
    /// The device's texture pool once this program's dispatches were built (0 where kernels
    /// read storage buffers).
    texture_bytes: u64,
    /// The device's kernel scratch ([`Gpu::scratch`]: split GEMMs' parts) once the dispatches
    /// were built.
    scratch_bytes: u64,
}

impl Executor {
    pub fn new(
        gpu: &Gpu,
        program: Program,
        params: Arc<ParamArena>,
        optimizer: Option<OptimizerConfig>,
    ) -> Result<Executor> {
        let plan = MemoryPlan::new(&program);
        let slots: Vec<BufferView> = plan
            .slot_elems
            .iter()
            .enumerate()
            .map(|(i, &e)| gpu.buffer(&format!("slot {i}"), e))
            .collect::<Result<_>>()?;
        let views: Vec<BufferView> = program
            .buffers
            .iter()
            .enumerate()
            .map(|(b, info)| {
                let slot = &slots[plan.slot_of[b]];
                BufferView {
                    buffer: slot.buffer.clone(),
                    offset: 0,
                    bytes: info.len as u64 * 4,
                    name: info.name.clone(),
                }
            })
            .collect();
        let dropout_rng = dropout::rng_buffer(gpu);
        let values: Vec<BufferView> = (0..params.infos.len()).map(|id| params.value(id)).collect();
        let grads: Vec<Option<BufferView>> =
            params.infos.iter().enumerate().map(|(id, p)| p.trained.then(|| params.view(&params.grads, id))).collect();
        let on_gpu = GpuBuffers { gpu, buffers: &views, params: &values, grads: &grads, dropout_rng: &dropout_rng };
        // In parallel: building a dispatch compiles its pipeline on first use (naga, then the
        // driver), most of a process's start-up. The order of the steps is kept.
        let build = |steps: &[Step]| -> Result<Vec<Dispatch>> {
            let per_step: Vec<Vec<Dispatch>> =
                steps.par_iter().map(|s| s.kernel().dispatch(&on_gpu)).collect::<Result<_>>()?;
            Ok(per_step.into_iter().flatten().collect())
        };
        let forward = build(&program.forward)?;
        let loss = build(&program.loss)?;
        let backward = build(&program.backward)?;
        let optimizer = match optimizer {
            Some(cfg) => {
                let hyper = gpu.uniform_buffer("adam hyper-parameters", std::mem::size_of::<AdamHyper>() as u64);
                gpu.write(&hyper, &[AdamHyper::new(1e-3, cfg.weight_decay, 1)]);
                let adam = Adam { n: params.total_elems(), decoupled: cfg.decoupled };
                Some((adam.step(gpu, &hyper, &params.values, &params.grads, &params.m, &params.v)?, hyper))
            }
            None => None,
        };
        let (texture_bytes, scratch_bytes) = (gpu.texture_pool_bytes(), gpu.scratch_bytes());
        Ok(Executor {
            program,
            plan,
            views,
            params,
            forward,
            loss,
            backward,
            optimizer,
            dropout_rng,
            texture_bytes,
            scratch_bytes,
        })
    }

    /// Sets the (seed, step) that the dropout masks of the next recorded steps derive from: call
    /// it before each training step with a new `step`, or every step drops the same elements.
    /// Programs without dropout (every evaluation and inference program) ignore it.
    pub fn set_step(&self, gpu: &Gpu, seed: u64, step: u32) {
        gpu.write(&self.dropout_rng, &dropout::rng_words(seed, step));
    }

    pub fn input(&self) -> &BufferView {
        &self.views[self.program.input]
    }
    pub fn target(&self) -> &BufferView {
        &self.views[self.program.target]
    }
    pub fn logits(&self) -> &BufferView {
        &self.views[self.program.logits]
    }
    pub fn loss_sum(&self) -> &BufferView {
        &self.views[self.program.loss_sum]
    }

    /// Sets the learning rate and step count (bias correction) for the next optimizer step.
    pub fn set_hyper(&self, gpu: &Gpu, hyper: AdamHyper) {
        if let Some((_, buf)) = &self.optimizer {
            gpu.write(buf, &[hyper]);
        }
    }

    pub fn record_forward(&self, recorder: &mut Recorder) {
        self.forward.iter().for_each(|d| recorder.dispatch(d));
    }

    /// Forward, loss (accumulated into `loss_sum`), backward and the optimizer step.
    pub fn record_train_step(&self, recorder: &mut Recorder) {
        self.record_forward(recorder);
        self.record_loss(recorder);
        self.backward.iter().for_each(|d| recorder.dispatch(d));
        if let Some((d, _)) = &self.optimizer {
            recorder.dispatch(d);
        }
    }

    pub fn record_loss(&self, recorder: &mut Recorder) {
        self.loss.iter().for_each(|d| recorder.dispatch(d));
    }

    /// Every dispatch of a training step, in order (for per-kernel profiling).
    pub fn train_dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.forward.iter().chain(&self.loss).chain(&self.backward).chain(self.optimizer.as_ref().map(|(d, _)| d))
    }

    pub fn dispatch_count(&self) -> usize {
        self.forward.len() + self.loss.len() + self.backward.len() + self.optimizer.is_some() as usize
    }

    /// One line on the memory plan.
    pub fn memory_summary(&self) -> String {
        let trained = self.params.total_elems() as u64 * 4 * if self.optimizer.is_some() { 4 } else { 1 };
        let params = trained + self.params.state_elems() as u64 * 4;
        let textures = if self.texture_bytes > 0 {
            format!(", textures the kernels read through {}", mib(self.texture_bytes))
        } else {
            String::new()
        };
        let scratch = if self.scratch_bytes > 0 {
            format!(", the kernels' own scratch {}", mib(self.scratch_bytes))
        } else {
            String::new()
        };
        format!(
            "activations and gradients {} (planned; {} without sharing), parameters and optimizer state {}{textures}{scratch}",
            mib(self.plan.planned_bytes()),
            mib(self.plan.unplanned_elems as u64 * 4),
            mib(params)
        )
    }
}
