//! `wgunet eval` and `wgunet predict`: a saved run applied to data. Images are segmented at the
//! model's size and the probabilities resized back to each image's own size, or, with `--tile`,
//! in overlapping tiles of the model's size at the image's own size ([`tiling`]); optionally
//! averaged over mirrorings (`--tta`, [`tta`]) and cut down to the largest connected component
//! (`--keep-largest`, [`postprocess`]). `eval` scores both at the model's size and at each
//! image's own size, and writes a per-image CSV and panels of the best and worst images.
//!
//! A K-class model's probabilities are K maps (one per class), resized, tiled and averaged
//! alike; each pixel's class is the most probable one.

mod eval;
mod input;
mod model;
pub mod native;
pub mod postprocess;
mod predict;
mod score;
mod segment;
pub mod tiling;
pub mod tta;

pub use eval::{eval, EvalData, EvalOptions, EvalReport, DEFAULT_PANELS};
pub use model::LoadedModel;
pub use predict::predict;
pub use score::{per_image_csv, Confusion, ImageScore};
pub use segment::{InferOptions, Input, Maps, Segmenter};
