// 2-D convolution, stride 1, "same" zero padding: y = act(conv(x, w) + b).
// x, y: NCHW; w: [cout][cin][K][K]; b: [cout].
//
// forward is an implicit GEMM (ggml-Vulkan conv2d_mm style): Y[M = cout][N = n·h·w] =
// W[M][K = cin·K·K] · im2col(x)[K][N], with im2col gathered on the fly; specialised with
// TRANSPOSE it is the input gradient (see there).
//
// backward_weight / backward_bias reduce over N·H·W. A workgroup holds WG_X / SPLIT groups of
// SPLIT invocations; each group owns one input channel's K·K weights for TILE output channels
// (or one bias), each invocation sums every SPLIT-th pixel in registers, then the group's partial
// sums meet in a tree reduction in workgroup memory. The driver picks SPLIT from the pixel
// count, so tiny and huge reductions both keep every lane busy. The weight gradient is not a
// tiled GEMM: its K = n·h·w is largest where its output is smallest (the full-resolution layers),
// so one workgroup per output tile would leave a GPU nearly idle there (5 workgroups for 32→32
// channels at 3×3), and splitting K across workgroups needs a scratch buffer and a second launch
// for the partial tiles, which a convolution step does not have. This kernel splits each
// output's K range across the invocations of a workgroup instead (256 workgroups of 64 there).

// Params: ConvParams in common.wgsl (shared by every convolution kernel and its driver).

// Kernel size: 1 or 3 (padding K / 2).
override K: u32 = 3u;
// Fused ReLU on the forward output.
override RELU: bool = false;
// `forward` computes the input gradient instead: dx = conv(dz, w transposed and flipped), no bias.
override TRANSPOSE: bool = false;
// forward's register block: TM output channels × TN pixels per invocation (at most MAX_TM ×
// MAX_TN). Its workgroup of WG_X × WG_Y invocations computes a BM × BN tile of the output, BM =
// TM·WG_Y channels by BN = TN·WG_X pixels, walking K in slices of BK. The driver keeps
// WG_X % TM == 0, WG_Y % TN == 0 and BK a multiple of WG_X / TM and of WG_Y / TN, so every
// invocation loads whole columns of both tiles (see forward).
override TM: u32 = 4u;
override TN: u32 = 4u;
override BK: u32 = 16u;
// backward_weight: output channels per invocation (at most MAX_WEIGHT_TILE) and adjacent pixels
// of a row per item (at most MAX_PX).
override TILE: u32 = 4u;
override PX: u32 = 4u;
// Invocations that share one reduction; a power of two dividing WG_X.
override SPLIT: u32 = 64u;
// Values each invocation reduces: TILE·K·K in backward_weight, 1 in backward_bias.
override SLOTS: u32 = 1u;

const MAX_TM: u32 = 8u;
const MAX_TN: u32 = 8u;
const MAX_PX: u32 = 8u;
const MAX_WEIGHT_TILE: u32 = 4u;
const MAX_KK: u32 = 9u;
// Input columns one backward_weight item reads per row: PX + K − 1 at most.
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
// forward's tiles of one K slice: weights a_tile[kk * BM + m], im2col b_tile[kk * BN + col].
var<workgroup> a_tile: array<f32, BK * TM * WG_Y>;
var<workgroup> b_tile: array<f32, BK * TN * WG_X>;

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

// Row m, column kk = c·K·K + tap of forward's weight matrix: w[m][c][tap]; with TRANSPOSE the
// layer's w[c][m][K·K − 1 − tap] (channel axes swapped, taps flipped). Zero past the matrix.
fn weight(m: u32, kk: u32) -> f32 {
    let taps = K * K;
    if (m >= p.cout || kk >= p.cin * taps) {
        return 0.0;
    }
    if (TRANSPOSE) {
        let c = kk / taps;
        return wt[(c * p.cout + m) * taps + taps - 1u - (kk - c * taps)];
    }
    return wt[m * p.cin * taps + kk];
}

// Row kk = ci·K·K + ky·K + kx of forward's im2col matrix at output pixel (oy, ox) of the image
// whose input starts at offset `image`: x[ci, oy + ky − pad, ox + kx − pad] there, zero in the
// padding, past the matrix's rows and for a column past the last pixel (`valid` false).
fn im2col(kk: u32, image: u32, oy: u32, ox: u32, valid: bool) -> f32 {
    let taps = K * K;
    let ci = kk / taps;
    let ky = (kk - ci * taps) / K;
    let kx = kk - ci * taps - ky * K;
    let iy = i32(oy + ky) - i32(K / 2u);
    let ix = i32(ox + kx) - i32(K / 2u);
    if (!valid || ci >= p.cin || iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) {
        return 0.0;
    }
    return x[image + ci * p.h * p.w + u32(iy) * p.w + u32(ix)];
}

// Forward: y[n,co,oy,ox] = act(b[co] + Σ_ci Σ_ky,kx x[n,ci,oy+ky−pad,ox+kx−pad] · w[co,ci,ky,kx]),
// as the GEMM Y[co][(n, oy, ox)] = Σ_kk W[co][kk] · im2col(x)[kk][(n, oy, ox)].
// With TRANSPOSE it is the input gradient, bound as x ← dz, y ← dx, with ConvParams.cin / cout the
// layer's cout / cin: dx[n,ci,iy,ix] = Σ_co Σ_ky,kx dz[n,co,iy−ky+pad,ix−kx+pad] · w[co,ci,ky,kx],
// the same sum over the same window with the kernel flipped and its channel axes swapped (only
// `weight` differs).
//
// Grid: x (wrapping into z past 65535) enumerates tiles of BN output columns (pixels of all
// images), y tiles of BM output channels. Per K slice the workgroup gathers its weight tile
// [BK × BM] and im2col tile [BK × BN] into workgroup memory, each invocation always the same
// column of each (its im2col column's pixel is decoded once), consecutive invocations reading
// consecutive pixels; then each invocation multiplies its TM channels × TN pixels from there:
// TM + TN workgroup-memory reads per TM·TN multiply-adds. Its pixels are WG_X apart, so the
// reads of a row of invocations and their writes to y are consecutive.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bm = TM * WG_Y;
    let bn = TN * WG_X;
    let invocations = WG_X * WG_Y;
    let plane = p.h * p.w;
    let columns = p.n * plane;
    let n0 = (wid.x + wid.z * nwg.x) * bn;
    let m0 = wid.y * bm;
    // The im2col column this invocation loads.
    let col = n0 + lid % bn;
    let valid = col < columns;
    let image = min(col, columns - 1u) / plane;
    let pix = min(col, columns - 1u) - image * plane;
    let oy = pix / p.w;
    let ox = pix - oy * p.w;
    let x_image = image * p.cin * plane;
    var acc: array<array<f32, MAX_TN>, MAX_TM>;
    for (var k0 = 0u; k0 < p.cin * K * K; k0 += BK) {
        for (var kr = lid / bm; kr < BK; kr += invocations / bm) {
            a_tile[kr * bm + lid % bm] = weight(m0 + lid % bm, k0 + kr);
        }
        for (var kr = lid / bn; kr < BK; kr += invocations / bn) {
            b_tile[kr * bn + lid % bn] = im2col(k0 + kr, x_image, oy, ox, valid);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, MAX_TM>;
            var b: array<f32, MAX_TN>;
            for (var i = 0u; i < TM; i++) {
                a[i] = a_tile[kk * bm + local.y * TM + i];
            }
            for (var j = 0u; j < TN; j++) {
                b[j] = b_tile[kk * bn + local.x + j * WG_X];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < TN; j++) {
        let c = n0 + local.x + j * WG_X;
        let n = c / plane;
        for (var i = 0u; i < TM; i++) {
            let m = m0 + local.y * TM + i;
            if (c < columns && m < p.cout) {
                var v = acc[i][j];
                if (!TRANSPOSE) {
                    v += bias[m];
                }
                y[(n * p.cout + m) * plane + c - n * plane] = select(v, max(v, 0.0), RELU);
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
