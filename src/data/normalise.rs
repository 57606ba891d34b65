//! Intensity normalisation of the network's input, stored with the model (`model.json`) and
//! applied by the one [`Normalisation::apply`] after an image is decoded and scaled to [0, 1],
//! so training, evaluation and prediction feed the network the same numbers.
//!
//! Scaling by 1/255 alone ties a model to its scanner: another scanner's brighter or flatter
//! images are inputs it never saw. `zscore` (per image and channel, as nnU-Net does for MRI)
//! removes each image's brightness and contrast; `percentile` (nnU-Net's CT scheme) clips to the
//! training set's 0.5 and 99.5 percentiles and standardises with the training set's mean and
//! standard deviation, for modalities whose intensities mean something on their own.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::load::Sample;

/// `--normalise`: the normalisation a run trains with (its statistics, if any, come from the
/// training images).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NormaliseKind {
    /// Values in [0, 1]: 8-bit / 255, 16-bit / 65535 (the seed's).
    #[default]
    Unit,
    /// Per image and channel: subtract the mean, divide by the standard deviation (MRI-like).
    Zscore,
    /// Clip to the training set's 0.5 and 99.5 percentiles, then subtract the training set's
    /// mean and divide by its standard deviation (CT-like).
    Percentile,
    /// Per image and channel: each value becomes its rank among the image's values, mapped to
    /// a distribution of mean 0 and standard deviation 1: the same input whatever increasing
    /// curve (gamma, contrast, window) a scanner or its export applied.
    Rank,
}

impl NormaliseKind {
    /// As `--normalise` spells it.
    pub fn name(self) -> &'static str {
        match self {
            NormaliseKind::Unit => "unit",
            NormaliseKind::Zscore => "zscore",
            NormaliseKind::Percentile => "percentile",
            NormaliseKind::Rank => "rank",
        }
    }
}

/// The lower and upper percentiles `percentile` clips to.
pub const CLIP_PERCENTILES: (f64, f64) = (0.5, 99.5);

/// A standard deviation below this counts as a flat image: it is only centred, not scaled.
const FLAT: f64 = 1e-6;

/// Histogram bins over [0, 1]: one per 16-bit level, so percentiles are exact for 8- and 16-bit
/// images.
const LEVELS: usize = 65536;

/// A model's normalisation of its [0, 1] input, with the dataset statistics it needs.
/// `model.json` holds it as `"normalise": {"kind": "percentile", "low": …}`; runs saved before
/// it load as `unit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Normalisation {
    #[default]
    Unit,
    Zscore,
    /// Clip to [low, high], then (x − mean) / std: all four from the training images, every
    /// channel pooled.
    Percentile {
        low: f32,
        high: f32,
        mean: f32,
        std: f32,
    },
    Rank,
}

impl Normalisation {
    /// The normalisation of `kind` for these training images (`[channels, h, w]` in [0, 1]):
    /// only `percentile` looks at them.
    pub fn fit<'a>(kind: NormaliseKind, images: impl IntoParallelIterator<Item = &'a [f32]>) -> Normalisation {
        match kind {
            NormaliseKind::Unit => Normalisation::Unit,
            NormaliseKind::Zscore => Normalisation::Zscore,
            NormaliseKind::Percentile => percentile_fit(&Histogram::of(images)),
            NormaliseKind::Rank => Normalisation::Rank,
        }
    }

    /// Which `--normalise` this is.
    pub fn kind(&self) -> NormaliseKind {
        match self {
            Normalisation::Unit => NormaliseKind::Unit,
            Normalisation::Zscore => NormaliseKind::Zscore,
            Normalisation::Percentile { .. } => NormaliseKind::Percentile,
            Normalisation::Rank => NormaliseKind::Rank,
        }
    }

    /// Whether it looks at each image alone (so it is applied again after intensity changes).
    pub fn per_image(&self) -> bool {
        matches!(self, Normalisation::Zscore | Normalisation::Rank)
    }

    /// Normalises `image`, `[channels, h, w]` in [0, 1], in place.
    pub fn apply(&self, image: &mut [f32], channels: usize) {
        let plane = (image.len() / channels.max(1)).max(1);
        match *self {
            Normalisation::Unit => {}
            Normalisation::Zscore => {
                for plane in image.chunks_mut(plane) {
                    let (mean, std) = mean_std(plane);
                    let scale = if std < FLAT { 0.0 } else { 1.0 / std };
                    plane.iter_mut().for_each(|v| *v = ((f64::from(*v) - mean) * scale) as f32);
                }
            }
            Normalisation::Percentile { low, high, mean, std } => {
                let scale = 1.0 / std.max(FLAT as f32);
                image.iter_mut().for_each(|v| *v = (v.clamp(low, high) - mean) * scale);
            }
            Normalisation::Rank => {
                image.chunks_mut(plane).for_each(rank);
            }
        }
    }

    /// Normalises every sample's image in place (in parallel).
    pub fn apply_all(&self, samples: &mut [Sample], channels: usize) {
        samples.par_iter_mut().for_each(|s| self.apply(&mut s.image, channels));
    }

    /// What it does, for the console and the ONNX metadata.
    pub fn describe(&self) -> String {
        match self {
            Normalisation::Unit => "no mean or standard deviation normalisation (values stay in [0, 1])".into(),
            Normalisation::Zscore => {
                "per image and channel, subtract the mean and divide by the (population) standard deviation \
                 (a flat channel becomes 0)"
                    .into()
            }
            Normalisation::Percentile { low, high, mean, std } => format!(
                "clip to [{low}, {high}] (the training images' {} and {} percentiles), subtract {mean} and divide \
                 by {std} (the clipped training images' mean and standard deviation)",
                CLIP_PERCENTILES.0, CLIP_PERCENTILES.1
            ),
            Normalisation::Rank => {
                "per image and channel, replace each value by its quantile q = (rank + 1/2) / n (equal values share \
                 their mean rank), then by sqrt(3)/pi * ln(q / (1 - q)) (a logistic distribution of mean 0 and \
                 standard deviation 1)"
                    .into()
            }
        }
    }
}

/// Fits the normalisation of `kind` to the training samples and applies it to both splits:
/// what `train` does once its data are decoded (in [0, 1]). Returns it, for `model.json`.
pub fn normalise_dataset(
    kind: NormaliseKind,
    train: &mut [Sample],
    test: &mut [Sample],
    channels: usize,
) -> Normalisation {
    let normalisation = Normalisation::fit(kind, train.par_iter().map(|s| s.image.as_slice()));
    normalisation.apply_all(train, channels);
    normalisation.apply_all(test, channels);
    normalisation
}

/// Mean and population standard deviation, in f64 (0 and 0 for no values): of an image's
/// pixels here, and of any numbers a summary needs (a dataset's per-image statistics, folds' Dice).
pub(crate) fn mean_std<T: Copy + Into<f64>>(values: &[T]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v.into()).sum::<f64>() / n;
    let var = values.iter().map(|&v| (v.into() - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// `plane`'s values replaced by their quantiles q = (rank + ½) / n (equal values by their mean
/// rank), each mapped to the logistic distribution's √3/π · ln(q / (1 − q)): mean 0, standard
/// deviation 1 (less where values tie), and tails that keep the brightest few pixels — a small
/// lesion — as far from the tissue around them as a z-score would, where an even spread of
/// the ranks would squeeze the top percent into 0.06. A flat plane becomes 0, as under `zscore`.
fn rank(plane: &mut [f32]) {
    let n = plane.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| plane[a as usize].total_cmp(&plane[b as usize]));
    let unit_spread = 3f64.sqrt() / std::f64::consts::PI;
    let mut ranked = vec![0.0f32; n];
    let mut start = 0;
    while start < n {
        let value = plane[order[start] as usize];
        let end = start + order[start..].iter().take_while(|&&i| plane[i as usize] == value).count();
        // The mean rank of start..end, plus ½, over n.
        let q = (start + end) as f64 / (2 * n) as f64;
        let z = unit_spread * (q / (1.0 - q)).ln();
        order[start..end].iter().for_each(|&i| ranked[i as usize] = z as f32);
        start = end;
    }
    plane.copy_from_slice(&ranked);
}

/// Counts of values in [0, 1] per 16-bit level.
pub(crate) struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    pub(crate) fn new() -> Histogram {
        Histogram { counts: vec![0; LEVELS] }
    }

    /// Every value of every image, counted in parallel. Integer counts: the same for any
    /// thread schedule.
    pub(crate) fn of<'a>(images: impl IntoParallelIterator<Item = &'a [f32]>) -> Histogram {
        images
            .into_par_iter()
            .fold(Histogram::new, |mut histogram, image| {
                histogram.add(image);
                histogram
            })
            .reduce(Histogram::new, Histogram::merged)
    }

    /// Counts the values of `image`.
    pub(crate) fn add(&mut self, image: &[f32]) {
        image.iter().for_each(|&v| self.counts[level(v)] += 1);
    }

    /// Both histograms' counts.
    pub(crate) fn merged(mut self, other: Histogram) -> Histogram {
        self.counts.iter_mut().zip(other.counts).for_each(|(a, b)| *a += b);
        self
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The smallest level with at least `p` % of the values at or below it.
    pub(crate) fn percentile(&self, p: f64) -> f32 {
        // p · n / 100 in this order is exact for whole n and p in halves: 0.5 % of 1000 is 5, not 6.
        let wanted = (p * self.total() as f64 / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= wanted {
                return value(k);
            }
        }
        1.0
    }

    /// Mean and population standard deviation of the values clipped to [low, high].
    pub(crate) fn clipped_mean_std(&self, low: f32, high: f32) -> (f64, f64) {
        let n = self.total().max(1) as f64;
        let clipped = |k: usize| f64::from(value(k).clamp(low, high));
        let mean = self.counts.iter().enumerate().map(|(k, &c)| c as f64 * clipped(k)).sum::<f64>() / n;
        let var = self.counts.iter().enumerate().map(|(k, &c)| c as f64 * (clipped(k) - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }
}

fn level(v: f32) -> usize {
    (v.clamp(0.0, 1.0) * (LEVELS - 1) as f32).round() as usize
}

fn value(level: usize) -> f32 {
    level as f32 / (LEVELS - 1) as f32
}

fn percentile_fit(histogram: &Histogram) -> Normalisation {
    let (low, high) = (histogram.percentile(CLIP_PERCENTILES.0), histogram.percentile(CLIP_PERCENTILES.1));
    let (mean, std) = histogram.clipped_mean_std(low, high);
    Normalisation::Percentile { low, high, mean: mean as f32, std: std as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_is_the_population_standard_deviation() {
        let (mean, spread) = mean_std(&[0.7f64, 0.8, 0.9]);
        assert!((mean - 0.8).abs() < 1e-12);
        assert!((spread - (0.02f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std::<f32>(&[]), (0.0, 0.0));
    }

    #[test]
    fn percentiles_clip_the_tails_and_standardise() {
        // 1000 values 0.000 … 0.999: the 0.5th percentile is the 5th value, the 99.5th the 995th.
        let image: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let Normalisation::Percentile { low, high, mean, std } =
            Normalisation::fit(NormaliseKind::Percentile, vec![image.as_slice()])
        else {
            panic!("percentile")
        };
        assert!((low - 0.004).abs() < 2e-5 && (high - 0.994).abs() < 2e-5, "{low} {high}");
        assert!((mean - 0.4995).abs() < 1e-4, "{mean}");
        // The 10 tail values move by at most 0.005: the std stays that of 0 … 0.999, 0.2887.
        assert!((std - 0.2886).abs() < 2e-4, "{std}");
        let mut x = vec![0.0, 0.5, 1.0];
        Normalisation::Percentile { low, high, mean, std }.apply(&mut x, 1);
        assert!((x[0] - (low - mean) / std).abs() < 1e-6 && (x[2] - (high - mean) / std).abs() < 1e-6, "{x:?}");
    }

    #[test]
    fn zscore_is_per_channel_and_a_flat_channel_becomes_zero() {
        let mut image = vec![0.1, 0.3, 0.5, 0.7, 0.4, 0.4, 0.4, 0.4];
        Normalisation::Zscore.apply(&mut image, 2);
        let s = 0.1f32 * 5f32.sqrt(); // population std of 0.1, 0.3, 0.5, 0.7
        let expected = [-0.3 / s, -0.1 / s, 0.1 / s, 0.3 / s, 0.0, 0.0, 0.0, 0.0];
        for (a, b) in image.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{image:?}");
        }
    }

    #[test]
    fn rank_ignores_any_increasing_curve_and_shares_ties() {
        let image = [0.3f32, 0.0, 0.9, 0.3, 0.5, 0.0, 0.7, 1.0];
        let mut ranked = image;
        Normalisation::Rank.apply(&mut ranked, 1);
        // Sorted: 0 0 | 0.3 0.3 | 0.5 | 0.7 | 0.9 | 1.0 → rank + ½ 1, 3, 4.5, 5.5, 6.5, 7.5 of 8.
        let z = |r: f64| (3f64.sqrt() / std::f64::consts::PI * (r / (8.0 - r)).ln()) as f32;
        let expected = [z(3.0), z(1.0), z(6.5), z(3.0), z(4.5), z(1.0), z(5.5), z(7.5)];
        for (a, b) in ranked.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{ranked:?} vs {expected:?}");
        }
        let mut distinct: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        Normalisation::Rank.apply(&mut distinct, 1);
        let (mean, spread) = mean_std(&distinct);
        assert!(mean.abs() < 1e-6 && (spread - 1.0).abs() < 0.02, "mean {mean}, standard deviation {spread}");
        let mut curved = image.map(|v| v.powf(0.6) * 2.0 - 0.1);
        Normalisation::Rank.apply(&mut curved, 1);
        assert_eq!(curved, ranked);
        let mut flat_and_two_channels = [0.4f32, 0.4, 0.4, 0.1, 0.2, 0.3];
        Normalisation::Rank.apply(&mut flat_and_two_channels, 2);
        let sixth = (3f64.sqrt() / std::f64::consts::PI * 5f64.ln()) as f32; // q = 1/6 and 5/6
        let expected = [0.0, 0.0, 0.0, -sixth, 0.0, sixth];
        assert!(
            flat_and_two_channels.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6),
            "{flat_and_two_channels:?}"
        );
    }

    #[test]
    fn runs_saved_before_normalisation_load_as_unit_and_fitted_values_round_trip() {
        let fitted = Normalisation::Percentile { low: 0.01, high: 0.9, mean: 0.3, std: 0.2 };
        let json = serde_json::to_string(&fitted).unwrap();
        assert_eq!(json, r#"{"kind":"percentile","low":0.01,"high":0.9,"mean":0.3,"std":0.2}"#);
        assert_eq!(serde_json::from_str::<Normalisation>(&json).unwrap(), fitted);
        assert_eq!(serde_json::from_str::<Normalisation>(r#"{"kind":"zscore"}"#).unwrap(), Normalisation::Zscore);
    }
}
