//! Finding image/mask pairs below a dataset folder, whatever its layout:
//!
//! 1. `images/` + `masks/` folders holding files with the same stem (also several such pairs of
//!    folders below one parent, e.g. `train/images` + `train/masks`);
//! 2. one folder with `NAME.png` beside `NAME_mask.png` (or `_seg`, `_gt`, `_label`, `-mask`, …);
//! 3. mask folders called label(s), gt, ground truth or `GroundT_<image folder>` anywhere below
//!    the dataset folder (the Pratheepan skin dataset).
//!
//! Files pair by name (never by sorted order, so `1.png … 10.png` stay right); where several
//! masks share an image's name, the one whose folders look most like the image's wins.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::skipped::Unusable;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Pair {
    pub image: PathBuf,
    pub mask: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Pairing {
    /// Sorted by image path.
    pub pairs: Vec<Pair>,
    /// The layout in words, e.g. "images/ + masks/ folders".
    pub layout: String,
    /// Images for which no mask (or no single best mask) was found, sorted.
    pub unmatched_images: Vec<PathBuf>,
    /// Those images and the masks no image took, each with why it is left out, sorted.
    pub unpaired: Vec<Unusable>,
    /// Image files seen (hidden and OS files not counted).
    pub files: usize,
}

pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

const ACCEPTED_LAYOUTS: &str = "accepted layouts: DIR/images/ + DIR/masks/ with the same file names \
(mask folders may also be called labels, gt, ground_truth or GroundT_<image folder>, at any depth); \
or one folder with NAME.png beside NAME_mask.png (also _seg, _gt, _label, -mask); \
image types: png, jpg, jpeg, bmp, tif, tiff";

/// Folder names (as whole names, or as the first or last word of one, e.g. `train_masks`,
/// `GroundT_FacePhoto`) that hold masks. "seg" is left out: dataset roots are often called
/// `Kvasir-SEG` or `segmentation`.
const MASK_FOLDER_WORDS: &[&str] =
    &["mask", "masks", "label", "labels", "gt", "groundtruth", "groundtruths", "groundt", "annotations"];
/// Folder names that hold the images; dropped when comparing an image's folders with a mask's.
const IMAGE_FOLDER_WORDS: &[&str] = &["image", "images", "img", "imgs", "input", "inputs", "original", "originals"];
/// Words that make a file a mask when they end (or start) its name: `a_mask.png`, `gt_a.png`.
const MASK_NAME_WORDS: &[&str] = &["mask", "masks", "seg", "segmentation", "gt", "label", "labels", "groundtruth"];
/// Words an image's name may end with where its mask's does not: `123_sat.jpg` + `123_mask.png`.
const IMAGE_NAME_WORDS: &[&str] = &["image", "img", "sat", "input", "rgb", "orig", "original"];

/// Symbolic links may loop; real datasets are never this deep.
const MAX_DEPTH: usize = 24;

/// Files the OS or another tool put there, never data: dot-files (`.DS_Store`, macOS's `._x.png`
/// companions, our own half-written temp files), `Thumbs.db`, `desktop.ini`.
pub fn is_hidden(path: &Path) -> bool {
    path.file_name().map(|n| n.to_string_lossy()).is_some_and(|name| {
        name.starts_with('.') || name.eq_ignore_ascii_case("thumbs.db") || name.eq_ignore_ascii_case("desktop.ini")
    })
}

pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|known| e.eq_ignore_ascii_case(known)))
}

pub fn find_pairs(dir: &Path) -> Result<Pairing> {
    if !dir.exists() {
        bail!("dataset folder {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{} is not a folder; point at the folder that holds the images and masks", dir.display());
    }
    let mut files = Vec::new();
    collect_images(dir, 0, &mut files)?;
    files.sort();
    let file_count = files.len();

    let (mut images, mut masks) = (Vec::new(), Vec::new());
    for path in files {
        let file = describe_file(dir, path);
        if file.is_mask {
            masks.push(file);
        } else {
            images.push(file);
        }
    }

    let mut masks_by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, mask) in masks.iter().enumerate() {
        for key in &mask.keys {
            masks_by_key.entry(key.as_str()).or_default().push(i);
        }
    }

    let mut pairs = Vec::new();
    let mut unmatched_images = Vec::new();
    let mut unpaired = Vec::new();
    let mut paired_masks = vec![false; masks.len()];
    for image in &images {
        let winners = best_masks(image, &masks, &masks_by_key);
        match winners[..] {
            [m] => {
                paired_masks[m] = true;
                pairs.push(Pair { image: image.path.clone(), mask: masks[m].path.clone() });
            }
            [] => {
                unmatched_images.push(image.path.clone());
                unpaired.push(Unusable::new(&image.path, "has no mask (no mask file of the same name)"));
            }
            _ => {
                unmatched_images.push(image.path.clone());
                let names: Vec<String> = winners.iter().map(|&m| file_name(&masks[m].path)).collect();
                unpaired.push(Unusable::new(
                    &image.path,
                    format!("has several equally likely masks ({}): keep one", names.join(", ")),
                ));
            }
        }
    }
    for (mask, _) in masks.iter().zip(&paired_masks).filter(|(_, &paired)| !paired) {
        unpaired.push(Unusable::new(&mask.path, "is a mask with no image (no image file of the same name)"));
    }
    unpaired.sort();

    if pairs.is_empty() {
        return Err(no_pairs(dir, &images, &masks));
    }
    pairs.sort();
    Ok(Pairing { layout: layout_words(&pairs), pairs, unmatched_images, unpaired, files: file_count })
}

/// The masks that pair best with `image` (one: its mask; none or several: no pair).
fn best_masks(image: &FoundFile, masks: &[FoundFile], masks_by_key: &HashMap<&str, Vec<usize>>) -> Vec<usize> {
    let mut candidates: Vec<usize> =
        image.keys.iter().flat_map(|k| masks_by_key.get(k.as_str()).into_iter().flatten().copied()).collect();
    candidates.sort_unstable();
    candidates.dedup();
    let scored: Vec<(Score, usize)> = candidates.iter().map(|&m| (score(image, &masks[m]), m)).collect();
    let best = scored.iter().map(|(s, _)| *s).max();
    scored.iter().filter(|(s, _)| Some(*s) == best).map(|(_, m)| *m).collect()
}

/// The error for a folder in which no image found its mask: what was seen, and where to point.
fn no_pairs(dir: &Path, images: &[FoundFile], masks: &[FoundFile]) -> anyhow::Error {
    let inside_image_folder = dir.file_name().is_some_and(|n| folder_role(&n.to_string_lossy()).0 == Role::Image);
    let hint = if inside_image_folder { " (point at the folder above, which holds the masks too)" } else { "" };
    anyhow::anyhow!(
        "no image/mask pairs found in {}{hint}: saw {} image{} and {} mask{}{}{}; {ACCEPTED_LAYOUTS}",
        dir.display(),
        images.len(),
        plural(images.len()),
        masks.len(),
        plural(masks.len()),
        examples(" (images: ", images),
        examples(" (masks: ", masks),
    )
}

/// "found N pairs (layout); M images without a mask: a.png, b.png, …"
pub fn describe(p: &Pairing) -> String {
    const LISTED: usize = 10;
    let mut s = format!("found {} pair{} ({})", p.pairs.len(), plural(p.pairs.len()), p.layout);
    let m = p.unmatched_images.len();
    if m > 0 {
        let names: Vec<String> = p.unmatched_images.iter().take(LISTED).map(|f| file_name(f)).collect();
        s += &format!("; {m} image{} without a mask: {}", plural(m), names.join(", "));
        if m > LISTED {
            s += ", …";
        }
    }
    s
}

fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list folder {}", dir.display()))?;
        let path = entry.path();
        if is_hidden(&path) {
            continue; // also .git
        }
        // `fs::metadata` follows links; a broken link has none and is skipped.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() && depth < MAX_DEPTH => collect_images(&path, depth + 1, out)?,
            Ok(meta) if meta.is_file() && is_image_file(&path) => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

struct FoundFile {
    path: PathBuf,
    is_mask: bool,
    /// Names this file may pair under: its stem's words joined by "_", and for a mask that
    /// word list without its mask word (for an image, without its image word).
    keys: Vec<String>,
    /// The stem's words, unstripped: an exact match beats a stripped one.
    stem: String,
    /// Folders between the dataset folder and the file, minus image/mask words: `train/masks`
    /// gives `[train]`, `Ground_Truth/GroundT_FacePhoto` gives `[facephoto]`.
    context: Vec<String>,
}

fn describe_file(root: &Path, path: PathBuf) -> FoundFile {
    let relative = path.strip_prefix(root).unwrap_or(&path);
    let folders: Vec<String> = match relative.parent() {
        Some(parent) => parent
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let mut in_mask_folder = false;
    let mut context = Vec::new();
    for folder in &folders {
        let (role, rest) = folder_role(folder);
        in_mask_folder |= role == Role::Mask;
        if !rest.is_empty() {
            context.push(rest);
        }
    }

    let stem_words = words(&path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    let stem = stem_words.join("_");
    let mask_stripped = strip_word(&stem_words, MASK_NAME_WORDS);
    let is_mask = in_mask_folder || mask_stripped.is_some();
    let stripped = if is_mask { mask_stripped } else { strip_word(&stem_words, IMAGE_NAME_WORDS) };
    let mut keys = vec![stem.clone()];
    keys.extend(stripped);
    FoundFile { path, is_mask, keys, stem, context }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Mask,
    Image,
    Other,
}

/// What a folder holds, and what is left of its name once the image/mask word is dropped.
fn folder_role(name: &str) -> (Role, String) {
    let w = words(name);
    let whole = w.concat();
    for (role, vocabulary) in [(Role::Mask, MASK_FOLDER_WORDS), (Role::Image, IMAGE_FOLDER_WORDS)] {
        if vocabulary.contains(&whole.as_str()) {
            return (role, String::new());
        }
        if let Some(rest) = strip_word(&w, vocabulary) {
            return (role, rest);
        }
    }
    (Role::Other, w.join("_"))
}

/// Lower-case alphanumeric words; "ground truth" counts as one word.
fn words(name: &str) -> Vec<String> {
    let raw: Vec<String> =
        name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for w in raw {
        if w == "truth" && out.last().is_some_and(|prev| prev == "ground") {
            out.last_mut().unwrap().push_str("truth");
        } else {
            out.push(w);
        }
    }
    out
}

/// The words joined without a last (or else first) word from `vocabulary`, if there is one and
/// something is left.
fn strip_word(w: &[String], vocabulary: &[&str]) -> Option<String> {
    if w.len() < 2 {
        return None;
    }
    if vocabulary.contains(&w[w.len() - 1].as_str()) {
        Some(w[..w.len() - 1].join("_"))
    } else if vocabulary.contains(&w[0].as_str()) {
        Some(w[1..].join("_"))
    } else {
        None
    }
}

/// How well a mask's folders match an image's, best first in tuple order: identical folder
/// lists, then the longest shared tail (`FacePhoto` ↔ `GroundT_FacePhoto`), then the longest
/// shared head, then an exact (unstripped) name.
type Score = (bool, usize, usize, bool);

fn score(image: &FoundFile, mask: &FoundFile) -> Score {
    let (a, b) = (&image.context, &mask.context);
    let tail = a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    (a == b, tail, head, image.stem == mask.stem)
}

/// The layout in words, from the pairs actually found: "images/ + masks/ folders",
/// "NAME + NAME_mask files in one folder", or a few of each kind seen.
fn layout_words(pairs: &[Pair]) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for pair in pairs {
        *kinds.entry(pair_kind(pair)).or_default() += 1;
    }
    let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    const SHOWN: usize = 3;
    let mut s = kinds.iter().take(SHOWN).map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ");
    if kinds.len() > SHOWN {
        s += &format!(" and {} more kinds", kinds.len() - SHOWN);
    }
    s
}

fn pair_kind(pair: &Pair) -> String {
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let (image_stem, mask_stem) = (stem(&pair.image), stem(&pair.mask));
    let mask_naming = mask_naming(&image_stem, &mask_stem);
    let (image_dir, mask_dir) = (pair.image.parent(), pair.mask.parent());
    if image_dir == mask_dir {
        return format!("NAME + {mask_naming} files in one folder");
    }
    let folder = |d: Option<&Path>| d.and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
    let mut s = format!(
        "{}/ + {}/ folders",
        folder(image_dir).unwrap_or_else(|| ".".into()),
        folder(mask_dir).unwrap_or_else(|| ".".into())
    );
    if mask_naming != "NAME" {
        s += &format!(" (masks named {mask_naming})");
    }
    s
}

/// The mask's name with the image's name replaced by NAME: "NAME_mask", "gt_NAME", or "NAME".
fn mask_naming(image_stem: &str, mask_stem: &str) -> String {
    let n = image_stem.len();
    let is_image_name = |part: Option<&str>| part.is_some_and(|p| p.eq_ignore_ascii_case(image_stem));
    if is_image_name(mask_stem.get(..n)) {
        format!("NAME{}", &mask_stem[n..])
    } else if mask_stem.len() >= n && is_image_name(mask_stem.get(mask_stem.len() - n..)) {
        format!("{}NAME", &mask_stem[..mask_stem.len() - n])
    } else {
        mask_stem.to_string()
    }
}

fn examples(prefix: &str, files: &[FoundFile]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let names: Vec<String> = files.iter().take(3).map(|f| file_name(&f.path)).collect();
    format!("{prefix}{}{})", names.join(", "), if files.len() > 3 { ", …" } else { "" })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
