//! Pixels for the report's pictures: rectangles, anti-aliased lines and discs, and text from a
//! pre-rasterised font compiled into the binary, so nothing has to be found on the system or
//! fetched at run time.

use image::{Rgb, RgbImage};
use noto_sans_mono_bitmap::{get_raster, get_raster_width, FontWeight, RasterHeight};

/// A monospaced face at one size: every character is `advance()` pixels wide.
#[derive(Clone, Copy, Debug)]
pub struct Font {
    weight: FontWeight,
    height: RasterHeight,
}

/// Labels, tick values, legends.
pub const BODY: Font = Font { weight: FontWeight::Regular, height: RasterHeight::Size16 };
/// Titles and headings.
pub const HEADING: Font = Font { weight: FontWeight::Bold, height: RasterHeight::Size20 };

pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
pub const INK: Rgb<u8> = Rgb([34, 34, 34]);
pub const MUTED: Rgb<u8> = Rgb([110, 110, 110]);

impl Font {
    pub fn height(self) -> u32 {
        self.height.val() as u32
    }

    pub fn advance(self) -> u32 {
        get_raster_width(self.weight, self.height) as u32
    }

    pub fn width(self, text: &str) -> u32 {
        text.chars().count() as u32 * self.advance()
    }

    /// `text`, cut and ended with "..." where it would be wider than `max_width`.
    pub fn fit(self, text: &str, max_width: u32) -> String {
        let max_chars = (max_width / self.advance()) as usize;
        if text.chars().count() <= max_chars {
            return text.to_string();
        }
        let kept: String = text.chars().take(max_chars.saturating_sub(3)).collect();
        format!("{kept}...")
    }

    /// Coverage (0..=255) of each pixel of `c`, row-major, `advance()` wide and `height()` tall.
    fn glyph(self, c: char) -> &'static [u8] {
        // The font covers printable ASCII only; anything else shows as '?', not as a gap.
        get_raster(c, self.weight, self.height)
            .or_else(|| get_raster('?', self.weight, self.height))
            .expect("'?' is in the font")
            .pixels()
    }
}

/// Mixes `colour` into the pixel at (x, y) with opacity `alpha`; points outside are ignored.
pub fn blend(img: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>, alpha: f32) {
    if x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 || alpha <= 0.0 {
        return;
    }
    let a = alpha.min(1.0);
    let p = img.get_pixel_mut(x as u32, y as u32);
    for k in 0..3 {
        p.0[k] = (p.0[k] as f32 * (1.0 - a) + colour.0[k] as f32 * a).round() as u8;
    }
}

/// Fills the rectangle, clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: u32, h: u32, colour: Rgb<u8>) {
    let x0 = x.max(0) as u32;
    let y0 = y.max(0) as u32;
    let x1 = (x + w as i64).clamp(0, img.width() as i64) as u32;
    let y1 = (y + h as i64).clamp(0, img.height() as i64) as u32;
    for yy in y0..y1 {
        for xx in x0..x1 {
            img.put_pixel(xx, yy, colour);
        }
    }
}

/// A one-pixel outline just outside the rectangle (x, y, w, h).
pub fn frame(img: &mut RgbImage, x: i64, y: i64, w: u32, h: u32, colour: Rgb<u8>) {
    fill_rect(img, x - 1, y - 1, w + 2, 1, colour);
    fill_rect(img, x - 1, y + h as i64, w + 2, 1, colour);
    fill_rect(img, x - 1, y, 1, h, colour);
    fill_rect(img, x + w as i64, y, 1, h, colour);
}

/// Draws `text` with its top-left corner at (x, y); returns its width.
pub fn text(img: &mut RgbImage, x: i64, y: i64, text: &str, font: Font, colour: Rgb<u8>) -> u32 {
    let (w, h) = (font.advance() as i64, font.height() as i64);
    for (i, c) in text.chars().enumerate() {
        let glyph = font.glyph(c);
        for gy in 0..h {
            for gx in 0..w {
                let cover = glyph[(gy * w + gx) as usize];
                blend(img, x + i as i64 * w + gx, y + gy, colour, cover as f32 / 255.0);
            }
        }
    }
    font.width(text)
}

/// Draws `text` turned a quarter turn anticlockwise (read bottom to top, as a y-axis label),
/// starting at (x, y) = the bottom-left corner of the first character.
pub fn text_up(img: &mut RgbImage, x: i64, y: i64, text: &str, font: Font, colour: Rgb<u8>) {
    let (w, h) = (font.advance() as i64, font.height() as i64);
    for (i, c) in text.chars().enumerate() {
        let glyph = font.glyph(c);
        for gy in 0..h {
            for gx in 0..w {
                let cover = glyph[(gy * w + gx) as usize];
                blend(img, x + gy, y - 1 - (i as i64 * w + gx), colour, cover as f32 / 255.0);
            }
        }
    }
}

/// An anti-aliased polyline `width` pixels wide through `points` (pixel coordinates, pixel
/// centres at +0.5). Coverage is the maximum over segments, so joints are not drawn twice.
pub fn polyline(img: &mut RgbImage, points: &[(f64, f64)], width: f64, colour: Rgb<u8>) {
    if points.len() < 2 {
        return;
    }
    let reach = width / 2.0 + 1.0;
    let mut cover = Coverage::around(img, points, reach);
    for seg in points.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        cover.add(a.0.min(b.0) - reach, a.1.min(b.1) - reach, a.0.max(b.0) + reach, a.1.max(b.1) + reach, |px, py| {
            width / 2.0 + 0.5 - segment_distance((px, py), a, b)
        });
    }
    cover.paint(img, colour);
}

/// An anti-aliased filled disc.
pub fn disc(img: &mut RgbImage, centre: (f64, f64), radius: f64, colour: Rgb<u8>) {
    let reach = radius + 1.0;
    let mut cover = Coverage::around(img, &[centre], reach);
    let (cx, cy) = centre;
    cover.add(cx - reach, cy - reach, cx + reach, cy + reach, |px, py| {
        radius + 0.5 - ((px - cx).powi(2) + (py - cy).powi(2)).sqrt()
    });
    cover.paint(img, colour);
}

/// A dashed vertical line one pixel wide at column x from y0 to y1.
pub fn dashed_vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, dash: i64, colour: Rgb<u8>) {
    for y in y0..y1 {
        if (y - y0) / dash % 2 == 0 {
            blend(img, x, y, colour, 1.0);
        }
    }
}

fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 { 0.0 } else { (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0) };
    ((p.0 - a.0 - t * dx).powi(2) + (p.1 - a.1 - t * dy).powi(2)).sqrt()
}

/// Per-pixel opacity over the bounding box of a shape, clipped to the image.
struct Coverage {
    x0: i64,
    y0: i64,
    w: i64,
    h: i64,
    alpha: Vec<f32>,
}

impl Coverage {
    fn around(img: &RgbImage, points: &[(f64, f64)], reach: f64) -> Coverage {
        let fold =
            |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| points.iter().map(pick).fold(init, f);
        let x0 = (fold(f64::min, f64::INFINITY, |p| p.0) - reach).floor().max(0.0) as i64;
        let y0 = (fold(f64::min, f64::INFINITY, |p| p.1) - reach).floor().max(0.0) as i64;
        let x1 = ((fold(f64::max, f64::NEG_INFINITY, |p| p.0) + reach).ceil() as i64).min(img.width() as i64);
        let y1 = ((fold(f64::max, f64::NEG_INFINITY, |p| p.1) + reach).ceil() as i64).min(img.height() as i64);
        let (w, h) = ((x1 - x0).max(0), (y1 - y0).max(0));
        Coverage { x0, y0, w, h, alpha: vec![0.0; (w * h) as usize] }
    }

    /// Raises the opacity of pixels in the box to `inside(pixel centre)`, clamped to [0, 1].
    fn add(&mut self, left: f64, top: f64, right: f64, bottom: f64, inside: impl Fn(f64, f64) -> f64) {
        let xa = (left.floor() as i64).max(self.x0);
        let ya = (top.floor() as i64).max(self.y0);
        let xb = (right.ceil() as i64).min(self.x0 + self.w);
        let yb = (bottom.ceil() as i64).min(self.y0 + self.h);
        for y in ya..yb {
            for x in xa..xb {
                let a = inside(x as f64 + 0.5, y as f64 + 0.5).clamp(0.0, 1.0) as f32;
                let slot = &mut self.alpha[((y - self.y0) * self.w + x - self.x0) as usize];
                *slot = slot.max(a);
            }
        }
    }

    fn paint(&self, img: &mut RgbImage, colour: Rgb<u8>) {
        for y in 0..self.h {
            for x in 0..self.w {
                blend(img, self.x0 + x, self.y0 + y, colour, self.alpha[(y * self.w + x) as usize]);
            }
        }
    }
}
