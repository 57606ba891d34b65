// Per-image confusion counts of a binary segmentation: TP, FP, FN, TN of (pred > threshold)
// against (mask > 0.5). One workgroup per image: each invocation counts a strided share of the
// image's pixels in registers, the workgroup sums those with 4 workgroup atomics per invocation,
// and 4 invocations write the image's row. No global atomics.

struct Params {
    images: u32,
    pixels: u32,
    threshold: f32,
    first_image: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> counts: array<u32>;

// WGSL zero-initialises workgroup memory.
var<workgroup> totals: array<atomic<u32>, 4>;

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn confusion_counts(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // grid_1d may wrap a long batch into y; the image index is uniform across the workgroup,
    // so this early return keeps the barrier below in uniform control flow.
    let image = wid.x + wid.y * nwg.x;
    if (image >= p.images) {
        return;
    }
    let base = image * p.pixels;
    var mine = vec4<u32>(0u); // TP, FP, FN, TN
    for (var k = lid; k < p.pixels; k += WG_X * WG_Y * WG_Z) {
        let positive = pred[base + k] > p.threshold;
        let truth = mask[base + k] > 0.5;
        mine[select(select(3u, 2u, truth), select(1u, 0u, truth), positive)] += 1u;
    }
    for (var s = 0u; s < 4u; s++) {
        atomicAdd(&totals[s], mine[s]);
    }
    workgroupBarrier();
    if (lid < 4u) {
        counts[(p.first_image + image) * 4u + lid] = atomicLoad(&totals[lid]);
    }
}
