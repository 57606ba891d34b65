//! Tensors larger than the adapter's max storage-buffer binding are refused up front with an
//! error that names the limit and the fix — never a wgpu panic or a silently wrong result.

mod common;

use wgunet::kernel::Reads;
use wgunet::ops::elementwise;

#[test]
fn tensor_over_the_binding_limit_is_refused_with_the_limit_named() {
    let gpu = common::gpu();
    let limit = gpu.limits.max_storage_buffer_binding_size;
    let elems = (limit / 4 + 1024) as usize;
    if (elems * 4) as u64 > gpu.limits.max_buffer_size {
        // Then `Gpu::buffer` itself refuses, naming the max buffer size.
        let err = gpu.buffer("huge", elems).err().expect("an oversized buffer must be refused").to_string();
        assert!(err.contains("max buffer size"), "{err}");
        return;
    }
    let big = gpu.buffer("huge activation", elems).unwrap();
    let out = gpu.buffer("huge output", elems).unwrap();
    let err = elementwise::relu(gpu, &big, &out).err().expect("binding over the limit must be refused").to_string();
    // Where kernels read their inputs through textures (the cpu variant), only the output is a
    // storage binding; elsewhere the input is refused first.
    let named = if gpu.reads() == Reads::Textures { "huge output" } else { "huge activation" };
    assert!(err.contains(named), "error does not name the tensor '{named}': {err}");
    assert!(err.contains("max storage-buffer binding"), "error does not name the limit: {err}");
    assert!(err.contains("--batch"), "error does not say what to do: {err}");
    gpu.check().expect("no device error was raised");
}

#[test]
fn workgroup_over_the_adapter_limit_is_refused() {
    let gpu = common::gpu();
    let too_many = gpu.limits.max_compute_invocations_per_workgroup * 2;
    let spec = wgunet::kernel::KernelSpec::new("elementwise", "relu", [too_many, 1, 1]);
    let err = gpu.pipeline(&spec).expect_err("oversized workgroup must be refused").to_string();
    assert!(err.contains("workgroup"), "{err}");
}

/// The CPU-lane convolution reads x through a texture array of 2048-row layers: a tensor of
/// 2.25 M texels fills one whole layer, 149 rows of the next and 272 texels of a last row (the
/// three copies `TextureUpload` records). A 1×1 convolution maps each pixel alone, so a texel
/// copied to the wrong place shows in its output pixel.
#[test]
fn a_tensor_spanning_texture_layers_reads_back_in_place() {
    use rand::{Rng, SeedableRng};
    use wgunet::check;
    use wgunet::ops::conv::Convolution;
    use wgunet::ops::conv2d::Conv2d;
    use wgunet::KernelVariant;

    let gpu = common::gpu_for(KernelVariant::Cpu);
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let s = Conv2d { n: 1, cin: 1, cout: 1, h: 3, w: 3_000_000, k: 1, relu: false };
    assert_eq!(s.input_len() / 4, 2048 * 1024 + 149 * 1024 + 272);
    let x: Vec<f32> = (0..s.input_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (weight, bias) = (rng.random_range(0.5f32..2.0), rng.random_range(-1.0f32..1.0));
    let (gx, gw, gb) =
        (gpu.upload("x", &x).unwrap(), gpu.upload("w", &[weight]).unwrap(), gpu.upload("b", &[bias]).unwrap());
    let gy = check::poisoned(gpu, "y", s.output_len()).unwrap();
    gpu.run(&s.forward(gpu, &gx, &gw, &gb, &gy).unwrap().iter().collect::<Vec<_>>()).unwrap();
    let y = gpu.read::<f32>(&gy).unwrap();
    for (i, (&x, &y)) in x.iter().zip(&y).enumerate() {
        let want = x as f64 * weight as f64 + bias as f64;
        assert!(
            (y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "pixel {i}: {y}, want {want} (WGUNET_SEED={seed})"
        );
    }
}
