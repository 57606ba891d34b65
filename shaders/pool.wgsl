// 2×2 max pooling (stride 2, floor) and nearest 2× up-sampling over NCHW planes, forward and
// backward. No two invocations write the same element, so no atomics are needed: the forward
// kernels gather one output element an invocation, the max-pool gradient writes one window's
// four input elements an invocation (windows do not overlap).

struct Params {
    n: u32,
    c: u32,
    // Input height and width; pooling halves them (floor), up-sampling doubles them.
    h: u32,
    w: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Input index of the maximum of pooling window (oy, ox) of input plane `plane`. Only a strictly
// greater value replaces the best so far, so ties go to the first maximum in row-major window
// order (top-left, top-right, bottom-left, bottom-right), the same rule as the CPU reference.
// Each element is read once (on lavapipe every read is a texel fetch).
fn window_argmax(plane: u32, oy: u32, ox: u32) -> u32 {
    let top_left = (plane * p.h + 2u * oy) * p.w + 2u * ox;
    var best = top_left;
    var best_value = x[top_left];
    for (var k = 1u; k < 4u; k++) {
        let i = top_left + (k / 2u) * p.w + k % 2u;
        let v = x[i];
        if (v > best_value) {
            best = i;
            best_value = v;
        }
    }
    return best;
}

// One invocation per output element.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn max_pool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    if (i >= p.n * p.c * oh * ow) {
        return;
    }
    out[i] = x[window_argmax(i / (oh * ow), (i / ow) % oh, i % ow)];
}

// One invocation per window of a grid that also covers a trailing odd row or column: it writes
// the window's four input elements, its dy at the arg-max (recomputed from x, so the forward
// pass keeps no index buffer) and 0 elsewhere. Elements of a trailing odd row or column belong
// to no window and get 0.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn max_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    let rows = (p.h + 1u) / 2u;
    let cols = (p.w + 1u) / 2u;
    if (i >= p.n * p.c * rows * cols) {
        return;
    }
    let plane = i / (rows * cols);
    let oy = (i / cols) % rows;
    let ox = i % cols;
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    let top_left = (plane * p.h + 2u * oy) * p.w + 2u * ox;
    let whole = oy < oh && ox < ow;
    var best = 0u;
    var g = 0.0;
    if (whole) {
        best = window_argmax(plane, oy, ox);
        g = dy[(plane * oh + oy) * ow + ox];
    }
    for (var k = 0u; k < 4u; k++) {
        let ky = k / 2u;
        let kx = k % 2u;
        if (2u * oy + ky < p.h && 2u * ox + kx < p.w) {
            let j = top_left + ky * p.w + kx;
            out[j] = select(0.0, g, whole && j == best);
        }
    }
}

// One invocation per output element of the 2h × 2w result.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn upsample(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    let oh = 2u * p.h;
    let ow = 2u * p.w;
    if (i >= p.n * p.c * oh * ow) {
        return;
    }
    let plane = i / (oh * ow);
    let iy = ((i / ow) % oh) / 2u;
    let ix = (i % ow) / 2u;
    out[i] = x[(plane * p.h + iy) * p.w + ix];
}

// One invocation per input element: the sum of the gradients of the 4 outputs it was copied to.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn upsample_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let plane = i / (p.h * p.w);
    let iy = (i / p.w) % p.h;
    let ix = i % p.w;
    let ow = 2u * p.w;
    let top_left = (plane * 2u * p.h + 2u * iy) * ow + 2u * ix;
    out[i] = dy[top_left] + dy[top_left + 1u] + dy[top_left + ow] + dy[top_left + ow + 1u];
}
