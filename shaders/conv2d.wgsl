// 2-D convolution, stride 1, "same" zero padding: y = act(conv(x, w) + b).
// x, y: NCHW; w: [cout][cin][K][K]; b: [cout]. With UPSAMPLE, the same GEMMs compute the 2×2
// stride-2 transposed convolution (see there).
//
// Every pass but the bias gradient is an implicit GEMM (ggml-Vulkan conv2d_mm style) over
// workgroup-memory tiles, with im2col gathered on the fly; the passes share the tiles and the
// multiply (multiply_slice):
// - forward: Y[M = cout][N = n·h·w] = W[M][K = cin·K·K] · im2col(x)[K][N]; specialised with
//   TRANSPOSE it is the input gradient (see there).
// - backward_weight: dW[M = cout][N = cin·K·K] = dZ[M][K = n·h·w] · im2col(x)[N][K]ᵀ.
// Where an output has too few tiles to fill a GPU and a long K (backward_weight at full
// resolution: 3 tiles of output for 131072 pixels at 32 channels; forward on the deepest maps:
// 16 tiles for K = 4608 at 512 channels on 8×8 maps, batch 8), the driver splits K across
// SPLITS workgroups, each writing its partial tile to a slice of a scratch buffer that
// sum_splits adds up (forward's bias and ReLU then come with the sum).
// backward_bias reduces over n·h·w within a workgroup: WG_X / SPLIT groups of SPLIT invocations,
// each group one channel, each invocation summing every SPLIT-th pixel in registers, then a tree
// reduction in workgroup memory.

// Params: ConvParams in common.wgsl (shared by every convolution kernel and its driver).

// Kernel size: 1 or 3 (padding K / 2).
override K: u32 = 3u;
// Fused ReLU on the forward output.
override RELU: bool = false;
// `forward` reads the weights transposed: with K = 3 the input gradient, dx = conv(dz, w
// transposed and flipped).
override TRANSPOSE: bool = false;
// `forward` adds the bias (the layers' forward passes, not their input gradients).
override BIAS: bool = true;
// The 2×2 stride-2 transposed convolution (conv_transpose2d's layout: w[ci][co][2][2]) as these
// GEMMs with K = 1 and ConvParams on the input's h × w map: its cout·4 outputs of an input pixel
// are the rows m = co·4 + a·2 + c, each at (2·oy + a, 2·ox + c) of the doubled map. Its forward
// (TRANSPOSE: W[m][ci] = w[ci][m]) scatters its rows there; its input gradient and weight
// gradient gather them from dy as im2col rows (kk = co·4 + a·2 + c).
override UPSAMPLE: bool = false;
override SCATTER: bool = UPSAMPLE && TRANSPOSE;
override GATHER: bool = UPSAMPLE && !TRANSPOSE;
// The GEMMs' register block: TM rows × TN columns of the output per invocation (at most MAX_TM
// × MAX_TN). A workgroup of WG_X × WG_Y invocations computes a BM × BN tile of the output, BM =
// TM·WG_Y rows by BN = TN·WG_X columns, walking K in slices of BK. For forward the driver keeps
// WG_Y % TN == 0 and BK a multiple of WG_Y / TN, so every invocation loads whole columns of
// the im2col tile (see forward).
override TM: u32 = 4u;
override TN: u32 = 4u;
override BK: u32 = 16u;
// forward and backward_weight: workgroups that share each output tile's K range (the grid's z),
// and sum_splits: the partial tiles it adds.
override SPLITS: u32 = 1u;
// sum_splits adds forward's parts (then their epilogue), not backward_weight's.
override EPILOGUE: bool = false;
// backward_bias: invocations that share one reduction; a power of two dividing WG_X.
override SPLIT: u32 = 64u;

// Padding after each K row of the tiles. The weight tile is stored K-row-major but loaded along
// K (the weights' contiguous axis), as backward_weight loads both of its tiles (along pixels), so
// consecutive invocations store a row (BM or BN + TILE_PAD) apart; with BM and BN multiples of
// 32 that spreads their stores over the banks of workgroup memory (4, not 1, to keep each
// invocation's TM values 16-byte aligned for vector reads).
const TILE_PAD: u32 = 4u;
const MAX_TM: u32 = 8u;
const MAX_TN: u32 = 8u;
// Derived from the constants above (the driver never sets them): the tile's sides, the tiles'
// row strides and the workgroup's size.
override BM: u32 = TM * WG_Y;
override BN: u32 = TN * WG_X;
override A_STRIDE: u32 = BM + TILE_PAD;
override B_STRIDE: u32 = BN + TILE_PAD;
override INVOCATIONS: u32 = WG_X * WG_Y;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dz: array<f32>;
@group(0) @binding(6) var<storage, read> split_sums: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;

// backward_bias: slot of invocation lid, partial[lid].
var<workgroup> partial: array<f32, WG_X>;
// The GEMMs' tiles of one K slice: a_tile[kk * A_STRIDE + row], b_tile[kk * B_STRIDE + column].
var<workgroup> a_tile: array<f32, BK * A_STRIDE>;
var<workgroup> b_tile: array<f32, BK * B_STRIDE>;

// The register block's accumulators: acc[i][j] for row local.y·TM + i, column local.x + j·WG_X of
// the workgroup's tile.
alias Block = array<array<f32, MAX_TN>, MAX_TM>;

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
    if (GATHER) {
        if (!valid || kk >= p.cin) {
            return 0.0;
        }
        return x[image + (kk & ~3u) * p.h * p.w + (2u * oy + ((kk >> 1u) & 1u)) * 2u * p.w + 2u * ox + (kk & 1u)];
    }
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

// acc += the staged K slice's product for this invocation's block: TM + TN workgroup-memory
// reads per TM·TN multiply-adds. Its columns are WG_X apart, so a row of invocations reads
// consecutive values.
fn multiply_slice(local: vec3<u32>, acc: ptr<function, Block>) {
    for (var kk = 0u; kk < BK; kk++) {
        var a: array<f32, MAX_TM>;
        var b: array<f32, MAX_TN>;
        for (var i = 0u; i < TM; i++) {
            a[i] = a_tile[kk * A_STRIDE + local.y * TM + i];
        }
        for (var j = 0u; j < TN; j++) {
            b[j] = b_tile[kk * B_STRIDE + local.x + j * WG_X];
        }
        for (var i = 0u; i < TM; i++) {
            for (var j = 0u; j < TN; j++) {
                (*acc)[i][j] = fma(a[i], b[j], (*acc)[i][j]);
            }
        }
    }
}

// Forward: y[n,co,oy,ox] = act(b[co] + Σ_ci Σ_ky,kx x[n,ci,oy+ky−pad,ox+kx−pad] · w[co,ci,ky,kx]),
// as the GEMM Y[co][(n, oy, ox)] = Σ_kk W[co][kk] · im2col(x)[kk][(n, oy, ox)].
// With TRANSPOSE it is the input gradient, bound as x ← dz, y ← dx, with ConvParams.cin / cout the
// layer's cout / cin: dx[n,ci,iy,ix] = Σ_co Σ_ky,kx dz[n,co,iy−ky+pad,ix−kx+pad] · w[co,ci,ky,kx],
// the same sum over the same window with the kernel flipped and its channel axes swapped (only
// `weight` differs).
//
// Grid: x (wrapping into z past 65535) enumerates tiles of BN output columns (pixels of all
// images), y tiles of BM output channels; with SPLITS > 1, z is the part of K (the grid is then
// small: x never wraps) and the partial tile goes, without epilogue, to y at offset
// z · n·cout·h·w. Per K slice the workgroup gathers its weight tile [BK × BM] and im2col tile
// [BK × BN] into workgroup memory: the weights with consecutive invocations on consecutive K
// (contiguous in w, so a warp's loads coalesce; TRANSPOSE's reads are strided), the im2col tile
// with each invocation always on the same column (its pixel decoded once) and consecutive
// invocations on consecutive pixels. Its output pixels are WG_X apart, so a row of invocations
// writes consecutive values of y.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let plane = p.h * p.w;
    let columns = p.n * plane;
    let split = SPLITS > 1u;
    let part = select(0u, wid.z, split);
    let n0 = (wid.x + select(wid.z * nwg.x, 0u, split)) * BN;
    let m0 = wid.y * BM;
    let slices = (p.cin * K * K + BK - 1u) / BK;
    let share = (slices + SPLITS - 1u) / SPLITS;
    let k_end = min(part * share + share, slices) * BK;
    // The im2col column this invocation loads.
    let col = n0 + lid % BN;
    let valid = col < columns;
    let image = min(col, columns - 1u) / plane;
    let pix = min(col, columns - 1u) - image * plane;
    let oy = pix / p.w;
    let ox = pix - oy * p.w;
    let x_image = image * p.cin * plane;
    var acc: Block;
    for (var k0 = min(part * share, slices) * BK; k0 < k_end; k0 += BK) {
        for (var e = lid; e < BK * BM; e += INVOCATIONS) {
            let m = e / BK;
            let kr = e - m * BK;
            a_tile[kr * A_STRIDE + m] = weight(m0 + m, k0 + kr);
        }
        for (var kr = lid / BN; kr < BK; kr += INVOCATIONS / BN) {
            b_tile[kr * B_STRIDE + lid % BN] = im2col(k0 + kr, x_image, oy, ox, valid);
        }
        workgroupBarrier();
        multiply_slice(local, &acc);
        workgroupBarrier();
    }
    let out = part * p.n * p.cout * plane;
    for (var j = 0u; j < TN; j++) {
        let c = n0 + local.x + j * WG_X;
        let n = c / plane;
        for (var i = 0u; i < TM; i++) {
            let m = m0 + local.y * TM + i;
            if (c < columns && m < p.cout) {
                var v = acc[i][j];
                if (!split) {
                    v = epilogue(v, select(m, m / 4u, SCATTER));
                }
                y[out + output_index(n, m, c - n * plane)] = v;
            }
        }
    }
}

// Where forward's output row m at pixel pix of image n goes in y: NCHW, or with SCATTER the
// doubled map's (n, m / 4, 2·oy + a, 2·ox + c).
fn output_index(n: u32, m: u32, pix: u32) -> u32 {
    let plane = p.h * p.w;
    if (SCATTER) {
        let oy = pix / p.w;
        let ox = pix - oy * p.w;
        return (n * p.cout + (m & ~3u)) * plane + (2u * oy + ((m >> 1u) & 1u)) * 2u * p.w + 2u * ox + (m & 1u);
    }
    return (n * p.cout + m) * plane + pix;
}

// Forward's output from its sum over K for output channel `channel`: bias, ReLU.
fn epilogue(v: f32, channel: u32) -> f32 {
    var out = v;
    if (BIAS) {
        out += bias[channel];
    }
    return select(out, max(out, 0.0), RELU);
}

// dw[co,ci,ky,kx] = Σ_n,oy,ox dz[n,co,oy,ox] · x[n,ci,oy+ky−pad,ox+kx−pad], as the GEMM
// dW[co][kk] = Σ_(n,oy,ox) dZ[co][(n, oy, ox)] · im2col(x)[kk][(n, oy, ox)], kk = ci·K·K + tap
// (dw's own layout, so the rows of a tile are written contiguously).
//
// Grid: x tiles of BN columns (kk), y tiles of BM rows (output channels), z the SPLITS parts of
// K. K is walked in slices of BK pixels of one row (the last slice of a row padded with zeros),
// so a slice's image and row are decoded once, by the whole workgroup, and both tiles are loaded
// with consecutive invocations on consecutive pixels. Part z sums its share of the slices and
// writes its tile to dw at offset z · cout · cin·K·K: with SPLITS = 1 that is the gradient;
// otherwise dw is bound to a scratch buffer that sum_splits adds up.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_weight(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let plane = p.h * p.w;
    let columns = p.cin * K * K;
    let m0 = wid.y * BM;
    let j0 = wid.x * BN;
    let runs = (p.w + BK - 1u) / BK;
    let slices = p.n * p.h * runs;
    let share = (slices + SPLITS - 1u) / SPLITS;
    let first = min(wid.z * share, slices);
    let last = min(first + share, slices);
    var acc: Block;
    for (var slice = first; slice < last; slice++) {
        let row = slice / runs;
        let n = row / p.h;
        let oy = row - n * p.h;
        let ox0 = (slice - row * runs) * BK;
        for (var e = lid; e < BK * BM; e += INVOCATIONS) {
            let m = e / BK;
            let kr = e - m * BK;
            let co = m0 + m;
            let ox = ox0 + kr;
            var g = 0.0;
            if (co < p.cout && ox < p.w) {
                g = dz[(n * p.cout + co) * plane + oy * p.w + ox];
            }
            a_tile[kr * A_STRIDE + m] = g;
        }
        for (var e = lid; e < BK * BN; e += INVOCATIONS) {
            let j = e / BK;
            let kr = e - j * BK;
            b_tile[kr * B_STRIDE + j] = im2col(j0 + j, n * p.cin * plane, oy, ox0 + kr, ox0 + kr < p.w);
        }
        workgroupBarrier();
        multiply_slice(local, &acc);
        workgroupBarrier();
    }
    let out = wid.z * p.cout * columns;
    for (var i = 0u; i < TM; i++) {
        let co = m0 + local.y * TM + i;
        for (var j = 0u; j < TN; j++) {
            let kk = j0 + local.x + j * WG_X;
            if (co < p.cout && kk < columns) {
                dw[out + co * columns + kk] = acc[i][j];
            }
        }
    }
}

// y[i] = Σ_s split_sums[s · len + i], the SPLITS parts of a split GEMM added up: forward's
// (EPILOGUE: len = n·cout·h·w, in y's layout, then its epilogue for the output channel of i) or
// backward_weight's (len = cout·cin·K·K, bound as y ← dw). 1-D grid, wrapped by grid_1d.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn sum_splits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = p.h * p.w;
    let len = select(p.cout * p.cin * K * K, p.n * p.cout * plane, EPILOGUE);
    let i = linear_id(gid, nwg);
    if (i < len) {
        var sum = 0.0;
        for (var s = 0u; s < SPLITS; s++) {
            sum += split_sums[s * len + i];
        }
        if (EPILOGUE) {
            sum = epilogue(sum, select(i / plane % p.cout, i / (4u * plane) % (p.cout / 4u), SCATTER));
        }
        y[i] = sum;
    }
}

// Sums each SPLIT-invocation group's partial values into the group's first invocation.
// Every invocation of the workgroup calls it from uniform control flow, after writing its own
// partial value.
fn reduce_partial(lid: u32) {
    workgroupBarrier();
    let slice = lid % SPLIT;
    for (var s = SPLIT / 2u; s > 0u; s >>= 1u) {
        if (slice < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
}

// db[c] = Σ_n,pixel dz[n,c,pixel]; grid (channel groups); each group sums one channel.
// Also the bias gradient of conv_transpose2d (ConvParams.cout channels of h×w each).
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
