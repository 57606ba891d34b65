//! The CPU data layer: find image/mask pairs in a folder (`pairs`), split them reproducibly
//! into train and test lists (`split`), decode and resize them on CPU threads (`load`),
//! normalise their intensities (`normalise`), crop native-resolution training patches
//! (`patches`), and the built-in synthetic MRI-like dataset (`synth`). Files that cannot be used
//! are left out with their reason (`skipped`).

pub mod intensity;
pub mod load;
pub mod normalise;
pub mod pairs;
pub mod patches;
pub mod shift;
pub mod skipped;
pub mod split;
pub mod synth;

pub use load::{
    channels_of, decode_pairs, detect_channels, load_all, load_image, load_sample, Decoded, Preprocess, Sample,
};
pub use normalise::{normalise_dataset, Normalisation, NormaliseKind};
pub use pairs::{describe, find_pairs, Pair, Pairing};
pub use skipped::{Skipped, Unusable};
pub use split::{read_list, split, write_list};
