// 2-D transposed convolution, kernel 2, stride 2 (PyTorch ConvTranspose2d(cin, cout, 2, stride=2)):
//   y[n,co,2i+a,2j+c] = b[co] + Σ_ci x[n,ci,i,j] · w[ci,co,a,c]
// x: N×cin×h×w, y: N×cout×2h×2w, w: [cin][cout][2][2] read as one vec4 (a·2+c) per (ci, co).
// Every output pixel has exactly one input pixel, so each invocation owns one input pixel and
// its 2×2 output block.
//
// forward / backward_input: grid (input-pixel blocks of WG_X, channel tiles, batch); each
// invocation handles TILE channels, so every value it loads feeds TILE multiply-adds. Weight
// reads of a partial last tile are clamped to a valid channel; only valid channels are written.
//
// backward_weight reduces over the N·h·w input pixels. A workgroup holds WG_X / SPLIT groups of
// SPLIT invocations; each group owns the weights of TILE input channels for one output channel
// (a vec4 per (ci, co)), each invocation sums every SPLIT-th pixel in registers, then the
// group's partial sums meet in a tree reduction in workgroup memory. The driver picks SPLIT
// from the pixel count.
// The bias gradient is conv2d.wgsl's backward_bias (a per-channel sum over N·2h·2w).

// Params: ConvParams in common.wgsl (shared by every convolution kernel and its driver).

// Channels per invocation: at most MAX_TILE in forward / backward_input, MAX_WEIGHT_TILE in
// backward_weight.
override TILE: u32 = 4u;
// Invocations that share one reduction in backward_weight; a power of two dividing WG_X.
override SPLIT: u32 = 64u;
const MAX_TILE: u32 = 8u;
const MAX_WEIGHT_TILE: u32 = 4u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<vec4<f32>>;

// Weights of input channel ci0 + t as summed by invocation lid: partial[t * WG_X + lid].
var<workgroup> partial: array<vec4<f32>, WG_X * TILE>;

// Index of y[n, c, 2i, 2j] (the top-left of the 2×2 block) for input pixel (i, j).
fn block_base(n: u32, c: u32, i: u32, j: u32) -> u32 {
    return ((n * p.cout + c) * 2u * p.h + 2u * i) * 2u * p.w + 2u * j;
}

// The 2×2 block of dy at input pixel (i, j) of channel c, in weight order (a·2+c).
fn dy_block(n: u32, c: u32, i: u32, j: u32) -> vec4<f32> {
    let top = block_base(n, c, i, j);
    let bottom = top + 2u * p.w;
    return vec4(dy[top], dy[top + 1u], dy[bottom], dy[bottom + 1u]);
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let plane = p.h * p.w;
    let pix = gid.x;
    if (pix >= plane) { return; }
    let n = gid.z;
    let co0 = gid.y * TILE;
    let last = p.cout - 1u;
    var acc: array<vec4<f32>, MAX_TILE>;
    for (var t = 0u; t < TILE; t++) {
        acc[t] = vec4(bias[min(co0 + t, last)]);
    }
    for (var ci = 0u; ci < p.cin; ci++) {
        let v = x[(n * p.cin + ci) * plane + pix];
        for (var t = 0u; t < TILE; t++) {
            acc[t] += v * wt[ci * p.cout + min(co0 + t, last)];
        }
    }
    let i = pix / p.w;
    let j = pix % p.w;
    for (var t = 0u; t < TILE; t++) {
        let co = co0 + t;
        if (co < p.cout) {
            let top = block_base(n, co, i, j);
            let bottom = top + 2u * p.w;
            y[top] = acc[t].x;
            y[top + 1u] = acc[t].y;
            y[bottom] = acc[t].z;
            y[bottom + 1u] = acc[t].w;
        }
    }
}

// dx[n,ci,i,j] = Σ_co Σ_a,c dy[n,co,2i+a,2j+c] · w[ci,co,a,c]
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let plane = p.h * p.w;
    let pix = gid.x;
    if (pix >= plane) { return; }
    let n = gid.z;
    let ci0 = gid.y * TILE;
    let i = pix / p.w;
    let j = pix % p.w;
    let last = p.cin - 1u;
    var acc: array<f32, MAX_TILE>;
    for (var co = 0u; co < p.cout; co++) {
        let g = dy_block(n, co, i, j);
        for (var t = 0u; t < TILE; t++) {
            acc[t] += dot(g, wt[min(ci0 + t, last) * p.cout + co]);
        }
    }
    for (var t = 0u; t < TILE; t++) {
        let ci = ci0 + t;
        if (ci < p.cin) {
            dx[(n * p.cin + ci) * plane + pix] = acc[t];
        }
    }
}

// dw[ci,co,a,c] = Σ_n,i,j x[n,ci,i,j] · dy[n,co,2i+a,2j+c]
// Grid (input-channel-tile groups, cout); each group computes one output channel's weights for
// TILE (≤ MAX_WEIGHT_TILE) input channels, so each dy block loaded feeds 4·TILE multiply-adds.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ci0 = (wid.x * (WG_X / SPLIT) + lid / SPLIT) * TILE;
    let co = wid.y;
    let slice = lid % SPLIT;
    let plane = p.h * p.w;
    let last = p.cin - 1u;
    var acc: array<vec4<f32>, MAX_WEIGHT_TILE>;
    // Groups past the last input channel only take part in the reduction's barriers.
    if (ci0 < p.cin) {
        for (var n = 0u; n < p.n; n++) {
            for (var pix = slice; pix < plane; pix += SPLIT) {
                let g = dy_block(n, co, pix / p.w, pix % p.w);
                for (var t = 0u; t < TILE; t++) {
                    acc[t] += x[(n * p.cin + min(ci0 + t, last)) * plane + pix] * g;
                }
            }
        }
    }
    for (var t = 0u; t < TILE; t++) {
        partial[t * WG_X + lid] = acc[t];
    }
    workgroupBarrier();
    for (var s = SPLIT / 2u; s > 0u; s >>= 1u) {
        if (slice < s) {
            for (var t = 0u; t < TILE; t++) {
                partial[t * WG_X + lid] += partial[t * WG_X + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (slice == 0u) {
        for (var t = 0u; t < TILE; t++) {
            let ci = ci0 + t;
            if (ci < p.cin) {
                dw[ci * p.cout + co] = partial[t * WG_X + lid];
            }
        }
    }
}
