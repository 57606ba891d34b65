// Losses with their gradients w.r.t. the logits, and the workgroup reductions that turn
// per-element losses into one number on the GPU.
//
// Every loss entry point writes an unscaled per-element (or per-pixel, per-image) loss and a
// gradient already multiplied by `scale` (the host folds grad_scale and the 1/count of the mean
// into it), so the training loop never reads anything back to form a gradient.

struct Params {
    // Elements the entry point covers: logits (bce), pixels n·hw (ce, softmax, class_labels),
    // images·pixels (dice backward), images (dice sums), inputs (reduce_sum).
    count: u32,
    // Classes K (ce, softmax).
    classes: u32,
    // Pixels per image (ce and softmax: hw; dice: pixels).
    pixels: u32,
    // Output element (reduce_sum).
    index: u32,
    // Gradient multiplier, or the reduction's scale.
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Dice backward adds into `grad` (after BCE wrote it) instead of overwriting; reduce_sum adds
// into `out[index]` (an epoch's running loss).
override ACCUMULATE: bool = false;

// The tree reductions below hold one partial per invocation; WG_X must be a power of two ≤ 256.
const MAX_WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> sums: array<f32>;
@group(0) @binding(7) var<storage, read> image_sums: array<f32>;
@group(0) @binding(8) var<storage, read> x: array<f32>;
@group(0) @binding(9) var<storage, read_write> out: array<f32>;
@group(0) @binding(10) var<storage, read_write> labels_out: array<u32>;
@group(0) @binding(11) var<storage, read_write> probs: array<f32>;

var<workgroup> partial: array<f32, MAX_WG>;
var<workgroup> partial3: array<vec3<f32>, MAX_WG>;

// log(1 + e) for e in [0, 1], accurate when e is tiny (WGSL has no log1p): u − 1 is exact, so
// the ratio corrects log's rounding of 1 + e (Goldberg's trick).
fn log1p_unit(e: f32) -> f32 {
    let u = 1.0 + e;
    if (u == 1.0) { return e; }
    return log(u) * e / (u - 1.0);
}

// σ(z) from e = exp(−|z|), which never overflows.
fn sigmoid_from(z: f32, e: f32) -> f32 {
    return select(e / (1.0 + e), 1.0 / (1.0 + e), z >= 0.0);
}

fn store_grad(i: u32, g: f32) {
    if (ACCUMULATE) {
        grad[i] += g;
    } else {
        grad[i] = g;
    }
}

// loss = max(z, 0) − z·t + log(1 + exp(−|z|)): the logits form of −t·log σ − (1−t)·log(1−σ),
// finite for any z. grad = scale · (σ(z) − t).
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn sigmoid_bce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.count) { return; }
    let z = logits[i];
    let t = targets[i];
    let e = exp(-abs(z));
    loss[i] = max(z, 0.0) - z * t + log1p_unit(e);
    grad[i] = p.scale * (sigmoid_from(z, e) - t);
}

// Pixel i of logits [n, K, hw]: where its class-0 logit is (its class-c logit is at
// base + c·hw), m = max_c z_c, and s = Σ_c exp(z_c − m) — the max subtracted so exp never
// overflows.
struct PixelSoftmax {
    base: u32,
    m: f32,
    s: f32,
}

fn pixel_softmax(i: u32) -> PixelSoftmax {
    let hw = p.pixels;
    let base = (i / hw) * p.classes * hw + i % hw;
    var m = logits[base];
    for (var c = 1u; c < p.classes; c++) {
        m = max(m, logits[base + c * hw]);
    }
    var s = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        s += exp(logits[base + c * hw] - m);
    }
    return PixelSoftmax(base, m, s);
}

// One invocation per pixel of logits [n, K, hw]: loss = logsumexp(z) − z[label] with the max
// subtracted so exp never overflows; grad[c] = scale · (softmax[c] − [c == label]).
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn softmax_ce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.count) { return; }
    let q = pixel_softmax(i);
    let hw = p.pixels;
    let label = labels[i];
    loss[i] = log(q.s) + q.m - logits[q.base + label * hw];
    for (var c = 0u; c < p.classes; c++) {
        let soft = exp(logits[q.base + c * hw] - q.m) / q.s;
        grad[q.base + c * hw] = p.scale * (soft - select(0.0, 1.0, c == label));
    }
}

// Class ids stored as f32 (masks as the data pipeline and augmentation write them) into the u32
// labels softmax_ce reads, one invocation per pixel. The ids are whole numbers, so u32() is exact.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn class_labels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.count) { return; }
    labels_out[i] = u32(targets[i]);
}

// Softmax over the K channels of logits [n, K, hw], one invocation per pixel, with the max
// subtracted as in softmax_ce: the class probabilities evaluation and prediction read.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.count) { return; }
    let q = pixel_softmax(i);
    for (var c = 0u; c < p.classes; c++) {
        probs[q.base + c * p.pixels] = exp(logits[q.base + c * p.pixels] - q.m) / q.s;
    }
}

// One workgroup per image: sums[img] = (Σ σ(z)·t, Σ σ(z), Σ t) over its pixels.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn dice_sums(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let img = wid.x;
    let base = img * p.pixels;
    var acc = vec3<f32>(0.0);
    for (var j = lid; j < p.pixels; j += WG_X) {
        let z = logits[base + j];
        let t = targets[base + j];
        let sig = sigmoid_from(z, exp(-abs(z)));
        acc += vec3<f32>(sig * t, sig, t);
    }
    partial3[lid] = acc;
    workgroupBarrier();
    for (var stride = WG_X / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial3[lid] += partial3[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let total = partial3[0];
        sums[3u * img] = total.x;
        sums[3u * img + 1u] = total.y;
        sums[3u * img + 2u] = total.z;
    }
}

// D = (2I + 1) / (S + 1) with I = Σσ·t, S = Σσ + Σt, so ∂(1 − D)/∂σ_j = −(2t_j − D) / (S + 1),
// and σ' = σ(1 − σ) = e / (1 + e)² with e = exp(−|z|). `scale` carries grad_scale / images.
// The first pixel of each image also writes that image's loss 1 − D.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn dice_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.count) { return; }
    let img = i / p.pixels;
    let inter = image_sums[3u * img];
    let denom = image_sums[3u * img + 1u] + image_sums[3u * img + 2u] + 1.0;
    let dice = (2.0 * inter + 1.0) / denom;
    if (i % p.pixels == 0u) {
        loss[img] = 1.0 - dice;
    }
    let z = logits[i];
    let e = exp(-abs(z));
    let dsig = e / ((1.0 + e) * (1.0 + e));
    store_grad(i, -p.scale * (2.0 * targets[i] - dice) / denom * dsig);
}

// out[index] (= or +=) scale · Σ x in a single workgroup: grid-stride partial sums, then a tree.
// One workgroup needs no second pass and no float atomics (WGSL has none); what it sums is at
// most one batch's per-pixel losses, small work for one dispatch.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn reduce_sum(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var j = lid; j < p.count; j += WG_X) {
        acc += x[j];
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = WG_X / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let total = p.scale * partial[0];
        if (ACCUMULATE) {
            out[p.index] += total;
        } else {
            out[p.index] = total;
        }
    }
}
