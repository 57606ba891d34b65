//! The built-in synthetic dataset: MRI-like axial slices with tumour masks, deterministic from
//! (seed, index), so training and tests need no download.
//!
//! A slice: dark background, an elliptical head with a bright skull ring and a dark CSF gap,
//! brain tissue with smooth gray/white-matter texture and dark ventricles, and (in about 85% of
//! slices) one or two tumours: unions of a few ellipses with noise-warped edges, from a few
//! pixels to a third of the brain, brighter or darker than tissue and sometimes only a little.
//! Bright tumours are as bright as the skull and dark ones as dark as the ventricles, so
//! intensity alone does not find them; shape and context do. Then a smooth bias field and
//! Gaussian noise. All geometry is drawn in coordinates [-1, 1]², so one (seed, index) gives the
//! same slice at any size.
//!
//! Binary masks mark the tumours. K-class masks (`--classes K`) hold class ids: [`TUMOUR`],
//! [`VENTRICLES`], [`SKULL`], each where its id is below K; the rest is background (0).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{GrayImage, ImageFormat, Luma};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use rayon::prelude::*;

use super::load::Sample;

/// Share of slices without a tumour.
pub const EMPTY_FRACTION: f64 = 0.15;

/// Class id of tumours in K-class masks.
pub const TUMOUR: u8 = 1;
/// Class id of the ventricles (in about 75% of slices), with 3 classes or more.
pub const VENTRICLES: u8 = 2;
/// Class id of the skull ring, with 4 classes.
pub const SKULL: u8 = 3;
/// Background, tumour, ventricles and skull.
pub const MAX_CLASSES: usize = 4;

/// How large the tumours are.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Lesions {
    /// From a few pixels to a third of the brain (log-uniform radius), of one to four lobes.
    #[default]
    Mixed,
    /// One warped ellipse each, whose area is a share of the slice drawn log-uniformly from
    /// `min` to `max` percent (`--lesion-size 0.1-1`: a brain tumour a few % of a slice or less).
    Area { min: f32, max: f32 },
}

impl std::str::FromStr for Lesions {
    type Err = String;

    /// `MIN-MAX`, percent of the slice's area, e.g. `0.1-1`.
    fn from_str(s: &str) -> Result<Lesions, String> {
        let range =
            s.split_once('-').and_then(|(a, b)| Some((a.trim().parse::<f32>().ok()?, b.trim().parse::<f32>().ok()?)));
        match range {
            Some((min, max)) if min > 0.0 && min <= max && max <= 25.0 => Ok(Lesions::Area { min, max }),
            _ => Err(format!(
                "'{s}' is not a lesion size range: give MIN-MAX in percent of the slice area, 0 < MIN <= MAX <= 25, \
                 e.g. 0.1-1"
            )),
        }
    }
}

/// Slice `index` of the dataset `seed`: (image, mask), both `size`×`size`, mask 0 or 255.
pub fn generate(seed: u64, index: usize, size: usize) -> (GrayImage, GrayImage) {
    generate_with(seed, index, size, 1, Lesions::Mixed)
}

/// Slice `index` of the dataset `seed` (the image of [`generate`]) with a mask of class ids below
/// `classes` (2 to [`MAX_CLASSES`]).
pub fn generate_classes(seed: u64, index: usize, size: usize, classes: usize) -> (GrayImage, GrayImage) {
    generate_with(seed, index, size, classes, Lesions::Mixed)
}

/// Slice `index` of the dataset `seed` with tumours of `lesions`' sizes: a 0/255 tumour mask for
/// 1 class, class ids below `classes` for 2 to [`MAX_CLASSES`].
pub fn generate_with(seed: u64, index: usize, size: usize, classes: usize, lesions: Lesions) -> (GrayImage, GrayImage) {
    let mut rng = Pcg64::seed_from_u64(splitmix64(seed ^ splitmix64(index as u64)));
    let slice = Slice::random(&mut rng, lesions);
    let (image, mut labels) = slice.render(&mut rng, size as u32);
    for p in labels.pixels_mut() {
        p.0[0] = match (classes, p.0[0]) {
            (1, TUMOUR) => 255,
            (1, _) => 0,
            (_, id) if usize::from(id) >= classes => 0,
            (_, id) => id,
        };
    }
    (image, labels)
}

/// Whether the synthetic slices have `classes` classes (an error that lists them, if not).
pub fn check_classes(classes: usize) -> Result<()> {
    if classes == 0 || classes > MAX_CLASSES {
        bail!(
            "the synthetic slices have 1 (binary tumour masks) to {MAX_CLASSES} classes (background, tumour, \
             ventricles, skull), not {classes}"
        );
    }
    Ok(())
}

/// `count` slices as samples (no disk): image `[1, size, size]` in [0, 1], mask in {0, 1}.
pub fn samples(seed: u64, count: usize, size: usize) -> Vec<Sample> {
    samples_with_classes(seed, count, size, 1).expect("1 class is binary")
}

/// `count` slices as samples for a model of `classes` classes: masks in {0, 1} for 1, class ids
/// for 2 to [`MAX_CLASSES`] (more is an error). The images are those of [`samples`].
pub fn samples_with_classes(seed: u64, count: usize, size: usize, classes: usize) -> Result<Vec<Sample>> {
    check_classes(classes)?;
    Ok((0..count)
        .into_par_iter()
        .map(|index| {
            let (image, mask) = if classes == 1 {
                let (image, mask) = generate(seed, index, size);
                (image, mask.as_raw().iter().map(|&v| f32::from(v > 127)).collect())
            } else {
                let (image, ids) = generate_classes(seed, index, size, classes);
                (image, ids.as_raw().iter().map(|&v| f32::from(v)).collect())
            };
            Sample {
                image: image.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect(),
                mask,
                native_size: (size as u32, size as u32),
            }
        })
        .collect())
}

/// Writes `DIR/images/NNNN.png` and `DIR/masks/NNNN.png` for slices 0..count (each through a
/// temporary file and a rename); returns the count.
pub fn write_dataset(dir: &Path, count: usize, seed: u64, size: usize) -> Result<usize> {
    write_dataset_with_classes(dir, count, seed, size, 1)
}

/// [`write_dataset`] with 0/255 masks for 1 class, or class-id masks for 2 to [`MAX_CLASSES`].
pub fn write_dataset_with_classes(dir: &Path, count: usize, seed: u64, size: usize, classes: usize) -> Result<usize> {
    write_dataset_with(dir, count, seed, size, classes, Lesions::Mixed)
}

/// [`write_dataset_with_classes`] with tumours of `lesions`' sizes.
pub fn write_dataset_with(
    dir: &Path,
    count: usize,
    seed: u64,
    size: usize,
    classes: usize,
    lesions: Lesions,
) -> Result<usize> {
    if size == 0 {
        bail!("synthetic slices need a size of at least 1 pixel");
    }
    check_classes(classes)?;
    let (images, masks) = (dir.join("images"), dir.join("masks"));
    for d in [&images, &masks] {
        fs::create_dir_all(d).with_context(|| format!("cannot create folder {}", d.display()))?;
    }
    let digits = count.saturating_sub(1).to_string().len().max(4);
    (0..count).into_par_iter().try_for_each(|index| {
        let (image, mask) = generate_with(seed, index, size, classes, lesions);
        let name = format!("{index:0digits$}.png");
        save_png(&image, &images.join(&name))?;
        save_png(&mask, &masks.join(&name))
    })?;
    Ok(count)
}

fn save_png(image: &GrayImage, path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    image
        .save_with_format(&tmp, ImageFormat::Png)
        .map_err(anyhow::Error::from)
        .and_then(|()| fs::rename(&tmp, path).map_err(anyhow::Error::from))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Smooth random field on [-1, 1]²: random values on an n×n lattice, interpolated with a
/// smoothstep. About [-1, 1]; its features are about 2/n wide.
struct ValueNoise {
    n: usize,
    values: Vec<f32>,
}

impl ValueNoise {
    fn new(rng: &mut Pcg64, n: usize) -> Self {
        Self { n, values: (0..(n + 1) * (n + 1)).map(|_| rng.random_range(-1.0..1.0)).collect() }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let lattice = |t: f32| {
            let f = ((t + 1.0) * 0.5).clamp(0.0, 1.0) * self.n as f32;
            let i = (f as usize).min(self.n - 1);
            let s = f - i as f32;
            (i, s * s * (3.0 - 2.0 * s))
        };
        let ((ix, sx), (iy, sy)) = (lattice(x), lattice(y));
        let v = |i: usize, j: usize| self.values[j * (self.n + 1) + i];
        let top = v(ix, iy) + (v(ix + 1, iy) - v(ix, iy)) * sx;
        let bottom = v(ix, iy + 1) + (v(ix + 1, iy + 1) - v(ix, iy + 1)) * sx;
        top + (bottom - top) * sy
    }
}

/// An ellipse: centre, radii, rotation.
struct Ellipse {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    cos: f32,
    sin: f32,
}

impl Ellipse {
    fn new(cx: f32, cy: f32, rx: f32, ry: f32, angle: f32) -> Self {
        Self { cx, cy, rx, ry, cos: angle.cos(), sin: angle.sin() }
    }

    /// The point in the ellipse's own frame, scaled so the boundary is the unit circle.
    fn local(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        ((dx * self.cos + dy * self.sin) / self.rx, (-dx * self.sin + dy * self.cos) / self.ry)
    }

    /// 0 at the centre, 1 on the boundary.
    fn radius(&self, x: f32, y: f32) -> f32 {
        let (u, v) = self.local(x, y);
        (u * u + v * v).sqrt()
    }
}

struct Tumour {
    lobes: Vec<Ellipse>,
    /// Edge warp, as a fraction of the tumour's size.
    warp_x: ValueNoise,
    warp_y: ValueNoise,
    warp: f32,
    intensity: f32,
    /// Darker centre (necrosis) of large bright tumours: intensity there, or none.
    core: Option<f32>,
    texture: ValueNoise,
}

struct Slice {
    head: Ellipse,
    /// Boundary wobble of the head: (harmonic, amplitude, phase).
    wobble: [(f32, f32, f32); 3],
    skull_thickness: f32,
    skull_brightness: f32,
    gap: f32,
    csf: f32,
    background: f32,
    /// Gray-matter level, and how much brighter white matter is.
    tissue: f32,
    white_matter: f32,
    /// Where white matter is (above zero, after a bias towards the centre).
    white_matter_layout: ValueNoise,
    texture: ValueNoise,
    texture_amplitude: f32,
    ventricles: Vec<Ellipse>,
    tumours: Vec<Tumour>,
    /// Bias field 1 + bx·x + by·y + bq·(x² + y²).
    bias: (f32, f32, f32),
    noise_sigma: f32,
}

impl Slice {
    fn random(rng: &mut Pcg64, lesions: Lesions) -> Self {
        let angle = rng.random_range(-0.25..0.25);
        let head = Ellipse::new(
            rng.random_range(-0.05..0.05),
            rng.random_range(-0.05..0.05),
            rng.random_range(0.68..0.82),
            rng.random_range(0.8..0.92),
            angle,
        );
        let wobble =
            [2.0, 3.0, 5.0].map(|k| (k, rng.random_range(0.0..0.025), rng.random_range(0.0..std::f32::consts::TAU)));
        let skull_thickness = rng.random_range(0.06..0.1);
        let gap = rng.random_range(0.015..0.04);
        let brain_radius = 1.0 - skull_thickness - gap;
        let tissue = rng.random_range(0.34..0.44);
        let white_matter = rng.random_range(0.07..0.14);

        // Ventricles: a mirrored pair of dark ellipses near the middle of the head.
        let mut ventricles = Vec::new();
        if rng.random_bool(0.75) {
            let (rx, ry) = (rng.random_range(0.04..0.09), rng.random_range(0.12..0.22));
            let offset = rng.random_range(0.06..0.12);
            let tilt = rng.random_range(0.1..0.35);
            for side in [-1.0f32, 1.0] {
                let (x, y) = head_point(&head, side * offset, rng.random_range(-0.08..0.0));
                ventricles.push(Ellipse::new(x, y, rx, ry, angle - side * tilt));
            }
        }

        let tumours = if rng.random_bool(EMPTY_FRACTION) {
            Vec::new()
        } else {
            let count = if rng.random_bool(0.2) { 2 } else { 1 };
            (0..count).map(|_| Tumour::random(rng, &head, brain_radius, tissue + white_matter / 2.0, lesions)).collect()
        };

        Self {
            wobble,
            skull_thickness,
            skull_brightness: rng.random_range(0.75..0.95),
            gap,
            csf: rng.random_range(0.05..0.13),
            background: rng.random_range(0.0..0.05),
            tissue,
            white_matter,
            white_matter_layout: ValueNoise::new(rng, 7),
            texture: ValueNoise::new(rng, 14),
            texture_amplitude: rng.random_range(0.03..0.06),
            ventricles,
            tumours,
            bias: (rng.random_range(-0.15..0.15), rng.random_range(-0.15..0.15), rng.random_range(-0.15..0.1)),
            noise_sigma: rng.random_range(0.012..0.035),
            head,
        }
    }

    /// The image and the class id of every pixel (0 background).
    fn render(&self, rng: &mut Pcg64, size: u32) -> (GrayImage, GrayImage) {
        let mut image = GrayImage::new(size, size);
        let mut labels = GrayImage::new(size, size);
        let brain_radius = 1.0 - self.skull_thickness - self.gap;
        for py in 0..size {
            for px in 0..size {
                let x = (px as f32 + 0.5) / size as f32 * 2.0 - 1.0;
                let y = (py as f32 + 0.5) / size as f32 * 2.0 - 1.0;
                let (u, v) = self.head.local(x, y);
                let theta = v.atan2(u);
                let wobble: f32 = self.wobble.iter().map(|&(k, a, phase)| a * (k * theta + phase).sin()).sum();
                let r = (u * u + v * v).sqrt() / (1.0 + wobble);

                let mut label = 0;
                let mut value = if r > 1.0 {
                    self.background
                } else if r > 1.0 - self.skull_thickness {
                    label = SKULL;
                    self.skull_brightness * (0.92 + 0.08 * self.texture.at(x, y))
                } else if r > brain_radius {
                    self.csf
                } else {
                    self.tissue_at(x, y, r / brain_radius)
                };
                if r <= brain_radius {
                    // Where tissue_at's blend towards CSF (radius 0.85 to 1.1) is over half done.
                    if self.ventricles.iter().any(|v| v.radius(x, y) < 0.975) {
                        label = VENTRICLES;
                    }
                    let mut inside = false;
                    for tumour in &self.tumours {
                        let f = tumour.field(x, y);
                        inside |= f > 0.0;
                        let weight = smoothstep(-0.12, 0.12, f);
                        if weight > 0.0 {
                            let mut t = tumour.intensity + 0.04 * tumour.texture.at(x, y);
                            if let Some(core) = tumour.core {
                                t += (core - t) * smoothstep(0.35, 0.6, f);
                            }
                            value += (t - value) * weight;
                        }
                    }
                    if inside {
                        label = TUMOUR;
                    }
                }
                let (bx, by, bq) = self.bias;
                value *= 1.0 + bx * x + by * y + bq * (x * x + y * y);
                value += self.noise_sigma * gaussian(rng);
                image.put_pixel(px, py, Luma([(value.clamp(0.0, 1.0) * 255.0).round() as u8]));
                labels.put_pixel(px, py, Luma([label]));
            }
        }
        (image, labels)
    }

    /// Brain tissue at (x, y), `depth` = 0 at the centre and 1 at the brain's edge.
    fn tissue_at(&self, x: f32, y: f32, depth: f32) -> f32 {
        // Cortical gray matter: a slightly darker rim just inside the edge.
        let cortex = 1.0 - 0.12 * smoothstep(0.82, 0.97, depth);
        let white = smoothstep(-0.2, 0.2, self.white_matter_layout.at(x, y) + 0.6 - 0.9 * depth);
        let mut value =
            (self.tissue + self.white_matter * white + self.texture_amplitude * self.texture.at(x, y)) * cortex;
        for ventricle in &self.ventricles {
            value += (self.csf - value) * (1.0 - smoothstep(0.85, 1.1, ventricle.radius(x, y)));
        }
        value
    }
}

impl Tumour {
    fn random(rng: &mut Pcg64, head: &Ellipse, brain_radius: f32, tissue: f32, lesions: Lesions) -> Self {
        // Mixed: log-uniform size, so small tumours are as common as large ones; the smallest
        // are still a few dozen pixels at 64×64, so a small U-Net trained for minutes can find
        // them. Area: the radius and aspect of an ellipse of that share of the 2×2 slice.
        let (size, aspect) = match lesions {
            Lesions::Mixed => ((rng.random_range(0.14f32.ln()..0.45f32.ln())).exp(), None),
            Lesions::Area { min, max } => {
                let share = rng.random_range(min.ln()..=max.ln()).exp() / 100.0;
                let aspect = rng.random_range(0.6..1.0);
                ((4.0 * share / (std::f32::consts::PI * aspect)).sqrt(), Some(aspect))
            }
        };
        let reach = rng.random_range(0.0..(brain_radius - 0.25).max(0.1));
        let direction = rng.random_range(0.0..std::f32::consts::TAU);
        let (cx, cy) = head_point(head, reach * direction.cos(), reach * direction.sin());
        let lobes = match aspect {
            Some(aspect) => {
                vec![Ellipse::new(cx, cy, size, size * aspect, rng.random_range(0.0..std::f32::consts::PI))]
            }
            None => Self::lobes(rng, cx, cy, size),
        };
        // Mostly clear contrast; sometimes subtle.
        let kind = rng.random_range(0.0..1.0);
        let intensity = if kind < 0.5 {
            rng.random_range(0.75..0.95)
        } else if kind < 0.85 {
            rng.random_range(0.17..0.28)
        } else {
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            tissue + sign * rng.random_range(0.25..0.32)
        };
        let core = (intensity > 0.7 && size > 0.14 && rng.random_bool(0.4)).then(|| rng.random_range(0.25..0.4));
        Self {
            lobes,
            warp_x: ValueNoise::new(rng, 9),
            warp_y: ValueNoise::new(rng, 9),
            // A small lesion's edge is warped less, so its area stays near the one asked for.
            warp: size * if aspect.is_some() { rng.random_range(0.05..0.15) } else { rng.random_range(0.1..0.35) },
            intensity,
            core,
            texture: ValueNoise::new(rng, 12),
        }
    }

    /// One to four overlapping ellipses around (cx, cy), the first `size` across.
    fn lobes(rng: &mut Pcg64, cx: f32, cy: f32, size: f32) -> Vec<Ellipse> {
        let lobe_count = rng.random_range(1..=4);
        (0..lobe_count)
            .map(|i| {
                let (ox, oy) = if i == 0 {
                    (0.0, 0.0)
                } else {
                    let a = rng.random_range(0.0..std::f32::consts::TAU);
                    let d = size * rng.random_range(0.3..0.7);
                    (d * a.cos(), d * a.sin())
                };
                let scale = if i == 0 { 1.0 } else { rng.random_range(0.45..0.75) };
                Ellipse::new(
                    cx + ox,
                    cy + oy,
                    size * scale * rng.random_range(0.7..1.0),
                    size * scale * rng.random_range(0.5..1.0),
                    rng.random_range(0.0..std::f32::consts::PI),
                )
            })
            .collect()
    }

    /// > 0 inside, 0 on the edge; grows by 1 per lobe radius towards a lobe's centre.
    fn field(&self, x: f32, y: f32) -> f32 {
        let (wx, wy) = (x + self.warp * self.warp_x.at(x, y), y + self.warp * self.warp_y.at(x, y));
        self.lobes.iter().map(|lobe| 1.0 - lobe.radius(wx, wy)).fold(f32::NEG_INFINITY, f32::max)
    }
}

/// The point at (u, v) in the head's frame, scaled by its radii.
fn head_point(head: &Ellipse, u: f32, v: f32) -> (f32, f32) {
    let (u, v) = (u * head.rx, v * head.ry);
    (head.cx + u * head.cos - v * head.sin, head.cy + u * head.sin + v * head.cos)
}

fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Standard normal by Box–Muller.
fn gaussian(rng: &mut Pcg64) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    (-2.0 * u1.ln()).sqrt() * u2.cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixels of a `side`² slice inside `tumour`, counted in a box around it.
    fn tumour_pixels(tumour: &Tumour, side: u32) -> usize {
        let centre = &tumour.lobes[0];
        let reach = centre.rx.max(centre.ry) + tumour.warp + 4.0 / side as f32;
        let to_pixel = |t: f32| (((t + 1.0) / 2.0 * side as f32).floor().max(0.0) as u32).min(side);
        let (x0, x1) = (to_pixel(centre.cx - reach), to_pixel(centre.cx + reach));
        let (y0, y1) = (to_pixel(centre.cy - reach), to_pixel(centre.cy + reach));
        let at = |p: u32| (p as f32 + 0.5) / side as f32 * 2.0 - 1.0;
        (y0..y1)
            .flat_map(|py| (x0..x1).map(move |px| (px, py)))
            .filter(|&(px, py)| tumour.field(at(px), at(py)) > 0.0)
            .count()
    }

    #[test]
    fn small_lesions_cover_the_asked_share_of_the_slice() {
        let lesions: Lesions = "0.1-1".parse().unwrap();
        assert_eq!(lesions, Lesions::Area { min: 0.1, max: 1.0 });
        let side = 256;
        let mut shares = Vec::new();
        for index in 0..300u64 {
            let mut rng = Pcg64::seed_from_u64(splitmix64(7 ^ splitmix64(index)));
            let slice = Slice::random(&mut rng, lesions);
            for tumour in &slice.tumours {
                assert_eq!(tumour.lobes.len(), 1);
                shares.push(100.0 * tumour_pixels(tumour, side) as f64 / f64::from(side * side));
            }
        }
        shares.sort_by(f64::total_cmp);
        let (smallest, largest) = (shares[0], shares[shares.len() - 1]);
        // Pixelation and the edge warp move an ellipse's area by a little.
        assert!(smallest >= 0.08 && largest <= 1.15, "shares from {smallest:.3} % to {largest:.3} %");
        assert!(
            smallest < 0.12 && largest > 0.85,
            "shares from {smallest:.3} % to {largest:.3} %: the range is not covered"
        );
        // Log-uniform: the median share is near the geometric mean, sqrt(0.1 · 1) = 0.32 %.
        let median = shares[shares.len() / 2];
        assert!((0.25..0.4).contains(&median), "median {median:.3} %");
        assert!(shares.len() > 250, "{} lesions in 300 slices", shares.len());
    }

    #[test]
    fn small_lesion_masks_hold_the_lesions_and_ranges_are_checked() {
        let lesions = Lesions::Area { min: 0.1, max: 1.0 };
        for index in 0..20 {
            let (image, mask) = generate_with(3, index, 256, 1, lesions);
            let (again, _) = generate_with(3, index, 256, 1, lesions);
            assert_eq!(image, again, "seeded");
            let share = mask.pixels().filter(|p| p.0[0] == 255).count() as f64 / 65536.0 * 100.0;
            assert!(share <= 2.3, "slice {index}: {share:.2} % foreground from at most two lesions");
            assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        }
        for bad in ["1", "1-0.1", "0-1", "a-b", "1-30"] {
            assert!(bad.parse::<Lesions>().is_err(), "{bad}");
        }
    }
}
