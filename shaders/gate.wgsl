// Attention gating (NCHW): y[n, c, p] = x[n, c, p] · a[n, p], one gate value per pixel broadcast
// over the channels. The input gradient dx = dy · a is the same product with dy in place of x,
// so `apply` serves both; `gate_grad` sums da[n, p] = Σ_c dy[n, c, p] · x[n, c, p].

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x (the gated tensor), or dy when `apply` computes the input gradient.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// One invocation per element of x.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    let image = p.c * p.hw;
    if (i >= p.n * image) { return; }
    let b = i / image;
    out[i] = x[i] * a[b * p.hw + i % p.hw];
}

// One invocation per gate value (n, p); the loop over channels reads along a stride of hw, and
// neighbouring invocations read neighbouring pixels, so the loads coalesce.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn gate_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n * p.hw) { return; }
    let b = i / p.hw;
    let base = b * p.c * p.hw + (i - b * p.hw);
    var sum = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let j = base + c * p.hw;
        sum += dy[j] * x[j];
    }
    out[i] = sum;
}
