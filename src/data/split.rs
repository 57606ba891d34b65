//! Reproducible train/test splits and the pair lists that record them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::pairs::Pair;

/// The share of the pairs that trains when none is given: the seed's 70/30 split.
pub const DEFAULT_TRAIN_FRACTION: f64 = 0.7;

/// Sorts the pairs (so the split does not depend on the order they were found in), keeps the
/// first `max_images`, shuffles them with `Pcg64` seeded by `seed`, and puts the first
/// `round(n · train)` in the train set. `train = 1` puts everything in train (no test set);
/// any other fraction that would leave either side empty (with at least 2 pairs) is an error.
pub fn split(pairs: &[Pair], train: f64, seed: u64, max_images: Option<usize>) -> Result<(Vec<Pair>, Vec<Pair>)> {
    if !(train > 0.0 && train <= 1.0) {
        bail!("the train fraction must be in (0, 1], got {train}");
    }
    if max_images == Some(0) {
        bail!("max images must be at least 1");
    }
    let mut pairs = pairs.to_vec();
    if pairs.is_empty() {
        bail!("no pairs to split");
    }
    pairs.sort();
    pairs.truncate(max_images.unwrap_or(usize::MAX));
    pairs.shuffle(&mut rand_pcg::Pcg64::seed_from_u64(seed));

    let n = pairs.len();
    let n_train = train_count(n, train);
    if n_train == 0 {
        bail!("a train fraction of {train} of {n} pair{} leaves no training pairs", if n == 1 { "" } else { "s" });
    }
    if n_train == n && train < 1.0 && n >= 2 {
        bail!(
            "a train fraction of {train} of {n} pairs leaves no test pairs (use a smaller fraction, or 1 for no test set)"
        );
    }
    let test = pairs.split_off(n_train);
    Ok((pairs, test))
}

/// How many of `n` pairs [`split`] puts in the train set: `round(n · train)`, at most `n`.
pub fn train_count(n: usize, train: f64) -> usize {
    ((n as f64 * train).round() as usize).min(n)
}

/// Writes one pair a line, `image<TAB>mask` with absolute paths, through a temporary file that
/// is renamed into place, so a reader never sees half a list.
pub fn write_list(path: &Path, pairs: &[Pair]) -> Result<()> {
    let mut text = String::new();
    for pair in pairs {
        text += &format!("{}\t{}\n", list_field(&pair.image)?, list_field(&pair.mask)?);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        // The temporary file is ours and useless now; the error below is what matters.
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write pair list {}", path.display()));
    }
    Ok(())
}

fn list_field(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))?;
    match absolute.to_str() {
        Some(s) if !s.contains(['\t', '\n', '\r']) => Ok(s.to_string()),
        Some(_) => bail!("{} contains a tab or line break and cannot go in a pair list", absolute.display()),
        None => bail!("{} is not valid UTF-8 and cannot go in a pair list", absolute.display()),
    }
}

/// Reads a list written by [`write_list`] (or by hand: blank lines and `#` comments are
/// skipped, relative paths are taken from the list's folder). Every listed file must exist.
pub fn read_list(path: &Path) -> Result<Vec<Pair>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read pair list {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let fields: Vec<&str> = line.split('\t').collect();
        let [image, mask] = fields[..] else {
            bail!("{}: expected \"image<TAB>mask\", got {line:?}", at());
        };
        let mut resolved = [PathBuf::new(), PathBuf::new()];
        for (slot, (field, what)) in resolved.iter_mut().zip([(image, "image"), (mask, "mask")]) {
            if field.is_empty() {
                bail!("{}: the {what} path is empty", at());
            }
            *slot = base.join(field);
            if !slot.is_file() {
                bail!("{}: {what} file {} does not exist", at(), slot.display());
            }
        }
        let [image, mask] = resolved;
        pairs.push(Pair { image, mask });
    }
    Ok(pairs)
}
