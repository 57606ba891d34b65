//! Shared by the integration tests: one device for all test threads, fresh seeds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use wgunet::{DeviceChoice, Gpu, KernelVariant};

/// Runs the `wgunet` binary (env!("CARGO_BIN_EXE_wgunet") of the calling test), asserts success
/// and returns stdout and stderr together.
pub fn run_wgunet(binary: &str, args: &[&str]) -> String {
    run_wgunet_with(std::process::Command::new(binary), args)
}

/// [`run_wgunet`] for a command the caller prepared (e.g. with environment variables).
pub fn run_wgunet_with(mut command: std::process::Command, args: &[&str]) -> String {
    let out = command.args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().expect("wgunet runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "wgunet {} failed:\n{text}", args.join(" "));
    text
}

/// The software adapter (lavapipe) in CI; `WGUNET_TEST_DEVICE` picks another (e.g. `gpu`).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(open_test_device)
}

fn open_test_device() -> Gpu {
    let choice: DeviceChoice = std::env::var("WGUNET_TEST_DEVICE").unwrap_or_else(|_| "cpu".into()).parse().unwrap();
    Gpu::open(&choice).unwrap_or_else(|e| panic!("tests need a Vulkan adapter: {e:#}"))
}

/// The test adapter (as [`gpu`]) building `variant` kernels: one device per variant, shared by
/// all test threads, so every kernel check can run with each variant.
pub fn gpu_for(variant: KernelVariant) -> &'static Gpu {
    static GPUS: [OnceLock<Gpu>; KernelVariant::ALL.len()] = [const { OnceLock::new() }; KernelVariant::ALL.len()];
    let slot = KernelVariant::ALL.iter().position(|v| *v == variant).expect("a variant in ALL");
    GPUS[slot].get_or_init(|| open_test_device().with_kernels(variant))
}

/// `WGUNET_SEED` reproduces a failure; otherwise a fresh seed each run.
pub fn seed() -> u64 {
    if let Ok(s) = std::env::var("WGUNET_SEED") {
        return s.parse().expect("WGUNET_SEED must be an integer");
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    // Different threads starting in the same nanosecond still get different seeds.
    nanos ^ (std::thread::current().id().as_u64_fallback())
}

trait ThreadIdBits {
    fn as_u64_fallback(&self) -> u64;
}
impl ThreadIdBits for std::thread::ThreadId {
    fn as_u64_fallback(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// Checks an analytic gradient of a reference against central finite differences in f64.
///
/// `f` is a reference forward (x ↦ y); the scalar checked is L(x) = Σ y·r for a random `r`, whose
/// gradient is the reference backward applied to dy = r — that is `analytic`.
pub fn finite_difference_check(
    name: &str,
    seed: u64,
    x: &[f64],
    r: &[f64],
    f: impl Fn(&[f64]) -> Vec<f64>,
    analytic: &[f64],
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let loss = |x: &[f64]| -> f64 { f(x).iter().zip(r).map(|(y, r)| y * r).sum() };
    // The loss's own rounding, over 2h, is the noise floor of each difference: ~10 ulps of
    // Σ|y·r|. Where a true gradient is that small (batch norm over two values, whose outputs are
    // ±1 whatever x is, up to ε) no relative bound can hold, so the floor is allowed on top.
    let magnitude: f64 = f(x).iter().zip(r).map(|(y, r)| (y * r).abs()).sum();
    let h = 1e-6;
    let noise = 10.0 * f64::EPSILON * magnitude / (2.0 * h);
    let mut xp = x.to_vec();
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for i in 0..x.len() {
        xp[i] = x[i] + h;
        let up = loss(&xp);
        xp[i] = x[i] - h;
        let down = loss(&xp);
        xp[i] = x[i];
        let numeric = (up - down) / (2.0 * h);
        diff += (numeric - analytic[i]).powi(2);
        norm += numeric * numeric;
    }
    assert!(norm > 0.0, "{name}: numeric gradient is all zeros (seed {seed}); the check would prove nothing");
    // 1e-5 relative, not tighter, for the truncation error; a wrong gradient is off by tens of percent.
    let (diff, norm) = (diff.sqrt(), norm.sqrt());
    let bound = 1e-5 * norm + noise * (x.len() as f64).sqrt();
    assert!(
        diff <= bound,
        "{name}: reference gradient differs from finite differences by {diff:.3e} (|gradient| {norm:.3e}, \
         allowed {bound:.3e}: rel err {:.3e}) (WGUNET_SEED={seed})",
        diff / norm
    );
}

/// A fresh folder under the system temp folder, removed when dropped (the test passed or failed).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wgunet-test-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
