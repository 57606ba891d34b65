//! `wgunet train --folds K`: k-fold cross-validation on the training part of a split, as
//! nnU-Net trains its five folds. The dataset is split into train and test as for one run; the
//! training part is cut into K folds; run `fold-i` trains on the other K − 1 and watches fold i
//! each epoch. Every fold is then scored on the one held-out test split, and so is their
//! ensemble (probabilities averaged); `folds.csv` and `folds.md` hold the table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::checkpoint::write_atomic;
use crate::data::normalise::mean_std;
use crate::data::{pairs, split};
use crate::evaluate::Metrics;
use crate::infer::{self, EvalData, EvalOptions};
use crate::train::{self, DataSource, TrainOptions};

/// The held-out test split's scores (at each image's own size) of each fold and of their
/// ensemble.
pub struct FoldsReport {
    pub folds: Vec<Metrics>,
    pub ensemble: Metrics,
}

/// Trains `base` once per fold into `base.out/fold-i` and scores the folds and their ensemble
/// on the test split, listed in `base.out/test.txt`.
pub fn train_folds(base: &TrainOptions, k: usize) -> Result<FoldsReport> {
    let DataSource::Folder { dir } = &base.data.source else {
        bail!("--folds splits a dataset folder: give --data DIR");
    };
    if k < 2 {
        bail!("--folds {k}: give at least 2 folds");
    }
    let pairing = pairs::find_pairs(dir)?;
    println!("{}", pairs::describe(&pairing));
    let (train_pairs, test_pairs) =
        split::split(&pairing.pairs, base.data.train_fraction, base.seed, base.data.max_images)?;
    if train_pairs.len() < k {
        bail!("--folds {k}: the training part has only {} pairs", train_pairs.len());
    }
    std::fs::create_dir_all(&base.out)?;
    let test_list = base.out.join("test.txt");
    split::write_list(&test_list, &test_pairs)?;
    split::write_list(&base.out.join("train.txt"), &train_pairs)?;
    println!(
        "{k} folds of the {} training pairs (the split is already shuffled: pair j is in fold j mod {k}); {} test pairs held out",
        train_pairs.len(),
        test_pairs.len()
    );
    let mut runs = Vec::with_capacity(k);
    let mut folds = Vec::with_capacity(k);
    for fold in 0..k {
        let run = base.out.join(format!("fold-{}", fold + 1));
        std::fs::create_dir_all(&run)?;
        let (fold_train, fold_watch): (Vec<_>, Vec<_>) =
            train_pairs.iter().cloned().enumerate().partition(|(j, _)| j % k != fold);
        let lists = [("fold-train.txt", fold_train), ("fold-watch.txt", fold_watch)]
            .map(|(name, pairs)| (run.join(name), pairs.into_iter().map(|(_, p)| p).collect::<Vec<_>>()));
        for (path, pairs) in &lists {
            split::write_list(path, pairs)?;
        }
        println!("== fold {} of {k}: {} train, {} watched ==", fold + 1, lists[0].1.len(), lists[1].1.len());
        let mut o = base.clone();
        o.data.source = DataSource::Lists { train: lists[0].0.clone(), test: lists[1].0.clone() };
        o.out = run.clone();
        train::train(&o)?;
        folds.push(score(&run, &[], &test_list, base, &run.join("test-eval"))?);
        runs.push(run);
    }
    println!("== the {k} folds as one ensemble ==");
    let ensemble = score(&runs[0], &runs[1..], &test_list, base, &base.out.join("ensemble-eval"))?;
    let report = FoldsReport { folds, ensemble };
    write_tables(&base.out, &report)?;
    Ok(report)
}

/// `eval` of `run` (with `others` as an ensemble) on the pairs of `list`, into `out`.
fn score(run: &Path, others: &[PathBuf], list: &Path, base: &TrainOptions, out: &Path) -> Result<Metrics> {
    let options = EvalOptions {
        out: Some(out.to_path_buf()),
        json: Some(out.join("eval.json")),
        ensemble: others.to_vec(),
        ..EvalOptions::defaults(EvalData::List(list.to_path_buf()), base.device.clone())
    };
    Ok(infer::eval(run, &options)?.native)
}

fn write_tables(out: &Path, r: &FoldsReport) -> Result<()> {
    let mut csv = String::from("model,mean_pixel_accuracy,mean_iou,mean_dice,micro_dice\n");
    let mut md = String::from(
        "Test split, scored at each image's own size.\n\n| model | mean pixel accuracy | mean IoU | mean Dice | micro Dice |\n|---|---:|---:|---:|---:|\n",
    );
    let mut row = |name: String, m: &Metrics| -> Result<()> {
        let cells = [m.mean_pixel_accuracy, m.mean_iou, m.mean_dice, m.micro_dice].map(|v| format!("{v:.4}"));
        writeln!(csv, "{name},{}", cells.join(","))?;
        writeln!(md, "| {name} | {} |", cells.join(" | "))?;
        Ok(())
    };
    for (i, m) in r.folds.iter().enumerate() {
        row(format!("fold-{}", i + 1), m)?;
    }
    row("ensemble".into(), &r.ensemble)?;
    let dice: Vec<f64> = r.folds.iter().map(|m| m.mean_dice).collect();
    let (mean, spread) = mean_std(&dice);
    let best = dice.iter().cloned().fold(f64::MIN, f64::max);
    writeln!(
        md,
        "\nFolds' mean Dice: {mean:.4} ± {spread:.4} (best {best:.4}); ensemble: {:.4}.",
        r.ensemble.mean_dice
    )?;
    write_atomic(&out.join("folds.csv"), csv.as_bytes())?;
    write_atomic(&out.join("folds.md"), md.as_bytes())?;
    println!("\n{md}");
    println!("wrote {} and {}", out.join("folds.csv").display(), out.join("folds.md").display());
    Ok(())
}
