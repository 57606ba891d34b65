// Concatenation along channels (NCHW) as channel-slice copies: `part` [n, c_part, hw] is channels
// offset..offset+c_part of `whole` [n, c_total, hw]. The forward concat inserts each input into
// its slice; the backward extracts each input's gradient from the same slice. One invocation per
// vec4 of the part in both directions (as elementwise.wgsl: one texel fetch and one store on
// lavapipe, 16-byte accesses on GPUs).

// true: src = part, dst = whole (insert); false: src = whole, dst = part (extract).
override INSERT: bool = true;
// true where a channel plane (hw) is a whole number of vec4s, so each vec4 of the part is one of
// the whole; else (planes of 1×1 or 3×5 pixels) the 4 elements are copied one by one.
override ALIGNED: bool = true;

struct Params {
    n: u32,
    c_part: u32,
    c_total: u32,
    offset: u32,
    hw: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

// Element i of the part: its index in the whole.
fn whole_index(i: u32) -> u32 {
    let part_image = p.c_part * p.hw;
    let b = i / part_image;
    return (b * p.c_total + p.offset) * p.hw + (i - b * part_image);
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn copy_slice(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_id(gid, nwg);
    let part_len = p.n * p.c_part * p.hw;
    if (q * 4u >= part_len) {
        return;
    }
    if (ALIGNED) {
        let j = whole_index(q * 4u) / 4u;
        if (INSERT) {
            dst[j] = src[q];
        } else {
            dst[q] = src[j];
        }
        return;
    }
    for (var k = 0u; k < 4u && q * 4u + k < part_len; k++) {
        let j = whole_index(q * 4u + k);
        if (INSERT) {
            dst[j / 4u][j % 4u] = src[q][k];
        } else {
            dst[q][k] = src[j / 4u][j % 4u];
        }
    }
}
