// Prepended to every shader in this folder (see src/kernel.rs).

// Workgroup shape, set per pipeline from KernelSpec.
override WG_X: u32 = 64u;
override WG_Y: u32 = 1u;
override WG_Z: u32 = 1u;

// Linear invocation index of a 1-D launch that grid_1d() may have wrapped into y
// (dispatches allow at most 65535 workgroups a dimension).
fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG_X;
}
