//! `wgunet eval` and `wgunet predict`: a saved run applied to data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::checkpoint::{self, DatasetRecord, RunRecord};
use crate::data::load::{self, Preprocess, Sample};
use crate::data::{pairs, split, synth};
use crate::device::{DeviceChoice, Gpu};
use crate::evaluate::{Evaluator, Metrics};
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
        Preprocess { size: self.record.model.size, channels: self.record.model.channels }
    }

    pub fn evaluator(&self, samples: usize, batch: usize) -> Result<Evaluator> {
        Evaluator::new(&self.gpu, &self.record.model, self.params.clone(), batch, samples)
    }
}

/// What `wgunet eval` scores.
pub enum EvalData {
    /// The run's own test split.
    RunTestSplit,
    /// Every pair found in a folder.
    Folder(PathBuf),
    /// Pairs listed in a file.
    List(PathBuf),
}

pub fn eval(
    run: &Path,
    data: &EvalData,
    device: &DeviceChoice,
    batch: usize,
    json_out: Option<&Path>,
) -> Result<Metrics> {
    let model = LoadedModel::open(run, device)?;
    let pre = model.preprocess();
    let (samples, label) = match data {
        EvalData::RunTestSplit => match &model.record.dataset {
            DatasetRecord::Synthetic { seed, count, train } => {
                let n_train = ((*count as f64) * train).round() as usize;
                let mut all = synth::samples(*seed, *count, pre.size);
                let test = all.split_off(n_train);
                (replicate(test, pre.channels), "the run's test split (synthetic)".to_string())
            }
            DatasetRecord::Lists { .. } => {
                let list = run.join("test.txt");
                (load::load_all(&split::read_list(&list)?, &pre)?, format!("the run's test split ({})", list.display()))
            }
        },
        EvalData::Folder(dir) => {
            let pairing = pairs::find_pairs(dir)?;
            println!("{}", pairs::describe(&pairing));
            (load::load_all(&pairing.pairs, &pre)?, dir.display().to_string())
        }
        EvalData::List(file) => (load::load_all(&split::read_list(file)?, &pre)?, file.display().to_string()),
    };
    if samples.is_empty() {
        bail!("nothing to evaluate in {label}");
    }
    let evaluator = model.evaluator(samples.len(), batch)?;
    let m = evaluator.evaluate(&model.gpu, &samples)?;
    m.print(&format!("{label}, model {}", run.display()));
    let out = json_out.map(Path::to_path_buf).unwrap_or_else(|| run.join("eval.json"));
    checkpoint::write_atomic(&out, serde_json::to_string_pretty(&m)?.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(m)
}

fn replicate(samples: Vec<Sample>, channels: usize) -> Vec<Sample> {
    samples
        .into_iter()
        .map(|s| Sample { image: s.image.repeat(channels), mask: s.mask, native_size: s.native_size })
        .collect()
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

fn images_in(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let entries = std::fs::read_dir(input)
        .with_context(|| format!("--input {} is neither a file nor a folder", input.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("--input {} holds no images ({})", input.display(), IMAGE_EXTENSIONS.join(", "));
    }
    Ok(files)
}

/// Writes one 0/255 mask PNG per image, at the image's own size, named by its stem.
pub fn predict(run: &Path, input: &Path, output: &Path, device: &DeviceChoice, batch: usize) -> Result<usize> {
    let model = LoadedModel::open(run, device)?;
    let pre = model.preprocess();
    let files = images_in(input)?;
    std::fs::create_dir_all(output).with_context(|| format!("could not create {}", output.display()))?;
    let evaluator = model.evaluator(files.len(), batch)?;
    let size = pre.size as u32;
    for chunk in files.chunks(batch) {
        let samples: Vec<Sample> = chunk
            .iter()
            .map(|f| {
                let (image, native_size) = load::load_image(f, &pre)?;
                Ok(Sample { image, mask: vec![0.0; pre.size * pre.size], native_size })
            })
            .collect::<Result<_>>()?;
        let probs = evaluator.probabilities(&model.gpu, &samples)?;
        for ((file, sample), prob) in chunk.iter().zip(&samples).zip(probs) {
            // Resize the probabilities (not the mask) back, then threshold: smoother edges.
            let map = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(size, size, prob).expect("size");
            let (w, h) = sample.native_size;
            let native = image::imageops::resize(&map, w, h, image::imageops::FilterType::Triangle);
            let mask = image::GrayImage::from_fn(w, h, |x, y| {
                image::Luma([if native.get_pixel(x, y).0[0] > 0.5 { 255 } else { 0 }])
            });
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("mask");
            let path = output.join(format!("{stem}.png"));
            let mut bytes = Vec::new();
            mask.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
            checkpoint::write_atomic(&path, &bytes)?;
        }
    }
    println!("wrote {} masks to {}", files.len(), output.display());
    Ok(files.len())
}
