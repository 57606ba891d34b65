//! Every kernel against its f64 CPU reference on lavapipe: fresh random inputs (the seed is
//! printed on failure; rerun with WGUNET_SEED=...), awkward shapes, NaN-poisoned outputs,
//! relative error under 1e-5. Each family is checked with every kernel variant (cpu and gpu),
//! whatever the adapter: a user may force either.

mod common;

use wgunet::{check, ops, KernelVariant};

fn check_family(name: &str) {
    let seed = common::seed();
    for variant in KernelVariant::ALL {
        let reports = (ops::family(name).check)(common::gpu_for(variant), &mut check::rng(seed))
            .unwrap_or_else(|e| panic!("{name}, {variant} kernels (seed {seed}): {e:#}"));
        assert!(!reports.is_empty(), "{name} checked nothing");
        let failed: Vec<String> = reports.iter().filter(|r| !r.pass()).map(|r| r.to_string()).collect();
        assert!(failed.is_empty(), "{name}, {variant} kernels, failed with WGUNET_SEED={seed}:\n{}", failed.join("\n"));
    }
}

#[test]
fn elementwise() {
    check_family("elementwise");
}

#[test]
fn conv2d() {
    check_family("conv2d");
}

#[test]
fn conv_transpose2d() {
    check_family("conv_transpose2d");
}

#[test]
fn max_pool() {
    check_family("max_pool");
}

#[test]
fn upsample() {
    check_family("upsample");
}

#[test]
fn concat() {
    check_family("concat");
}

#[test]
fn metrics() {
    check_family("metrics");
}

#[test]
fn class_counts() {
    check_family("class_counts");
}

#[test]
fn loss() {
    check_family("loss");
}

#[test]
fn adam() {
    check_family("adam");
}

#[test]
fn augment() {
    check_family("augment");
}

#[test]
fn batchnorm() {
    check_family("batchnorm");
}

#[test]
fn dropout() {
    check_family("dropout");
}

#[test]
fn gate() {
    check_family("gate");
}
