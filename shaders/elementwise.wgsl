// Element-wise ops over flat f32 tensors: one invocation per 4 elements (a vec4). A vec4 is one
// 16-byte load or store on a GPU, and on lavapipe one texel fetch and one per-lane store instead
// of four of each; the tensor's last vec4 reaches into its buffer's padding (kernel.rs binds
// views in whole 16-byte texels), which is computed and never read.

struct Params {
    // vec4s: the elements / 4, rounded up.
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

// LeakyReLU's slope for x < 0: set by the driver (elementwise.rs, LEAKY_RELU_SLOPE).
override LEAKY_SLOPE: f32;

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = max(a[i], vec4<f32>());
}

// a = ReLU output y, b = dy. The gradient passes where the output was positive; at 0 it is 0.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = select(vec4<f32>(), b[i], a[i] > vec4<f32>());
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
    let y = a[i];
    out[i] = b[i] * y * (1.0 - y);
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
    let x = a[i];
    out[i] = select(LEAKY_SLOPE * x, x, x > vec4<f32>());
}

// a = LeakyReLU output y, b = dy. y has the sign of x (the slope is positive), so the output
// tells the two sides apart; at 0 the slope side is taken.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn leaky_relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    let dy = b[i];
    out[i] = select(LEAKY_SLOPE * dy, dy, a[i] > vec4<f32>());
}
