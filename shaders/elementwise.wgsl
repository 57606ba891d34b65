// Element-wise ops over flat f32 tensors: one invocation per element.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// LeakyReLU's slope for x < 0: set by the driver (elementwise.rs, LEAKY_RELU_SLOPE).
override LEAKY_SLOPE: f32;

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = max(a[i], 0.0);
}

// a = ReLU output y, b = dy. The gradient passes where the output was positive; at 0 it is 0.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = select(0.0, b[i], a[i] > 0.0);
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn sigmoid(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    // exp of a large positive argument overflows to +inf and 1/(1+inf) = 0: no NaN.
    out[i] = 1.0 / (1.0 + exp(-a[i]));
}

// a = sigmoid output y, b = dy: dσ/dx = y·(1 − y), from the output so x need not be kept.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn sigmoid_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = b[i] * a[i] * (1.0 - a[i]);
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = a[i] + b[i];
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn leaky_relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = select(LEAKY_SLOPE * a[i], a[i], a[i] > 0.0);
}

// a = LeakyReLU output y, b = dy. y has the sign of x (the slope is positive), so the output
// tells the two sides apart; at 0 the slope side is taken.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn leaky_relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = select(LEAKY_SLOPE * b[i], b[i], a[i] > 0.0);
}
