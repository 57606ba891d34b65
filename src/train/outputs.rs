//! What a run writes for people besides its weights: `metrics.csv` (a row an epoch), and at the
//! end panels of the best and worst test images and `report.md`.

use anyhow::Result;

use super::dataset::Dataset;
use super::epoch::EpochLoss;
use super::options::TrainOptions;
use crate::checkpoint::{self, DatasetRecord};
use crate::device::Gpu;
use crate::evaluate::{Evaluator, Metrics};
use crate::infer::postprocess::argmax;
use crate::model::ModelConfig;
use crate::report::{self, PANELS_EACH};

const METRICS_HEADER: &str =
    "epoch,lr,train_loss,test_loss,mean_pixel_accuracy,mean_iou,mean_dice,micro_iou,micro_dice,train_images_per_s";

/// The `metrics.csv` row of an epoch trained at `lr`.
pub(super) fn metrics_row(epoch: usize, lr: f32, loss: &EpochLoss, m: &Metrics) -> String {
    let (train_loss, ips) = (loss.train_loss, loss.images_per_s);
    format!(
        "{epoch},{lr},{train_loss},{},{},{},{},{},{},{ips}",
        m.loss, m.mean_pixel_accuracy, m.mean_iou, m.mean_dice, m.micro_iou, m.micro_dice
    )
}

/// metrics.csv, rewritten whole (atomically) so that it never holds half a row.
pub(super) fn write_metrics_csv(o: &TrainOptions, rows: &[String]) -> Result<()> {
    let text: String =
        std::iter::once(METRICS_HEADER).chain(rows.iter().map(String::as_str)).map(|l| format!("{l}\n")).collect();
    checkpoint::write_atomic(&o.out.join("metrics.csv"), text.as_bytes())
}

/// Panels of the best and worst test images and `report.md`, from the final weights.
pub(super) fn write_run_report(
    o: &TrainOptions,
    gpu: &Gpu,
    evaluator: &Evaluator,
    data: &Dataset,
    train_images: usize,
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
        report::write_class_panels(&o.out, &cases, cfg.classes, cfg.channels, cfg.size, PANELS_EACH, PANELS_EACH)?
    } else {
        let cases: Vec<report::Case<'_>> = data
            .test
            .iter()
            .zip(&probs)
            .zip(&data.test_names)
            .map(|((s, p), name)| report::Case { name, image: &s.image, truth: &s.mask, prob: p })
            .collect();
        report::write_panels(&o.out, &cases, cfg.channels, cfg.size, PANELS_EACH, PANELS_EACH)?
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
            train: train_images,
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
