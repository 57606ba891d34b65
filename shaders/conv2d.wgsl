// 2-D convolution, stride 1, "same" zero padding: y = act(conv(x, w) + b).
// x, y: NCHW; w: [cout][cin][K][K]; b: [cout].
//
// forward / backward_input: grid ((image, pixel) blocks of WG_X, channel tiles). Each invocation
// computes one pixel for TILE channels, so every x (or dz) value it loads feeds TILE
// multiply-adds. The last tile may be partial: its weight reads are clamped to a valid channel
// (keeping the inner loop branch-free) and only valid channels are written.
//
// backward_weight / backward_bias reduce over N·H·W. A workgroup holds WG_X / SPLIT groups of
// SPLIT invocations; each group owns one input channel's K·K weights for TILE output channels
// (or one bias), each invocation sums every SPLIT-th pixel in registers, then the group's partial
// sums meet in a tree reduction in workgroup memory. The driver picks SPLIT from the pixel
// count, so tiny and huge reductions both keep every lane busy.

struct Params {
    n: u32,
    cin: u32,
    cout: u32,
    h: u32,
    w: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Kernel size: 1 or 3 (padding K / 2).
override K: u32 = 3u;
// Fused ReLU on the forward output.
override RELU: bool = false;
// Channels per invocation: at most MAX_TILE in forward / backward_input, MAX_WEIGHT_TILE in
// backward_weight.
override TILE: u32 = 4u;
// Invocations that share one reduction; a power of two dividing WG_X.
override SPLIT: u32 = 64u;
// Values each invocation reduces: TILE·K·K in backward_weight, 1 in backward_bias.
override SLOTS: u32 = 1u;

const MAX_TILE: u32 = 8u;
const MAX_WEIGHT_TILE: u32 = 4u;
const MAX_KK: u32 = 9u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dz: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;

// Slot j of invocation lid: partial[j * WG_X + lid].
var<workgroup> partial: array<f32, WG_X * SLOTS>;

// The K·K taps around pixel (cy, cx), tap j = (ky, kx) at (cy + dir·(ky − pad), cx + dir·(kx − pad)):
// writes off[j], its offset within a plane clamped into the plane, and returns a mask whose bit j
// says whether it really is inside (zero padding otherwise). The loops over channels then run
// without bounds branches.
fn taps(cy: i32, cx: i32, dir: i32, off: ptr<function, array<u32, MAX_KK>>) -> u32 {
    let pad = i32(K / 2u);
    var inside = 0u;
    for (var ky = 0u; ky < K; ky++) {
        for (var kx = 0u; kx < K; kx++) {
            let iy = cy + dir * (i32(ky) - pad);
            let ix = cx + dir * (i32(kx) - pad);
            (*off)[ky * K + kx] = u32(clamp(iy, 0, i32(p.h) - 1)) * p.w + u32(clamp(ix, 0, i32(p.w) - 1));
            inside |= select(0u, 1u << (ky * K + kx), iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w));
        }
    }
    return inside;
}

// forward / backward_input enumerate (image, pixel) pairs along x — so small deep layers
// (4×4 planes) still fill whole workgroups — wrapping into z past 65535 workgroups.
fn pixel_item(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.z * nwg.x * WG_X;
}

// y[n,co,oy,ox] = act(b[co] + Σ_ci Σ_ky,kx x[n,ci,oy+ky-pad,ox+kx-pad] · w[co,ci,ky,kx])
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = p.h * p.w;
    let item = pixel_item(gid, nwg);
    if (item >= p.n * plane) { return; }
    let n = item / plane;
    let pix = item % plane;
    let co0 = gid.y * TILE;
    let kk = K * K;
    let last = p.cout - 1u;
    var off: array<u32, MAX_KK>;
    let inside = taps(i32(pix / p.w), i32(pix % p.w), 1, &off);
    var acc: array<f32, MAX_TILE>;
    for (var t = 0u; t < TILE; t++) {
        acc[t] = bias[min(co0 + t, last)];
    }
    for (var ci = 0u; ci < p.cin; ci++) {
        let xplane = (n * p.cin + ci) * plane;
        for (var j = 0u; j < kk; j++) {
            let v = select(0.0, x[xplane + off[j]], (inside & (1u << j)) != 0u);
            for (var t = 0u; t < TILE; t++) {
                acc[t] += v * wt[(min(co0 + t, last) * p.cin + ci) * kk + j];
            }
        }
    }
    for (var t = 0u; t < TILE; t++) {
        let co = co0 + t;
        if (co < p.cout) {
            y[(n * p.cout + co) * plane + pix] = select(acc[t], max(acc[t], 0.0), RELU);
        }
    }
}

// dx[n,ci,iy,ix] = Σ_co Σ_ky,kx dz[n,co,iy-ky+pad,ix-kx+pad] · w[co,ci,ky,kx]
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = p.h * p.w;
    let item = pixel_item(gid, nwg);
    if (item >= p.n * plane) { return; }
    let n = item / plane;
    let pix = item % plane;
    let ci0 = gid.y * TILE;
    let kk = K * K;
    let last = p.cin - 1u;
    var off: array<u32, MAX_KK>;
    let inside = taps(i32(pix / p.w), i32(pix % p.w), -1, &off);
    var acc: array<f32, MAX_TILE>;
    for (var co = 0u; co < p.cout; co++) {
        let zplane = (n * p.cout + co) * plane;
        for (var j = 0u; j < kk; j++) {
            let g = select(0.0, dz[zplane + off[j]], (inside & (1u << j)) != 0u);
            for (var t = 0u; t < TILE; t++) {
                acc[t] += g * wt[(co * p.cin + min(ci0 + t, last)) * kk + j];
            }
        }
    }
    for (var t = 0u; t < TILE; t++) {
        let ci = ci0 + t;
        if (ci < p.cin) {
            dx[(n * p.cin + ci) * plane + pix] = acc[t];
        }
    }
}

// Sums each SPLIT-invocation group's partial values into the group's first invocation (slot j
// of invocation lid at partial[j * WG_X + lid]). Every invocation of the workgroup calls it
// from uniform control flow, after writing its own partial values.
fn reduce_partial(lid: u32) {
    workgroupBarrier();
    let slice = lid % SPLIT;
    for (var s = SPLIT / 2u; s > 0u; s >>= 1u) {
        if (slice < s) {
            for (var j = 0u; j < SLOTS; j++) {
                partial[j * WG_X + lid] += partial[j * WG_X + lid + s];
            }
        }
        workgroupBarrier();
    }
}

// dw[co,ci,ky,kx] = Σ_n,oy,ox dz[n,co,oy,ox] · x[n,ci,oy+ky-pad,ox+kx-pad]
// Grid (input-channel groups, output-channel tiles); each group computes the K·K taps of one
// input channel for TILE (≤ MAX_WEIGHT_TILE) output channels, so each x value loaded feeds TILE
// multiply-adds and each dz value K·K. SLOTS = TILE·K·K.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ci = wid.x * (WG_X / SPLIT) + lid / SPLIT;
    let co0 = wid.y * TILE;
    let slice = lid % SPLIT;
    let plane = p.h * p.w;
    let kk = K * K;
    let last = p.cout - 1u;
    // acc[t * kk + j]: output channel co0 + t, tap j.
    var acc: array<f32, MAX_WEIGHT_TILE * MAX_KK>;
    // Groups past the last input channel only take part in the reduction's barriers.
    if (ci < p.cin) {
        for (var n = 0u; n < p.n; n++) {
            let xplane = (n * p.cin + ci) * plane;
            for (var pix = slice; pix < plane; pix += SPLIT) {
                var g: array<f32, MAX_WEIGHT_TILE>;
                for (var t = 0u; t < TILE; t++) {
                    g[t] = dz[(n * p.cout + min(co0 + t, last)) * plane + pix];
                }
                var off: array<u32, MAX_KK>;
                let inside = taps(i32(pix / p.w), i32(pix % p.w), 1, &off);
                for (var j = 0u; j < kk; j++) {
                    let v = select(0.0, x[xplane + off[j]], (inside & (1u << j)) != 0u);
                    for (var t = 0u; t < TILE; t++) {
                        acc[t * kk + j] += g[t] * v;
                    }
                }
            }
        }
    }
    for (var j = 0u; j < SLOTS; j++) {
        partial[j * WG_X + lid] = acc[j];
    }
    reduce_partial(lid);
    if (slice == 0u && ci < p.cin) {
        for (var t = 0u; t < TILE; t++) {
            let co = co0 + t;
            if (co < p.cout) {
                for (var j = 0u; j < kk; j++) {
                    dw[(co * p.cin + ci) * kk + j] = partial[(t * kk + j) * WG_X + lid];
                }
            }
        }
    }
}

// db[c] = Σ_n,pixel dz[n,c,pixel]; grid (channel groups); each group sums one channel.
// SLOTS = 1. Also the bias gradient of conv_transpose2d (Params.cout channels of h×w each).
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x * (WG_X / SPLIT) + lid / SPLIT;
    let slice = lid % SPLIT;
    let plane = p.h * p.w;
    var acc = 0.0;
    if (c < p.cout) {
        for (var n = 0u; n < p.n; n++) {
            let zplane = (n * p.cout + c) * plane;
            for (var pix = slice; pix < plane; pix += SPLIT) {
                acc += dz[zplane + pix];
            }
        }
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (slice == 0u && c < p.cout) {
        db[c] = partial[lid];
    }
}
