//! Segmentation metrics (`shaders/metrics.wgsl`): per-image confusion counts computed on the GPU,
//! so evaluation reads back 4 integers an image (binary) or 1 + 3K (K classes) instead of every
//! predicted pixel; the seed notebook's pixel accuracy, IoU and Dice then follow on the host from
//! the counts.

use anyhow::{ensure, Result};
use rand::Rng;

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec};

uniform! {
    struct Params {
        images: u32,
        pixels: u32,
        threshold: f32,
        first_image: u32,
        classes: u32,
    }
}

/// Per image: TP, FP, FN, TN of (pred > threshold) against (target > 0.5), as u32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConfusionCounts {
    pub images: usize,
    /// Per image.
    pub pixels: usize,
    pub threshold: f32,
    pub first_image: usize,
}

impl ConfusionCounts {
    /// pred, target: [images, pixels] f32. counts: u32 [total_images, 4]; writes rows
    /// first_image..first_image+images, so an eval loop can fill one buffer batch by batch and
    /// read it back once.
    pub fn dispatch(&self, gpu: &Gpu, pred: &BufferView, target: &BufferView, counts: &BufferView) -> Result<Dispatch> {
        let inputs = self.images * self.pixels;
        let bindings = [
            ("pred", pred, inputs),
            ("mask", target, inputs),
            ("counts", counts, 4 * (self.first_image + self.images)),
        ];
        let spec = KernelSpec::per_element("metrics", "confusion_counts").workgroup_memory(16);
        let params = Params {
            images: self.images as u32,
            pixels: self.pixels as u32,
            threshold: self.threshold,
            first_image: self.first_image as u32,
            classes: 0,
        };
        launch(gpu, &spec, &params, &bindings, grid_1d(self.images, 1))
    }
}

/// The largest K the class-counts kernel's workgroup memory holds (`MAX_CLASS_COUNTS` in the
/// shader is 1 + 3·MAX_CLASSES): every class id an 8-bit mask can hold.
pub const MAX_CLASSES: usize = 255;

/// u32 counts per image of a K-class segmentation: correct pixels, then TP, FP, FN per class.
pub fn class_row_len(classes: usize) -> usize {
    1 + 3 * classes
}

/// Per image: the correctly classified pixels and per class TP, FP, FN, where a pixel's
/// predicted class is the argmax of its K logits (the first maximum on ties) and its true class
/// the mask's class id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassConfusion {
    pub images: usize,
    /// Per image.
    pub pixels: usize,
    pub classes: usize,
    pub first_image: usize,
}

impl ClassConfusion {
    /// logits: [images, classes, pixels] f32; mask: class ids [images, pixels] as f32, each below
    /// `classes`. counts: u32 [total_images, class_row_len]; writes rows
    /// first_image..first_image+images.
    pub fn dispatch(&self, gpu: &Gpu, logits: &BufferView, mask: &BufferView, counts: &BufferView) -> Result<Dispatch> {
        ensure!(
            (2..=MAX_CLASSES).contains(&self.classes),
            "class counts: {} classes, the kernel counts 2 to {MAX_CLASSES}",
            self.classes
        );
        let bindings = [
            ("pred", logits, self.images * self.classes * self.pixels),
            ("mask", mask, self.images * self.pixels),
            ("counts", counts, class_row_len(self.classes) * (self.first_image + self.images)),
        ];
        let spec =
            KernelSpec::per_element("metrics", "class_counts").workgroup_memory(4 * class_row_len(MAX_CLASSES) as u32);
        let params = Params {
            images: self.images as u32,
            pixels: self.pixels as u32,
            threshold: 0.0,
            first_image: self.first_image as u32,
            classes: self.classes as u32,
        };
        launch(gpu, &spec, &params, &bindings, grid_1d(self.images, 1))
    }
}

/// One image's counts of a K-class segmentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts {
    /// Pixels whose predicted class is the true one.
    pub correct: u64,
    /// `[TP, FP, FN]` of each class, background (class 0) first.
    pub per_class: Vec<[u64; 3]>,
}

impl ClassCounts {
    pub fn new(classes: usize) -> ClassCounts {
        ClassCounts { correct: 0, per_class: vec![[0; 3]; classes] }
    }

    /// From one row of the class-counts kernel's output.
    pub fn from_row(row: &[u32]) -> ClassCounts {
        ClassCounts {
            correct: row[0] as u64,
            per_class: row[1..].chunks_exact(3).map(|c| [c[0] as u64, c[1] as u64, c[2] as u64]).collect(),
        }
    }

    /// Counts a pixel predicted as class `pred` whose true class is `truth`.
    pub fn add_pixel(&mut self, pred: usize, truth: usize) {
        if pred == truth {
            self.correct += 1;
            self.per_class[pred][0] += 1;
        } else {
            self.per_class[pred][1] += 1;
            self.per_class[truth][2] += 1;
        }
    }

    /// Adds another image's counts (dataset-level totals).
    pub fn add(&mut self, other: &ClassCounts) {
        self.correct += other.correct;
        for (mine, theirs) in self.per_class.iter_mut().zip(&other.per_class) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
    }

    /// Every pixel is in exactly one class's TP or FN.
    pub fn pixels(&self) -> u64 {
        self.per_class.iter().map(|[tp, _, fn_]| tp + fn_).sum()
    }

    /// (IoU, Dice) of class `c`; 1.0 each where the class is neither predicted nor true.
    pub fn class_scores(&self, c: usize) -> (f64, f64) {
        let [tp, fp, fn_] = self.per_class[c];
        iou_dice(tp, fp, fn_)
    }

    /// (pixel accuracy, IoU, Dice): IoU and Dice are means over the foreground classes 1..K.
    pub fn image_metrics(&self) -> (f64, f64, f64) {
        let foreground = (self.per_class.len() - 1).max(1) as f64;
        let (mut iou, mut dice) = (0.0, 0.0);
        for c in 1..self.per_class.len() {
            let (i, d) = self.class_scores(c);
            iou += i;
            dice += d;
        }
        (self.correct as f64 / self.pixels().max(1) as f64, iou / foreground, dice / foreground)
    }
}

/// Plain f64 references.
pub mod reference {
    /// Per image `[TP, FP, FN, TN]` of (pred > threshold) against (target > 0.5).
    pub fn confusion_counts(
        images: usize,
        pixels: usize,
        threshold: f64,
        pred: &[f64],
        target: &[f64],
    ) -> Vec<[u64; 4]> {
        let mut counts = vec![[0u64; 4]; images];
        for (i, row) in counts.iter_mut().enumerate() {
            for k in i * pixels..(i + 1) * pixels {
                let slot = match (pred[k] > threshold, target[k] > 0.5) {
                    (true, true) => 0,
                    (true, false) => 1,
                    (false, true) => 2,
                    (false, false) => 3,
                };
                row[slot] += 1;
            }
        }
        counts
    }

    /// Per image: the argmax of each pixel's `classes` logits (the first maximum on ties)
    /// against the class id in `mask`.
    pub fn class_counts(
        images: usize,
        pixels: usize,
        classes: usize,
        logits: &[f64],
        mask: &[f64],
    ) -> Vec<super::ClassCounts> {
        let mut counts = vec![super::ClassCounts::new(classes); images];
        for (i, row) in counts.iter_mut().enumerate() {
            for q in 0..pixels {
                let logit = |c: usize| logits[(i * classes + c) * pixels + q];
                let mut pred = 0;
                for c in 1..classes {
                    if logit(c) > logit(pred) {
                        pred = c;
                    }
                }
                row.add_pixel(pred, mask[i * pixels + q] as usize);
            }
        }
        counts
    }
}

/// The seed notebook's per-image metrics from `[TP, FP, FN, TN]`: (pixel accuracy (TP+TN)/all,
/// IoU TP/(TP+FP+FN), Dice 2TP/(2TP+FP+FN)). An empty union (nothing predicted, nothing true)
/// is a perfect score: IoU and Dice are 1.0.
pub fn image_metrics(c: [u64; 4]) -> (f64, f64, f64) {
    let [tp, fp, fn_, tn] = c;
    let (iou, dice) = iou_dice(tp, fp, fn_);
    ((tp + tn) as f64 / (tp + fp + fn_ + tn) as f64, iou, dice)
}

/// IoU TP/(TP+FP+FN) and Dice 2TP/(2TP+FP+FN), with the seed's convention that an empty union
/// (nothing predicted, nothing true) scores 1.0 for both.
fn iou_dice(tp: u64, fp: u64, fn_: u64) -> (f64, f64) {
    let union = (tp + fp + fn_) as f64;
    if union == 0.0 {
        return (1.0, 1.0);
    }
    let tp = tp as f64;
    (tp / union, 2.0 * tp / (tp + union))
}

/// Marks count elements the kernel never wrote (no count reaches it).
const UNWRITTEN: u32 = u32::MAX;
/// Fills the rows outside first_image..first_image+images, which the kernel must leave alone.
const OUTSIDE: u32 = 0xBEEF;

/// Exact comparison of integer outputs: the tolerance is 0, so any difference fails.
fn compare_exact(kernel: &str, shape: &str, gpu: &[u32], want: &[u32]) -> CaseReport {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&g, &w) in gpu.iter().zip(want) {
        diff += (g as f64 - w as f64).powi(2);
        norm += (w as f64).powi(2);
    }
    CaseReport {
        kernel: kernel.to_string(),
        shape: shape.to_string(),
        rel_err: (diff / norm.max(1.0)).sqrt(),
        unwritten: gpu.iter().filter(|&&g| g == UNWRITTEN).count(),
        tolerance: 0.0,
    }
}

/// Confusion counts of `images` random `h × w` images written at row `first_image` of a buffer
/// with a spare row after them; rows outside the range must come back untouched. Run twice: on
/// logits with threshold 0.0 and on probabilities with threshold 0.5. Predictions are quantised
/// to steps of 1/8 so that some equal the threshold exactly (must count as negative); targets
/// are 0/1.
pub fn check(
    gpu: &Gpu,
    rng: &mut CheckRng,
    &(images, h, w, first_image): &(usize, usize, usize, usize),
) -> Result<Vec<CaseReport>> {
    let pixels = h * w;
    let shape = format!("{images}x{h}x{w} at row {first_image}");
    let rows = first_image + images + 1;
    let target = check::random_mask(rng, images * pixels);
    let gtarget = gpu.upload("target", &target)?;
    let mut out = Vec::new();
    // (name, threshold, scale, bias): predictions are `scale · U[-1, 1) + bias`, quantised.
    for (kernel, threshold, scale, bias) in
        [("confusion_counts (logits > 0)", 0.0f32, 1.0, 0.0), ("confusion_counts (probs > 0.5)", 0.5, 0.5, 0.5)]
    {
        let pred: Vec<f32> =
            check::random(rng, images * pixels).into_iter().map(|v| ((v * scale + bias) * 8.0).round() / 8.0).collect();
        let mut initial = vec![OUTSIDE; 4 * rows];
        initial[4 * first_image..4 * (first_image + images)].fill(UNWRITTEN);
        let counts = gpu.upload("counts", &initial)?;
        let op = ConfusionCounts { images, pixels, threshold, first_image };
        gpu.run(&[&op.dispatch(gpu, &gpu.upload("pred", &pred)?, &gtarget, &counts)?])?;
        let mut want = vec![OUTSIDE; 4 * rows];
        let rows_want = reference::confusion_counts(
            images,
            pixels,
            threshold as f64,
            &check::to_f64(&pred),
            &check::to_f64(&target),
        );
        for (i, row) in rows_want.iter().enumerate() {
            for (k, &v) in row.iter().enumerate() {
                want[4 * (first_image + i) + k] = v as u32;
            }
        }
        out.push(compare_exact(kernel, &shape, &gpu.read::<u32>(&counts)?, &want));
    }
    Ok(out)
}

/// Confusion counts on 1×1, 17×23 and 64×64 images, 1 and 3 images, first row 0 and later:
/// (images, h, w, first_image).
pub const CHECK_CASES: &[(usize, usize, usize, usize)] =
    &[(1, 1, 1, 0), (3, 17, 23, 2), (1, 64, 64, 1), (3, 64, 64, 0), (3, 1, 1, 5)];

/// Class counts of `images` random `h × w` images of `classes` classes written at row
/// `first_image` of a buffer with a spare row after them, which must come back untouched, as
/// must rows before. Logits take 5 levels only, so most pixels have tied maxima (the first
/// must win).
pub fn check_classes(
    gpu: &Gpu,
    rng: &mut CheckRng,
    &(images, h, w, classes, first_image): &(usize, usize, usize, usize, usize),
) -> Result<Vec<CaseReport>> {
    let pixels = h * w;
    let row = class_row_len(classes);
    let shape = format!("{images}x{classes}x{h}x{w} at row {first_image}");
    let logits: Vec<f32> =
        check::random(rng, images * classes * pixels).into_iter().map(|v| (v * 2.0).round() / 2.0).collect();
    let mask: Vec<f32> = (0..images * pixels).map(|_| rng.random_range(0..classes) as f32).collect();
    let rows = first_image + images + 1;
    let mut initial = vec![OUTSIDE; row * rows];
    initial[row * first_image..row * (first_image + images)].fill(UNWRITTEN);
    let counts = gpu.upload("class counts", &initial)?;
    let op = ClassConfusion { images, pixels, classes, first_image };
    gpu.run(&[&op.dispatch(gpu, &gpu.upload("logits", &logits)?, &gpu.upload("mask", &mask)?, &counts)?])?;
    let mut want = vec![OUTSIDE; row * rows];
    let per_image = reference::class_counts(images, pixels, classes, &check::to_f64(&logits), &check::to_f64(&mask));
    for (i, c) in per_image.iter().enumerate() {
        let at = row * (first_image + i);
        want[at] = c.correct as u32;
        for (k, v) in c.per_class.iter().flatten().enumerate() {
            want[at + 1 + k] = *v as u32;
        }
    }
    Ok(vec![compare_exact("class_counts", &shape, &gpu.read::<u32>(&counts)?, &want)])
}

/// Class counts for K = 2, 3, 5 and the largest K, odd sizes, 1 to 3 images, first row 0 and
/// later: (images, h, w, classes, first_image).
pub const CLASS_CASES: &[(usize, usize, usize, usize, usize)] =
    &[(1, 1, 1, 2, 0), (3, 17, 23, 3, 2), (2, 33, 31, 5, 1), (1, 64, 64, 2, 0), (2, 5, 3, MAX_CLASSES, 0)];

#[cfg(test)]
mod tests {
    use super::{image_metrics, reference, ClassCounts};

    /// Per class [TP, FP, FN] and the correct count, from a 3-class prediction and truth.
    fn counts(pred: &[usize], truth: &[usize]) -> ClassCounts {
        let mut c = ClassCounts::new(3);
        for (&p, &t) in pred.iter().zip(truth) {
            c.add_pixel(p, t);
        }
        c
    }

    #[test]
    fn class_metrics_from_hand_counted_confusions() {
        // 8 pixels. Class 1: TP 2, FP 1, FN 1 → IoU 2/4, Dice 4/6. Class 2: TP 1, FP 1, FN 0 →
        // IoU 1/2, Dice 2/3. Background: TP 2, FP 1, FN 2. Correct 5 of 8.
        let truth = [0, 0, 0, 1, 1, 1, 2, 0];
        let pred = [0, 0, 1, 1, 1, 0, 2, 2];
        let c = counts(&pred, &truth);
        assert_eq!(c.per_class, vec![[2, 1, 2], [2, 1, 1], [1, 1, 0]]);
        assert_eq!((c.correct, c.pixels()), (5, 8));
        assert_eq!(c.class_scores(1), (0.5, 4.0 / 6.0));
        assert_eq!(c.class_scores(2), (0.5, 2.0 / 3.0));
        let (accuracy, iou, dice) = c.image_metrics();
        assert_eq!(accuracy, 5.0 / 8.0);
        assert_eq!(iou, 0.5);
        assert!((dice - (4.0 / 6.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);

        // A class neither present nor predicted counts 1.0; a missed one 0.
        let c = counts(&[0, 0, 0, 1], &[0, 0, 0, 1]);
        assert_eq!(c.image_metrics(), (1.0, 1.0, 1.0));
        let c = counts(&[0, 0, 0, 0], &[0, 0, 2, 2]);
        assert_eq!(c.class_scores(2), (0.0, 0.0));
        assert_eq!(c.image_metrics(), (0.5, 0.5, 0.5));

        // Totals add up, and a kernel row reads back as the same counts.
        let mut total = counts(&pred, &truth);
        total.add(&counts(&[2], &[1]));
        assert_eq!(total.per_class, vec![[2, 1, 2], [2, 1, 2], [1, 2, 0]]);
        assert_eq!(ClassCounts::from_row(&[5, 2, 1, 2, 2, 1, 1, 1, 1, 0]), counts(&pred, &truth));
    }

    #[test]
    fn reference_argmax_takes_the_first_maximum() {
        // 2 pixels of 3 classes: logits (1, 1, 0) → class 0; (0, 2, 2) → class 1.
        let logits = [1.0, 0.0, 1.0, 2.0, 0.0, 2.0];
        let got = reference::class_counts(1, 2, 3, &logits, &[0.0, 2.0]);
        assert_eq!(got[0].per_class, vec![[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
        assert_eq!(got[0].correct, 1);
    }

    #[test]
    fn metrics_from_hand_counted_confusions() {
        // TP 3, FP 1, FN 2, TN 4 of 10 pixels: accuracy 7/10, IoU 3/6, Dice 6/9.
        assert_eq!(image_metrics([3, 1, 2, 4]), (0.7, 0.5, 6.0 / 9.0));
        // Nothing predicted, nothing true: an empty union is a perfect score.
        assert_eq!(image_metrics([0, 0, 0, 16]), (1.0, 1.0, 1.0));
        // Everything predicted, nothing true.
        assert_eq!(image_metrics([0, 5, 0, 0]), (0.0, 0.0, 0.0));
        // A perfect prediction with some foreground.
        assert_eq!(image_metrics([2, 0, 0, 2]), (1.0, 1.0, 1.0));
    }
}
