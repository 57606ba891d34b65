//! Kernel-versus-reference checking, shared by `cargo test` and `wgunet selftest`.
//!
//! Every op module has a `check(gpu, rng, case)` that runs its kernels (forward and backward) on
//! fresh random inputs, with output buffers poisoned with NaN, and compares each output with its
//! f64 CPU reference through [`compare`]; [`run_cases`] runs it over the module's awkward shapes.
//! One helper, every op, the same way.

use anyhow::Result;
use rand::{Rng, SeedableRng};

use crate::device::Gpu;
use crate::kernel::{BufferView, Dispatch};

pub type CheckRng = rand_pcg::Pcg64;

pub fn rng(seed: u64) -> CheckRng {
    CheckRng::seed_from_u64(seed)
}

/// Relative-error bound for f32 kernels against f64 references: leaves room for fused
/// multiply-add and different summation orders on real GPUs.
pub const TOLERANCE: f64 = 1e-5;

/// One compared output.
#[derive(Clone, Debug)]
pub struct CaseReport {
    pub kernel: String,
    pub shape: String,
    /// ‖gpu − ref‖ / ‖ref‖ (or ‖gpu − ref‖ when the reference is all zeros).
    pub rel_err: f64,
    /// Elements still NaN (never written, or written as NaN).
    pub unwritten: usize,
    pub tolerance: f64,
}

impl CaseReport {
    pub fn pass(&self) -> bool {
        self.unwritten == 0 && self.rel_err <= self.tolerance
    }
}

impl std::fmt::Display for CaseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<34} {:<30} rel err {:9.2e} (bound {:.0e}){}  {}",
            self.kernel,
            self.shape,
            self.rel_err,
            self.tolerance,
            if self.unwritten > 0 { format!(", {} elements unwritten", self.unwritten) } else { String::new() },
            if self.pass() { "pass" } else { "FAIL" }
        )
    }
}

pub fn compare(kernel: &str, shape: &str, gpu: &[f32], reference: &[f64]) -> CaseReport {
    compare_with(kernel, shape, gpu, reference, TOLERANCE)
}

pub fn compare_with(kernel: &str, shape: &str, gpu: &[f32], reference: &[f64], tolerance: f64) -> CaseReport {
    assert_eq!(gpu.len(), reference.len(), "{kernel}: output length differs from the reference");
    let unwritten = gpu.iter().filter(|v| v.is_nan()).count();
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (g, r) in gpu.iter().zip(reference) {
        diff += (*g as f64 - r).powi(2);
        norm += r * r;
    }
    let rel_err = if norm > 0.0 { (diff / norm).sqrt() } else { diff.sqrt() };
    CaseReport { kernel: kernel.to_string(), shape: shape.to_string(), rel_err, unwritten, tolerance }
}

/// Uniform random values in [-1, 1).
pub fn random(rng: &mut CheckRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Random 0/1 mask values.
pub fn random_mask(rng: &mut CheckRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| if rng.random_bool(0.5) { 1.0 } else { 0.0 }).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// An output buffer filled with NaN, so unwritten elements show up in [`compare`].
pub fn poisoned(gpu: &Gpu, name: &str, n: usize) -> Result<BufferView> {
    gpu.upload(name, &vec![f32::NAN; n])
}

/// `N×C×H×W` for report tables.
pub fn shape4(n: usize, c: usize, h: usize, w: usize) -> String {
    format!("{n}x{c}x{h}x{w}")
}

/// Builds a kernel (its dispatch, or several run in order) that writes one output into a fresh
/// NaN-poisoned buffer of `want.len()` elements, runs it, and compares the output with `want`.
pub fn run_case<D: Into<Vec<Dispatch>>>(
    gpu: &Gpu,
    kernel: &str,
    shape: &str,
    want: &[f64],
    build: impl FnOnce(&BufferView) -> Result<D>,
) -> Result<CaseReport> {
    run_case_with(gpu, kernel, shape, want, TOLERANCE, build)
}

/// [`run_case`] with its own bound (see [`summation_tolerance`]).
pub fn run_case_with<D: Into<Vec<Dispatch>>>(
    gpu: &Gpu,
    kernel: &str,
    shape: &str,
    want: &[f64],
    tolerance: f64,
    build: impl FnOnce(&BufferView) -> Result<D>,
) -> Result<CaseReport> {
    let out = poisoned(gpu, kernel, want.len())?;
    let dispatches: Vec<Dispatch> = build(&out)?.into();
    gpu.run(&dispatches.iter().collect::<Vec<_>>())?;
    Ok(compare_with(kernel, shape, &gpu.read::<f32>(&out)?, want, tolerance))
}

/// The bound for sums of random-signed terms: [`TOLERANCE`] times the sums' condition number
/// ‖Σ|t|‖ / ‖Σ t‖ (`abs_sums` are the sums of the terms' magnitudes). Hundreds of ±1 terms
/// cancel to a sum ~20× smaller than their magnitudes, and f32 rounding grows with the
/// magnitudes, not with the sum (a bias gradient over 391 pixels reached 1.1e-5 relative).
pub fn summation_tolerance(sums: &[f64], abs_sums: &[f64]) -> f64 {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    TOLERANCE * (norm(abs_sums) / norm(sums).max(f64::MIN_POSITIVE)).max(1.0)
}

/// `check` on each of `cases` in turn, the reports gathered: a kernel family's check.
pub fn run_cases<C>(
    gpu: &Gpu,
    rng: &mut CheckRng,
    cases: &[C],
    check: impl Fn(&Gpu, &mut CheckRng, &C) -> Result<Vec<CaseReport>>,
) -> Result<Vec<CaseReport>> {
    let mut out = Vec::new();
    for case in cases {
        out.extend(check(gpu, rng, case)?);
    }
    Ok(out)
}
