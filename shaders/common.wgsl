// Prepended to every shader in this folder (see src/kernel.rs).
//
// Drivers bind buffers by variable name (`kernel::launch` reads the @binding numbers from these
// files), and declare each shader's `Params` with the same fields in the same order, which
// `launch` checks: renaming a binding or a field here means renaming it in the driver.

// Workgroup shape, set per pipeline from KernelSpec.
override WG_X: u32 = 64u;
override WG_Y: u32 = 1u;
override WG_Z: u32 = 1u;

// Linear invocation index of a 1-D launch that grid_1d() may have wrapped into y
// (dispatches allow at most 65535 workgroups a dimension).
fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG_X;
}

// (a / d, a % d) for a < 2^24 (kernel.rs: DIVMOD_LIMIT), d > 0. Integer division by a value that
// is not a constant is a scalar instruction per lane on SIMD CPU adapters (lavapipe); this is one
// vector f32 division. Exact: f32 holds a, the rounded quotient is off by at most one, and the
// remainder corrects it.
fn divmod(a: u32, d: u32) -> vec2<u32> {
    let q = u32(f32(a) / f32(d));
    let r = i32(a) - i32(q * d);
    let under = r < 0;
    let over = r >= i32(d);
    return vec2<u32>(select(select(q, q + 1u, over), q - 1u, under),
                     u32(select(select(r, r - i32(d), over), r + i32(d), under)));
}

// The shape every convolution kernel (conv2d*, conv_transpose2d*) reads; `ConvParams` in
// src/ops/conv2d.rs is its Rust side.
struct ConvParams {
    n: u32,
    cin: u32,
    cout: u32,
    h: u32,
    w: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// A tensor that `kernel::launch` copied into an rgba32float texture array for a binding of this
// type: rows of TEXTURE_ROW texels, layers of TEXTURE_LAYER_ROWS rows (kernel.rs has the same
// constants). The CPU-lane kernels read the operands every lane loads its own values of this
// way. Read-only storage textures, not sampled ones: lavapipe loads a storage texel inline, where
// a sampled texture's textureLoad is a call into a fetch function that looks up the mip level's
// row pitch and offset lane by lane (2–2.4× the cost, `cargo bench --bench load_paths`).
alias TensorTexture = texture_storage_2d_array<rgba32float, read>;
const TEXTURE_ROW: u32 = 1024u;
const TEXTURE_LAYER_ROWS: u32 = 2048u;

// Texel i (four consecutive f32) of such a tensor.
fn texel(t: TensorTexture, i: u32) -> vec4<f32> {
    let row = i / TEXTURE_ROW;
    return textureLoad(t, vec2<u32>(i % TEXTURE_ROW, row % TEXTURE_LAYER_ROWS), row / TEXTURE_LAYER_ROWS);
}

// Element i (one f32) of such a tensor.
fn texel_f32(t: TensorTexture, i: u32) -> f32 {
    return texel(t, i / 4u)[i % 4u];
}
