//! `wgunet train`: the seed notebook's recipe on the GPU. Data are decoded once on CPU threads
//! and kept in memory; each step uploads one batch, augments it on the GPU and records forward,
//! loss, backward and Adam into one command buffer. The host reads back only the loss (for the
//! progress bar, every few steps) and the test metrics once an epoch.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::checkpoint::{self, DatasetRecord, RunRecord};
use crate::data::load::{Preprocess, Sample};
use crate::data::{load, pairs, split, synth};
use crate::device::{DeviceChoice, Gpu};
use crate::evaluate::{Evaluator, Metrics};
use crate::executor::{Executor, OptimizerConfig, ParamArena};
use crate::finetune::{self, InitRecord};
use crate::graph::{compile, Loss, Mode};
use crate::infer::postprocess::argmax;
use crate::model::{Arch, ModelConfig};
use crate::ops::adam::AdamHyper;
use crate::ops::augment::{Augment, AugmentPreset, ImageTransform};
use crate::report;

/// Where training data come from.
#[derive(Clone, Debug)]
pub enum DataSource {
    /// The built-in synthetic MRI-like slices (tumour masks, or with K classes tumour,
    /// ventricles and skull: see [`synth`]).
    Synthetic { count: usize },
    /// A folder of image/mask pairs, split reproducibly.
    Folder { dir: PathBuf, train: f64, max_images: Option<usize> },
    /// Lists written by `wgunet split`.
    Lists { train: PathBuf, test: PathBuf },
}

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub source: DataSource,
    pub device: DeviceChoice,
    pub arch: Arch,
    pub size: usize,
    pub filters: usize,
    pub dropout: f32,
    /// None: from the data (grayscale stays grayscale).
    pub channels: Option<usize>,
    /// 1: binary masks (sigmoid head). K ≥ 2: masks of class ids 0..K (softmax head).
    pub classes: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub loss: Loss,
    pub augment: AugmentPreset,
    pub seed: u64,
    pub out: PathBuf,
    pub command: String,
    /// Start from another run's weights instead of the random initialisation.
    pub init: Option<InitRecord>,
}

/// Decoded train and test samples, and how to find them again.
pub struct Dataset {
    pub train: Vec<Sample>,
    pub test: Vec<Sample>,
    /// A name per test sample (file stem, or `synthetic-N`), for panels.
    pub test_names: Vec<String>,
    /// Pairs found before splitting.
    pub pairs: usize,
    pub record: DatasetRecord,
    pub channels: usize,
}

/// Loads the data of `source` at `size` for a model of `classes` classes (binary masks for 1,
/// class ids for K), writing the split lists into `out` when there are files.
pub fn load_dataset(
    source: &DataSource,
    size: usize,
    channels: Option<usize>,
    classes: usize,
    seed: u64,
    out: &Path,
) -> Result<Dataset> {
    match source {
        DataSource::Synthetic { count } => {
            let all = synth::samples_with_classes(seed, *count, size, classes)?;
            let n_train = ((*count as f64) * 0.7).round() as usize;
            let mut all = all;
            let test = all.split_off(n_train);
            println!("built-in synthetic data: {} slices ({} train, {} test)", count, all.len(), test.len());
            let test_names = (n_train..*count).map(|i| format!("synthetic-{i:04}")).collect();
            Ok(Dataset {
                test_names,
                pairs: *count,
                train: expand_channels(all, channels.unwrap_or(1)),
                test: expand_channels(test, channels.unwrap_or(1)),
                record: DatasetRecord::Synthetic { seed, count: *count, train: 0.7 },
                channels: channels.unwrap_or(1),
            })
        }
        DataSource::Folder { dir, train, max_images } => {
            let pairing = pairs::find_pairs(dir)?;
            println!("{}", pairs::describe(&pairing));
            let (tr, te) = split::split(&pairing.pairs, *train, seed, *max_images)?;
            println!(
                "split {:.0}/{:.0} with seed {seed}: {} train, {} test",
                train * 100.0,
                (1.0 - train) * 100.0,
                tr.len(),
                te.len()
            );
            split::write_list(&out.join("train.txt"), &tr)?;
            split::write_list(&out.join("test.txt"), &te)?;
            let record = DatasetRecord::Lists { source: dir.display().to_string() };
            load_lists(&tr, &te, size, channels, classes, record, pairing.pairs.len())
        }
        DataSource::Lists { train, test } => {
            let (tr, te) = (split::read_list(train)?, split::read_list(test)?);
            split::write_list(&out.join("train.txt"), &tr)?;
            split::write_list(&out.join("test.txt"), &te)?;
            let record = DatasetRecord::Lists { source: train.display().to_string() };
            load_lists(&tr, &te, size, channels, classes, record, tr.len() + te.len())
        }
    }
}

fn load_lists(
    tr: &[pairs::Pair],
    te: &[pairs::Pair],
    size: usize,
    channels: Option<usize>,
    classes: usize,
    record: DatasetRecord,
    pairs: usize,
) -> Result<Dataset> {
    let channels = match channels {
        Some(c) => c,
        None => load::detect_channels(tr)?,
    };
    let pre = Preprocess { size, channels };
    let t0 = Instant::now();
    let train = load::load_all_with_classes(tr, &pre, classes)?;
    let test = load::load_all_with_classes(te, &pre, classes)?;
    println!(
        "decoded {} images at {size}x{size}, {channels} channel(s), in {:.1} s (kept in memory)",
        train.len() + test.len(),
        t0.elapsed().as_secs_f64()
    );
    let test_names =
        te.iter().map(|p| p.image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    Ok(Dataset { train, test, test_names, pairs, record, channels })
}

/// Synthetic slices are grayscale; a 3-channel model gets them replicated.
fn expand_channels(samples: Vec<Sample>, channels: usize) -> Vec<Sample> {
    if channels == 1 {
        return samples;
    }
    samples
        .into_iter()
        .map(|s| Sample { image: s.image.repeat(channels), mask: s.mask, native_size: s.native_size })
        .collect()
}

/// The seed's callbacks, on the training loss: ReduceLROnPlateau(factor 0.5, patience 3) and
/// EarlyStopping(patience 6, restore_best_weights).
struct Callbacks {
    best: f64,
    best_epoch: usize,
    since_best: usize,
    since_lr_change: usize,
}

impl Callbacks {
    /// Returns (improved, halve learning rate, stop).
    fn observe(&mut self, epoch: usize, loss: f64) -> (bool, bool, bool) {
        // Keras' min_delta for ReduceLROnPlateau is 1e-4; EarlyStopping's is 0.
        let improved = loss < self.best;
        if improved {
            self.best = loss;
            self.best_epoch = epoch;
            self.since_best = 0;
            self.since_lr_change = 0;
        } else {
            self.since_best += 1;
            self.since_lr_change += 1;
        }
        let halve = self.since_lr_change >= 3;
        if halve {
            self.since_lr_change = 0;
        }
        (improved, halve, self.since_best >= 6)
    }
}

pub fn train(o: &TrainOptions) -> Result<Metrics> {
    let cfg = ModelConfig {
        arch: o.arch,
        size: o.size,
        channels: o.channels.unwrap_or(1),
        filters: o.filters,
        dropout: o.dropout,
        classes: o.classes,
    };
    cfg.validate()?;
    Loss::for_classes(Some(o.loss), o.classes)?;
    if let DataSource::Synthetic { .. } = o.source {
        synth::check_classes(o.classes).context("train without --data uses the built-in synthetic slices")?;
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("could not create {}", o.out.display()))?;
    let data = load_dataset(&o.source, o.size, o.channels, o.classes, o.seed, &o.out)?;
    anyhow::ensure!(!data.train.is_empty(), "no training images");
    anyhow::ensure!(!data.test.is_empty(), "no test images: use more images or a smaller --train fraction");
    let cfg = ModelConfig { channels: data.channels, ..cfg };
    let gpu = Gpu::open(&o.device)?;
    println!("device: {}", gpu.describe());

    let batch = o.batch.min(data.train.len()).max(1);
    let graph = cfg.build(batch);
    let program = compile(&graph, Mode::Train(o.loss));
    let params = Arc::new(ParamArena::new(&gpu, &program.params)?);
    params.load(&gpu, &finetune::initial_values(&params, &cfg, o.init.as_ref(), o.seed)?)?;
    let exec = Executor::new(
        &gpu,
        program,
        params.clone(),
        Some(OptimizerConfig { weight_decay: o.weight_decay, decoupled: true }),
    )?;
    let evaluator = Evaluator::new(&gpu, &cfg, params.clone(), batch, data.test.len())?;
    let head = if cfg.multiclass() { format!(", {} classes (softmax)", cfg.classes) } else { String::new() };
    println!(
        "{}{head}, loss {}: {} parameters, {:.2} GFLOP per image forward, batch {batch}, {} kernels per step; {}",
        cfg.arch.name(),
        o.loss.name(),
        graph.param_count(),
        graph.flops() as f64 / batch as f64 / 1e9,
        exec.dispatch_count(),
        exec.memory_summary()
    );

    let augment = Augment { n: batch, channels: cfg.channels, size: cfg.size, class_ids: cfg.multiclass() };
    let aug_cfg = o.augment.config();
    let raw_image = gpu.buffer("batch images", exec.input().elems())?;
    let raw_mask = gpu.buffer("batch masks", exec.target().elems())?;
    let transforms = gpu.buffer("augmentation transforms", augment.transforms_len())?;
    let augment_dispatch = augment.dispatch(&gpu, &transforms, &raw_image, &raw_mask, exec.input(), exec.target())?;

    let record = |epochs_run, best_epoch| RunRecord {
        model: cfg.clone(),
        loss: o.loss,
        augment: o.augment,
        dataset: data.record.clone(),
        command: o.command.clone(),
        epochs_run,
        best_epoch,
        wgunet_version: env!("CARGO_PKG_VERSION").to_string(),
        init: o.init.clone(),
    };
    checkpoint::save_record(&o.out, &record(0, 0))?;
    let csv_path = o.out.join("metrics.csv");
    let mut csv =
        std::fs::File::create(&csv_path).with_context(|| format!("could not create {}", csv_path.display()))?;
    writeln!(
        csv,
        "epoch,lr,train_loss,test_loss,mean_pixel_accuracy,mean_iou,mean_dice,micro_iou,micro_dice,train_images_per_s"
    )?;

    let mut rng = rand_pcg::Pcg64::seed_from_u64(o.seed ^ 0x5eed);
    let mut lr = o.lr;
    let mut step = 0u32;
    let mut callbacks = Callbacks { best: f64::INFINITY, best_epoch: 0, since_best: 0, since_lr_change: 0 };
    let mut last_metrics = Metrics::default();
    let steps_per_epoch = data.train.len().div_ceil(batch);
    let (img_len, mask_len) = (exec.input().elems() / batch, exec.target().elems() / batch);
    let mut epochs_run = 0;
    for epoch in 1..=o.epochs {
        let mut order: Vec<usize> = (0..data.train.len()).collect();
        order.shuffle(&mut rng);
        // Every sample once an epoch; the last batch is topped up from the start of the order.
        let bar = indicatif::ProgressBar::new(steps_per_epoch as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", o.epochs));
        gpu.write(exec.loss_sum(), &[0.0f32]);
        let t0 = Instant::now();
        let mut image = vec![0.0f32; img_len * batch];
        let mut mask = vec![0.0f32; mask_len * batch];
        for s in 0..steps_per_epoch {
            for i in 0..batch {
                let sample = &data.train[order[(s * batch + i) % order.len()]];
                image[i * img_len..(i + 1) * img_len].copy_from_slice(&sample.image);
                mask[i * mask_len..(i + 1) * mask_len].copy_from_slice(&sample.mask);
            }
            step += 1;
            exec.set_hyper(&gpu, AdamHyper::new(lr, o.weight_decay, step));
            exec.set_step(&gpu, o.seed, step);
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            if let Some(aug_cfg) = &aug_cfg {
                gpu.write(&raw_image, &image);
                gpu.write(&raw_mask, &mask);
                let t: Vec<ImageTransform> =
                    (0..batch).map(|_| ImageTransform::random(&mut rng, cfg.size, aug_cfg)).collect();
                gpu.write(&transforms, &augment.pack(&t));
            } else {
                gpu.write(exec.input(), &image);
                gpu.write(exec.target(), &mask);
            }
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                if aug_cfg.is_some() {
                    augment_dispatch.record(&mut pass);
                }
                exec.record_train_step(&mut pass);
            }
            gpu.queue.submit([enc.finish()]);
            if step == 1 {
                gpu.wait()?;
                bar.suspend(crate::bench::print_first_step);
            }
            // Reading the running loss waits for the GPU; do it a few times an epoch only.
            if (s + 1) % 8 == 0 || s + 1 == steps_per_epoch {
                let loss = gpu.read::<f32>(exec.loss_sum())?[0] as f64 / (s + 1) as f64;
                let ips = ((s + 1) * batch) as f64 / t0.elapsed().as_secs_f64();
                bar.set_message(format!("loss {loss:.4}  {ips:.1} images/s"));
            } else {
                gpu.check()?;
            }
            bar.inc(1);
        }
        gpu.wait()?;
        let train_seconds = t0.elapsed().as_secs_f64();
        let train_loss = gpu.read::<f32>(exec.loss_sum())?[0] as f64 / steps_per_epoch as f64;
        let ips = (steps_per_epoch * batch) as f64 / train_seconds;
        bar.finish_and_clear();
        let m = evaluator.evaluate(&gpu, &data.test)?;
        println!(
            "epoch {epoch}/{}: loss {train_loss:.4}, test loss {:.4}, mean pixel accuracy {:.4}, mean IoU {:.4}, mean Dice {:.4}  ({ips:.1} images/s, lr {lr:.2e})",
            o.epochs, m.loss, m.mean_pixel_accuracy, m.mean_iou, m.mean_dice
        );
        writeln!(
            csv,
            "{epoch},{lr},{train_loss},{},{},{},{},{},{},{ips}",
            m.loss, m.mean_pixel_accuracy, m.mean_iou, m.mean_dice, m.micro_iou, m.micro_dice
        )?;
        csv.flush()?;
        report::curves(&csv_path, &o.out.join("curves.png"))?;
        epochs_run = epoch;
        let (improved, halve, stop) = callbacks.observe(epoch, train_loss);
        let values = params.read(&gpu, &params.values)?;
        checkpoint::save_weights(&o.out.join("last.safetensors"), &params.infos, &values)?;
        if improved {
            checkpoint::save_weights(&o.out.join("best.safetensors"), &params.infos, &values)?;
        }
        checkpoint::save_record(&o.out, &record(epochs_run, callbacks.best_epoch))?;
        last_metrics = m;
        if halve {
            lr *= 0.5;
            println!("  loss has not improved for 3 epochs: learning rate halved to {lr:.2e}");
        }
        if stop {
            println!("  loss has not improved for 6 epochs: stopping early");
            break;
        }
    }
    if callbacks.best_epoch != epochs_run {
        // EarlyStopping(restore_best_weights): report the best epoch's weights.
        let best = checkpoint::load_weights(&o.out.join("best.safetensors"), &params.infos)?;
        params.load(&gpu, &best)?;
        last_metrics = evaluator.evaluate(&gpu, &data.test)?;
        println!("restored the weights of epoch {} (lowest training loss)", callbacks.best_epoch);
    }
    last_metrics.print("test split");
    checkpoint::write_atomic(&o.out.join("metrics.json"), serde_json::to_string_pretty(&last_metrics)?.as_bytes())?;
    write_run_report(o, &gpu, &evaluator, &data, &cfg, &last_metrics)?;
    println!("saved {}", o.out.display());
    Ok(last_metrics)
}

/// Panels of the best and worst test images and `report.md`, from the final weights.
fn write_run_report(
    o: &TrainOptions,
    gpu: &Gpu,
    evaluator: &Evaluator,
    data: &Dataset,
    cfg: &ModelConfig,
    metrics: &Metrics,
) -> Result<()> {
    let probs = evaluator.probabilities(gpu, &data.test)?;
    let panels = if cfg.multiclass() {
        let truths: Vec<Vec<u8>> = data.test.iter().map(|s| s.mask.iter().map(|&v| v as u8).collect()).collect();
        let preds: Vec<Vec<u8>> = probs.iter().map(|p| argmax(p, cfg.classes)).collect();
        let cases: Vec<report::ClassCase<'_>> = data
            .test
            .iter()
            .zip(&truths)
            .zip(&preds)
            .zip(&data.test_names)
            .map(|(((s, truth), pred), name)| report::ClassCase { name, image: &s.image, truth, pred })
            .collect();
        report::write_class_panels(&o.out, &cases, cfg.classes, cfg.channels, cfg.size, 3, 3)?
    } else {
        let cases: Vec<report::Case<'_>> = data
            .test
            .iter()
            .zip(&probs)
            .zip(&data.test_names)
            .map(|((s, p), name)| report::Case { name, image: &s.image, truth: &s.mask, prob: p })
            .collect();
        report::write_panels(&o.out, &cases, cfg.channels, cfg.size, 3, 3)?
    };
    let dataset = match &data.record {
        DatasetRecord::Synthetic { seed, .. } => format!("built-in synthetic slices (seed {seed})"),
        DatasetRecord::Lists { source } => source.clone(),
    };
    report::write_report(
        &o.out,
        &report::ReportInfo {
            command: o.command.clone(),
            dataset,
            pairs: data.pairs,
            train: data.train.len(),
            test: data.test.len(),
            size: cfg.size,
            channels: cfg.channels,
            metrics: report::metric_rows(metrics),
            panels,
        },
    )?;
    println!("wrote {}", o.out.join("report.md").display());
    Ok(())
}
