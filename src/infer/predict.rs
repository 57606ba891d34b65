//! `wgunet predict`: a mask PNG per image, at the image's own size.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::input::{load_usable, notice_colour_conversion};
use super::model::LoadedModel;
use super::segment::{InferOptions, Segmenter};
use crate::checkpoint;
use crate::data::pairs::{self, Pair};
use crate::data::skipped::Skipped;
use crate::device::DeviceChoice;

fn images_in(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let entries = std::fs::read_dir(input)
        .with_context(|| format!("--input {} is neither a file nor a folder", input.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| pairs::is_image_file(p) && !pairs::is_hidden(p))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("--input {} holds no images ({})", input.display(), pairs::IMAGE_EXTENSIONS.join(", "));
    }
    Ok(files)
}

/// Writes one mask PNG per image, at the image's own size, named by its stem: 0/255 for a binary
/// model, class ids (0..K) for a K-class model, as its training masks were.
pub fn predict(
    run: &Path,
    input: &Path,
    output: &Path,
    device: &DeviceChoice,
    options: &InferOptions,
    ensemble: &[PathBuf],
) -> Result<usize> {
    let model = LoadedModel::open(run, device)?;
    let others = ensemble.iter().map(|r| LoadedModel::open(r, device)).collect::<Result<Vec<_>>>()?;
    let files = images_in(input)?;
    let as_pairs: Vec<Pair> = files.iter().map(|f| Pair { image: f.clone(), mask: f.clone() }).collect();
    notice_colour_conversion(&as_pairs, model.record.model.channels);
    std::fs::create_dir_all(output).with_context(|| format!("could not create {}", output.display()))?;
    let seg = Segmenter::ensemble(&model, &others, *options)?;
    let (mut written, mut faults) = (0, Vec::new());
    for chunk in files.chunks(options.batch) {
        let (usable, inputs) = load_usable(chunk, |f| seg.load_input(f), &mut faults, options.strict)?;
        for ((file, input), maps) in usable.into_iter().zip(&inputs).zip(seg.segment(&inputs)?) {
            let (w, h) = input.native_size;
            // Resized probabilities (not a resized mask) were thresholded: smoother edges.
            let pixels = if model.classes() >= 2 {
                seg.labels(&maps.native)
            } else {
                seg.mask(&maps.native, w, h).iter().map(|&b| if b { 255 } else { 0 }).collect()
            };
            let mask = image::GrayImage::from_raw(w, h, pixels).expect("mask size");
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("mask");
            let path = output.join(format!("{stem}.png"));
            let mut bytes = Vec::new();
            mask.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
            checkpoint::write_atomic(&path, &bytes)?;
            written += 1;
        }
    }
    let skipped = Skipped::new(faults);
    // The output folder may be the user's own: a skipped.txt is written there only when needed.
    if !skipped.is_empty() {
        skipped.report(files.len(), "images", output)?;
    }
    if written == 0 {
        bail!("no readable image in --input {}: {}", input.display(), skipped.examples());
    }
    println!("wrote {written} masks to {}", output.display());
    Ok(written)
}
