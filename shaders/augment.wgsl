// Data augmentation of a batch, image and mask together: one invocation per output pixel of one
// image, looping over its channels, so the source coordinate and bilinear weights are computed
// once and shared by every channel and the mask (which is what keeps the two aligned).
//
// Output pixel (x, y) of image b samples its input at  A·(x, y) + t + elastic(x, y), where
// elastic() interpolates a GRID×GRID field of control-point displacements bilinearly. Samples
// outside the image are mirrored back in (about the edge pixel centres), for the image and the
// mask alike.

struct Params {
    n: u32,
    channels: u32,
    size: u32,
    _pad: u32,
}

// Control points per side of the elastic field (augment::GRID, set from Rust).
override GRID: u32 = 4u;
// Masks of class ids (K-class training) take the nearest pixel's id: interpolating between
// class 1 and class 3 would invent class 2. Binary masks are interpolated, then thresholded.
override NEAREST_MASK: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
// Per image: a (4, row-major), t (2), elastic displacements (2 per control point, row-major).
@group(0) @binding(1) var<storage, read> transforms: array<f32>;
@group(0) @binding(2) var<storage, read> image_in: array<f32>;
@group(0) @binding(3) var<storage, read> mask_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> image_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> mask_out: array<f32>;

// Folds a coordinate into [0, last] by mirroring about 0 and `last` (period 2·last). Mirroring
// the continuous coordinate equals mirroring the pixel indices for bilinear sampling, and keeps
// the sample continuous across the border.
fn mirror(v: f32, last: f32) -> f32 {
    if (last == 0.0) {
        return 0.0;
    }
    let period = 2.0 * last;
    var q = v - period * floor(v / period);
    q = select(q, period - q, q > last);
    // floor(v / period) can round the wrong way by one ulp; the clamp absorbs it.
    return clamp(q, 0.0, last);
}

// Bilinear cell of a coordinate v in [0, len - 1]: lower index, upper index, fraction. The lower
// index stops at len - 2 so v = len - 1 gives fraction 1 (len 1 gives the one pixel).
struct Cell {
    i0: u32,
    i1: u32,
    f: f32,
}

fn cell(v: f32, len: u32) -> Cell {
    let i0 = min(u32(v), max(len, 2u) - 2u);
    return Cell(i0, min(i0 + 1u, len - 1u), v - f32(i0));
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn augment(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    let s = p.size;
    let plane = s * s;
    if (i >= p.n * plane) {
        return;
    }
    let x = i % s;
    let y = (i / s) % s;
    let b = i / plane;
    let base = b * (6u + 2u * GRID * GRID);
    let last = f32(s - 1u);

    // Elastic displacement: control points span the image corner to corner.
    let to_grid = select(0.0, f32(GRID - 1u) / last, s > 1u);
    let gx = cell(f32(x) * to_grid, GRID);
    let gy = cell(f32(y) * to_grid, GRID);
    let e00 = base + 6u + 2u * (gy.i0 * GRID + gx.i0);
    let e01 = base + 6u + 2u * (gy.i0 * GRID + gx.i1);
    let e10 = base + 6u + 2u * (gy.i1 * GRID + gx.i0);
    let e11 = base + 6u + 2u * (gy.i1 * GRID + gx.i1);
    let ex = (1.0 - gy.f) * ((1.0 - gx.f) * transforms[e00] + gx.f * transforms[e01])
        + gy.f * ((1.0 - gx.f) * transforms[e10] + gx.f * transforms[e11]);
    let ey = (1.0 - gy.f) * ((1.0 - gx.f) * transforms[e00 + 1u] + gx.f * transforms[e01 + 1u])
        + gy.f * ((1.0 - gx.f) * transforms[e10 + 1u] + gx.f * transforms[e11 + 1u]);

    let fx = f32(x);
    let fy = f32(y);
    let px = mirror(transforms[base] * fx + transforms[base + 1u] * fy + transforms[base + 4u] + ex, last);
    let py = mirror(transforms[base + 2u] * fx + transforms[base + 3u] * fy + transforms[base + 5u] + ey, last);
    let cx = cell(px, s);
    let cy = cell(py, s);
    // Weights are exactly 0 and 1 at integer coordinates, so flips and 90° turns copy pixels
    // bit for bit.
    let w00 = (1.0 - cy.f) * (1.0 - cx.f);
    let w01 = (1.0 - cy.f) * cx.f;
    let w10 = cy.f * (1.0 - cx.f);
    let w11 = cy.f * cx.f;
    let o00 = cy.i0 * s + cx.i0;
    let o01 = cy.i0 * s + cx.i1;
    let o10 = cy.i1 * s + cx.i0;
    let o11 = cy.i1 * s + cx.i1;

    for (var c = 0u; c < p.channels; c++) {
        let off = (b * p.channels + c) * plane;
        image_out[off + y * s + x] = w00 * image_in[off + o00] + w01 * image_in[off + o01]
            + w10 * image_in[off + o10] + w11 * image_in[off + o11];
    }
    let m = b * plane;
    if (NEAREST_MASK) {
        // The nearest pixel centre is the cell's upper neighbour from a fraction of 0.5 on.
        let nx = select(cx.i0, cx.i1, cx.f >= 0.5);
        let ny = select(cy.i0, cy.i1, cy.f >= 0.5);
        mask_out[m + y * s + x] = mask_in[m + ny * s + nx];
    } else {
        let v = w00 * mask_in[m + o00] + w01 * mask_in[m + o01] + w10 * mask_in[m + o10] + w11 * mask_in[m + o11];
        // Thresholding the interpolated mask keeps it binary and follows the same boundary the
        // image's interpolation moved.
        mask_out[m + y * s + x] = select(0.0, 1.0, v > 0.5);
    }
}
