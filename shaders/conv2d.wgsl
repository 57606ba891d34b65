// 2-D convolution, stride 1, "same" zero padding: y = act(conv(x, w) + b).
// x, y: NCHW; w: [cout][cin][K][K]; b: [cout].
//
// forward computes the output and, specialised with TRANSPOSE, the input gradient (see there).
//
// backward_weight / backward_bias reduce over N·H·W. A workgroup holds WG_X / SPLIT groups of
// SPLIT invocations; each group owns one input channel's K·K weights for TILE output channels
// (or one bias), each invocation sums every SPLIT-th pixel in registers, then the group's partial
// sums meet in a tree reduction in workgroup memory. The driver picks SPLIT from the pixel
// count, so tiny and huge reductions both keep every lane busy.

// Params: ConvParams in common.wgsl (shared by every convolution kernel and its driver).

// Kernel size: 1 or 3 (padding K / 2).
override K: u32 = 3u;
// Fused ReLU on the forward output.
override RELU: bool = false;
// `forward` computes the input gradient instead: dx = conv(dz, w transposed and flipped), no bias.
override TRANSPOSE: bool = false;
// Output channels per invocation: at most MAX_TILE in forward, MAX_WEIGHT_TILE in backward_weight.
override TILE: u32 = 4u;
// Adjacent pixels of a row per invocation of forward (at most MAX_PX).
override PX: u32 = 4u;
// Invocations that share one reduction; a power of two dividing WG_X.
override SPLIT: u32 = 64u;
// Values each invocation reduces: TILE·K·K in backward_weight, 1 in backward_bias.
override SLOTS: u32 = 1u;

const MAX_TILE: u32 = 4u;
const MAX_PX: u32 = 8u;
const MAX_WEIGHT_TILE: u32 = 4u;
const MAX_KK: u32 = 9u;
// Input columns one forward invocation reads per row: PX + K − 1 at most.
const MAX_SPAN: u32 = MAX_PX + 2u;
// Offsets in one window (K rows of the span); at most 32, one bit each in a u32 mask.
const MAX_WINDOW: u32 = MAX_SPAN * 3u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dz: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;

// Slot j of invocation lid: partial[j * WG_X + lid].
var<workgroup> partial: array<f32, WG_X * SLOTS>;

// The input window of the run of PX pixels starting at (oy, ox0): off[ky * span + c] is the
// offset within a plane of input row oy + ky − pad, column ox0 + c − pad (span = PX + K − 1),
// clamped into the plane; bit ky * span + c of the result says whether it really is inside (zero
// padding otherwise). The loops over channels then run without bounds branches.
fn window(oy: u32, ox0: u32, off: ptr<function, array<u32, MAX_WINDOW>>) -> u32 {
    let pad = i32(K / 2u);
    let span = PX + K - 1u;
    var inside = 0u;
    for (var ky = 0u; ky < K; ky++) {
        let iy = i32(oy) + i32(ky) - pad;
        for (var c = 0u; c < span; c++) {
            let ix = i32(ox0) + i32(c) - pad;
            (*off)[ky * span + c] = u32(clamp(iy, 0, i32(p.h) - 1)) * p.w + u32(clamp(ix, 0, i32(p.w) - 1));
            inside |= select(0u, 1u << (ky * span + c), iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w));
        }
    }
    return inside;
}

// Row ky of the window at plane offset `plane_start`, zeros outside the image.
fn window_row(plane_start: u32, ky: u32, off: ptr<function, array<u32, MAX_WINDOW>>, inside: u32) -> array<f32, MAX_SPAN> {
    let span = PX + K - 1u;
    var row: array<f32, MAX_SPAN>;
    for (var c = 0u; c < span; c++) {
        let j = ky * span + c;
        row[c] = select(0.0, x[plane_start + (*off)[j]], (inside & (1u << j)) != 0u);
    }
    return row;
}

// Forward: y[n,co,oy,ox] = act(b[co] + Σ_ci Σ_ky,kx x[n,ci,oy+ky−pad,ox+kx−pad] · w[co,ci,ky,kx]).
// With TRANSPOSE it is the input gradient, bound as x ← dz, y ← dx, with ConvParams.cin / cout the
// layer's cout / cin: dx[n,ci,iy,ix] = Σ_co Σ_ky,kx dz[n,co,iy−ky+pad,ix−kx+pad] · w[co,ci,ky,kx],
// the same sum over the same window with the kernel flipped and its channel axes swapped.
//
// Grid: x enumerates (image, row, run of PX pixels), wrapping into z past 65535 workgroups, so
// even 4×4 planes fill whole workgroups; y enumerates tiles of TILE output channels. Each
// invocation keeps PX·TILE sums in registers: every input value it loads feeds up to K·TILE
// multiply-adds and every weight PX, which is what makes it fast on SIMD CPUs and GPUs alike. The
// last channel tile may be partial: its weight reads are clamped to a valid channel (keeping the
// inner loops branch-free) and only valid channels are written; the same for a row's last run.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let runs = (p.w + PX - 1u) / PX;
    let item = gid.x + gid.z * nwg.x * WG_X;
    if (item >= p.n * p.h * runs) { return; }
    let n = item / (p.h * runs);
    let oy = item / runs % p.h;
    let ox0 = item % runs * PX;
    let plane = p.h * p.w;
    let co0 = gid.y * TILE;
    let kk = K * K;
    let last = p.cout - 1u;
    var off: array<u32, MAX_WINDOW>;
    let inside = window(oy, ox0, &off);
    var acc: array<array<f32, MAX_PX>, MAX_TILE>;
    if (!TRANSPOSE) {
        for (var t = 0u; t < TILE; t++) {
            let b = bias[min(co0 + t, last)];
            for (var q = 0u; q < PX; q++) {
                acc[t][q] = b;
            }
        }
    }
    for (var ci = 0u; ci < p.cin; ci++) {
        let xplane = (n * p.cin + ci) * plane;
        for (var ky = 0u; ky < K; ky++) {
            let row = window_row(xplane, ky, &off, inside);
            for (var kx = 0u; kx < K; kx++) {
                for (var t = 0u; t < TILE; t++) {
                    let co = min(co0 + t, last);
                    // The transposed kernel: channel axes swapped, taps flipped.
                    let wi = select((co * p.cin + ci) * kk + ky * K + kx,
                                    (ci * p.cout + co) * kk + (kk - 1u - ky * K - kx), TRANSPOSE);
                    let wv = wt[wi];
                    for (var q = 0u; q < PX; q++) {
                        acc[t][q] += row[q + kx] * wv;
                    }
                }
            }
        }
    }
    for (var t = 0u; t < TILE; t++) {
        let co = co0 + t;
        for (var q = 0u; q < PX; q++) {
            if (co < p.cout && ox0 + q < p.w) {
                y[(n * p.cout + co) * plane + oy * p.w + ox0 + q] = select(acc[t][q], max(acc[t][q], 0.0), RELU);
            }
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
// input channel for TILE (≤ MAX_WEIGHT_TILE) output channels, SLOTS = TILE·K·K sums. Its
// invocations take turns over the (image, row, run of PX pixels) items, as forward enumerates
// them: each item's input window is loaded once and each of its values feeds up to K·TILE
// multiply-adds, each dz value K·K.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ci = wid.x * (WG_X / SPLIT) + lid / SPLIT;
    let co0 = wid.y * TILE;
    let slice = lid % SPLIT;
    let plane = p.h * p.w;
    let kk = K * K;
    let last = p.cout - 1u;
    let runs = (p.w + PX - 1u) / PX;
    // acc[t * kk + j]: output channel co0 + t, tap j.
    var acc: array<f32, MAX_WEIGHT_TILE * MAX_KK>;
    // Groups past the last input channel only take part in the reduction's barriers.
    if (ci < p.cin) {
        for (var item = slice; item < p.n * p.h * runs; item += SPLIT) {
            let n = item / (p.h * runs);
            let oy = item / runs % p.h;
            let ox0 = item % runs * PX;
            // dz of the run, zero past the row's end.
            var g: array<array<f32, MAX_PX>, MAX_WEIGHT_TILE>;
            for (var t = 0u; t < TILE; t++) {
                let zrow = (n * p.cout + min(co0 + t, last)) * plane + oy * p.w;
                for (var q = 0u; q < PX; q++) {
                    g[t][q] = select(0.0, dz[zrow + min(ox0 + q, p.w - 1u)], ox0 + q < p.w);
                }
            }
            var off: array<u32, MAX_WINDOW>;
            let inside = window(oy, ox0, &off);
            let xplane = (n * p.cin + ci) * plane;
            for (var ky = 0u; ky < K; ky++) {
                let row = window_row(xplane, ky, &off, inside);
                for (var kx = 0u; kx < K; kx++) {
                    for (var t = 0u; t < TILE; t++) {
                        var sum = 0.0;
                        for (var q = 0u; q < PX; q++) {
                            sum += g[t][q] * row[q + kx];
                        }
                        acc[t * kk + ky * K + kx] += sum;
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
// SLOTS = 1. Also the bias gradient of conv_transpose2d (ConvParams.cout channels of h×w each).
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
