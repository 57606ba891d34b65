//! A saved run loaded onto a device: its record (`model.json`) and its weights.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use crate::checkpoint::{self, RunRecord};
use crate::data::load::Preprocess;
use crate::device::{DeviceChoice, Gpu};
use crate::evaluate::Evaluator;
use crate::executor::ParamArena;
use crate::graph::{compile, Mode};

/// A trained model on a device, ready to segment batches.
pub struct LoadedModel {
    pub gpu: Gpu,
    pub record: RunRecord,
    pub params: Arc<ParamArena>,
}

impl LoadedModel {
    pub fn open(run: &Path, device: &DeviceChoice) -> Result<LoadedModel> {
        let record = checkpoint::load_record(run)?;
        let gpu = Gpu::open(device)?;
        let program = compile(&record.model.build(1), Mode::Inference);
        let weights = checkpoint::load_weights(&checkpoint::weights_path(run)?, &program.params)?;
        let params = Arc::new(ParamArena::new(&gpu, &program.params)?);
        params.load(&gpu, &weights)?;
        Ok(LoadedModel { gpu, record, params })
    }

    pub fn preprocess(&self) -> Preprocess {
        Preprocess::for_model(&self.record.model)
    }

    pub fn evaluator(&self, samples: usize, batch: usize) -> Result<Evaluator> {
        Evaluator::new(&self.gpu, &self.record.model, self.params.clone(), batch, samples)
    }

    /// 1 for a binary model, else its K classes.
    pub fn classes(&self) -> usize {
        self.record.model.classes
    }
}
