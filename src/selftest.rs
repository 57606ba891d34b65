//! `wgunet selftest`: every kernel, forward and backward, against its CPU reference on the
//! user's own adapter. This is how a user trusts a driver we never saw.

use anyhow::Result;

use crate::check;
use crate::device::{Gpu, KernelVariant};
use crate::ops::FAMILIES;

/// Checks the variant forced by `--kernels` / `WGUNET_KERNELS`, or every variant when none is:
/// a user may force either, so both must be right on their adapter. Returns the failures.
pub fn run_variants(mut gpu: Gpu, seed: u64) -> Result<usize> {
    let variants = match KernelVariant::forced()? {
        Some(v) => vec![v],
        None => KernelVariant::ALL.to_vec(),
    };
    let mut failed = 0;
    for v in variants {
        gpu = gpu.with_kernels(v);
        failed += run(&gpu, seed)?;
    }
    Ok(failed)
}

/// Prints the table for the device's kernel variant; returns the number of failed comparisons.
pub fn run(gpu: &Gpu, seed: u64) -> Result<usize> {
    println!("selftest on {} (seed {seed})", gpu.describe());
    println!("{:<34} {:<30} max relative error", "kernel", "shape");
    let mut failed = 0;
    let mut total = 0;
    for family in FAMILIES {
        let mut rng = check::rng(seed);
        match (family.check)(gpu, &mut rng) {
            Ok(reports) => {
                for r in reports {
                    total += 1;
                    if !r.pass() {
                        failed += 1;
                    }
                    println!("{r}");
                }
            }
            Err(e) => {
                failed += 1;
                total += 1;
                println!("{:<34} error: {e:#}  FAIL", family.name);
            }
        }
    }
    println!("{} passed, {} failed", total - failed, failed);
    Ok(failed)
}
