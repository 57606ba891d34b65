//! A run's data: decoded once, on CPU threads, and kept in memory for every epoch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use super::options::{DataOptions, DataSource};
use crate::checkpoint::DatasetRecord;
use crate::data::load::{self, Preprocess, Sample};
use crate::data::skipped::{Skipped, Unusable};
use crate::data::Normalisation;
use crate::data::{pairs, split, synth};

/// Decoded train and test samples, and how to find them again.
pub struct Dataset {
    /// Resized to the model's size; at their own size with `--patch` (until training takes
    /// them over as patch sources).
    pub train: Vec<Sample>,
    pub test: Vec<Sample>,
    /// A name per test sample (file stem, or `synthetic-N`), for panels.
    pub test_names: Vec<String>,
    /// Pairs found before splitting.
    pub pairs: usize,
    pub record: DatasetRecord,
    pub channels: usize,
}

/// Loads the data `d` describes at `size` for a model of `classes` classes (binary masks for
/// 1, class ids for K), writing the split lists of the usable pairs into `out` when there are
/// files, and the files skipped (an error with `strict`) into `out/skipped.txt`.
pub fn load_dataset(d: &DataOptions, size: usize, classes: usize, seed: u64, out: &Path) -> Result<Dataset> {
    match &d.source {
        DataSource::Synthetic { .. } if d.patch.is_some() => {
            anyhow::bail!("--patch trains on images at their own size: give --data (the built-in slices have none; `wgunet synth --size 256 --out DIR` writes some)")
        }
        DataSource::Synthetic { count } => synthetic(*count, d, size, classes, seed),
        DataSource::Folder { dir } => {
            let pairing = pairs::find_pairs(dir)?;
            println!("{}", pairs::describe(&pairing));
            // Split before decoding: a bad file drops out of its side without moving any other
            // pair, and a clean folder splits as it always did.
            let train = d.train_fraction;
            let (tr, te) = split::split(&pairing.pairs, train, seed, d.max_images)?;
            println!(
                "split {:.0}/{:.0} with seed {seed}: {} train, {} test",
                train * 100.0,
                (1.0 - train) * 100.0,
                tr.len(),
                te.len()
            );
            let found = Found {
                train: tr,
                test: te,
                source: dir.display().to_string(),
                pairs: pairing.pairs.len(),
                files: pairing.files,
                unpaired: pairing.unpaired,
            };
            load_lists(found, DatasetRecord::Lists { source: dir.display().to_string() }, d, size, classes, out)
        }
        DataSource::Lists { train, test } => {
            let (tr, te) = (split::read_list(train)?, split::read_list(test)?);
            let found = Found {
                source: format!("{} and {}", train.display(), test.display()),
                pairs: tr.len() + te.len(),
                files: 2 * (tr.len() + te.len()),
                unpaired: Vec::new(),
                train: tr,
                test: te,
            };
            load_lists(found, DatasetRecord::Lists { source: train.display().to_string() }, d, size, classes, out)
        }
    }
}

/// `count` built-in synthetic slices, the first `train_fraction` of them for training.
fn synthetic(count: usize, d: &DataOptions, size: usize, classes: usize, seed: u64) -> Result<Dataset> {
    let channels = d.channels.unwrap_or(1);
    let split = synthetic_split(seed, count, d.train_fraction, size, classes, channels)?;
    println!("built-in synthetic data: {count} slices ({} train, {} test)", split.train.len(), split.test.len());
    Ok(Dataset {
        train: split.train,
        test: split.test,
        test_names: split.test_names,
        pairs: count,
        record: DatasetRecord::Synthetic { seed, count, train: d.train_fraction },
        channels,
    })
}

/// The built-in synthetic slices of a run, split as training splits them.
pub struct SyntheticSplit {
    pub train: Vec<Sample>,
    pub test: Vec<Sample>,
    /// `synthetic-NNNN`, by the slice's index.
    pub test_names: Vec<String>,
}

/// `count` synthetic slices of `seed`: the first `round(count · train)` train, the rest test;
/// the grayscale slices repeated to `channels`. `eval` finds a run's test split so again.
pub fn synthetic_split(
    seed: u64,
    count: usize,
    train: f64,
    size: usize,
    classes: usize,
    channels: usize,
) -> Result<SyntheticSplit> {
    let mut slices = synth::samples_with_classes(seed, count, size, classes)?;
    let n_train = ((count as f64) * train).round() as usize;
    let test = slices.split_off(n_train);
    Ok(SyntheticSplit {
        train: expand_channels(slices, channels),
        test: expand_channels(test, channels),
        test_names: (n_train..count).map(|i| format!("synthetic-{i:04}")).collect(),
    })
}

/// The pairs of each side of a split, and what pairing found in `source`: pairs, image files,
/// and the files that could not be paired.
struct Found {
    train: Vec<pairs::Pair>,
    test: Vec<pairs::Pair>,
    source: String,
    pairs: usize,
    files: usize,
    unpaired: Vec<Unusable>,
}

/// Decodes the train and test pairs, skipping (or with `strict`, refusing) unusable files, and
/// writes the lists of the usable pairs and `skipped.txt` into `out`.
fn load_lists(
    found: Found,
    record: DatasetRecord,
    d: &DataOptions,
    size: usize,
    classes: usize,
    out: &Path,
) -> Result<Dataset> {
    let (tr, te) = (&found.train, &found.test);
    // With no readable image the count does not matter: every pair is skipped below.
    let channels = d.channels.or_else(|| load::channels_of(tr)).or_else(|| load::channels_of(te)).unwrap_or(1);
    // Normalised once the training set's statistics are known (see `normalise_dataset`).
    let pre = Preprocess { size, channels, normalise: Normalisation::Unit };
    let t0 = Instant::now();
    let decode = if d.patch.is_some() { load::decode_pairs_native } else { load::decode_pairs };
    let (train, test) = (decode(tr, &pre, classes)?, decode(te, &pre, classes)?);
    let looked_at = tr.len() + te.len() + found.unpaired.len();
    let skipped = Skipped::new([found.unpaired, train.skipped, test.skipped].concat());
    skipped.report(looked_at, "pairs", out)?;
    if d.strict {
        skipped.refuse(out)?;
    }
    if train.pairs.is_empty() && test.pairs.is_empty() {
        anyhow::bail!(
            "no usable image/mask pair in {}: saw {} image files, {} pairs, and skipped {} files: {} (all listed in {})",
            found.source,
            found.files,
            found.pairs,
            skipped.files().len(),
            skipped.examples(),
            out.join(crate::data::skipped::LIST_NAME).display()
        );
    }
    let resized: Vec<&PathBuf> = train.resized_masks.iter().chain(&test.resized_masks).collect();
    if let Some(first) = resized.first() {
        println!(
            "note: {} mask(s) differ in size from their image and were resized to it (nearest neighbour), e.g. {}",
            resized.len(),
            first.display()
        );
    }
    split::write_list(&out.join("train.txt"), &train.pairs)?;
    split::write_list(&out.join("test.txt"), &test.pairs)?;
    let (te, train, test) = (test.pairs, train.samples, test.samples);
    let at = if d.patch.is_some() { "their own size".to_string() } else { format!("{size}x{size}") };
    println!(
        "decoded {} images at {at}, {channels} channel(s), in {:.1} s (kept in memory)",
        train.len() + test.len(),
        t0.elapsed().as_secs_f64()
    );
    let test_names =
        te.iter().map(|p| p.image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    Ok(Dataset { train, test, test_names, pairs: found.pairs, record, channels })
}

/// Synthetic slices are grayscale; a 3-channel model gets them replicated.
fn expand_channels(samples: Vec<Sample>, channels: usize) -> Vec<Sample> {
    if channels == 1 {
        return samples;
    }
    samples
        .into_iter()
        .map(|s| Sample { image: s.image.repeat(channels), mask: s.mask, native_size: s.native_size })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::DEFAULT_TRAIN_FRACTION;

    /// `--train` moves the boundary between the same slices; the channels are repeated.
    #[test]
    fn synthetic_slices_split_at_the_train_fraction() {
        let half = synthetic_split(1, 10, 0.5, 16, 1, 3).unwrap();
        assert_eq!((half.train.len(), half.test.len()), (5, 5));
        assert_eq!(
            half.test_names,
            ["synthetic-0005", "synthetic-0006", "synthetic-0007", "synthetic-0008", "synthetic-0009"]
        );
        let seed_default = synthetic_split(1, 10, DEFAULT_TRAIN_FRACTION, 16, 1, 1).unwrap();
        assert_eq!((seed_default.train.len(), seed_default.test.len()), (7, 3));
        assert_eq!(half.test[2].mask, seed_default.test[0].mask, "slice 7 either way");
        assert_ne!(half.test[2].mask, half.test[1].mask);
        let gray = &seed_default.train[0].image;
        assert_eq!(half.train[0].image, [&gray[..], gray, gray].concat(), "gray repeated to 3 channels");
    }
}
