//! Reading the files to segment: on CPU threads, a file that cannot be used set aside rather
//! than stopping the run, and a notice when the images' colour is not the model's.

use anyhow::Result;
use rayon::prelude::*;

use crate::data::load;
use crate::data::pairs::Pair;
use crate::data::skipped::{self, Unusable};

/// Prints a line when the images' colour differs from the model's (a skin-photo set for a
/// model trained on gray MRI, say), judged from the first few readable files.
pub(super) fn notice_colour_conversion(pairs: &[Pair], channels: usize) {
    match (load::channels_of(pairs), channels) {
        (Some(3), 1) => println!("note: the images are colour but the model takes grayscale: using their luma"),
        (Some(1), 3) => println!("note: the images are grayscale but the model takes RGB: repeating the gray channel"),
        _ => {}
    }
}

/// Loads `items` on CPU threads: the ones that loaded, with what they loaded; each file that
/// could not be used goes to `faults` — or with `strict` is the error (any other error stops).
pub(super) fn load_usable<'a, T: Sync, R: Send>(
    items: &'a [T],
    load: impl Fn(&T) -> Result<R> + Sync + Send,
    faults: &mut Vec<Unusable>,
    strict: bool,
) -> Result<(Vec<&'a T>, Vec<R>)> {
    let results: Vec<Result<R>> = items.par_iter().map(load).collect();
    let (mut usable, mut loaded) = (Vec::with_capacity(items.len()), Vec::with_capacity(items.len()));
    for (item, result) in items.iter().zip(results) {
        match result {
            Ok(l) => {
                usable.push(item);
                loaded.push(l);
            }
            Err(e) => {
                let fault = skipped::file_fault(e)?;
                if strict {
                    anyhow::bail!("--strict: {fault}; fix or remove it, or run without --strict to skip it");
                }
                faults.push(fault);
            }
        }
    }
    Ok((usable, loaded))
}
