//! Training curves from a run's `metrics.csv`: loss (train and test) beside the test split's
//! mean Dice and mean IoU, per epoch.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};

use super::draw::{self, BODY, HEADING, INK, MUTED, WHITE};

/// Width and height of the picture `curves` writes: two plots side by side.
pub const CURVES_SIZE: (u32, u32) = (1200, 460);

const TRAIN_LOSS: Rgb<u8> = Rgb([31, 119, 180]);
const TEST_LOSS: Rgb<u8> = Rgb([255, 127, 14]);
const DICE: Rgb<u8> = Rgb([44, 160, 44]);
const IOU: Rgb<u8> = Rgb([148, 103, 189]);
const GRID: Rgb<u8> = Rgb([228, 228, 228]);
const AXIS: Rgb<u8> = Rgb([90, 90, 90]);
const LR_MARK: Rgb<u8> = Rgb([170, 170, 170]);

/// Reads `csv_path` (a `metrics.csv` written by `wgunet train`) and writes the curves to
/// `out_png` as a [`CURVES_SIZE`] PNG, atomically. Works from one epoch on; non-finite values
/// (a diverged loss) leave a gap.
pub fn curves(csv_path: &Path, out_png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(csv_path).with_context(|| format!("could not read {}", csv_path.display()))?;
    let table = Table::parse(&text).with_context(|| format!("{} is not a wgunet metrics.csv", csv_path.display()))?;
    super::save_png(&render(&table)?, out_png)
}

/// The columns of metrics.csv by name, so added or reordered columns do not matter.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<f64>>,
}

impl Table {
    fn parse(text: &str) -> Result<Table> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let header: Vec<String> =
            lines.next().context("the file is empty")?.split(',').map(|s| s.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (n, line) in lines.enumerate() {
            let row = line
                .split(',')
                .map(|s| s.trim().parse::<f64>())
                .collect::<Result<Vec<f64>, _>>()
                .with_context(|| format!("row {}: '{line}' has a value that is not a number", n + 1))?;
            if row.len() != header.len() {
                bail!("row {}: {} values for {} columns", n + 1, row.len(), header.len());
            }
            rows.push(row);
        }
        if rows.is_empty() {
            bail!("it has no epochs yet");
        }
        Ok(Table { header, rows })
    }

    fn column(&self, name: &str) -> Result<Vec<f64>> {
        let k = self.header.iter().position(|h| h == name).with_context(|| format!("no '{name}' column"))?;
        Ok(self.rows.iter().map(|r| r[k]).collect())
    }
}

struct Series {
    label: &'static str,
    colour: Rgb<u8>,
    values: Vec<f64>,
}

fn render(table: &Table) -> Result<RgbImage> {
    let epochs = table.column("epoch")?;
    let loss = [
        Series { label: "train loss", colour: TRAIN_LOSS, values: table.column("train_loss")? },
        Series { label: "test loss", colour: TEST_LOSS, values: table.column("test_loss")? },
    ];
    let scores = [
        Series { label: "mean Dice", colour: DICE, values: table.column("mean_dice")? },
        Series { label: "mean IoU", colour: IOU, values: table.column("mean_iou")? },
    ];
    // Learning-rate drops explain kinks in the loss; an older csv without the column just lacks them.
    let lr_drops: Vec<f64> = match table.column("lr") {
        Ok(lr) => (1..lr.len()).filter(|&i| lr[i] < lr[i - 1]).map(|i| epochs[i]).collect(),
        Err(_) => Vec::new(),
    };
    let loss_title = match best_of(&epochs, &loss[1].values, f64::min) {
        Some((e, v)) => format!("Loss  (lowest test loss {v:.4} at epoch {e})"),
        None => "Loss".to_string(),
    };
    let score_title = match best_of(&epochs, &scores[0].values, f64::max) {
        Some((e, v)) => format!("Test split  (best mean Dice {v:.4} at epoch {e})"),
        None => "Test split".to_string(),
    };

    let (w, h) = CURVES_SIZE;
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    let half = w / 2;
    let x_axis = Axis::epochs(&epochs);
    // Losses from zero, with headroom so the highest marker clears the frame; scores on their
    // whole 0..1 range so runs compare at a glance (the titles give the best values exactly).
    let (loss_min, loss_max) = finite_range(&loss);
    let (score_min, score_max) = finite_range(&scores);
    let loss_axis = Axis::covering(loss_min.min(0.0), loss_max * 1.05);
    let score_axis = Axis::covering(score_min.min(0.0), score_max.max(1.0));
    Plot { left: 0, width: half, height: h, title: loss_title, y_label: "loss" }
        .draw(&mut img, &x_axis, &loss_axis, &epochs, &loss, &lr_drops);
    Plot { left: half, width: w - half, height: h, title: score_title, y_label: "score" }.draw(
        &mut img,
        &x_axis,
        &score_axis,
        &epochs,
        &scores,
        &[],
    );
    Ok(img)
}

/// Smallest and largest finite value of all `series`; (0, 0) where there is none.
fn finite_range(series: &[Series]) -> (f64, f64) {
    let finite = series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite());
    finite
        .fold(None, |acc: Option<(f64, f64)>, v| Some(acc.map_or((v, v), |(a, b)| (a.min(v), b.max(v)))))
        .unwrap_or((0.0, 0.0))
}

/// (epoch, value) of the best finite value by `pick` (min or max).
fn best_of(epochs: &[f64], values: &[f64], pick: fn(f64, f64) -> f64) -> Option<(f64, f64)> {
    let best = values.iter().copied().filter(|v| v.is_finite()).reduce(pick)?;
    let i = values.iter().position(|&v| v == best)?;
    Some((epochs[i], best))
}

/// A linear axis from `lo` to `hi` with round tick values.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    decimals: usize,
}

impl Axis {
    /// Whole epochs, a little margin either side so the end points are not on the frame.
    fn epochs(epochs: &[f64]) -> Axis {
        let first = epochs.iter().copied().fold(f64::INFINITY, f64::min);
        let last = epochs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = last - first;
        let pad = if span > 0.0 { span * 0.03 } else { 1.0 };
        let (lo, hi) = (first - pad, last + pad);
        let step = nice_step(span.max(1.0) / 8.0).max(1.0);
        let ticks =
            (((first / step).ceil() as i64)..=((last / step).floor() as i64)).map(|k| k as f64 * step).collect();
        Axis { lo, hi, ticks, decimals: 0 }
    }

    /// Round bounds at or beyond `lo` and `hi`, with ticks every round step between them.
    fn covering(lo: f64, hi: f64) -> Axis {
        let hi = if hi - lo < 1e-9 { lo + 1.0 } else { hi };
        let step = nice_step((hi - lo) / 5.0);
        let first = (lo / step + 1e-9).floor() as i64;
        let last = (hi / step - 1e-9).ceil() as i64;
        let ticks = (first..=last).map(|k| k as f64 * step).collect();
        // Enough decimals to tell neighbouring ticks apart, e.g. 0.25 steps need two.
        let decimals = (0..6).find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled.round() - scaled).abs() < 1e-6
        });
        Axis { lo: first as f64 * step, hi: last as f64 * step, ticks, decimals: decimals.unwrap_or(6) as usize }
    }

    fn label(&self, v: f64) -> String {
        format!("{:.*}", self.decimals, v)
    }
}

/// 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw > 0.0 && raw.is_finite() { raw } else { 1.0 };
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|&n| n >= m - 1e-9).unwrap_or(10.0);
    nice * power
}

/// One plot in the band of the picture starting at column `left`.
struct Plot {
    left: u32,
    width: u32,
    height: u32,
    title: String,
    y_label: &'static str,
}

impl Plot {
    const MARGIN_LEFT: u32 = 86;
    const MARGIN_RIGHT: u32 = 24;
    const MARGIN_TOP: u32 = 76;
    const MARGIN_BOTTOM: u32 = 56;

    fn draw(&self, img: &mut RgbImage, x: &Axis, y: &Axis, epochs: &[f64], series: &[Series], lr_drops: &[f64]) {
        let x0 = (self.left + Self::MARGIN_LEFT) as f64;
        let x1 = (self.left + self.width - Self::MARGIN_RIGHT) as f64;
        let y0 = Self::MARGIN_TOP as f64;
        let y1 = (self.height - Self::MARGIN_BOTTOM) as f64;
        let px = |v: f64| x0 + (v - x.lo) / (x.hi - x.lo) * (x1 - x0);
        let py = |v: f64| y1 - (v - y.lo) / (y.hi - y.lo) * (y1 - y0);
        let (left, top, right, bottom) = (x0 as i64, y0 as i64, x1 as i64, y1 as i64);
        let (plot_w, plot_h) = ((right - left) as u32, (bottom - top) as u32);

        draw::text(img, left, 14, &HEADING.fit(&self.title, plot_w), HEADING, INK);
        let mut lx = left;
        for s in series {
            draw::fill_rect(img, lx, 52, 22, 3, s.colour);
            lx += 28 + draw::text(img, lx + 28, 45, s.label, BODY, INK) as i64 + 20;
        }
        if !lr_drops.is_empty() {
            draw::dashed_vline(img, lx + 10, 45, 45 + BODY.height() as i64, 3, LR_MARK);
            draw::text(img, lx + 22, 45, "lr halved", BODY, MUTED);
        }

        for &t in &y.ticks {
            let row = py(t).round() as i64;
            draw::fill_rect(img, left, row, plot_w, 1, GRID);
            draw::fill_rect(img, left - 5, row, 5, 1, AXIS);
            let label = y.label(t);
            let tx = left - 9 - BODY.width(&label) as i64;
            draw::text(img, tx, row - BODY.height() as i64 / 2, &label, BODY, INK);
        }
        for &t in &x.ticks {
            let col = px(t).round() as i64;
            draw::fill_rect(img, col, bottom, 1, 5, AXIS);
            let label = x.label(t);
            draw::text(img, col - BODY.width(&label) as i64 / 2, bottom + 8, &label, BODY, INK);
        }
        for &e in lr_drops {
            draw::dashed_vline(img, px(e).round() as i64, top, bottom, 3, LR_MARK);
        }
        draw::frame(img, left, top, plot_w, plot_h, AXIS);

        let x_label = "epoch";
        let centre_x = left + plot_w as i64 / 2;
        draw::text(img, centre_x - BODY.width(x_label) as i64 / 2, bottom + 30, x_label, BODY, INK);
        let centre_y = top + plot_h as i64 / 2;
        let widest_tick = y.ticks.iter().map(|&t| BODY.width(&y.label(t))).max().unwrap_or(0);
        let y_label_x = (left - 9 - widest_tick as i64 - 10 - BODY.height() as i64).max(self.left as i64 + 4);
        draw::text_up(img, y_label_x, centre_y + BODY.width(self.y_label) as i64 / 2, self.y_label, BODY, INK);

        // Markers make single epochs visible; past a few dozen points they only add clutter.
        let markers = epochs.len() <= 40;
        for s in series {
            let points: Vec<Option<(f64, f64)>> = epochs
                .iter()
                .zip(&s.values)
                .map(|(&e, &v)| v.is_finite().then(|| (px(e), py(v.clamp(y.lo, y.hi)))))
                .collect();
            for run in points.split(Option::is_none) {
                let run: Vec<(f64, f64)> = run.iter().flatten().copied().collect();
                draw::polyline(img, &run, 2.2, s.colour);
            }
            if markers {
                for p in points.iter().flatten() {
                    draw::disc(img, *p, 3.2, s.colour);
                }
            }
        }
    }
}
