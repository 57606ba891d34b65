// Batch normalisation over NCHW, per channel: statistics over the N·H·W values of a channel.
// x, y, dy, dx: [n][c][hw]; gamma, beta, running_mean, running_var, dgamma, dbeta: [c];
// stats: [c][2] = (batch mean, biased batch variance), saved by training forward for backward.
//
// batch_stats and backward_sums reduce one channel per workgroup: each invocation sums every
// WG_X-th value of the channel in registers, then the workgroup adds the partial sums in a tree.
// The variance is a second pass over the channel, Σ(x − μ)² after μ is known, because
// E[x²] − E[x]² cancels catastrophically in f32 when |μ| ≫ σ.
// The element-wise entry points (normalize_*, backward_input) use grid_1d + linear_id.

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    eps: f32,
    // running = momentum · running + (1 − momentum) · batch (Keras' convention; 0.99 there).
    momentum: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read> dy: array<f32>;
@group(0) @binding(9) var<storage, read_write> dx: array<f32>;
@group(0) @binding(10) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(11) var<storage, read_write> dbeta: array<f32>;

// One partial per invocation; WG_X is a power of two.
var<workgroup> partial: array<vec2<f32>, WG_X>;

// The workgroup's sum of every invocation's `v`, returned to all of them. Called from uniform
// control flow by every invocation.
fn workgroup_sum(lid: u32, v: vec2<f32>) -> vec2<f32> {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG_X / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Everyone has read the total before a later call overwrites partial[0].
    workgroupBarrier();
    return total;
}

fn channel_count() -> f32 {
    return f32(p.n * p.hw);
}

// Grid (c): batch mean and biased variance of channel wid.x into stats, and the running
// statistics updated in place. The running variance takes the unbiased batch variance
// (× m / (m − 1), m = N·H·W), as PyTorch and TensorFlow's fused kernel do; with m = 1 there is
// no unbiased estimate and the biased one (0) is used.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn batch_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let m = channel_count();
    var sum = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let base = (n * p.c + ch) * p.hw;
        for (var j = lid; j < p.hw; j += WG_X) {
            sum += x[base + j];
        }
    }
    let mean = workgroup_sum(lid, vec2<f32>(sum, 0.0)).x / m;
    var squares = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let base = (n * p.c + ch) * p.hw;
        for (var j = lid; j < p.hw; j += WG_X) {
            let d = x[base + j] - mean;
            squares += d * d;
        }
    }
    let variance = workgroup_sum(lid, vec2<f32>(squares, 0.0)).x / m;
    if (lid == 0u) {
        stats[2u * ch] = mean;
        stats[2u * ch + 1u] = variance;
        let unbiased = variance * m / max(m - 1.0, 1.0);
        running_mean[ch] = p.momentum * running_mean[ch] + (1.0 - p.momentum) * mean;
        running_var[ch] = p.momentum * running_var[ch] + (1.0 - p.momentum) * unbiased;
    }
}

fn normalize(i: u32, ch: u32, mean: f32, variance: f32) {
    y[i] = gamma[ch] * (x[i] - mean) * inverseSqrt(variance + p.eps) + beta[ch];
}

// Training: y = γ·(x − μ_B)/√(σ²_B + ε) + β with the batch statistics from batch_stats.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn normalize_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let ch = (i / p.hw) % p.c;
    normalize(i, ch, stats[2u * ch], stats[2u * ch + 1u]);
}

// Inference: the same with the running statistics.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn normalize_running(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let ch = (i / p.hw) % p.c;
    normalize(i, ch, running_mean[ch], running_var[ch]);
}

// Grid (c): dβ = Σ dy and dγ = Σ dy·x̂ over channel wid.x, x̂ = (x − μ)/√(σ² + ε).
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let mean = stats[2u * ch];
    let rstd = inverseSqrt(stats[2u * ch + 1u] + p.eps);
    var acc = vec2<f32>(0.0);
    for (var n = 0u; n < p.n; n++) {
        let base = (n * p.c + ch) * p.hw;
        for (var j = lid; j < p.hw; j += WG_X) {
            let g = dy[base + j];
            acc += vec2<f32>(g, g * (x[base + j] - mean) * rstd);
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        dbeta[ch] = total.x;
        dgamma[ch] = total.y;
    }
}

// dx = γ/√(σ² + ε) · (dy − (Σdy + x̂·Σdy·x̂)/m): the gradient through x and through the batch
// mean and variance, with Σdy = dβ and Σdy·x̂ = dγ from backward_sums.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let ch = (i / p.hw) % p.c;
    let rstd = inverseSqrt(stats[2u * ch + 1u] + p.eps);
    let xhat = (x[i] - stats[2u * ch]) * rstd;
    dx[i] = gamma[ch] * rstd * (dy[i] - (dbeta[ch] + xhat * dgamma[ch]) / channel_count());
}
