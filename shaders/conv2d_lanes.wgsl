// 2-D convolution for SIMD-lane adapters (the CPU kernel variant; Mesa lavapipe): the same
// `forward` as conv2d.wgsl (and, with TRANSPOSE, the input gradient), built around what such a
// driver makes cheap and dear. On lavapipe 22.x each storage-buffer load in a loop becomes a loop
// over the 8 lanes of the subgroup with a branch per lane (~20 instructions a lane, seen in the
// generated assembly), whatever its address; a vec4 load costs about as much as two scalar ones;
// a subgroup broadcast or shuffle is a few register moves; an FMA is one instruction for all 8
// lanes. So this kernel
// - reads x as vec4 (rows of a multiple of 8 pixels: the driver checks), two loads per window
//   row, and takes the window's two edge pixels from the neighbouring lanes by shuffles;
// - reads its inputs (x, the weights, dz: each lane loads its own values of them) as texels of
//   textures, not from storage: on a host without AVX-512 a storage load reaches each lane
//   through the stack, a store-forwarding stall a lane, and costs about ten texel fetches
//   (`load_paths` bench);
// - loads the TILE·K·K weights of one input channel once per subgroup, 8 to a load, and hands
//   them to every lane by broadcasts (they are the same for every lane);
// - computes PX = 8 pixels × TILE output channels × ROWS rows of sums, taking each window row
//   once for every output row it serves, and uses fma().
// Needs the subgroup feature with 8-lane subgroups; GPUs use conv2d.wgsl.

// Params: ConvParams in common.wgsl (shared by every convolution kernel and its driver).

// Kernel size: 1 or 3 (padding K / 2).
override K: u32 = 3u;
override RELU: bool = false;
// Compute the input gradient instead, as in conv2d.wgsl.
override TRANSPOSE: bool = false;
// Output channels per invocation (at most MAX_TILE).
override TILE: u32 = 4u;

// Whether a row can continue across a subgroup boundary (its run count does not divide 8): then
// lanes 0 and 7 read their outer neighbour pixel themselves.
override CROSSING: bool = true;
// Pixels of a row per invocation, 8 or 4 (one or two vec4 loads); rows are whole runs.
override PX: u32 = 8u;
// Output rows per invocation, 1, 2 or 4 (3×3 kernels: heights divisible by it): consecutive
// rows share window rows, so an input channel costs ROWS + 2 row fetches instead of 3·ROWS, and
// its weights are fetched and broadcast once for them all. The fetches are what a step of `ci`
// costs beyond its FMAs. Measured when each was a call on lavapipe (sampled textures; storage
// textures load inline): 4 rows made the 128² U-Net's forward and input gradient 1.5-1.7x as
// fast as 1, each pass alone on data out of cache; inside a training step, where its input is
// fresh in cache, rows and PAIR below together made the step 1.03-1.2x as fast (BENCHMARKS.md).
override ROWS: u32 = 1u;
const MAX_PX: u32 = 8u;
const LANES: u32 = 8u;
const MAX_TILE: u32 = 4u;
// Weight slots one subgroup loads per input channel: TILE·K·K rounded up to whole loads.
const MAX_WEIGHT_LOADS: u32 = (MAX_TILE * 9u + LANES - 1u) / LANES;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var x: TensorTexture;
@group(0) @binding(2) var wt: TensorTexture;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;

// Weight offset of slot s = t·K·K + tap for output channel tile start co0, input channel 0.
fn weight_offset(s: u32, co0: u32) -> u32 {
    let kk = K * K;
    let t = min(s / kk, TILE - 1u);
    let tap = s % kk;
    let co = min(co0 + t, p.cout - 1u);
    // Forward: w[co][ci][tap]; transposed: w[ci][co][flipped tap] with the layer's channel axes.
    return select(co * p.cin * kk + tap, co * kk + (kk - 1u - tap), TRANSPOSE);
}

// Grid: x enumerates tiles of TILE output channels; y enumerates blocks of WG_X (image, ROWS rows,
// run of PX pixels) items, wrapping into z past 65535 workgroups, the items in invocation order, so
// the lanes of a subgroup hold consecutive runs of one row (or of consecutive rows when a row has
// < 8 runs). lavapipe runs workgroups in x-fastest order, so every channel tile of one block of
// rows runs back to back while those rows are in the core's cache (with y fastest, each tile
// streamed the whole input again). Items past the end compute a clamped copy of the last one and
// store nothing: every lane stays active for the subgroup operations.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn forward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let runs = p.w / PX;
    let items = p.n * (p.h / ROWS) * runs;
    let raw = (wid.y + wid.z * nwg.y) * WG_X + lid;
    let item = min(raw, items - 1u);
    let row_run = divmod(item, runs);
    let n_rows = divmod(row_run.x, p.h / ROWS);
    let n = n_rows.x;
    let oy = n_rows.y * ROWS;
    let run = row_run.y;
    let plane4 = p.h * p.w / 4u;
    let row4 = p.w / 4u;
    let co0 = wid.x * TILE;
    let kk = K * K;
    // Weight slots: lane l of load j holds slot j·8 + l.
    let loads = (TILE * kk + LANES - 1u) / LANES;
    let lane = lid % LANES;
    var woff: array<u32, MAX_WEIGHT_LOADS>;
    for (var j = 0u; j < loads; j++) {
        woff[j] = weight_offset(j * LANES + lane, co0);
    }
    // Weight stride between input channels.
    let wstride = select(kk, p.cout * kk, TRANSPOSE);

    // The sums of output rows oy, oy + 1, oy + 2 and oy + 3 (as ROWS has them).
    var acc: array<array<f32, MAX_PX>, MAX_TILE>;
    if (!TRANSPOSE) {
        for (var t = 0u; t < TILE; t++) {
            let b = bias[min(co0 + t, p.cout - 1u)];
            for (var q = 0u; q < PX; q++) {
                acc[t][q] = b;
            }
        }
    }
    var acc1 = acc;
    var acc2 = acc;
    var acc3 = acc;
    for (var ci = 0u; ci < p.cin; ci++) {
        var wl: array<f32, MAX_WEIGHT_LOADS>;
        for (var j = 0u; j < loads; j++) {
            wl[j] = texel_f32(wt, woff[j] + ci * wstride);
        }
        var wv: array<f32, 40>;
        for (var j = 0u; j < loads; j++) {
            wv[j * 8u + 0u] = subgroupBroadcast(wl[j], 0u);
            wv[j * 8u + 1u] = subgroupBroadcast(wl[j], 1u);
            wv[j * 8u + 2u] = subgroupBroadcast(wl[j], 2u);
            wv[j * 8u + 3u] = subgroupBroadcast(wl[j], 3u);
            wv[j * 8u + 4u] = subgroupBroadcast(wl[j], 4u);
            wv[j * 8u + 5u] = subgroupBroadcast(wl[j], 5u);
            wv[j * 8u + 6u] = subgroupBroadcast(wl[j], 6u);
            wv[j * 8u + 7u] = subgroupBroadcast(wl[j], 7u);
        }
        let xplane = (n * p.cin + ci) * plane4;
        // Window row r (input row oy + r − K/2) is window row r − o of output row oy + o: each is
        // fetched once and added to the output rows whose windows hold it. Straight-line code,
        // not loops over rows: lavapipe does not unroll such loops (with the CROSSING fetch their
        // bodies grow past its limit), and kept loops index the sums at run time: 3-10x slower.
        let r0 = window_row(xplane, oy, 0u, run, runs, lane);
        accumulate_window_row(&acc, &wv, r0, 0u);
        if (K == 3u) {
            let r1 = window_row(xplane, oy, 1u, run, runs, lane);
            accumulate_window_row(&acc, &wv, r1, 1u);
            if (ROWS >= 2u) {
                accumulate_window_row(&acc1, &wv, r1, 0u);
            }
            let r2 = window_row(xplane, oy, 2u, run, runs, lane);
            accumulate_window_row(&acc, &wv, r2, 2u);
            if (ROWS >= 2u) {
                accumulate_window_row(&acc1, &wv, r2, 1u);
                let r3 = window_row(xplane, oy, 3u, run, runs, lane);
                accumulate_window_row(&acc1, &wv, r3, 2u);
                if (ROWS == 4u) {
                    accumulate_window_row(&acc2, &wv, r2, 0u);
                    accumulate_window_row(&acc2, &wv, r3, 1u);
                    accumulate_window_row(&acc3, &wv, r3, 0u);
                    let r4 = window_row(xplane, oy, 4u, run, runs, lane);
                    accumulate_window_row(&acc2, &wv, r4, 2u);
                    accumulate_window_row(&acc3, &wv, r4, 1u);
                    accumulate_window_row(&acc3, &wv, window_row(xplane, oy, 5u, run, runs, lane), 2u);
                }
            }
        }
    }
    if (raw < items) {
        let out = (n * p.cout) * plane4 + oy * row4 + run * (PX / 4u);
        store_sums(&acc, out, co0, plane4);
        if (ROWS >= 2u) {
            store_sums(&acc1, out + row4, co0, plane4);
        }
        if (ROWS == 4u) {
            store_sums(&acc2, out + 2u * row4, co0, plane4);
            store_sums(&acc3, out + 3u * row4, co0, plane4);
        }
    }
}

// y[co0 + t] at vec4 `out` of each channel plane = the sums of tile channel t (ReLU'd with RELU).
fn store_sums(acc: ptr<function, array<array<f32, MAX_PX>, MAX_TILE>>, out: u32, co0: u32, plane4: u32) {
    for (var t = 0u; t < TILE; t++) {
        let co = co0 + t;
        if (co < p.cout) {
            var v: array<f32, MAX_PX>;
            for (var q = 0u; q < PX; q++) {
                v[q] = select((*acc)[t][q], max((*acc)[t][q], 0.0), RELU);
            }
            y[out + co * plane4] = vec4<f32>(v[0], v[1], v[2], v[3]);
            if (PX == 8u) {
                y[out + co * plane4 + 1u] = vec4<f32>(v[4], v[5], v[6], v[7]);
            }
        }
    }
}

@group(0) @binding(5) var dz: TensorTexture;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;

// The input window row ky of the run `run` of item row `oy` (image plane `xplane`, in vec4s):
// row[c] = x[oy + ky − pad][8·run + c − 1], zero outside the image. Called from uniform control
// flow (it shuffles between lanes).
fn window_row(xplane: u32, oy: u32, ky: u32, run: u32, runs: u32, lane: u32) -> array<f32, MAX_PX + 2u> {
    let pad = i32(K / 2u);
    let iy = i32(oy) + i32(ky) - pad;
    let inside = iy >= 0 && iy < i32(p.h);
    let base = xplane + u32(clamp(iy, 0, i32(p.h) - 1)) * (p.w / 4u) + run * (PX / 4u);
    let lo = select(vec4<f32>(), texel(x, base), inside);
    var hi = vec4<f32>();
    if (PX == 8u) {
        hi = select(vec4<f32>(), texel(x, base + 1u), inside);
    }
    let has_left = run > 0u && inside;
    let has_right = run + 1u < runs && inside;
    var left = subgroupShuffleUp(select(lo.w, hi.w, PX == 8u), 1u);
    var right = subgroupShuffleDown(lo.x, 1u);
    // Lanes 0 and 7 have no neighbour lane on that side (their shuffles return another lane's
    // value): where a row can go on in the previous / next subgroup they read that pixel, in one
    // texel for both. Every lane fetches it, outside any branch (a texel fetch is cheap, and the
    // branch measured no faster); where no neighbour exists, has_left / has_right zero it below.
    if (CROSSING) {
        let edge = texel(x, select(base + PX / 4u, max(base, 1u) - 1u, lane == 0u));
        left = select(left, edge.w, lane == 0u);
        right = select(right, edge.x, lane == LANES - 1u);
    }
    var row = array<f32, MAX_PX + 2u>(select(0.0, left, has_left), lo.x, lo.y, lo.z, lo.w,
                                      hi.x, hi.y, hi.z, hi.w, 0.0);
    row[PX + 1u] = select(0.0, right, has_right);
    return row;
}

// acc[t][q] += Σ_kx row[q + kx + 1 − K/2] · w[t][ky][kx], the weights as `forward` broadcast them.
// Each sum takes its K products in a register: with the kx loop outermost instead (each product
// a load and store of its sum), 2 and 4 rows an invocation ran no faster than 1.
fn accumulate_window_row(acc: ptr<function, array<array<f32, MAX_PX>, MAX_TILE>>, wv: ptr<function, array<f32, 40>>,
                         row: array<f32, MAX_PX + 2u>, ky: u32) {
    for (var t = 0u; t < TILE; t++) {
        for (var q = 0u; q < PX; q++) {
            var sum = (*acc)[t][q];
            for (var kx = 0u; kx < K; kx++) {
                // A 1×1 kernel reads the centre pixels (offset 1 in the window).
                let shift = kx + 1u - K / 2u;
                sum = fma(row[q + shift], (*wv)[t * K * K + ky * K + kx], sum);
            }
            (*acc)[t][q] = sum;
        }
    }
}

// Rows of one run (w = PX): backward_weight gives each lane its own input channel, and as every
// lane then walks the same pixels, the TILE·PX/4 vec4s of dz a step needs (at most 8) are loaded
// one per lane and broadcast.
override ONE_RUN: bool = false;
// Input channels per invocation of backward_weight: 2 on rows of several runs, 1 with ONE_RUN.
override PAIR: u32 = 1u;

// Every lane's v, as seen by every lane.
fn broadcast_lanes(v: vec4<f32>) -> array<vec4<f32>, LANES> {
    return array<vec4<f32>, LANES>(
        subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
        subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

// dw[co,ci,tap] = Σ_n,oy,ox dz[n,co,oy,ox] · x[n,ci,oy+ky−pad,ox+kx−pad].
// One subgroup a workgroup, grid (PAIR input channels, tile of TILE output channels), keeping
// PAIR·TILE·K·K sums a lane; a subgroup sum ends it (no barriers, no workgroup memory). PAIR = 2
// has each dz fetch (2 of a step's 3 fetches) serve both channels' sums (the
// 128² U-Net's weight gradients 1.15-1.25x as fast, each pass alone); each channel keeps its
// sums and rows in variables of its own, added to by one call each, as a loop over the pair is
// not unrolled (so indexed in memory: 1.4x slower when tried). With ONE_RUN (rows of one run,
// w = PX: the deep layers' small maps, where a weight sums over few pixels, 128 on the 4×4
// bridge at batch 8) the grid's x is groups of 8 input channels instead, a lane each: every
// lane walks all rows itself and stores its own sums, no cross-lane sum. The lanes walk the
// image down its rows so each step loads one new window row and keeps the K − 1 before it:
// the columns they walk, one run wide and a band of rows of one image long, are taken 8 at a
// time in order, a lane each, so a group of 8 may hold the end of one row's runs and the start
// of the next image's or band's (whose lanes then are no neighbours: `window_row` zeroes a
// row's ends), and no lane idles but in the last group (rows of 5 runs left 3 of 8 idle, rows
// of 10 every second block 6). CROSSING here means rows whose runs do not divide the 8 lanes:
// the runs beside lanes 0 and 7 may be in the group before or after, so those lanes read them.
@compute @workgroup_size(8, 1, 1)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    // Input channels of this invocation: ci, and ci + 1 with PAIR = 2.
    let raw_ci = select(wid.x * PAIR, wid.x * LANES + lane, ONE_RUN);
    let ci = min(raw_ci, p.cin - 1u);
    let ci_next = min(raw_ci + 1u, p.cin - 1u);
    let co0 = wid.y * TILE;
    let runs = p.w / PX;
    let plane4 = p.h * p.w / 4u;
    // The (band of an image, run) columns the lanes walk, 8 at a time in lane order (all of
    // them with ONE_RUN, whose lanes are channels): enough bands for at least 8 columns.
    let columns_per_band = p.n * runs;
    let bands = select((LANES + columns_per_band - 1u) / columns_per_band, 1u, ONE_RUN);
    let band = (p.h + bands - 1u) / bands;
    let columns = p.n * bands * runs;
    var acc: array<array<f32, 9>, MAX_TILE>;
    var acc_next = acc;
    for (var first = 0u; first < columns; first += select(LANES, 1u, ONE_RUN)) {
        let raw_column = select(first + lane, first, ONE_RUN);
        let lane_valid = raw_column < columns && raw_ci < p.cin;
        let chunk_run = divmod(min(raw_column, columns - 1u), runs);
        let run = chunk_run.y;
        let image_band = divmod(chunk_run.x, bands);
        let n = image_band.x;
        let oy0 = image_band.y * band;
        let xplane = (n * p.cin + ci) * plane4;
        let xplane_next = (n * p.cin + ci_next) * plane4;
        // rows[ky]: the window row ky of the current output row; the first K − 1 carry over.
        var rows: array<array<f32, MAX_PX + 2u>, 3>;
        var rows_next = rows;
        for (var ky = 0u; ky + 1u < K; ky++) {
            rows[ky] = window_row(xplane, oy0, ky, run, runs, lane);
            if (PAIR == 2u) {
                rows_next[ky] = window_row(xplane_next, oy0, ky, run, runs, lane);
            }
        }
        for (var step = 0u; step < band; step++) {
            let oy = oy0 + step;
            let valid = lane_valid && oy < p.h;
            rows[K - 1u] = window_row(xplane, oy, K - 1u, run, runs, lane);
            if (PAIR == 2u) {
                rows_next[K - 1u] = window_row(xplane_next, oy, K - 1u, run, runs, lane);
            }
            let zrow = n * p.cout * plane4 + min(oy, p.h - 1u) * (p.w / 4u) + run * (PX / 4u);
            var dz_lanes: array<vec4<f32>, LANES>;
            if (ONE_RUN) {
                dz_lanes = broadcast_lanes(texel(dz, zrow + min(co0 + lane / (PX / 4u), p.cout - 1u) * plane4 + lane % (PX / 4u)));
            }
            var g: array<array<f32, MAX_PX>, MAX_TILE>;
            for (var t = 0u; t < TILE; t++) {
                var lo: vec4<f32>;
                var hi = vec4<f32>();
                if (ONE_RUN) {
                    lo = dz_lanes[t * (PX / 4u)];
                    if (PX == 8u) {
                        hi = dz_lanes[t * 2u + 1u];
                    }
                } else {
                    let zi = zrow + min(co0 + t, p.cout - 1u) * plane4;
                    lo = texel(dz, zi);
                    if (PX == 8u) {
                        hi = texel(dz, zi + 1u);
                    }
                }
                lo = select(vec4<f32>(), lo, valid);
                hi = select(vec4<f32>(), hi, valid);
                g[t] = array<f32, MAX_PX>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
            }
            accumulate_weight_taps(&acc, &g, &rows);
            if (PAIR == 2u) {
                accumulate_weight_taps(&acc_next, &g, &rows_next);
            }
            for (var ky = 0u; ky + 1u < K; ky++) {
                rows[ky] = rows[ky + 1u];
                if (PAIR == 2u) {
                    rows_next[ky] = rows_next[ky + 1u];
                }
            }
        }
    }
    store_weight_sums(&acc, raw_ci, ci, co0, lane);
    if (PAIR == 2u) {
        store_weight_sums(&acc_next, raw_ci + 1u, ci_next, co0, lane);
    }
}

// acc[t][ky·K + kx] += Σ_q g[t][q] · rows[ky][q + kx + 1 − K/2]: one output row's products.
fn accumulate_weight_taps(acc: ptr<function, array<array<f32, 9>, MAX_TILE>>, g: ptr<function, array<array<f32, MAX_PX>, MAX_TILE>>,
                          rows: ptr<function, array<array<f32, MAX_PX + 2u>, 3>>) {
    for (var t = 0u; t < TILE; t++) {
        for (var ky = 0u; ky < K; ky++) {
            for (var kx = 0u; kx < K; kx++) {
                let shift = kx + 1u - K / 2u;
                var sum = (*acc)[t][ky * K + kx];
                for (var q = 0u; q < PX; q++) {
                    sum = fma((*g)[t][q], (*rows)[ky][q + shift], sum);
                }
                (*acc)[t][ky * K + kx] = sum;
            }
        }
    }
}

// dw[co0 + t][ci] = the sums: each lane's own (ONE_RUN), or their subgroup sum. raw_ci past the
// last channel stores nothing.
fn store_weight_sums(acc: ptr<function, array<array<f32, 9>, MAX_TILE>>, raw_ci: u32, ci: u32, co0: u32, lane: u32) {
    let kk = K * K;
    for (var t = 0u; t < TILE; t++) {
        for (var j = 0u; j < kk; j++) {
            if (ONE_RUN) {
                if (raw_ci < p.cin && co0 + t < p.cout) {
                    dw[((co0 + t) * p.cin + ci) * kk + j] = (*acc)[t][j];
                }
            } else {
                let total = subgroupAdd((*acc)[t][j]);
                if (lane == 0u && raw_ci < p.cin && co0 + t < p.cout) {
                    dw[((co0 + t) * p.cin + ci) * kk + j] = total;
                }
            }
        }
    }
}

// db[c] = Σ_n,pixel dz[n,c,pixel] for planes of a multiple of 4 pixels (ConvParams.h·w), ConvParams.cout
// channels: one subgroup a channel, vec4 loads, a subgroup sum. Also conv_transpose2d's.
@compute @workgroup_size(8, 1, 1)
fn backward_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let c = wid.x;
    let plane4 = p.h * p.w / 4u;
    var acc = vec4<f32>();
    for (var n = 0u; n < p.n; n++) {
        let zplane = (n * p.cout + c) * plane4;
        for (var i = lane; i < plane4; i += LANES) {
            acc += texel(dz, zplane + i);
        }
    }
    let total = subgroupAdd((acc.x + acc.y) + (acc.z + acc.w));
    if (lane == 0u) {
        db[c] = total;
    }
}
