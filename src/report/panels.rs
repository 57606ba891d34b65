//! One test image per row: image | ground truth | prediction | error overlay, and a contact
//! sheet of the best and worst rows by Dice. Binary masks are white on black; class-id masks
//! are drawn in [`class_colour`]s.

use image::{Rgb, RgbImage};

use super::draw::{self, BODY, HEADING, INK, MUTED, WHITE};
use crate::ops::metrics::{image_metrics, ClassCounts};

/// Overlay colour of pixels predicted and true.
pub const TRUE_POSITIVE: Rgb<u8> = Rgb([0, 200, 70]);
/// Overlay colour of pixels predicted but not true.
pub const FALSE_POSITIVE: Rgb<u8> = Rgb([235, 30, 30]);
/// Overlay colour of true pixels the prediction missed.
pub const FALSE_NEGATIVE: Rgb<u8> = Rgb([30, 120, 255]);
/// Opacity of the overlay colours over the (grey) image.
pub const OVERLAY_ALPHA: f32 = 0.6;
/// Tiles smaller than this are enlarged by a whole factor (nearest neighbour) to be readable.
pub const MIN_TILE: usize = 128;

/// Colours of class ids 1, 2, … in class panels (Sasha Trubetskoy's 20 distinct colours); ids
/// past the end cycle through them. Background (0) is black.
const CLASS_PALETTE: [Rgb<u8>; 20] = [
    Rgb([230, 25, 75]),
    Rgb([60, 180, 75]),
    Rgb([255, 225, 25]),
    Rgb([0, 130, 200]),
    Rgb([245, 130, 48]),
    Rgb([145, 30, 180]),
    Rgb([70, 240, 240]),
    Rgb([240, 50, 230]),
    Rgb([210, 245, 60]),
    Rgb([250, 190, 212]),
    Rgb([0, 128, 128]),
    Rgb([220, 190, 255]),
    Rgb([170, 110, 40]),
    Rgb([255, 250, 200]),
    Rgb([128, 0, 0]),
    Rgb([170, 255, 195]),
    Rgb([128, 128, 0]),
    Rgb([255, 215, 180]),
    Rgb([0, 0, 128]),
    Rgb([128, 128, 128]),
];

/// The colour of class `id` in class panels: black for the background, a fixed palette colour
/// otherwise.
pub fn class_colour(id: u8) -> Rgb<u8> {
    match id {
        0 => Rgb([0, 0, 0]),
        _ => CLASS_PALETTE[(usize::from(id) - 1) % CLASS_PALETTE.len()],
    }
}

/// Overlay colour of misclassified pixels in class panels.
pub const WRONG_CLASS: Rgb<u8> = FALSE_POSITIVE;

const TILE_BORDER: Rgb<u8> = Rgb([150, 150, 150]);
const SHEET_BACKGROUND: Rgb<u8> = Rgb([236, 236, 236]);

/// Where everything sits in a panel for `size`×`size` inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PanelLayout {
    /// Whole-number enlargement of each input pixel.
    pub scale: u32,
    /// Side of a tile in panel pixels: `size * scale`.
    pub tile: u32,
    /// Space around and between tiles.
    pub gap: u32,
    /// Height of the caption and column-label strips above the tiles.
    pub header: u32,
    pub width: u32,
    pub height: u32,
}

impl PanelLayout {
    pub fn new(size: usize) -> PanelLayout {
        let scale = MIN_TILE.div_ceil(size.max(1)) as u32;
        let tile = size as u32 * scale;
        let gap = 8;
        let header = 8 + HEADING.height() + 8 + BODY.height() + 6;
        PanelLayout { scale, tile, gap, header, width: 4 * tile + 5 * gap, height: header + tile + gap }
    }

    /// Top-left corner of tile `index` (0 image, 1 truth, 2 prediction, 3 overlay).
    pub fn tile_origin(&self, index: u32) -> (u32, u32) {
        (self.gap + index * (self.tile + self.gap), self.header)
    }
}

/// `colour` laid over `base` with the overlay's opacity.
pub fn tint(base: Rgb<u8>, colour: Rgb<u8>) -> Rgb<u8> {
    let mut out = base;
    for k in 0..3 {
        out.0[k] = (base.0[k] as f32 * (1.0 - OVERLAY_ALPHA) + colour.0[k] as f32 * OVERLAY_ALPHA).round() as u8;
    }
    out
}

/// Dice of (prob > 0.5) against (truth > 0.5), with the metrics kernel's conventions (an image
/// with nothing to find and nothing found scores 1).
pub fn dice(truth: &[f32], prob: &[f32]) -> f64 {
    let mut counts = [0u64; 4];
    for (&t, &p) in truth.iter().zip(prob) {
        let slot = match (p > 0.5, t > 0.5) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        counts[slot] += 1;
    }
    image_metrics(counts).2
}

/// Mean Dice over the foreground classes 1..`classes` of predicted class ids against true ones,
/// with the metrics kernel's conventions (a class neither present nor predicted scores 1).
pub fn class_dice(truth: &[u8], pred: &[u8], classes: usize) -> f64 {
    let mut counts = ClassCounts::new(classes);
    for (&t, &p) in truth.iter().zip(pred) {
        counts.add_pixel(usize::from(p), usize::from(t));
    }
    counts.image_metrics().2
}

/// Four tiles side by side under a caption: the image, the ground truth, the prediction
/// (prob > 0.5) and the image in grey with true positives, false positives and false negatives
/// tinted [`TRUE_POSITIVE`], [`FALSE_POSITIVE`], [`FALSE_NEGATIVE`]. `image` is
/// `[channels, size, size]` in [0, 1] (3 channels are RGB, otherwise the first is shown as
/// grey); `truth` and `prob` are `[size, size]`.
pub fn panel(image: &[f32], channels: usize, size: usize, truth: &[f32], prob: &[f32], title: &str) -> RgbImage {
    let pixels = size * size;
    assert!(truth.len() == pixels && prob.len() == pixels, "panel: truth and prob must be [{size}, {size}]");
    let legend = [("TP", TRUE_POSITIVE), ("FP", FALSE_POSITIVE), ("FN", FALSE_NEGATIVE)];
    let mask = |on: bool| if on { WHITE } else { Rgb([0, 0, 0]) };
    draw_panel(image, channels, size, title, &legend, |k, grey| {
        let (t, p) = (truth[k] > 0.5, prob[k] > 0.5);
        let overlay = match (p, t) {
            (true, true) => tint(grey, TRUE_POSITIVE),
            (true, false) => tint(grey, FALSE_POSITIVE),
            (false, true) => tint(grey, FALSE_NEGATIVE),
            (false, false) => grey,
        };
        [mask(t), mask(p), overlay]
    })
}

/// [`panel`] for class-id masks (`[size, size]` each): the ground truth and the prediction in
/// [`class_colour`]s, and the image in grey with misclassified pixels tinted [`WRONG_CLASS`].
pub fn class_panel(image: &[f32], channels: usize, size: usize, truth: &[u8], pred: &[u8], title: &str) -> RgbImage {
    let pixels = size * size;
    assert!(truth.len() == pixels && pred.len() == pixels, "class panel: truth and pred must be [{size}, {size}]");
    draw_panel(image, channels, size, title, &[("wrong class", WRONG_CLASS)], |k, grey| {
        let overlay = if truth[k] == pred[k] { grey } else { tint(grey, WRONG_CLASS) };
        [class_colour(truth[k]), class_colour(pred[k]), overlay]
    })
}

/// An image's values as 8-bit display levels: [0, 1] as 0 to 255, and a normalised image
/// (z-scores, with values outside [0, 1]) stretched from its own minimum to its maximum.
pub fn display_levels(image: &[f32]) -> Vec<u8> {
    let (lo, hi) = image.iter().fold((0.0f32, 1.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo < 0.0 || hi > 1.0 {
        image.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    } else {
        (0.0, 1.0)
    };
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    image.iter().map(|&v| ((v - lo) * scale).round().clamp(0.0, 255.0) as u8).collect()
}

/// The panel layout around the image tile: `pixel(k, grey)` gives pixel k's colours in the
/// truth, prediction and overlay tiles (`grey`: the image's luma there); `legend` explains the
/// overlay.
fn draw_panel(
    image: &[f32],
    channels: usize,
    size: usize,
    title: &str,
    legend: &[(&str, Rgb<u8>)],
    pixel: impl Fn(usize, Rgb<u8>) -> [Rgb<u8>; 3],
) -> RgbImage {
    let pixels = size * size;
    assert!(channels >= 1 && image.len() >= channels * pixels, "panel: image is not [{channels}, {size}, {size}]");
    let layout = PanelLayout::new(size);
    let mut img = RgbImage::from_pixel(layout.width, layout.height, WHITE);

    let caption_y = 8;
    draw::text(
        &mut img,
        layout.gap as i64,
        caption_y,
        &HEADING.fit(title, layout.width - 2 * layout.gap),
        HEADING,
        INK,
    );
    let labels_y = (caption_y as u32 + HEADING.height() + 8) as i64;
    for (i, label) in ["image", "ground truth", "prediction"].into_iter().enumerate() {
        let (x, _) = layout.tile_origin(i as u32);
        let label = BODY.fit(label, layout.tile);
        let centred = x as i64 + (layout.tile as i64 - BODY.width(&label) as i64) / 2;
        draw::text(&mut img, centred, labels_y, &label, BODY, MUTED);
    }
    overlay_legend(&mut img, &layout, labels_y, legend);

    let levels = display_levels(image);
    let colour_at = |k: usize| -> Rgb<u8> {
        if channels == 3 {
            Rgb([levels[k], levels[pixels + k], levels[2 * pixels + k]])
        } else {
            let g = levels[k];
            Rgb([g, g, g])
        }
    };
    for k in 0..pixels {
        let colour = colour_at(k);
        let grey = {
            let [r, g, b] = colour.0.map(f32::from);
            let l = (0.299 * r + 0.587 * g + 0.114 * b).round() as u8;
            Rgb([l, l, l])
        };
        let [truth, prediction, overlay] = pixel(k, grey);
        for (tile, c) in [colour, truth, prediction, overlay].into_iter().enumerate() {
            let (x0, y0) = layout.tile_origin(tile as u32);
            let x = x0 as i64 + ((k % size) as u32 * layout.scale) as i64;
            let y = y0 as i64 + ((k / size) as u32 * layout.scale) as i64;
            draw::fill_rect(&mut img, x, y, layout.scale, layout.scale, c);
        }
    }
    for tile in 0..4 {
        let (x, y) = layout.tile_origin(tile);
        draw::frame(&mut img, x as i64, y as i64, layout.tile, layout.tile, TILE_BORDER);
    }
    img
}

/// "■ TP ■ FP ■ FN" (the `entries`) over the overlay tile, centred, so the colours explain
/// themselves.
fn overlay_legend(img: &mut RgbImage, layout: &PanelLayout, y: i64, entries: &[(&str, Rgb<u8>)]) {
    let swatch = BODY.height() - 6;
    let entry_width = |label: &str| swatch + 3 + BODY.width(label);
    let spacing = BODY.advance();
    let total: u32 =
        entries.iter().map(|(l, _)| entry_width(l)).sum::<u32>() + spacing * (entries.len() as u32).saturating_sub(1);
    let (x0, _) = layout.tile_origin(3);
    let mut x = x0 as i64 + (layout.tile as i64 - total as i64) / 2;
    for &(label, colour) in entries {
        draw::fill_rect(img, x, y + 3, swatch, swatch, colour);
        draw::text(img, x + swatch as i64 + 3, y, label, BODY, MUTED);
        x += (entry_width(label) + spacing) as i64;
    }
}

/// Indices of the `best` highest-Dice rows (highest first) and the `worst` lowest-Dice rows
/// (lowest first); a row is in at most one list. NaN counts as the lowest; ties keep input order.
pub fn select_cases(dice: &[f64], best: usize, worst: usize) -> (Vec<usize>, Vec<usize>) {
    let key = |i: usize| if dice[i].is_nan() { f64::NEG_INFINITY } else { dice[i] };
    let mut order: Vec<usize> = (0..dice.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    let best_n = best.min(order.len());
    let worst_n = worst.min(order.len() - best_n);
    let top = order[..best_n].to_vec();
    let bottom = order[order.len() - worst_n..].iter().rev().copied().collect();
    (top, bottom)
}

/// The `best` highest-Dice panels under a "best" heading, then the `worst` lowest-Dice panels
/// (lowest first) under a "worst" heading. Rows are (name, Dice, panel).
pub fn contact_sheet(rows: &[(String, f64, RgbImage)], best: usize, worst: usize) -> RgbImage {
    let dice: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let (top, bottom) = select_cases(&dice, best, worst);
    let margin = 12u32;
    let heading_h = HEADING.height() + 16;
    let groups: Vec<(String, &[usize])> = [
        (format!("best {} by Dice, highest first", top.len()), top.as_slice()),
        (format!("worst {} by Dice, lowest first", bottom.len()), bottom.as_slice()),
    ]
    .into_iter()
    .filter(|(_, members)| !members.is_empty())
    .collect();
    let widest = rows.iter().map(|r| r.2.width()).max().unwrap_or(0);
    let width = (widest + 2 * margin).max(HEADING.width("worst 000 by Dice, lowest first") + 2 * margin);
    let height = margin
        + groups
            .iter()
            .map(|(_, members)| heading_h + members.iter().map(|&i| rows[i].2.height() + margin).sum::<u32>())
            .sum::<u32>();
    let mut sheet = RgbImage::from_pixel(width, height, SHEET_BACKGROUND);
    let mut y = margin as i64;
    for (heading, members) in groups {
        draw::text(&mut sheet, margin as i64, y + 4, &heading, HEADING, INK);
        y += heading_h as i64;
        for &i in members {
            let panel = &rows[i].2;
            image::imageops::replace(&mut sheet, panel, margin as i64, y);
            y += (panel.height() + margin) as i64;
        }
    }
    sheet
}
