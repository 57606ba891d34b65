//! `report.md`: one page per run with the command, the configuration, the data, the final test
//! metrics, the training curves and a few prediction panels.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{curves, PanelLink};
use crate::checkpoint::write_atomic;
use crate::evaluate::Metrics;

/// What the run folder does not say by itself.
#[derive(Clone, Debug, Default)]
pub struct ReportInfo {
    /// The command line that made the run (empty: the one recorded in `model.json`).
    pub command: String,
    /// Where the pairs came from: a folder, a list file, "synthetic slices (seed 7)".
    pub dataset: String,
    /// Image/mask pairs found.
    pub pairs: usize,
    /// Pairs in the training split.
    pub train: usize,
    /// Pairs in the test split.
    pub test: usize,
    /// Side every image was resized to.
    pub size: usize,
    pub channels: usize,
    /// Final test metrics in table order, e.g. from [`metric_rows`].
    pub metrics: Vec<(String, f64)>,
    /// Panels already written in the run folder, e.g. by [`super::write_panels`].
    pub panels: Vec<PanelLink>,
}

/// The test metrics as `report.md` tabulates them.
pub fn metric_rows(m: &Metrics) -> Vec<(String, f64)> {
    [
        ("mean Dice", m.mean_dice),
        ("mean IoU", m.mean_iou),
        ("mean pixel accuracy", m.mean_pixel_accuracy),
        ("micro Dice", m.micro_dice),
        ("micro IoU", m.micro_iou),
        ("loss", m.loss),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(m.classes.iter().flat_map(|c| {
        [(format!("class {} IoU (dataset)", c.class), c.iou), (format!("class {} Dice (dataset)", c.class), c.dice)]
    }))
    .collect()
}

/// Writes `run_dir/report.md` (atomically). Reads `run_dir/model.json` for the configuration
/// and, where `run_dir/metrics.csv` exists, draws it to `run_dir/curves.png` first.
pub fn write_report(run_dir: &Path, info: &ReportInfo) -> Result<()> {
    let model_path = run_dir.join("model.json");
    let text =
        std::fs::read_to_string(&model_path).with_context(|| format!("could not read {}", model_path.display()))?;
    let model: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", model_path.display()))?;
    let csv = run_dir.join("metrics.csv");
    let has_curves = csv.exists();
    if has_curves {
        curves(&csv, &run_dir.join("curves.png"))?;
    }
    let name = run_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| run_dir.display().to_string());
    write_atomic(&run_dir.join("report.md"), render(&name, &model, info, has_curves).as_bytes())
}

fn render(name: &str, model: &Value, info: &ReportInfo, has_curves: bool) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# wgunet run `{name}`\n");

    let recorded = model.get("command").and_then(Value::as_str).unwrap_or("");
    let command = if info.command.is_empty() { recorded } else { &info.command };
    if !command.is_empty() {
        let _ = writeln!(md, "## Command\n\n```text\n{command}\n```\n");
    }

    let _ = writeln!(md, "## Configuration\n\nFrom `model.json`.\n\n| setting | value |\n| --- | --- |");
    let mut settings = Vec::new();
    flatten("", model, &mut settings);
    for (key, value) in settings.iter().filter(|(k, _)| k != "command") {
        let _ = writeln!(md, "| {} | {} |", cell(key), cell(value));
    }

    let colour = if info.channels == 3 { "RGB" } else { "grey" };
    let _ = writeln!(md, "\n## Data\n");
    if !info.dataset.is_empty() {
        let _ = writeln!(md, "Source: {}\n", info.dataset.replace(['\n', '\r'], " "));
    }
    let _ = writeln!(md, "| image/mask pairs | training | test | input |\n| ---: | ---: | ---: | --- |");
    let _ = writeln!(
        md,
        "| {} | {} | {} | {3}×{3}, {4} channel{5} ({colour}) |",
        info.pairs,
        info.train,
        info.test,
        info.size,
        info.channels,
        plural(info.channels)
    );

    if !info.metrics.is_empty() {
        let _ = writeln!(md, "\n## Test metrics\n\n| metric | value |\n| --- | ---: |");
        for (metric, value) in &info.metrics {
            let _ = writeln!(md, "| {} | {value:.4} |", cell(metric));
        }
    }

    if has_curves {
        let _ = writeln!(
            md,
            "\n## Training curves\n\n![training curves: loss, mean Dice and mean IoU per epoch](curves.png)"
        );
    }

    if !info.panels.is_empty() {
        let classes = model.pointer("/model/classes").and_then(Value::as_u64).unwrap_or(1);
        let rows = if classes >= 2 {
            "image | ground truth | prediction (the most probable class), class ids in colour (background \
             black) | misclassified pixels (red). Ranked by the mean Dice over the foreground classes."
        } else {
            "image | ground truth | prediction (probability > 0.5) | overlay of true positives (green), false \
             positives (red) and false negatives (blue)."
        };
        let _ = writeln!(md, "\n## Predictions\n\nEach row: {rows}");
        let mut group = "";
        for p in &info.panels {
            if p.group != group {
                group = &p.group;
                let heading = match group {
                    "best" => "Best (highest Dice)",
                    "worst" => "Worst (lowest Dice)",
                    other => other,
                };
                let _ = writeln!(md, "\n### {heading}");
            }
            let _ = writeln!(md, "\n![{}]({})", p.caption.replace(['[', ']'], ""), link(&p.path));
        }
    }
    md
}

/// `value`'s leaves as ("a.b", text) pairs, objects flattened with dotted keys.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => out.push((prefix.to_string(), "-".to_string())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A relative path usable as a Markdown link target.
fn link(path: &str) -> String {
    path.replace(' ', "%20").replace('(', "%28").replace(')', "%29")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
