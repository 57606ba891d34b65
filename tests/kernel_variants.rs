//! Choosing the kernel variant (`--kernels`, `WGUNET_KERNELS`, the adapter type) as a user does,
//! and what `bench` reports about it: the variant, the first finished step, ms per megapixel.

mod common;

use std::process::Command;

/// `wgunet ARGS` with `WGUNET_KERNELS` set to `env` (unset for `None`) and `WGUNET_GEMM_BLOCK`
/// unset; must succeed.
fn wgunet(env: Option<&str>, args: &[&str]) -> String {
    wgunet_with_block(env, None, args)
}

/// `wgunet ARGS` with `WGUNET_KERNELS` and `WGUNET_GEMM_BLOCK` set (unset for `None`).
fn wgunet_with_block(kernels: Option<&str>, block: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wgunet"));
    for (name, value) in [("WGUNET_KERNELS", kernels), ("WGUNET_GEMM_BLOCK", block)] {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    common::run_wgunet_with(command, args)
}

/// `wgunet bench` on a tiny U-Net (batch 2 of 32×32), one step, no warm-up.
fn bench(env: Option<&str>, extra: &[&str]) -> String {
    let mut args = vec![
        "bench",
        "--device",
        "cpu",
        "--size",
        "32",
        "--filters",
        "2",
        "--batch",
        "2",
        "--warmup",
        "0",
        "--steps",
        "1",
    ];
    args.extend_from_slice(extra);
    wgunet(env, &args)
}

/// The number right after `key` in `text`.
fn number_after(text: &str, key: &str) -> f64 {
    let rest = &text[text.find(key).unwrap_or_else(|| panic!("no '{key}' in:\n{text}")) + key.len()..];
    let token: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    token.parse().unwrap_or_else(|_| panic!("no number after '{key}' in:\n{text}"))
}

#[test]
fn the_option_wins_over_the_environment_which_wins_over_the_adapter_type() {
    // lavapipe is a CPU adapter: cpu kernels unless forced.
    assert!(bench(None, &[]).contains("(Vulkan, cpu), cpu kernels"));
    assert!(bench(Some("gpu"), &[]).contains("(Vulkan, cpu), gpu kernels with 8×8 blocks"));
    assert!(bench(Some("cpu"), &["--kernels", "gpu"]).contains("(Vulkan, cpu), gpu kernels"));
    assert!(bench(Some("gpu"), &["--kernels", "auto"]).contains("(Vulkan, cpu), gpu kernels"));
}

#[test]
fn a_bad_environment_value_is_a_clear_error() {
    for (name, value, expected) in
        [("WGUNET_KERNELS", "fast", "expected cpu, gpu or auto"), ("WGUNET_GEMM_BLOCK", "16", "expected 4 or 8")]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_wgunet"))
            .args(["bench", "--device", "cpu", "--size", "16", "--filters", "2"])
            .env(name, value)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{name}={value}")) && err.contains(expected), "{err}");
    }
}

#[test]
fn bench_reports_the_first_step_and_the_cost_per_megapixel() {
    let out = bench(None, &[]);
    let first = number_after(&out, "first step finished");
    assert!(first > 0.0 && first < 120.0, "first step after {first} s:\n{out}");
    let ms_per_step = number_after(&out, "images/s,");
    let ms_per_megapixel = number_after(&out, "ms/step,");
    // batch 2 of 32×32: 2048 pixels per step.
    let want = ms_per_step / (2.0 * 32.0 * 32.0 / 1e6);
    assert!(
        (ms_per_megapixel - want).abs() <= 0.01 * want + 0.1,
        "{ms_per_megapixel} ms/megapixel, want {want}:\n{out}"
    );
}

#[test]
fn selftest_checks_every_variant_unless_one_is_forced() {
    let all = wgunet(None, &["selftest", "--device", "cpu"]);
    assert!(all.contains("cpu kernels") && all.contains("gpu kernels"), "{all}");
    assert_eq!(all.matches(" passed, 0 failed").count(), 2, "{all}");
    assert!(all.contains("gpu kernels with 8×8 blocks"), "{all}");
    // The forced variant alone, here with the gpu variant's other GEMM block: every check again.
    let one = wgunet_with_block(None, Some("4"), &["selftest", "--device", "cpu", "--kernels", "gpu"]);
    assert!(one.contains("gpu kernels with 4×4 blocks") && !one.contains("cpu kernels"), "{one}");
    assert_eq!(one.matches(" passed, 0 failed").count(), 1, "{one}");
}
