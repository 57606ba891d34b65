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

/// A vec4 kernel's last vec4 reaches into its tensor's padding: `launch` refuses a tensor whose
/// buffer ends before its last whole texel (every variant), and takes one that does not.
#[test]
fn vec4_kernels_refuse_a_tensor_without_its_last_texel() {
    use std::sync::Arc;
    use wgunet::kernel::BufferView;
    for variant in KernelVariant::ALL {
        let gpu = common::gpu_for(variant);
        // 5 elements: the second vec4 needs bytes 16..32 of a 20-byte buffer.
        let short = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("short"),
            size: 20,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let y = BufferView { buffer: Arc::new(short), offset: 0, bytes: 20, name: "y".into() };
        let x = gpu.upload("x", &[1.0f32, -2.0, 3.0, -4.0, 5.0]).unwrap();
        let err = ops::elementwise::relu(gpu, &x, &y).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("elementwise::relu: tensor 'y' does not end on a whole vec4 for its out"),
            "{variant}: {err:?}"
        );
        let whole = gpu.buffer("y", 5).unwrap();
        gpu.run(&[&ops::elementwise::relu(gpu, &x, &whole).unwrap()]).unwrap();
        assert_eq!(gpu.read::<f32>(&whole).unwrap(), [1.0, 0.0, 3.0, 0.0, 5.0], "{variant}");
    }
}
