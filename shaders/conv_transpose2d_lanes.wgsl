// 2×2 stride-2 transposed convolution for SIMD-lane adapters (the CPU kernel variant; Mesa
// lavapipe): what conv2d.wgsl's GEMMs compute with UPSAMPLE elsewhere (the gradients
// read dy over pixel pairs where the width is even, binding 9, else a pixel at a time), built
// on what conv2d_lanes.wgsl explains: storage loads are dear (a branchy loop over the 8
// lanes each), texel fetches and subgroup broadcasts cheap, so x, the weights and dy are read as
// texels of textures. An operand that is the same for every lane is loaded
// 8 values to a load, one per lane, and handed out by broadcasts. Needs 8-lane subgroups.

// Params: ConvParams in common.wgsl (shared by every convolution kernel and its driver).

// Channels per invocation: at most LANES in forward, 2·LANES in backward_input (one weight load a
// LANES channels).
override TILE: u32 = 8u;
// Input pixel pairs per invocation of backward_input: 1, or 2 on rows of a multiple of 4 pixels.
override PAIRS: u32 = 1u;
// Rows of an odd width: the gradients take one input pixel at a time (a pair could straddle two
// rows), whose 2×2 block of dy starts at either half of a texel (`dy_block`).
override SINGLE: bool = false;
// Input pixels per invocation of forward: 4 neighbours in a row (rows of a multiple of 4 pixels:
// one texel of x, whose fetch otherwise serves one pixel), or 1.
override PX: u32 = 1u;
const LANES: u32 = 8u;
const MAX_PAIRS: u32 = 2u;
const MAX_PX: u32 = 4u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var x: TensorTexture;
@group(0) @binding(2) var wt: TensorTexture;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// y: the rows of a 2×2 block are vec2s (even offsets: the output width 2w is even).
@group(0) @binding(4) var<storage, read_write> y: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> dw: array<vec4<f32>>;
// dy over pixel pairs (even widths): a block row of two pixels is one vec4.
@group(0) @binding(9) var dy4: TensorTexture;
@group(0) @binding(10) var<storage, read_write> dx: array<f32>;

// Lane t's value, for t < count, as seen by every lane (zeros from count on).
fn broadcast_first(v: vec4<f32>, count: u32) -> array<vec4<f32>, LANES> {
    var out: array<vec4<f32>, LANES>;
    out[0] = subgroupBroadcast(v, 0u);
    if (count > 1u) { out[1] = subgroupBroadcast(v, 1u); }
    if (count > 2u) { out[2] = subgroupBroadcast(v, 2u); }
    if (count > 3u) { out[3] = subgroupBroadcast(v, 3u); }
    if (count > 4u) { out[4] = subgroupBroadcast(v, 4u); }
    if (count > 5u) { out[5] = subgroupBroadcast(v, 5u); }
    if (count > 6u) { out[6] = subgroupBroadcast(v, 6u); }
    if (count > 7u) { out[7] = subgroupBroadcast(v, 7u); }
    return out;
}

// Index in vec2s into y / dy of the top row of the 2×2 block of input pixel (i, j), channel c.
fn block_top(n: u32, c: u32, i: u32, j: u32) -> u32 {
    return (((n * p.cout + c) * 2u * p.h + 2u * i) * 2u * p.w + 2u * j) / 2u;
}

// The 2×2 block of dy whose top left is vec2 `top` (block_top), as (top left, top right, bottom
// left, bottom right): two texel fetches, each row's half picked by its parity.
fn dy_block(top: u32) -> vec4<f32> {
    let bottom = top + p.w;
    let upper = texel(dy4, top / 2u);
    let lower = texel(dy4, bottom / 2u);
    return vec4<f32>(select(upper.xy, upper.zw, top % 2u == 1u), select(lower.xy, lower.zw, bottom % 2u == 1u));
}

// The (image, input pixel) of linear item `raw`, clamped to the last one so every lane stays
// active for the subgroup operations.
fn pixel_of(raw: u32) -> vec3<u32> {
    let plane = p.h * p.w;
    let item = min(raw, p.n * plane - 1u);
    let image_pix = divmod(item, plane);
    let row_col = divmod(image_pix.y, p.w);
    return vec3<u32>(image_pix.x, row_col.x, row_col.y);
}

// Linear item of invocation `lid` of workgroup `wid`: the grid's x enumerates channel tiles, y
// (wrapping into z) blocks of WG_X items. lavapipe runs workgroups in x-fastest order, so every
// channel tile of one block of pixels runs back to back while its inputs are in the core's cache.
fn item_of(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y + wid.z * nwg.y) * WG_X + lid;
}

// Items: (image, run of PX input pixels) in lane order; channel tiles: TILE output channels. Lane
// l loads the weights of output channel co0 + l, then every lane gets all TILE of them by
// broadcasts; each invocation owns its pixels' 2×2 output blocks.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn forward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let raw = item_of(lid, wid, nwg);
    let plane = p.h * p.w;
    let items = p.n * plane / PX;
    let at = pixel_of(min(raw, items - 1u) * PX);
    let pix = at.y * p.w + at.z;
    let co0 = wid.x * TILE;
    let last = p.cout - 1u;
    let wcol = min(co0 + lid % LANES, last);
    // acc[t][k]: the 2×2 block of output channel co0 + t above input pixel k of the run.
    var acc: array<array<vec4<f32>, MAX_PX>, LANES>;
    for (var t = 0u; t < TILE; t++) {
        for (var k = 0u; k < PX; k++) {
            acc[t][k] = vec4(bias[min(co0 + t, last)]);
        }
    }
    for (var ci = 0u; ci < p.cin; ci++) {
        // One fetch either way: the texel holding pixel pix (with PX = 4, the whole run).
        let xi = (at.x * p.cin + ci) * plane + pix;
        let texel_x = texel(x, xi / 4u);
        let v = select(vec4(texel_x[xi % 4u]), texel_x, PX == 4u);
        let ws = broadcast_first(texel(wt, ci * p.cout + wcol), TILE);
        for (var t = 0u; t < TILE; t++) {
            for (var k = 0u; k < PX; k++) {
                acc[t][k] = fma(vec4(v[k]), ws[t], acc[t][k]);
            }
        }
    }
    if (raw < items) {
        for (var t = 0u; t < TILE; t++) {
            if (co0 + t < p.cout) {
                for (var k = 0u; k < PX; k++) {
                    let top = block_top(at.x, co0 + t, at.y, at.z + k);
                    y[top] = acc[t][k].xy;
                    y[top + p.w] = acc[t][k].zw;
                }
            }
        }
    }
}

// dx[n,ci,i,j] = Σ_co Σ_a,c dy[n,co,2i+a,2j+c] · w[ci,co,a,c]; the grid of forward over input
// channels and runs of PAIRS pixel pairs (even widths, so a pair never straddles rows: an
// invocation's dy is PAIRS vec4s per block row and output channel) or, with SINGLE, of single
// pixels. On lavapipe every load is a loop over the lanes (~50 instructions a lane for a vec4),
// so each co's loads feed as many sums as fit: up to 16 channels × 4 pixels. Lane l loads the weights of input channels ci0 + l and
// ci0 + 8 + l; broadcasts hand them to every lane.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_input(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let raw = item_of(lid, wid, nwg);
    let plane = p.h * p.w;
    let pixels = select(2u * PAIRS, 1u, SINGLE);
    let items = p.n * plane / pixels;
    let at = pixel_of(pixels * min(raw, items - 1u));
    let ci0 = wid.x * TILE;
    let last = p.cin - 1u;
    let lane = lid % LANES;
    let wrow_lo = min(ci0 + lane, last) * p.cout;
    let wrow_hi = min(ci0 + LANES + lane, last) * p.cout;
    let high = max(TILE, LANES) - LANES;
    // sums[t][k]: input channel ci0 + t at the k-th pixel of the run.
    var sums: array<array<f32, 2 * MAX_PAIRS>, 2 * LANES>;
    for (var co = 0u; co < p.cout; co++) {
        let top = block_top(at.x, co, at.y, at.z) / 2u;
        // g[k]: the 2×2 block of dy under pixel k, as (top left, top right, bottom left, bottom right).
        var g: array<vec4<f32>, 2 * MAX_PAIRS>;
        if (SINGLE) {
            g[0] = dy_block(block_top(at.x, co, at.y, at.z));
        } else {
            for (var k = 0u; k < PAIRS; k++) {
                let upper = texel(dy4, top + k);
                let lower = texel(dy4, top + p.w / 2u + k);
                g[2u * k] = vec4<f32>(upper.xy, lower.xy);
                g[2u * k + 1u] = vec4<f32>(upper.zw, lower.zw);
            }
        }
        let ws = broadcast_first(texel(wt, wrow_lo + co), TILE);
        for (var t = 0u; t < min(TILE, LANES); t++) {
            for (var k = 0u; k < pixels; k++) {
                sums[t][k] += dot(g[k], ws[t]);
            }
        }
        if (high > 0u) {
            let ws_hi = broadcast_first(texel(wt, wrow_hi + co), high);
            for (var t = 0u; t < high; t++) {
                for (var k = 0u; k < pixels; k++) {
                    sums[LANES + t][k] += dot(g[k], ws_hi[t]);
                }
            }
        }
    }
    if (raw < items) {
        let first = at.y * p.w + at.z;
        for (var t = 0u; t < TILE; t++) {
            if (ci0 + t < p.cin) {
                for (var k = 0u; k < pixels; k++) {
                    dx[(at.x * p.cin + ci0 + t) * plane + first + k] = sums[t][k];
                }
            }
        }
    }
}

// dw[ci,co,a,c] = Σ_n,i,j x[n,ci,i,j] · dy[n,co,2i+a,2j+c]
// One subgroup a workgroup, grid (tiles of 8 input channels, tiles of 8 output channels): lane l
// owns output channel co0 + l and sums its 8 input channels' weights over every input pixel.
// The 8 × 8 x values of 8 pixels are loaded by the lanes, then broadcast: with X8 (planes of a
// multiple of 8 pixels) lane t loads channel ci0 + t's 8 as two texels; otherwise each lane its
// pixel of every channel, a texel fetch a value. Each lane loads its own dy, a vec4 per block
// row for two neighbouring pixels (even widths, so a pair never straddles rows; with SINGLE two
// texels for each pixel's block). No barriers, no workgroup memory.
override X8: bool = false;

@compute @workgroup_size(8, 1, 1)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let ci0 = wid.x * LANES;
    let co = min(wid.y * LANES + lane, p.cout - 1u);
    let plane = p.h * p.w;
    var acc: array<vec4<f32>, LANES>;
    for (var n = 0u; n < p.n; n++) {
        for (var first = 0u; first < plane; first += LANES) {
            let mine = min(first + lane, plane - 1u);
            // xs[t][q]: x of input channel ci0 + t at pixel first + q (zero past the plane).
            var xs: array<array<f32, LANES>, LANES>;
            if (X8) {
                let base = ((n * p.cin + min(ci0 + lane, p.cin - 1u)) * plane + first) / 4u;
                let lo = broadcast_first(texel(x, base), LANES);
                let hi = broadcast_first(texel(x, base + 1u), LANES);
                for (var t = 0u; t < LANES; t++) {
                    xs[t] = array<f32, LANES>(lo[t].x, lo[t].y, lo[t].z, lo[t].w, hi[t].x, hi[t].y, hi[t].z, hi[t].w);
                }
            } else {
                for (var t = 0u; t < LANES; t++) {
                    let v = select(0.0, texel_f32(x, (n * p.cin + min(ci0 + t, p.cin - 1u)) * plane + mine), first + lane < plane);
                    xs[t] = array<f32, LANES>(
                        subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
                        subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
                        subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
                }
            }
            for (var q = 0u; q < LANES; q += 2u) {
                // Pixels first + q and + q + 1 (pixels past the plane meet zero x values).
                var g0: vec4<f32>;
                var g1: vec4<f32>;
                if (SINGLE) {
                    let a = divmod(min(first + q, plane - 1u), p.w);
                    let b = divmod(min(first + q + 1u, plane - 1u), p.w);
                    g0 = dy_block(block_top(n, co, a.x, a.y));
                    g1 = dy_block(block_top(n, co, b.x, b.y));
                } else {
                    let row_col = divmod(min(first + q, plane - 2u), p.w);
                    let top = block_top(n, co, row_col.x, row_col.y) / 2u;
                    let upper = texel(dy4, top);
                    let lower = texel(dy4, top + p.w / 2u);
                    g0 = vec4<f32>(upper.xy, lower.xy);
                    g1 = vec4<f32>(upper.zw, lower.zw);
                }
                for (var t = 0u; t < LANES; t++) {
                    acc[t] = fma(vec4(xs[t][q + 1u]), g1, fma(vec4(xs[t][q]), g0, acc[t]));
                }
            }
        }
    }
    if (wid.y * LANES + lane < p.cout) {
        for (var t = 0u; t < LANES; t++) {
            if (ci0 + t < p.cin) {
                dw[(ci0 + t) * p.cout + co] = acc[t];
            }
        }
    }
}
