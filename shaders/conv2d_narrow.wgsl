// 2-D convolution for SIMD-lane adapters (the CPU kernel variant; Mesa lavapipe) on maps whose
// width is not a multiple of 4: the deepest maps of every input side that is not a multiple of
// 64 (80² → 10² and 5², 96² → 6², 112² → 14² and 7²). conv2d_lanes.wgsl gives each lane a run
// of pixels read as whole texels of 4, which such rows do not split into; without this file
// these layers ran the portable GEMM, whose workgroup barriers lavapipe runs as coroutine
// switches: 80² and 112² trained at a fifth (32 filters) to a third (8) of 64²'s and 128²'s
// speed per pixel; with it, at 60 % (32 filters) to 75 % (8) — BENCHMARKS.md.
//
// Here the 8 lanes of a subgroup hold channels, and every lane walks the same pixels:
// - forward (and, with TRANSPOSE, the input gradient, as in conv2d.wgsl): lane = CHANNELS
//   output channels (up to 4, so each window row fetched feeds up to 4 · K·K FMAs a value); a
//   workgroup computes a block of BH × BW output pixels for its channels.
//   The input window is the same for every lane, so its texels are fetched at one address for
//   all lanes; each lane fetches its own K·K weights of an input channel.
// - backward_weight: lane = INPUTS input channels (up to 2), TILE output channels an
//   invocation; the lanes walk every image down columns BW pixels wide, keeping the window rows
//   they go on using. dz is the same for every lane (so each chunk fetched serves INPUTS
//   channels), the input window each lane's own.
// Rows are read as the ≤ 4 texels holding the BW + K − 1 values a window row needs
// (`window_row`), not value by value: each fetch costs the index arithmetic and a gather.

// Params: ConvParams in common.wgsl (shared by every convolution kernel and its driver).

// Kernel size: 1 or 3 (padding K / 2).
override K: u32 = 3u;
override RELU: bool = false;
// Compute the input gradient instead, as in conv2d.wgsl.
override TRANSPOSE: bool = false;
// Output columns a block (forward) or a chunk (backward_weight) spans: at most MAX_BW.
override BW: u32 = 8u;
// Output rows of a forward block: at most MAX_BH, BH·BW ≤ MAX_SUMS.
override BH: u32 = 4u;
// forward: output channels a lane, 1 to MAX_CHANNELS (lane l of group g: channels
// 8·CHANNELS·g + l + 8k), which share every window row it loads.
override CHANNELS: u32 = 1u;
// backward_weight: output channels an invocation (at most MAX_TILE).
override TILE: u32 = 4u;
// backward_weight: input channels a lane, 1 to MAX_INPUTS (lane l of group g: channels
// 8·INPUTS·g + l + 8j), which share every chunk of dz it loads.
override INPUTS: u32 = 1u;
// Values a window row holds, and texels that hold them from any alignment.
override WINDOW: u32 = BW + K - 1u;
override WINDOW_TEXELS: u32 = (WINDOW + 6u) / 4u;
const LANES: u32 = 8u;
const MAX_BW: u32 = 8u;
const MAX_BH: u32 = 8u;
const MAX_SUMS: u32 = 32u;
const MAX_TILE: u32 = 4u;
const MAX_CHANNELS: u32 = 4u;
const MAX_INPUTS: u32 = 2u;
const MAX_WINDOW: u32 = MAX_BW + 2u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var x: TensorTexture;
@group(0) @binding(2) var wt: TensorTexture;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var dz: TensorTexture;
@group(0) @binding(6) var<storage, read_write> dw: array<f32>;

// t[start + c] for c < MAX_WINDOW, from the `texels` texels holding the first 4·texels − 3
// (start ≥ −4: a window's left pad before a tensor's first value; start may differ between
// lanes). Values outside what the caller wants are whatever these texels hold: it masks them.
fn window_row(t: TensorTexture, start: i32, texels: u32) -> array<f32, MAX_WINDOW> {
    // floor(start / 4), and where start lies in that texel.
    let first = (start + 4) / 4 - 1;
    let shift = u32(start - 4 * first);
    var flat: array<f32, 16>;
    for (var j = 0u; j < texels; j++) {
        // The texel before the tensor's first holds only masked values: any texel will do.
        let v = texel(t, u32(max(first + i32(j), 0)));
        flat[4u * j] = v.x;
        flat[4u * j + 1u] = v.y;
        flat[4u * j + 2u] = v.z;
        flat[4u * j + 3u] = v.w;
    }
    // Selects by the shift rather than flat[shift + c]: indexing a private array at a run-time
    // index goes through memory.
    var row: array<f32, MAX_WINDOW>;
    for (var c = 0u; c < MAX_WINDOW; c++) {
        row[c] = select(select(flat[c], flat[c + 1u], shift == 1u), select(flat[c + 2u], flat[c + 3u], shift == 3u),
                        shift >= 2u);
    }
    return row;
}

// x[iy][left + c] of the plane starting at `plane` for c < WINDOW, zero outside the map.
fn masked_row(plane: u32, iy: i32, left: i32) -> array<f32, MAX_WINDOW> {
    let row_inside = iy >= 0 && iy < i32(p.h);
    var row = window_row(x, i32(plane + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w) + left, WINDOW_TEXELS);
    for (var c = 0u; c < WINDOW; c++) {
        let ix = left + i32(c);
        row[c] = select(0.0, row[c], row_inside && ix >= 0 && ix < i32(p.w));
    }
    return row;
}

// Grid: x enumerates groups of 8·CHANNELS output channels; y, wrapping into z past 65535
// workgroups, enumerates blocks (image, block row, block column), so every channel group of one
// block runs back to back while its input is in the core's cache.
@compute @workgroup_size(8, 1, 1)
fn forward(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // Lane l of group g computes channels 8·CHANNELS·g + l + 8k, k < CHANNELS.
    let first = wid.x * LANES * CHANNELS + lane;
    let across = (p.w + BW - 1u) / BW;
    let blocks = across * ((p.h + BH - 1u) / BH);
    let block = wid.y + wid.z * nwg.y;
    let n = block / blocks;
    let oy0 = (block % blocks) / across * BH;
    let ox0 = (block % blocks) % across * BW;
    let pad = i32(K / 2u);

    // The sums of each channel, indexed only by constants (so they stay in registers).
    var acc: array<array<f32, MAX_SUMS>, MAX_CHANNELS>;
    for (var ci = 0u; ci < p.cin; ci++) {
        let plane = (n * p.cin + ci) * p.h * p.w;
        // Window row wy is input row oy0 + wy − pad: all of them first, then the sums. Straight
        // lines, not a loop over wy: lavapipe did not unroll that loop (measured when its fetches were calls),
        // and a private array written at a run-time index lives in memory, each access a loop
        // over the lanes, even where the sums read it at constant indices.
        var rows: array<array<f32, MAX_WINDOW>, MAX_BH + 2u>;
        let top = i32(oy0) - pad;
        let left = i32(ox0) - pad;
        rows[0] = masked_row(plane, top, left);
        if (BH + K > 2u) { rows[1] = masked_row(plane, top + 1, left); }
        if (BH + K > 3u) { rows[2] = masked_row(plane, top + 2, left); }
        if (BH + K > 4u) { rows[3] = masked_row(plane, top + 3, left); }
        if (BH + K > 5u) { rows[4] = masked_row(plane, top + 4, left); }
        if (BH + K > 6u) { rows[5] = masked_row(plane, top + 5, left); }
        if (BH + K > 7u) { rows[6] = masked_row(plane, top + 6, left); }
        if (BH + K > 8u) { rows[7] = masked_row(plane, top + 7, left); }
        if (BH + K > 9u) { rows[8] = masked_row(plane, top + 8, left); }
        if (BH + K > 10u) { rows[9] = masked_row(plane, top + 9, left); }
        accumulate_block(&acc, 0u, &rows, lane_weights(channel(first, 0u), ci));
        if (CHANNELS > 1u) { accumulate_block(&acc, 1u, &rows, lane_weights(channel(first, 1u), ci)); }
        if (CHANNELS > 2u) { accumulate_block(&acc, 2u, &rows, lane_weights(channel(first, 2u), ci)); }
        if (CHANNELS > 3u) { accumulate_block(&acc, 3u, &rows, lane_weights(channel(first, 3u), ci)); }
    }
    store_block(&acc, 0u, first, n, oy0, ox0);
    if (CHANNELS > 1u) { store_block(&acc, 1u, first + LANES, n, oy0, ox0); }
    if (CHANNELS > 2u) { store_block(&acc, 2u, first + 2u * LANES, n, oy0, ox0); }
    if (CHANNELS > 3u) { store_block(&acc, 3u, first + 3u * LANES, n, oy0, ox0); }
}

// The lane's k-th output channel, clamped to the last one (its sums are then not stored).
fn channel(first: u32, k: u32) -> u32 {
    return min(first + k * LANES, p.cout - 1u);
}

// Output channel co's K·K weights of input channel ci (forward: w[co][ci][tap]; transposed:
// w[ci][co][flipped tap], with the layer's channel axes), consecutive: three texels hold them
// (one for a 1×1 kernel).
fn lane_weights(co: u32, ci: u32) -> array<f32, 9> {
    let kk = K * K;
    let start = select((co * p.cin + ci) * kk, (ci * p.cout + co) * kk, TRANSPOSE);
    let taps = window_row(wt, i32(start), (kk + 6u) / 4u);
    var wv: array<f32, 9>;
    for (var tap = 0u; tap < kk; tap++) {
        wv[tap] = taps[select(tap, kk - 1u - tap, TRANSPOSE)];
    }
    return wv;
}

// acc[k][r·BW + c] += Σ_ky,kx rows[r + ky][c + kx] · wv[ky·K + kx].
fn accumulate_block(acc: ptr<function, array<array<f32, MAX_SUMS>, MAX_CHANNELS>>, k: u32,
                    rows: ptr<function, array<array<f32, MAX_WINDOW>, MAX_BH + 2u>>, wv: array<f32, 9>) {
    for (var r = 0u; r < BH; r++) {
        for (var c = 0u; c < BW; c++) {
            var sum = (*acc)[k][r * BW + c];
            for (var ky = 0u; ky < K; ky++) {
                for (var kx = 0u; kx < K; kx++) {
                    sum = fma((*rows)[r + ky][c + kx], wv[ky * K + kx], sum);
                }
            }
            (*acc)[k][r * BW + c] = sum;
        }
    }
}

// y[n, co] over the block at (oy0, ox0) = the sums of channel k plus the bias (none for the
// input gradient), ReLU'd with RELU; nothing past the map's edges or the last channel.
fn store_block(acc: ptr<function, array<array<f32, MAX_SUMS>, MAX_CHANNELS>>, k: u32, co: u32, n: u32, oy0: u32, ox0: u32) {
    let out = (n * p.cout + co) * p.h * p.w;
    var b = 0.0;
    if (!TRANSPOSE) {
        b = bias[min(co, p.cout - 1u)];
    }
    for (var r = 0u; r < BH; r++) {
        for (var c = 0u; c < BW; c++) {
            let oy = oy0 + r;
            let ox = ox0 + c;
            if (co < p.cout && oy < p.h && ox < p.w) {
                let v = (*acc)[k][r * BW + c] + b;
                y[out + oy * p.w + ox] = select(v, max(v, 0.0), RELU);
            }
        }
    }
}

// dw[co,ci,tap] = Σ_n,oy,ox dz[n,co,oy,ox] · x[n,ci,oy+ky−pad,ox+kx−pad]. Grid: x enumerates
// groups of 8·INPUTS input channels (lane l of group g: channels 8·INPUTS·g + l + 8j, j <
// INPUTS), y tiles of TILE output channels; each lane keeps its INPUTS·TILE·K·K sums and stores
// them itself. dz is the same for every lane: each chunk of it fetched serves INPUTS channels.
@compute @workgroup_size(8, 1, 1)
fn backward_weight(@builtin(local_invocation_index) lane: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let first = wid.x * LANES * INPUTS + lane;
    let co0 = wid.y * TILE;
    var acc: array<array<array<f32, 9>, MAX_TILE>, MAX_INPUTS>;
    for (var n = 0u; n < p.n; n++) {
        for (var ox0 = 0u; ox0 < p.w; ox0 += BW) {
            // rows[j][ky]: window row ky of input channel j's current output row, walking down
            // the chunk's column so that each output row loads one new window row a channel and
            // keeps the K − 1 before it.
            var rows: array<array<array<f32, MAX_WINDOW>, 3>, MAX_INPUTS>;
            start_column(&rows, 0u, n, first, ox0);
            if (INPUTS > 1u) { start_column(&rows, 1u, n, first, ox0); }
            for (var oy = 0u; oy < p.h; oy++) {
                // The chunk's dz for each output channel (zero past the row's end).
                var g: array<array<f32, MAX_BW>, MAX_TILE>;
                for (var t = 0u; t < TILE; t++) {
                    let zplane = (n * p.cout + min(co0 + t, p.cout - 1u)) * p.h * p.w;
                    let zrow = window_row(dz, i32(zplane + oy * p.w + ox0), (BW + 6u) / 4u);
                    for (var c = 0u; c < BW; c++) {
                        g[t][c] = select(0.0, zrow[c], ox0 + c < p.w);
                    }
                }
                accumulate_taps(&acc, &rows, 0u, &g, n, first, oy, ox0);
                if (INPUTS > 1u) { accumulate_taps(&acc, &rows, 1u, &g, n, first, oy, ox0); }
            }
        }
    }
    store_taps(&acc, 0u, first, co0);
    if (INPUTS > 1u) { store_taps(&acc, 1u, first + LANES, co0); }
}

// The lane's j-th input channel's plane of image n (the last channel's past the end: its sums
// are not stored).
fn input_plane(n: u32, first: u32, j: u32) -> u32 {
    return (n * p.cin + min(first + j * LANES, p.cin - 1u)) * p.h * p.w;
}

// rows[j][0..K−1): the window rows above output row 0 of the chunk at ox0.
fn start_column(rows: ptr<function, array<array<array<f32, MAX_WINDOW>, 3>, MAX_INPUTS>>, j: u32, n: u32, first: u32,
                ox0: u32) {
    if (K == 3u) {
        let plane = input_plane(n, first, j);
        let left = i32(ox0) - 1;
        (*rows)[j][0] = masked_row(plane, -1, left);
        (*rows)[j][1] = masked_row(plane, 0, left);
    }
}

// Loads input channel j's window row below output row oy, adds its products with the chunk's dz
// g to the channel's sums, and slides its window rows down one.
fn accumulate_taps(acc: ptr<function, array<array<array<f32, 9>, MAX_TILE>, MAX_INPUTS>>,
                   rows: ptr<function, array<array<array<f32, MAX_WINDOW>, 3>, MAX_INPUTS>>, j: u32,
                   g: ptr<function, array<array<f32, MAX_BW>, MAX_TILE>>, n: u32, first: u32, oy: u32, ox0: u32) {
    let pad = i32(K / 2u);
    (*rows)[j][K - 1u] = masked_row(input_plane(n, first, j), i32(oy + K - 1u) - pad, i32(ox0) - pad);
    for (var t = 0u; t < TILE; t++) {
        for (var ky = 0u; ky < K; ky++) {
            for (var kx = 0u; kx < K; kx++) {
                var sum = (*acc)[j][t][ky * K + kx];
                for (var c = 0u; c < BW; c++) {
                    sum = fma((*g)[t][c], (*rows)[j][ky][c + kx], sum);
                }
                (*acc)[j][t][ky * K + kx] = sum;
            }
        }
    }
    if (K == 3u) {
        (*rows)[j][0] = (*rows)[j][1];
        (*rows)[j][1] = (*rows)[j][2];
    }
}

// dw[co0 + t, ci, tap] = input channel j's sums (nothing past the last channel of either).
fn store_taps(acc: ptr<function, array<array<array<f32, 9>, MAX_TILE>, MAX_INPUTS>>, j: u32, ci: u32, co0: u32) {
    for (var t = 0u; t < TILE; t++) {
        for (var tap = 0u; tap < K * K; tap++) {
            if (ci < p.cin && co0 + t < p.cout) {
                dw[((co0 + t) * p.cin + ci) * K * K + tap] = (*acc)[j][t][tap];
            }
        }
    }
}
