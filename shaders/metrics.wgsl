// Per-image confusion counts of a segmentation, one workgroup per image (no global atomics):
//
// - confusion_counts (binary): TP, FP, FN, TN of (pred > threshold) against (mask > 0.5). Each
//   invocation counts a strided share of the image's pixels in registers, the workgroup sums
//   those with 4 workgroup atomics per invocation, and 4 invocations write the image's row.
// - class_counts (K classes): the predicted class of a pixel is the argmax of its K logits (the
//   first maximum on ties), the true class the mask's class id. Per class TP, FP, FN are summed
//   in workgroup atomics (K of them do not fit in registers), plus the correctly classified
//   pixels; the row is [correct, TP_0, FP_0, FN_0, TP_1, ...], 1 + 3K counts.

struct Params {
    images: u32,
    pixels: u32,
    threshold: f32,
    first_image: u32,
    // K (class_counts).
    classes: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// 1 + 3·255: the counts of the largest class count wgunet trains (--classes 255); 3 KiB.
const MAX_CLASS_COUNTS: u32 = 766u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> counts: array<u32>;

// WGSL zero-initialises workgroup memory.
var<workgroup> totals: array<atomic<u32>, 4>;
var<workgroup> class_totals: array<atomic<u32>, MAX_CLASS_COUNTS>;

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

// pred: logits [images, K, pixels]; mask: class ids [images, pixels] as f32, each < K (checked
// when the masks are loaded).
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn class_counts(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // As in confusion_counts: a uniform early return, before the barrier.
    let image = wid.x + wid.y * nwg.x;
    if (image >= p.images) {
        return;
    }
    let k = p.classes;
    let base = image * k * p.pixels;
    var correct = 0u;
    for (var q = lid; q < p.pixels; q += WG_X * WG_Y * WG_Z) {
        var best = 0u;
        var best_logit = pred[base + q];
        for (var c = 1u; c < k; c++) {
            let z = pred[base + c * p.pixels + q];
            // Strictly greater: the first maximum wins a tie.
            if (z > best_logit) {
                best = c;
                best_logit = z;
            }
        }
        let truth = u32(mask[image * p.pixels + q]);
        if (best == truth) {
            correct += 1u;
            atomicAdd(&class_totals[1u + 3u * best], 1u);
        } else {
            atomicAdd(&class_totals[2u + 3u * best], 1u);
            atomicAdd(&class_totals[3u + 3u * truth], 1u);
        }
    }
    atomicAdd(&class_totals[0], correct);
    workgroupBarrier();
    let row = 1u + 3u * k;
    for (var j = lid; j < row; j += WG_X * WG_Y * WG_Z) {
        counts[(p.first_image + image) * row + j] = atomicLoad(&class_totals[j]);
    }
}
