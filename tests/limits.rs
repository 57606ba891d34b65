//! Tensors larger than the adapter's max storage-buffer binding are refused up front with an
//! error that names the limit and the fix — never a wgpu panic or a silently wrong result.

mod common;

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
    assert!(err.contains("huge activation"), "error does not name the tensor: {err}");
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
