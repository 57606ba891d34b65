//! What a person looks at after a run: prediction panels (image | truth | prediction | error
//! overlay; class masks in colour), a contact sheet of the best and worst test images, training curves from
//! `metrics.csv`, and `report.md` tying them together. Everything is drawn on the CPU into
//! `image::RgbImage`s with a font compiled into the binary.

mod curves;
mod draw;
mod markdown;
mod panels;

use std::path::Path;

use anyhow::{Context, Result};

pub use curves::{curves, CURVES_SIZE};
pub use markdown::{metric_rows, write_report, ReportInfo};
pub use panels::{
    class_colour, class_dice, class_panel, contact_sheet, dice, display_levels, panel, select_cases, tint, PanelLayout,
    FALSE_NEGATIVE, FALSE_POSITIVE, MIN_TILE, OVERLAY_ALPHA, TRUE_POSITIVE, WRONG_CLASS,
};

use crate::checkpoint::write_atomic;

/// Panels a report draws of the best images, and as many of the worst: `train`'s report, and
/// `eval`'s by default.
pub const PANELS_EACH: usize = 3;

/// A panel picture in a run folder, as `report.md` links it.
#[derive(Clone, Debug, PartialEq)]
pub struct PanelLink {
    /// "best" or "worst".
    pub group: String,
    /// Relative to the run folder, with '/' separators: `panels/best-1.png`.
    pub path: String,
    /// The image's name and Dice.
    pub caption: String,
}

/// One test image and the model's probability map for it.
pub struct Case<'a> {
    pub name: &'a str,
    /// `[channels, size, size]` in [0, 1].
    pub image: &'a [f32],
    /// `[size, size]`, 0 or 1.
    pub truth: &'a [f32],
    /// `[size, size]`, probabilities.
    pub prob: &'a [f32],
}

/// One test image of a K-class model and its predicted class ids.
pub struct ClassCase<'a> {
    pub name: &'a str,
    /// `[channels, size, size]` in [0, 1].
    pub image: &'a [f32],
    /// `[size, size]` class ids.
    pub truth: &'a [u8],
    /// `[size, size]` class ids.
    pub pred: &'a [u8],
}

/// Writes panels of the `best` highest-Dice and `worst` lowest-Dice cases to
/// `run_dir/panels/best-N.png` and `worst-N.png`, and all of them to
/// `run_dir/panels/contact_sheet.png`. Returns the links for [`ReportInfo::panels`].
pub fn write_panels(
    run_dir: &Path,
    cases: &[Case<'_>],
    channels: usize,
    size: usize,
    best: usize,
    worst: usize,
) -> Result<Vec<PanelLink>> {
    let scores: Vec<f64> = cases.iter().map(|c| dice(c.truth, c.prob)).collect();
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    write_ranked(run_dir, &names, &scores, best, worst, |i, caption| {
        let c = &cases[i];
        panel(c.image, channels, size, c.truth, c.prob, caption)
    })
}

/// [`write_panels`] for a model of `classes` classes: class masks in colour, ranked by the mean
/// Dice over the foreground classes.
pub fn write_class_panels(
    run_dir: &Path,
    cases: &[ClassCase<'_>],
    classes: usize,
    channels: usize,
    size: usize,
    best: usize,
    worst: usize,
) -> Result<Vec<PanelLink>> {
    let scores: Vec<f64> = cases.iter().map(|c| class_dice(c.truth, c.pred, classes)).collect();
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    write_ranked(run_dir, &names, &scores, best, worst, |i, caption| {
        let c = &cases[i];
        class_panel(c.image, channels, size, c.truth, c.pred, caption)
    })
}

/// The panels (`draw(case, caption)`) of the `best` highest- and `worst` lowest-scoring cases,
/// and their contact sheet.
fn write_ranked(
    run_dir: &Path,
    names: &[&str],
    scores: &[f64],
    best: usize,
    worst: usize,
    draw: impl Fn(usize, &str) -> image::RgbImage,
) -> Result<Vec<PanelLink>> {
    let dir = run_dir.join("panels");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let (top, bottom) = select_cases(scores, best, worst);
    let groups = [("best", &top), ("worst", &bottom)];
    remove_earlier_panels(&dir, &groups.map(|(group, members)| (group, members.len())))?;
    let mut links = Vec::new();
    let mut rows = Vec::new();
    for (group, members) in groups {
        for (rank, &i) in members.iter().enumerate() {
            let caption = format!("{}  Dice {:.3}", names[i], scores[i]);
            let picture = draw(i, &caption);
            let file = panel_file(group, rank + 1);
            save_png(&picture, &dir.join(&file))?;
            links.push(PanelLink { group: group.to_string(), path: format!("panels/{file}"), caption });
            rows.push((names[i].to_string(), scores[i], picture));
        }
    }
    save_png(&contact_sheet(&rows, top.len(), bottom.len()), &dir.join("contact_sheet.png"))?;
    Ok(links)
}

/// A panel's file name: `best-1.png` for the first of group "best".
fn panel_file(group: &str, rank: usize) -> String {
    format!("{group}-{rank}.png")
}

/// The rank N of a file named as [`panel_file`] names group's panel N.
fn panel_rank(file: &str, group: &str) -> Option<usize> {
    file.strip_prefix(group)?.strip_prefix('-')?.strip_suffix(".png")?.parse().ok()
}

/// Removes `dir/{group}-N.png` for N > the group's `kept` count: panels an earlier evaluation
/// into the same folder drew (train's final one, or an `eval` with more `--panels`), which would
/// otherwise sit beside this one's as if they ranked the same images.
fn remove_earlier_panels(dir: &Path, groups: &[(&str, usize)]) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?;
    for entry in entries {
        let path = entry.with_context(|| format!("could not list {}", dir.display()))?.path();
        let Some(name) = path.file_name().and_then(|f| f.to_str()) else { continue };
        let stale = groups.iter().any(|&(group, kept)| panel_rank(name, group).is_some_and(|r| r > kept));
        if stale {
            std::fs::remove_file(&path)
                .with_context(|| format!("could not remove the earlier panel {}", path.display()))?;
        }
    }
    Ok(())
}

/// Encodes `img` as PNG and writes it through a temporary file, so a reader never sees half of it.
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .with_context(|| format!("could not encode {}", path.display()))?;
    write_atomic(path, &bytes)
}
