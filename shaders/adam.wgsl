// Adam / AdamW, one invocation per 4 parameters (a vec4, as elementwise.wgsl), updating param, m
// and v in place.

struct Params {
    // vec4s: the parameters / 4, rounded up.
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Step hyper-parameters, rewritten by the host every step (the learning rate and the bias
// corrections change) without rebuilding the dispatch.
struct Hyper {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    // 1 − β1^t and 1 − β2^t.
    bias_correction1: f32,
    bias_correction2: f32,
    _pad: f32,
}

// true: AdamW, decay applied to the parameter outside the moments; false: Adam with L2, decay
// added to the gradient (and so scaled by the adaptive step).
override DECOUPLED: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> h: Hyper;
@group(0) @binding(2) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> v: array<vec4<f32>>;

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    let w = param[i];
    var g = grad[i];
    if (!DECOUPLED) {
        g += h.weight_decay * w;
    }
    let m1 = h.beta1 * m[i] + (1.0 - h.beta1) * g;
    let v1 = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
    m[i] = m1;
    v[i] = v1;
    let m_hat = m1 / h.bias_correction1;
    let v_hat = v1 / h.bias_correction2;
    var update = m_hat / (sqrt(v_hat) + h.eps);
    if (DECOUPLED) {
        update += h.weight_decay * w;
    }
    param[i] = w - h.lr * update;
}
