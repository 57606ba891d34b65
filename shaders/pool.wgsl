// 2×2 max pooling (stride 2, floor) and nearest 2× up-sampling over NCHW planes, forward and
// backward. Every kernel gathers: one invocation per element it writes, so no two invocations
// write the same element and no atomics are needed.

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
fn window_argmax(plane: u32, oy: u32, ox: u32) -> u32 {
    let top_left = (plane * p.h + 2u * oy) * p.w + 2u * ox;
    var best = top_left;
    for (var k = 1u; k < 4u; k++) {
        let i = top_left + (k / 2u) * p.w + k % 2u;
        if (x[i] > x[best]) {
            best = i;
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

// One invocation per input element: it takes its window's dy if it is that window's arg-max
// (recomputed from x, so the forward pass keeps no index buffer), else 0.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn max_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let plane = i / (p.h * p.w);
    let oy = ((i / p.w) % p.h) / 2u;
    let ox = (i % p.w) / 2u;
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    var g = 0.0;
    // A trailing odd row or column belongs to no window and gets zero gradient.
    if (oy < oh && ox < ow && window_argmax(plane, oy, ox) == i) {
        g = dy[(plane * oh + oy) * ow + ox];
    }
    out[i] = g;
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
