//! Segmentation metrics (`shaders/metrics.wgsl`): per-image confusion counts computed on the GPU,
//! so evaluation reads back 4 integers an image instead of every predicted pixel; the seed
//! notebook's pixel accuracy, IoU and Dice then follow on the host from the counts.

use anyhow::{ensure, Result};

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::kernel::{grid_1d, BufferView, Dispatch, KernelSpec};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    images: u32,
    pixels: u32,
    threshold: f32,
    first_image: u32,
}

/// Invocations per workgroup; one workgroup counts one image.
const WG: u32 = 256;

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
        for t in [pred, target] {
            ensure!(
                t.elems() >= inputs,
                "confusion counts: tensor '{}' holds {} elements, needs {inputs}",
                t.name,
                t.elems()
            );
        }
        let rows = self.first_image + self.images;
        ensure!(
            counts.elems() >= 4 * rows,
            "confusion counts: '{}' holds {} rows, needs {rows}",
            counts.name,
            counts.elems() / 4
        );
        let spec = KernelSpec::new("metrics", "confusion_counts", [WG, 1, 1]).workgroup_memory(16);
        let params = Params {
            images: self.images as u32,
            pixels: self.pixels as u32,
            threshold: self.threshold,
            first_image: self.first_image as u32,
        };
        Dispatch::new(gpu, &spec, &params, &[(1, pred), (2, target), (3, counts)], grid_1d(self.images, 1))
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
}

/// The seed notebook's per-image metrics from `[TP, FP, FN, TN]`: (pixel accuracy (TP+TN)/all,
/// IoU TP/(TP+FP+FN), Dice 2TP/(2TP+FP+FN)). An empty union (nothing predicted, nothing true)
/// is a perfect score: IoU and Dice are 1.0.
pub fn image_metrics(c: [u64; 4]) -> (f64, f64, f64) {
    let [tp, fp, fn_, tn] = c.map(|v| v as f64);
    let accuracy = (tp + tn) / (tp + fp + fn_ + tn);
    let union = tp + fp + fn_;
    if union == 0.0 {
        return (accuracy, 1.0, 1.0);
    }
    (accuracy, tp / union, 2.0 * tp / (tp + union))
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
    images: usize,
    h: usize,
    w: usize,
    first_image: usize,
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

/// Confusion counts on 1×1, 17×23 and 64×64 images, 1 and 3 images, first row 0 and later.
pub fn check_all(gpu: &Gpu, rng: &mut CheckRng) -> Result<Vec<CaseReport>> {
    let mut out = Vec::new();
    for (images, h, w, first_image) in [(1, 1, 1, 0), (3, 17, 23, 2), (1, 64, 64, 1), (3, 64, 64, 0), (3, 1, 1, 5)] {
        out.extend(check(gpu, rng, images, h, w, first_image)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::image_metrics;

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
