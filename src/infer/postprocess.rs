//! From probability maps to masks and scores on the CPU: resizing a map, thresholding (binary)
//! or taking the most probable class (K classes), keeping the largest connected component, and
//! the confusion counts and loss of a mask.

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma};

use crate::ops::metrics::ClassCounts;

/// The seed's threshold: probability > 0.5 is foreground.
pub const THRESHOLD: f32 = 0.5;
/// Keeps `bce` finite where a probability rounds to exactly 0 or 1 in f32.
const PROBABILITY_FLOOR: f64 = 1e-7;

/// A `width`×`height` map resized bilinearly (the filter widens when shrinking, so nothing
/// aliases); the same size returns a copy.
pub fn resize_map(map: &[f32], width: u32, height: u32, new_width: u32, new_height: u32) -> Vec<f32> {
    let buffer = ImageBuffer::<Luma<f32>, &[f32]>::from_raw(width, height, map).expect("resize_map: map size");
    imageops::resize(&buffer, new_width, new_height, FilterType::Triangle).into_raw()
}

/// `planes` maps of `width`×`height` (`[planes, height, width]`, e.g. one per class) each
/// resized as [`resize_map`] does.
pub fn resize_maps(maps: &[f32], planes: usize, width: u32, height: u32, new_width: u32, new_height: u32) -> Vec<f32> {
    maps.chunks_exact(maps.len() / planes.max(1))
        .flat_map(|plane| resize_map(plane, width, height, new_width, new_height))
        .collect()
}

/// The class of each pixel of `[classes, pixels]` probabilities: the most probable, the first
/// on a tie (as the metrics kernel decides).
pub fn argmax(probs: &[f32], classes: usize) -> Vec<u8> {
    let pixels = probs.len() / classes;
    (0..pixels)
        .map(|q| {
            let mut best = 0;
            for c in 1..classes {
                if probs[c * pixels + q] > probs[best * pixels + q] {
                    best = c;
                }
            }
            best as u8
        })
        .collect()
}

pub fn threshold(prob: &[f32]) -> Vec<bool> {
    prob.iter().map(|&p| p > THRESHOLD).collect()
}

/// The 8-connected foreground components of a `width`×`height` mask (pixels that touch at a
/// corner are connected), numbered in raster order of their first pixel: each pixel's component
/// (`u32::MAX` for background) and each component's size in pixels.
pub fn label_components(mask: &[bool], width: usize, height: usize) -> (Vec<u32>, Vec<usize>) {
    assert_eq!(mask.len(), width * height, "label_components: mask is not {width}×{height}");
    let mut label = vec![BACKGROUND; mask.len()];
    let mut sizes: Vec<usize> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] != BACKGROUND {
            continue;
        }
        let id = sizes.len() as u32;
        label[start] = id;
        stack.push(start);
        let mut size = 0;
        while let Some(k) = stack.pop() {
            size += 1;
            let (x, y) = (k % width, k / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let n = ny * width + nx;
                    if mask[n] && label[n] == BACKGROUND {
                        label[n] = id;
                        stack.push(n);
                    }
                }
            }
        }
        sizes.push(size);
    }
    (label, sizes)
}

/// [`label_components`]' label of a background pixel.
pub const BACKGROUND: u32 = u32::MAX;

/// Only the largest 8-connected foreground component of a `width`×`height` mask (see
/// [`label_components`]). The first in raster order wins a tie; an empty mask stays empty.
pub fn keep_largest_component(mask: &[bool], width: usize, height: usize) -> Vec<bool> {
    let (label, sizes) = label_components(mask, width, height);
    // max_by_key returns the last maximum; scanning in reverse makes that the first component.
    let Some(largest) = (0..sizes.len()).rev().max_by_key(|&i| sizes[i]) else {
        return vec![false; mask.len()];
    };
    label.iter().map(|&l| l == largest as u32).collect()
}

/// `mask` without its 8-connected components of fewer than `min_pixels` pixels.
pub fn drop_small_components(mask: &[bool], width: usize, height: usize, min_pixels: usize) -> Vec<bool> {
    let (label, sizes) = label_components(mask, width, height);
    label.iter().map(|&l| sizes.get(l as usize).is_some_and(|&n| n >= min_pixels)).collect()
}

/// `[TP, FP, FN, TN]` of a predicted mask against a true one, as the metrics kernel counts.
pub fn confusion(pred: &[bool], truth: &[bool]) -> [u64; 4] {
    assert_eq!(pred.len(), truth.len(), "confusion: masks differ in size");
    let mut c = [0u64; 4];
    for (&p, &t) in pred.iter().zip(truth) {
        c[match (p, t) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }] += 1;
    }
    c
}

/// Per class TP, FP, FN and the correct pixels of predicted class ids against true ones, as the
/// class-counts kernel counts.
pub fn class_confusion(pred: &[u8], truth: &[u8], classes: usize) -> ClassCounts {
    assert_eq!(pred.len(), truth.len(), "class_confusion: masks differ in size");
    let mut c = ClassCounts::new(classes);
    for (&p, &t) in pred.iter().zip(truth) {
        c.add_pixel(usize::from(p), usize::from(t));
    }
    c
}

/// Mean cross-entropy of `[classes, pixels]` probabilities against class ids, in f64.
pub fn cross_entropy(probs: &[f32], truth: &[u8]) -> f64 {
    let pixels = truth.len();
    let total: f64 = truth
        .iter()
        .enumerate()
        .map(|(q, &t)| -(probs[usize::from(t) * pixels + q] as f64).max(PROBABILITY_FLOOR).ln())
        .sum();
    total / pixels.max(1) as f64
}

/// Mean binary cross-entropy of probabilities against a 0/1 mask, in f64.
pub fn bce(prob: &[f32], truth: &[bool]) -> f64 {
    let total: f64 = prob
        .iter()
        .zip(truth)
        .map(|(&p, &t)| {
            let p = (p as f64).clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR);
            -if t { p.ln() } else { (1.0 - p).ln() }
        })
        .sum();
    total / prob.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let bits = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
        (bits, rows[0].len(), rows.len())
    }

    #[test]
    fn keeps_the_larger_of_two_blobs() {
        let (m, w, h) = mask(&["##....", "##..##", "....##", "....##"]);
        let (want, _, _) = mask(&["......", "....##", "....##", "....##"]);
        assert_eq!(keep_largest_component(&m, w, h), want);
    }

    #[test]
    fn diagonal_neighbours_are_connected() {
        // A staircase touching only at corners is one component of 4, larger than the 3-pixel bar.
        let (m, w, h) = mask(&["#.....", ".#....", "..#...", "...#..", "......", "###..."]);
        let (want, _, _) = mask(&["#.....", ".#....", "..#...", "...#..", "......", "......"]);
        assert_eq!(keep_largest_component(&m, w, h), want);
        // Anti-diagonal too.
        let (m, w, h) = mask(&["..#", ".#.", "#.#"]);
        let (want, _, _) = mask(&["..#", ".#.", "#.#"]);
        assert_eq!(keep_largest_component(&m, w, h), want);
    }

    #[test]
    fn empty_and_full_masks_are_unchanged() {
        assert_eq!(keep_largest_component(&[false; 12], 4, 3), vec![false; 12]);
        assert_eq!(keep_largest_component(&[true; 12], 4, 3), vec![true; 12]);
        assert_eq!(keep_largest_component(&[], 0, 0), Vec::<bool>::new());
    }

    #[test]
    fn a_tie_keeps_the_first_component() {
        let (m, w, h) = mask(&["#.#"]);
        let (want, _, _) = mask(&["#.."]);
        assert_eq!(keep_largest_component(&m, w, h), want);
    }

    #[test]
    fn small_components_go_and_large_ones_stay_whole() {
        let (m, w, h) = mask(&["##...#", "##....", "......", "#...##", "....##"]);
        let (want, _, _) = mask(&["##....", "##....", "......", "....##", "....##"]);
        assert_eq!(drop_small_components(&m, w, h, 3), want);
        assert_eq!(drop_small_components(&m, w, h, 1), m, "every component has a pixel");
        assert_eq!(drop_small_components(&m, w, h, 5), vec![false; w * h]);
    }

    #[test]
    fn confusion_and_bce() {
        let pred = threshold(&[0.9, 0.9, 0.1, 0.1, 0.5]);
        let truth = [true, false, true, false, false];
        assert_eq!(confusion(&pred, &truth), [1, 1, 1, 2]);
        let loss = bce(&[0.8, 0.25], &[true, false]);
        assert!((loss - (-(0.8f64.ln()) - 0.75f64.ln()) / 2.0).abs() < 1e-7);
        assert!(bce(&[0.0, 1.0], &[true, false]).is_finite());
    }

    #[test]
    fn argmax_confusion_and_cross_entropy_of_classes() {
        // 3 classes of 4 pixels, [classes, pixels]: pixel 2 ties classes 1 and 2 (the first wins).
        let probs = [0.7, 0.1, 0.2, 0.3, 0.2, 0.8, 0.4, 0.3, 0.1, 0.1, 0.4, 0.4];
        let pred = argmax(&probs, 3);
        assert_eq!(pred, [0, 1, 1, 2]);
        let truth = [0, 1, 2, 0];
        let c = class_confusion(&pred, &truth, 3);
        assert_eq!(c.correct, 2);
        assert_eq!(c.per_class, vec![[1, 0, 1], [1, 1, 0], [0, 1, 1]]);
        let want = -(0.7f64.ln() + 0.8f64.ln() + 0.4f64.ln() + 0.3f64.ln()) / 4.0;
        assert!((cross_entropy(&probs, &truth) - want).abs() < 1e-7);
        assert!(cross_entropy(&[1.0, 0.0], &[1]).is_finite());
    }

    #[test]
    fn resize_maps_resizes_each_plane() {
        let maps = [0.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.5, 0.75];
        assert_eq!(resize_maps(&maps, 2, 2, 2, 2, 2), maps);
        let big = resize_maps(&[0.0, 1.0, 1.0, 0.0], 2, 2, 1, 8, 1);
        assert_eq!(big[..8], resize_map(&[0.0, 1.0], 2, 1, 8, 1)[..]);
        assert_eq!(big[8..], resize_map(&[1.0, 0.0], 2, 1, 8, 1)[..]);
    }

    #[test]
    fn resize_map_keeps_the_size_or_interpolates() {
        let map = [0.0, 1.0, 0.5, 0.25];
        assert_eq!(resize_map(&map, 2, 2, 2, 2), map);
        let big = resize_map(&[0.0, 1.0], 2, 1, 8, 1);
        assert!(big.windows(2).all(|p| p[0] <= p[1]) && big[0] < 0.1 && big[7] > 0.9, "{big:?}");
    }
}
