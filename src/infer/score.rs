//! Scores of segmented images: confusion counts against the truth, the metrics of many, and
//! the per-image CSV.

use super::postprocess::{class_confusion, confusion};
use crate::evaluate::Metrics;
use crate::ops::metrics::{image_metrics, ClassCounts};

/// One image's confusion counts against its truth.
#[derive(Clone, Debug, PartialEq)]
pub enum Confusion {
    /// `[TP, FP, FN, TN]` of a binary mask.
    Binary([u64; 4]),
    /// Per class counts of a K-class mask.
    Classes(ClassCounts),
}

impl Confusion {
    /// Counts of predicted against true class ids (0/1 for a binary model).
    pub(super) fn of(pred: &[u8], truth: &[u8], classes: usize) -> Confusion {
        if classes >= 2 {
            Confusion::Classes(class_confusion(pred, truth, classes))
        } else {
            let bits = |ids: &[u8]| -> Vec<bool> { ids.iter().map(|&v| v == 1).collect() };
            Confusion::Binary(confusion(&bits(pred), &bits(truth)))
        }
    }

    /// (pixel accuracy, IoU, Dice); for classes, IoU and Dice are means over the foreground classes.
    pub fn metrics(&self) -> (f64, f64, f64) {
        match self {
            Confusion::Binary(c) => image_metrics(*c),
            Confusion::Classes(c) => c.image_metrics(),
        }
    }
}

/// The metrics of images' counts (all binary or all of one K) and their mean loss.
pub(super) fn metrics_of<'a>(counts: impl Iterator<Item = &'a Confusion>, loss: f64) -> Metrics {
    let (mut binary, mut classes) = (Vec::new(), Vec::new());
    for c in counts {
        match c {
            Confusion::Binary(b) => binary.push(*b),
            Confusion::Classes(k) => classes.push(k.clone()),
        }
    }
    if classes.is_empty() {
        Metrics::from_counts(&binary, loss)
    } else {
        Metrics::from_class_counts(&classes, loss)
    }
}

/// One image's confusion counts at the model's size and at its own.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageScore {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub model: Confusion,
    pub native: Confusion,
}

/// `name,width,height,pixel_accuracy,iou,dice,native_pixel_accuracy,native_iou,native_dice`
/// (for K classes, IoU and Dice are the means over the foreground classes).
pub fn per_image_csv(scores: &[ImageScore]) -> String {
    let mut text =
        String::from("name,width,height,pixel_accuracy,iou,dice,native_pixel_accuracy,native_iou,native_dice\n");
    for s in scores {
        let name = if s.name.contains([',', '"', '\n']) {
            format!("\"{}\"", s.name.replace('"', "\"\""))
        } else {
            s.name.clone()
        };
        let (a, i, d) = s.model.metrics();
        let (na, ni, nd) = s.native.metrics();
        text += &format!("{name},{},{},{a:.6},{i:.6},{d:.6},{na:.6},{ni:.6},{nd:.6}\n", s.width, s.height);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_awkward_names() {
        let score = |name: &str| ImageScore {
            name: name.into(),
            width: 3,
            height: 2,
            model: Confusion::Binary([1, 0, 0, 5]),
            native: Confusion::Binary([1, 1, 0, 4]),
        };
        // 3 classes, 6 pixels: class 1 IoU 1/2 and Dice 2/3, class 2 absent and not predicted (1).
        let classes = ClassCounts { correct: 5, per_class: vec![[4, 0, 1], [1, 1, 0], [0, 0, 0]] };
        let three = ImageScore {
            name: "k.png".into(),
            width: 3,
            height: 2,
            model: Confusion::Classes(classes.clone()),
            native: Confusion::Classes(classes),
        };
        let text = per_image_csv(&[score("a.png"), score("b, \"c\".png"), three]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "name,width,height,pixel_accuracy,iou,dice,native_pixel_accuracy,native_iou,native_dice");
        assert_eq!(lines[1], "a.png,3,2,1.000000,1.000000,1.000000,0.833333,0.500000,0.666667");
        assert!(lines[2].starts_with("\"b, \"\"c\"\".png\",3,2,"), "{}", lines[2]);
        assert_eq!(lines[3], "k.png,3,2,0.833333,0.750000,0.833333,0.833333,0.750000,0.833333");
    }
}
