// Concatenation along channels (NCHW) as channel-slice copies: `part` [n, c_part, hw] is channels
// offset..offset+c_part of `whole` [n, c_total, hw]. The forward concat inserts each input into
// its slice; the backward extracts each input's gradient from the same slice. One invocation per
// part element in both directions.

// true: src = part, dst = whole (insert); false: src = whole, dst = part (extract).
override INSERT: bool = true;

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
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn copy_slice(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    let part_image = p.c_part * p.hw;
    if (i >= p.n * part_image) {
        return;
    }
    let b = i / part_image;
    let j = (b * p.c_total + p.offset) * p.hw + (i - b * part_image);
    if (INSERT) {
        dst[j] = src[i];
    } else {
        dst[i] = src[j];
    }
}
