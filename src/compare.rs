//! `wgunet compare`: trains several architectures on the same split with the same seed and
//! tabulates parameters, training speed and test metrics (CSV and Markdown beside each run).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::checkpoint::write_atomic;
use crate::model::Arch;
use crate::train::{self, TrainOptions};

pub struct Row {
    pub arch: Arch,
    pub params: usize,
    pub train_images_per_s: f64,
    pub metrics: crate::evaluate::Metrics,
}

/// Mean of a `metrics.csv` column over the epochs run.
fn column_mean(csv: &Path, column: &str) -> Result<f64> {
    let text = std::fs::read_to_string(csv)?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let i = header
        .split(',')
        .position(|h| h == column)
        .ok_or_else(|| anyhow::anyhow!("{} has no {column}", csv.display()))?;
    let values: Vec<f64> = lines.filter_map(|l| l.split(',').nth(i)?.parse().ok()).collect();
    Ok(values.iter().sum::<f64>() / values.len().max(1) as f64)
}

/// Trains `base` once per architecture into `base.out/ARCH` and writes `comparison.csv` and
/// `comparison.md` into `base.out`.
pub fn compare(base: &TrainOptions, archs: &[Arch]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &arch in archs {
        println!("== {} ==", arch.name());
        let mut opts = base.clone();
        opts.model.arch = arch;
        opts.out = base.out.join(arch.name());
        let metrics = train::train(&opts)?;
        // The model as trained: with the data's channels.
        let cfg = crate::checkpoint::load_record(&opts.out)?.model;
        rows.push(Row {
            arch,
            params: cfg.build(1).param_count(),
            train_images_per_s: column_mean(&opts.out.join("metrics.csv"), "train_images_per_s")?,
            metrics,
        });
    }
    let mut csv = String::from("arch,parameters,train_images_per_s,mean_pixel_accuracy,mean_iou,mean_dice\n");
    let mut md = String::from(
        "| architecture | parameters | train images/s | mean pixel accuracy | mean IoU | mean Dice |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let m = &r.metrics;
        let cells = [
            r.arch.name().to_string(),
            r.params.to_string(),
            format!("{:.2}", r.train_images_per_s),
            format!("{:.4}", m.mean_pixel_accuracy),
            format!("{:.4}", m.mean_iou),
            format!("{:.4}", m.mean_dice),
        ];
        writeln!(csv, "{}", cells.join(","))?;
        writeln!(md, "| {} |", cells.join(" | "))?;
    }
    write_atomic(&base.out.join("comparison.csv"), csv.as_bytes())?;
    write_atomic(&base.out.join("comparison.md"), md.as_bytes())?;
    println!("\n{md}");
    println!("wrote {} and {}", base.out.join("comparison.csv").display(), base.out.join("comparison.md").display());
    Ok(rows)
}
