//! What a run builds once from its options, before its first epoch: the data in memory, the
//! device, the model with its optimizer, the evaluator and the GPU augmentation.

use std::sync::Arc;

use anyhow::{Context, Result};
use rand::Rng;

use super::dataset::load_dataset;
use super::options::{DataSource, TrainOptions};
use super::patches::TrainPatches;
use super::Trainer;
use crate::data::normalise_dataset;
use crate::data::synth;
use crate::device::Gpu;
use crate::evaluate::Evaluator;
use crate::executor::{Executor, OptimizerConfig, ParamArena};
use crate::graph::{compile, Graph, Loss, Mode};
use crate::kernel::{BufferView, Dispatch};
use crate::model::ModelConfig;
use crate::ops::augment::{Augment, AugmentConfig, ImageTransform};

impl Trainer {
    pub(super) fn new(o: &TrainOptions) -> Result<Trainer> {
        check_options(o)?;
        std::fs::create_dir_all(&o.out).with_context(|| format!("could not create {}", o.out.display()))?;
        let mut data = load_dataset(&o.data, o.model.size, o.model.classes, o.seed, &o.out)?;
        anyhow::ensure!(!data.train.is_empty(), "no training images");
        anyhow::ensure!(!data.test.is_empty(), "no test images: use more images or a smaller --train fraction");
        let normalise = normalise_dataset(o.data.normalise, &mut data.train, &mut data.test, data.channels);
        println!("normalisation: {}", normalise.describe());
        let cfg = ModelConfig { channels: data.channels, normalise, ..o.model.clone() };
        let patches = o.data.patch.map(|p| TrainPatches::new(p, &mut data, o.seed));
        let train_len = patches.as_ref().map_or(data.train.len(), TrainPatches::len);
        let gpu = Gpu::open(&o.device)?;
        println!("device: {}", gpu.describe());

        let batch = o.batch.min(train_len).max(1);
        let graph = cfg.build(batch);
        let program = compile(&graph, Mode::Train(o.loss));
        let params = Arc::new(ParamArena::new(&gpu, &program.params)?);
        let optimizer = OptimizerConfig { weight_decay: o.optimizer.weight_decay, decoupled: true };
        let exec = Executor::new(&gpu, program, params.clone(), Some(optimizer))?;
        let evaluator = Evaluator::new(&gpu, &cfg, params.clone(), batch, data.test.len())?;
        print_model(&cfg, o.loss, &graph, &exec, batch);
        let augmentation = match o.augment.config() {
            Some(config) => Some(BatchAugment::new(&gpu, &exec, &cfg, batch, config)?),
            None => None,
        };
        Ok(Trainer { o: o.clone(), data, cfg, gpu, params, exec, evaluator, batch, augmentation, patches })
    }
}

/// Refuses options that cannot train, before any data are read.
fn check_options(o: &TrainOptions) -> Result<()> {
    // The channels are the data's, not known yet: validated as 1 (or --channels) until then.
    o.model.validate()?;
    Loss::for_classes(Some(o.loss), o.model.classes)?;
    if let DataSource::Synthetic { .. } = o.data.source {
        synth::check_classes(o.model.classes).context("train without --data uses the built-in synthetic slices")?;
    }
    Ok(())
}

/// One line: the model, its loss, its size and cost, and the memory planned for training.
fn print_model(cfg: &ModelConfig, loss: Loss, graph: &Graph, exec: &Executor, batch: usize) {
    let head = if cfg.multiclass() { format!(", {} classes (softmax)", cfg.classes) } else { String::new() };
    println!(
        "{}{head}, loss {}: {} parameters, {:.2} GFLOP per image forward, batch {batch}, {} kernels per step; {}",
        cfg.arch.name(),
        loss.name(),
        graph.param_count(),
        graph.flops() as f64 / batch as f64 / 1e9,
        exec.dispatch_count(),
        exec.memory_summary()
    );
}

/// The GPU augmentation of each batch: the batch is uploaded as it was read, and the augment
/// kernel writes its transformed images and masks into the network's input and target.
pub(super) struct BatchAugment {
    augment: Augment,
    config: AugmentConfig,
    raw_image: BufferView,
    raw_mask: BufferView,
    transforms: BufferView,
    pub dispatch: Dispatch,
}

impl BatchAugment {
    fn new(gpu: &Gpu, exec: &Executor, cfg: &ModelConfig, batch: usize, config: AugmentConfig) -> Result<Self> {
        let augment = Augment { n: batch, channels: cfg.channels, size: cfg.size, class_ids: cfg.multiclass() };
        let raw_image = gpu.buffer("batch images", exec.input().elems())?;
        let raw_mask = gpu.buffer("batch masks", exec.target().elems())?;
        let transforms = gpu.buffer("augmentation transforms", augment.transforms_len())?;
        let dispatch = augment.dispatch(gpu, &transforms, &raw_image, &raw_mask, exec.input(), exec.target())?;
        Ok(BatchAugment { augment, config, raw_image, raw_mask, transforms, dispatch })
    }

    /// Uploads a batch and a random transform per image, drawn from `rng`.
    pub fn upload(&self, gpu: &Gpu, image: &[f32], mask: &[f32], rng: &mut impl Rng) {
        gpu.write(&self.raw_image, image);
        gpu.write(&self.raw_mask, mask);
        let t: Vec<ImageTransform> =
            (0..self.augment.n).map(|_| ImageTransform::random(rng, self.augment.size, &self.config)).collect();
        gpu.write(&self.transforms, &self.augment.pack(&t));
    }
}
