// Inverted dropout: out = in · keep / (1 − p), with keep regenerated from a counter-based hash of
// (seed, step, stream, element index) instead of stored. Forward (x → y) and backward (dy → dx)
// are the same entry point: the mask and the scale are identical.
//
// The hash is pcg4d (Jarzynski & Olano, "Hash Functions for GPU Rendering", JCGT 2020), a
// bijection on four u32 lanes with good statistical quality. A 128-bit key is hashed from
// (seed_lo, seed_hi, step, stream); each element hashes key + (index, 0, 0, 0) and keeps its
// value when the first lane is ≥ threshold = round(p · 2³²). All u32 arithmetic wraps, so the
// Rust reference (ops::dropout::keep) reproduces the mask bit for bit.

struct Params {
    n: u32,
    // round(p · 2³²): elements whose hash is below it are dropped.
    threshold: u32,
    // 1 / (1 − p).
    scale: f32,
    // Distinguishes dropout layers that share one Rng buffer.
    stream: u32,
}

// Rewritten by the host every step, so the dispatch is built once.
struct Rng {
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> rng: Rng;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn pcg4d(v0: vec4<u32>) -> vec4<u32> {
    var v = v0 * 1664525u + 1013904223u;
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    v ^= v >> vec4<u32>(16u);
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    return v;
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n) { return; }
    let key = pcg4d(vec4<u32>(rng.seed_lo, rng.seed_hi, rng.step, p.stream));
    let keep = pcg4d(key + vec4<u32>(i, 0u, 0u, 0u)).x >= p.threshold;
    dst[i] = select(0.0, src[i] * p.scale, keep);
}
