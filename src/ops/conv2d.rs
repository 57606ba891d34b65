//! 2-D convolution (`shaders/conv2d.wgsl`): 3×3 or 1×1 kernels, stride 1, "same" zero padding,
//! bias, optional fused ReLU; forward and the three gradients.
//!
//! Each gradient is its own entry point with its own driver function, so a faster variant of
//! one can replace it without touching the others. The gpu variant's GEMM drivers
//! (`gemm_forward`, `gemm_weight_gradient`, `launch_split`) also run conv_transpose2d's
//! passes (conv2d.wgsl's `UPSAMPLE`).

use anyhow::{bail, Result};

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::{ints, OnnxNode};
use crate::graph::{Graph, Init, TensorId};
use crate::kernel::{grid_1d, launch, BufferView, ConvParams, Dispatch, KernelSpec, DIVMOD_LIMIT, SCRATCH_FLOATS};
use crate::ops::conv::{self, ConvLayer, Convolution, TapSizes, Taps};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    /// Kernel size: 1 or 3.
    pub k: usize,
    pub relu: bool,
}

/// Most channels one invocation of forward / backward_input computes (`MAX_TILE` in the WGSL):
/// with MAX_PX pixels each that is 32 sums in registers, the most that measured faster.
const MAX_TILE: usize = 4;
/// Most output channels one invocation of the CPU-lane backward_weight reduces for (its `TILE`).
const MAX_WEIGHT_TILE: usize = 4;
/// Lanes of the subgroup the CPU-lane kernels (`conv2d_lanes.wgsl`) are written for.
const LANES: u32 = 8;
/// Most columns and rows of a conv2d_narrow.wgsl block (`MAX_BW`, `MAX_BH`), and most sums a
/// lane (`MAX_SUMS`).
const NARROW_MAX_BW: usize = 8;
const NARROW_MAX_BH: usize = 8;
const NARROW_MAX_SUMS: usize = 32;
/// Most output channels a lane of conv2d_narrow.wgsl's forward computes (`MAX_CHANNELS`), and
/// input channels a lane of its backward_weight reduces for (`MAX_INPUTS`): more reuse the
/// window rows and dz more, but the straight-line code they unroll into costs lavapipe's
/// compiler about a second of start-up for each doubling (BENCHMARKS.md).
const NARROW_MAX_CHANNELS: usize = 4;
const NARROW_MAX_INPUTS: usize = 2;
/// Invocations per workgroup along the pixel axis of forward / backward_input (conv2d's CPU-lane
/// forward uses one subgroup where this does not divide its items).
pub(crate) const WG_PIXELS: u32 = 64;
/// Terms one invocation of a reduction sums in registers before the tree reduction.
const TERMS_PER_INVOCATION: usize = 64;

/// Workgroups below which the GEMMs split K (where it is long) or else shrink their tiles: about
/// one per compute unit of a large GPU (an H100 has 132), so small layers still occupy the
/// whole card.
const GEMM_MIN_WORKGROUPS: usize = 128;
/// Workgroup memory the GEMMs' two tiles may take: WebGPU's default limit, which every adapter
/// offers.
const GEMM_TILE_BYTES: u32 = 16384;
/// Padding after each K row of the GEMMs' tiles (`TILE_PAD` in the WGSL).
const GEMM_TILE_PAD: u32 = 4;
/// K slices each part of a split GEMM sums at least.
const GEMM_MIN_SLICES_PER_SPLIT: usize = 16;

/// The tiling of the gpu variant's GEMMs (conv2d.wgsl): a `tm` × `tn` register block per
/// invocation (`TM`, `TN`) in workgroups of `wg_x` × `wg_y`, so a workgroup computes `rows()` ×
/// `columns()` outputs, walking K in slices of `bk` rows staged in workgroup memory per barrier
/// pair (`BK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GemmTile {
    tm: u32,
    tn: u32,
    wg_x: u32,
    wg_y: u32,
    bk: u32,
}

/// (outputs an invocation, invocations) along one side of a tile holding `n` outputs: `block`
/// × 16 invocations (8: 128, the classic SGEMM tile side; 4: 64) where `n` exceeds 32, else
/// the smallest that holds them, 1 or 2 an invocation below 9 so no invocation computes only
/// padding.
fn tile_side(n: usize, block: u32) -> (u32, u32) {
    match n {
        0..=4 => (1, 4),
        5..=8 => (2, 4),
        9..=16 => (4, 4),
        17..=32 => (4, 8),
        33..=64 => (block, 64 / block),
        _ => (block, 16),
    }
}

impl GemmTile {
    /// forward / backward_input (rows = output channels, columns = pixels of all images): the
    /// rows' side from [`tile_side`], 16 invocations across the columns with `block` pixels
    /// each where the loads allow (4 on narrow tiles).
    fn new(rows: usize, block: u32) -> GemmTile {
        let (tm, wg_y) = tile_side(rows, block);
        let tn = if wg_y >= 8 { block } else { 4 };
        let t = GemmTile { tm, tn, wg_x: 16, wg_y, bk: 16 }.with_slice();
        debug_assert!(t.fits_forward(), "{t:?}");
        t
    }

    /// forward / backward_input's tiling of `rows` × `columns` outputs summed over `k`, and the
    /// parts K is split into: the tile from [`GemmTile::new`], split over K ([`k_splits`]) where
    /// its grid is small and K long, else shrunk until the grid fills the card.
    fn for_forward(rows: usize, columns: usize, k: usize, block: u32) -> (GemmTile, usize) {
        let t = GemmTile::new(rows, block);
        match k_splits(t.workgroups(rows, columns), k.div_ceil(t.bk as usize), rows * columns) {
            1 => (t.filling(rows, columns), 1),
            splits => (t, splits),
        }
    }

    /// While the grid has fewer than GEMM_MIN_WORKGROUPS workgroups the tile shrinks, the
    /// larger side first, down to 8 × 4 invocations of 4 pixels.
    fn filling(self, rows: usize, columns: usize) -> GemmTile {
        let mut t = self;
        while t.workgroups(rows, columns) < GEMM_MIN_WORKGROUPS {
            match t.shrunk() {
                Some(smaller) => t = smaller,
                None => break,
            }
        }
        t
    }

    /// backward_weight (rows = output channels, columns = input channels × taps, K = pixels in
    /// slices along a row of `width`): both sides from [`tile_side`]; K slices of 8 on rows of
    /// up to 8 pixels, which a 16-pixel slice would half pad. The driver splits K instead of
    /// shrinking the tile.
    fn for_weight_gradient(rows: usize, columns: usize, width: usize, block: u32) -> GemmTile {
        let ((tm, wg_y), (tn, wg_x)) = (tile_side(rows, block), tile_side(columns, block));
        let t = GemmTile { tm, tn, wg_x, wg_y, bk: 16 }.with_slice();
        GemmTile { bk: if width <= 8 { 8 } else { t.bk }, ..t }
    }

    /// The next smaller forward tile: half the workgroup along the larger side of the tile (then
    /// the other), else half the pixel block; `None` at 8 × 4 invocations of 4 pixels.
    fn shrunk(&self) -> Option<GemmTile> {
        let halve_x = GemmTile { wg_x: self.wg_x / 2, ..*self };
        let halve_y = GemmTile { wg_y: self.wg_y / 2, ..*self };
        let halve_tn = GemmTile { tn: self.tn / 2, ..*self };
        let sides = if self.columns() >= self.rows() { [halve_x, halve_y] } else { [halve_y, halve_x] };
        sides
            .into_iter()
            .chain([halve_tn])
            .map(GemmTile::with_slice)
            .find(|t| t.wg_x >= 8 && t.wg_y >= 4 && t.tn >= 4 && t.fits_forward())
    }

    /// The same tile with the deepest K slice (16 or 8) whose two tiles fit GEMM_TILE_BYTES.
    fn with_slice(self) -> GemmTile {
        let bk = if self.tile_bytes(16) <= GEMM_TILE_BYTES { 16 } else { 8 };
        GemmTile { bk, ..self }
    }

    /// Workgroup memory of the two tiles (padded rows) at a K slice of `bk`.
    fn tile_bytes(&self, bk: u32) -> u32 {
        bk * (self.rows() + self.columns() + 2 * GEMM_TILE_PAD) * 4
    }

    /// What forward's loads need (every invocation loads whole columns of the im2col tile), and
    /// what every GEMM needs: blocks within the WGSL's MAX_TM × MAX_TN, tiles within
    /// GEMM_TILE_BYTES.
    fn fits_forward(&self) -> bool {
        self.wg_y.is_multiple_of(self.tn) && self.bk.is_multiple_of(self.wg_y / self.tn) && self.fits()
    }
    fn fits(&self) -> bool {
        self.tm <= 8 && self.tn <= 8 && self.wg_x * self.wg_y <= 256 && self.tile_bytes(self.bk) <= GEMM_TILE_BYTES
    }
    fn rows(&self) -> u32 {
        self.tm * self.wg_y
    }
    fn columns(&self) -> u32 {
        self.tn * self.wg_x
    }
    fn workgroups(&self, rows: usize, columns: usize) -> usize {
        rows.div_ceil(self.rows() as usize) * columns.div_ceil(self.columns() as usize)
    }

    /// The spec of `entry` in conv2d.wgsl with this tiling.
    fn spec(&self, entry: &'static str, k: usize) -> KernelSpec {
        KernelSpec::new("conv2d", entry, [self.wg_x, self.wg_y, 1])
            .constant("K", k as f64)
            .constant("TM", self.tm as f64)
            .constant("TN", self.tn as f64)
            .constant("BK", self.bk as f64)
            .workgroup_memory(self.tile_bytes(self.bk))
    }
}

/// How many parts a GEMM splits K (`slices` slices) into for an output of `tiles` tiles and
/// `outputs` values: 1 (no split) where the tiles alone make GEMM_MIN_WORKGROUPS workgroups,
/// else enough for about twice that, each part at least GEMM_MIN_SLICES_PER_SPLIT slices, the
/// partial sums within the device's scratch, SCRATCH_FLOATS (1 where that leaves fewer than 2).
fn k_splits(tiles: usize, slices: usize, outputs: usize) -> usize {
    if tiles >= GEMM_MIN_WORKGROUPS {
        return 1;
    }
    let splits =
        (2 * GEMM_MIN_WORKGROUPS).div_ceil(tiles).min(slices / GEMM_MIN_SLICES_PER_SPLIT).min(SCRATCH_FLOATS / outputs);
    splits.max(1)
}

/// The gpu variant's `forward` GEMM of conv2d.wgsl for `params` (rows: its cout; columns: its
/// n·h·w pixels; K: its cin·k·k), the weights read transposed with `transpose`, adding the bias
/// with `bias`: the spec, the grid and the parts K is split into ([`GemmTile::for_forward`]).
pub(crate) fn gemm_forward(
    gpu: &Gpu,
    k: usize,
    params: &ConvParams,
    transpose: bool,
    bias: bool,
) -> (KernelSpec, [u32; 3], usize) {
    let (rows, pixels) = (params.cout as usize, params.n as usize * params.h as usize * params.w as usize);
    let (t, splits) = GemmTile::for_forward(rows, pixels, params.cin as usize * k * k, gpu.gemm_block());
    let spec = t
        .spec("forward", k)
        .constant("TRANSPOSE", if transpose { 1.0 } else { 0.0 })
        .constant("BIAS", if bias { 1.0 } else { 0.0 })
        .constant("SPLITS", splits as f64);
    let [x, z, _] = grid_1d(pixels.div_ceil(t.columns() as usize), 1);
    let z = if splits > 1 { splits as u32 } else { z };
    (spec, [x, rows.div_ceil(t.rows() as usize) as u32, z], splits)
}

/// The gpu variant's `backward_weight` GEMM of conv2d.wgsl for `params` (rows: its cout, read
/// from dz; columns: its cin·k·k, from im2col of x; K: its n·h·w pixels in slices along rows):
/// the spec, the grid and the parts K is split into ([`k_splits`]).
pub(crate) fn gemm_weight_gradient(gpu: &Gpu, k: usize, params: &ConvParams) -> (KernelSpec, [u32; 3], usize) {
    let (rows, columns) = (params.cout as usize, params.cin as usize * k * k);
    let t = GemmTile::for_weight_gradient(rows, columns, params.w as usize, gpu.gemm_block());
    let slices = params.n as usize * params.h as usize * (params.w as usize).div_ceil(t.bk as usize);
    let splits = k_splits(t.workgroups(rows, columns), slices, rows * columns);
    let spec = t.spec("backward_weight", k).constant("SPLITS", splits as f64);
    let grid = [columns.div_ceil(t.columns() as usize) as u32, rows.div_ceil(t.rows() as usize) as u32, splits as u32];
    (spec, grid, splits)
}

/// `gemm` (a GEMM entry point of conv2d.wgsl with its `grid`), writing `out` itself or, split
/// over K into `splits` parts, each part's output into its slice of a scratch buffer bound in
/// its place, then `sum_splits` adding them into `out` (bound as `y`).
pub(crate) fn launch_split(
    gpu: &Gpu,
    params: &ConvParams,
    (gemm, grid, splits): (KernelSpec, [u32; 3], usize),
    inputs: &[(&str, &BufferView, usize)],
    (out_name, out, len): (&str, &BufferView, usize),
) -> Result<Vec<Dispatch>> {
    if splits == 1 {
        return Ok(vec![launch(gpu, &gemm, params, &[inputs, &[(out_name, out, len)]].concat(), grid)?]);
    }
    let parts = gpu.scratch(splits * len)?;
    // forward's parts are summed with its epilogue (bias, ReLU), which reads its bias binding;
    // backward_weight's without, any buffer filling that binding in the layout.
    let epilogue = gemm.entry == "forward";
    let bias = inputs.iter().copied().find(|b| b.0 == "bias").unwrap_or(("bias", inputs[0].1, 0));
    // The GEMM's constants that sum_splits reads (its parts, K for its length, the epilogue's),
    // not its tiling: one summing pipeline serves every tile.
    let read = ["SPLITS", "K", "TRANSPOSE", "BIAS", "RELU", "UPSAMPLE"];
    let sum = gemm.constants.iter().filter(|(name, _)| read.contains(name)).fold(
        KernelSpec::new("conv2d", "sum_splits", [WG_PIXELS, 1, 1])
            .constant("EPILOGUE", if epilogue { 1.0 } else { 0.0 }),
        |sum, &(name, value)| sum.constant(name, value),
    );
    let sum_bindings = [("split_sums", &parts, splits * len), bias, ("y", out, len)];
    Ok(vec![
        launch(gpu, &gemm, params, &[inputs, &[(out_name, &parts, splits * len)]].concat(), grid)?,
        launch(gpu, &sum, params, &sum_bindings, grid_1d(len, WG_PIXELS))?,
    ])
}

/// Channels per invocation (a `TILE` override): `max`, or fewer when there are fewer channels, so
/// e.g. cin = 1 spends no work on clamped duplicate channels.
pub(crate) fn channel_tile(channels: usize, max: usize) -> usize {
    channels.next_power_of_two().min(max)
}

/// How a reduction of `terms` values into each of `outputs` outputs is spread over workgroups
/// (the `SPLIT` scheme of conv2d.wgsl's backward_bias): `split` invocations share one output, a
/// workgroup holds `workgroup / split` outputs, and the grid has `groups` workgroups. Each
/// invocation keeps one f32 partial sum in workgroup memory.
struct Reduction {
    workgroup: u32,
    split: u32,
    groups: u32,
}

impl Reduction {
    fn new(outputs: usize, terms: usize) -> Reduction {
        // Powers of two for the tree reduction; 64 to 256 invocations (WebGPU's default limit).
        let per_invocation = (terms / TERMS_PER_INVOCATION).max(1);
        let split = (1usize << per_invocation.ilog2()).min(256);
        let workgroup = (outputs * split).next_power_of_two().clamp(64, 256);
        let groups = outputs.div_ceil(workgroup / split);
        Reduction { workgroup: workgroup as u32, split: split as u32, groups: groups as u32 }
    }

    fn spec(&self, shader: &'static str, entry: &'static str) -> KernelSpec {
        KernelSpec::new(shader, entry, [self.workgroup, 1, 1])
            .constant("SPLIT", self.split as f64)
            .workgroup_memory(self.workgroup * 4)
    }
}

/// `db[c] = Σ_n,pixel dz[n, c, pixel]` for an `n × channels × plane` tensor: the bias gradient
/// of both conv2d and conv_transpose2d.
pub(crate) fn channel_sum(
    gpu: &Gpu,
    n: usize,
    channels: usize,
    plane: usize,
    dz: &BufferView,
    db: &BufferView,
) -> Result<Dispatch> {
    let bindings = [("dz", dz, n * channels * plane), ("db", db, channels)];
    // A 1 × plane image: backward_bias only reads the pixel count h·w.
    let params = ConvParams { n: n as u32, cin: 0, cout: channels as u32, h: 1, w: plane as u32 };
    if plane.is_multiple_of(4) && gpu.lane_kernels() {
        // One 8-lane subgroup a channel, reading vec4s.
        let spec = KernelSpec::new("conv2d_lanes", "backward_bias", [LANES, 1, 1]);
        return launch(gpu, &spec, &params, &bindings, [channels as u32, 1, 1]);
    }
    let r = Reduction::new(channels, n * plane);
    let spec = r.spec("conv2d", "backward_bias");
    launch(gpu, &spec, &params, &bindings, [r.groups, 1, 1])
}

impl Conv2d {
    pub fn weight_len(&self) -> usize {
        self.cout * self.cin * self.k * self.k
    }
    pub fn input_len(&self) -> usize {
        self.n * self.cin * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.n * self.cout * self.h * self.w
    }

    /// Forward multiply-adds ×2 (padding taps included).
    pub fn flops(&self) -> u64 {
        2 * (self.output_len() * self.cin * self.k * self.k) as u64
    }

    fn params(&self) -> Result<ConvParams> {
        if self.k != 1 && self.k != 3 {
            bail!("conv2d supports 1×1 and 3×3 kernels, not {0}×{0}", self.k);
        }
        if [self.n, self.cin, self.cout, self.h, self.w].contains(&0) {
            bail!("conv2d with an empty dimension: {self:?}");
        }
        Ok(ConvParams {
            n: self.n as u32,
            cin: self.cin as u32,
            cout: self.cout as u32,
            h: self.h as u32,
            w: self.w as u32,
        })
    }

    /// The run of pixels an invocation of the CPU-lane kernels computes (their `PX`: whole vec4s,
    /// so rows of a multiple of 8 or 4 pixels), if they apply on `gpu`.
    fn lane_run(&self, gpu: &Gpu) -> Option<usize> {
        let px = [8, 4].into_iter().find(|px| self.w.is_multiple_of(*px))?;
        (gpu.lane_kernels() && self.n * self.h * self.w < DIVMOD_LIMIT).then_some(px)
    }

    /// The `CROSSING` override of the CPU-lane kernels: 1 when a row of `px`-pixel runs can span
    /// two subgroups (its run count does not divide the 8 lanes).
    fn rows_cross_subgroups(&self, px: usize) -> f64 {
        if (LANES as usize).is_multiple_of(self.w / px) {
            0.0
        } else {
            1.0
        }
    }

    /// Output rows one invocation of the CPU-lane forward computes (its `ROWS` override): 4, else
    /// 2, where they share window rows (3×3 kernels) and divide the height; else 1.
    fn rows_per_invocation(&self) -> usize {
        match self.k {
            3 => [4, 2].into_iter().find(|rows| self.h.is_multiple_of(*rows)).unwrap_or(1),
            _ => 1,
        }
    }

    /// The output block of conv2d_narrow.wgsl's forward, (rows `BH`, columns `BW`), and the
    /// chunk its backward_weight walks rows in (`BW`): each row in equal blocks of at most
    /// NARROW_MAX_BW columns, the rows in equal blocks of at most NARROW_MAX_BH rows and
    /// NARROW_MAX_SUMS outputs.
    fn narrow_block(&self) -> (usize, usize) {
        let bw = self.w.div_ceil(self.w.div_ceil(NARROW_MAX_BW));
        let bh = self.h.div_ceil(self.h.div_ceil((NARROW_MAX_SUMS / bw).min(NARROW_MAX_BH)));
        (bh, bw)
    }

    /// The `forward` entry point computing `channels` output channels, with TRANSPOSE for the
    /// input gradient: the spec, the grid and the parts K is split into. CPU lanes: (image, row,
    /// run of PX pixels) blocks × channel tiles, or on rows that are no whole runs
    /// (conv2d_narrow.wgsl) blocks of pixels × groups of 8 channels; gpu variant: the GEMM's
    /// pixel tiles × channel tiles ([`GemmTile`]), split over K ([`k_splits`]) where they are
    /// few and K is long, else shrunk. All wrap the pixel axis into z where there is no split.
    fn tiled(&self, gpu: &Gpu, params: &ConvParams, transpose: bool) -> (KernelSpec, [u32; 3], usize) {
        let channels = params.cout as usize;
        let tile = channel_tile(channels, MAX_TILE);
        let transpose_constant = if transpose { 1.0 } else { 0.0 };
        if let Some(px) = self.lane_run(gpu) {
            // Workgroups of one subgroup where 64-invocation ones would leave lanes on clamped
            // copies of the last item (the 4×4 bridge at batch 8: 8 items); 64 elsewhere, as
            // more, smaller workgroups measured slower on large maps.
            let rows = self.rows_per_invocation();
            let items = self.n * self.h / rows * self.w / px;
            let wg = if items.is_multiple_of(WG_PIXELS as usize) { WG_PIXELS } else { LANES };
            let spec = KernelSpec::new("conv2d_lanes", "forward", [wg, 1, 1])
                .constant("K", self.k as f64)
                .constant("TILE", tile as f64)
                .constant("PX", px as f64)
                .constant("ROWS", rows as f64)
                .constant("CROSSING", self.rows_cross_subgroups(px))
                .constant("TRANSPOSE", transpose_constant);
            // Channel tiles along x: lavapipe runs them back to back on one block of rows.
            let [y, z, _] = grid_1d(items, wg);
            return (spec, [channels.div_ceil(tile) as u32, y, z], 1);
        }
        if gpu.lane_kernels() {
            let (bh, bw) = self.narrow_block();
            // Up to 4 channels a lane: each window row fetched serves them all.
            let per_lane = channels.div_ceil(LANES as usize).min(NARROW_MAX_CHANNELS);
            let spec = KernelSpec::new("conv2d_narrow", "forward", [LANES, 1, 1])
                .constant("K", self.k as f64)
                .constant("BH", bh as f64)
                .constant("BW", bw as f64)
                .constant("CHANNELS", per_lane as f64)
                .constant("TRANSPOSE", transpose_constant);
            let [y, z, _] = grid_1d(self.n * self.h.div_ceil(bh) * self.w.div_ceil(bw), 1);
            return (spec, [channels.div_ceil(per_lane * LANES as usize) as u32, y, z], 1);
        }
        // The input gradient adds no bias.
        gemm_forward(gpu, self.k, params, transpose, !transpose)
    }

    /// db from dz (pre-activation gradient).
    pub fn backward_bias(&self, gpu: &Gpu, dz: &BufferView, db: &BufferView) -> Result<Dispatch> {
        self.params()?;
        channel_sum(gpu, self.n, self.cout, self.h * self.w, dz, db)
    }
}

impl Convolution for Conv2d {
    const NAME: &'static str = "Conv2d";
    fn input_len(&self) -> usize {
        Conv2d::input_len(self)
    }
    fn weight_len(&self) -> usize {
        Conv2d::weight_len(self)
    }
    fn flops(&self) -> u64 {
        Conv2d::flops(self)
    }
    fn fused_relu(&self) -> bool {
        self.relu
    }

    /// y = act(conv(x, w) + b); act = ReLU when self.relu.
    fn forward(
        &self,
        gpu: &Gpu,
        x: &BufferView,
        w: &BufferView,
        b: &BufferView,
        y: &BufferView,
    ) -> Result<Vec<Dispatch>> {
        let params = self.params()?;
        let (spec, grid, splits) = self.tiled(gpu, &params, false);
        let spec = spec.constant("RELU", if self.relu { 1.0 } else { 0.0 });
        let inputs = [("x", x, self.input_len()), ("wt", w, self.weight_len()), ("bias", b, self.cout)];
        launch_split(gpu, &params, (spec, grid, splits), &inputs, ("y", y, self.output_len()))
    }

    /// dx from dz, the gradient w.r.t. the PRE-activation output (the graph applies
    /// relu_backward first when relu is fused): the forward kernel over dz with the kernel
    /// transposed, so ConvParams swaps cin and cout.
    fn backward_input(&self, gpu: &Gpu, dz: &BufferView, w: &BufferView, dx: &BufferView) -> Result<Vec<Dispatch>> {
        let params = ConvParams { cin: self.cout as u32, cout: self.cin as u32, ..self.params()? };
        // The transposed kernel reads no bias; the weights fill its binding in the layout.
        let inputs = [("x", dz, self.output_len()), ("wt", w, self.weight_len()), ("bias", w, 0)];
        launch_split(gpu, &params, self.tiled(gpu, &params, true), &inputs, ("y", dx, self.input_len()))
    }

    /// dw from x and dz (pre-activation gradient), summing over N·H·W: the CPU-lane kernel, or
    /// the GEMM (`gemm_weight_gradient`) split over K where its output has few tiles
    /// (then two dispatches: the parts, and their sum).
    fn backward_weight(&self, gpu: &Gpu, x: &BufferView, dz: &BufferView, dw: &BufferView) -> Result<Vec<Dispatch>> {
        let params = self.params()?;
        let bindings = [("x", x, self.input_len()), ("dz", dz, self.output_len()), ("dw", dw, self.weight_len())];
        if let Some(px) = self.lane_run(gpu) {
            let tile = channel_tile(self.cout, MAX_WEIGHT_TILE);
            // One 8-lane subgroup per (2 input channels, output channel tile), no reduction tree;
            // on rows of one run, per (8 input channels, output channel tile), a lane a channel.
            let runs = self.w / px;
            // Input channels a lane reduces for (PAIR), and a workgroup.
            let (pair, channels) = if runs == 1 { (1, LANES as usize) } else { (2, 2) };
            let spec = KernelSpec::new("conv2d_lanes", "backward_weight", [LANES, 1, 1])
                .constant("K", self.k as f64)
                .constant("TILE", tile as f64)
                .constant("PX", px as f64)
                .constant("CROSSING", self.rows_cross_subgroups(px))
                .constant("ONE_RUN", if runs == 1 { 1.0 } else { 0.0 })
                .constant("PAIR", pair as f64);
            let grid = [self.cin.div_ceil(channels) as u32, self.cout.div_ceil(tile) as u32, 1];
            return Ok(vec![launch(gpu, &spec, &params, &bindings, grid)?]);
        }
        if gpu.lane_kernels() {
            // Rows that are no whole runs: lanes hold input channels, two a lane where there
            // are more than 8 (each chunk of dz fetched serves both).
            let tile = channel_tile(self.cout, MAX_WEIGHT_TILE);
            let inputs = self.cin.div_ceil(LANES as usize).min(NARROW_MAX_INPUTS);
            let spec = KernelSpec::new("conv2d_narrow", "backward_weight", [LANES, 1, 1])
                .constant("K", self.k as f64)
                .constant("TILE", tile as f64)
                .constant("INPUTS", inputs as f64)
                .constant("BW", self.narrow_block().1 as f64);
            let grid = [self.cin.div_ceil(inputs * LANES as usize) as u32, self.cout.div_ceil(tile) as u32, 1];
            return Ok(vec![launch(gpu, &spec, &params, &bindings, grid)?]);
        }
        launch_split(gpu, &params, gemm_weight_gradient(gpu, self.k, &params), &bindings[..2], bindings[2])
    }
    fn backward_bias(&self, gpu: &Gpu, dy: &BufferView, db: &BufferView) -> Result<Dispatch> {
        Conv2d::backward_bias(self, gpu, dy, db)
    }
    fn reference_forward(&self, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        reference::forward(self, x, w, b)
    }

    /// A fused ReLU is a Relu node after the Conv.
    fn onnx(&self, onnx: &mut OnnxNode, inputs: [String; 3]) -> String {
        let pad = (self.k / 2) as i64;
        let attrs = vec![ints("kernel_shape", &[self.k as i64; 2]), ints("pads", &[pad; 4]), ints("strides", &[1, 1])];
        if !self.relu {
            return onnx.single("Conv", &inputs, attrs);
        }
        let name = onnx.name().to_string();
        let linear = format!("{name}.linear");
        onnx.push("Conv", &linear, &inputs, &linear, attrs);
        onnx.push("Relu", &format!("{name}.relu"), &[linear], &name, vec![]);
        name
    }
}

impl Graph {
    /// `k`×`k` convolution, padding "same", with bias and optional fused ReLU.
    pub fn conv(&mut self, name: &str, x: TensorId, cout: usize, k: usize, relu: bool) -> TensorId {
        let [n, cin, h, w] = self.shape(x);
        let s = Conv2d { n, cin, cout, h, w, k, relu };
        let wp = self.param(
            format!("{name}.weight"),
            vec![cout, cin, k, k],
            if relu {
                Init::HeUniform { fan_in: cin * k * k }
            } else {
                Init::GlorotUniform { fan_in: cin * k * k, fan_out: cout * k * k }
            },
        );
        let bp = self.param(format!("{name}.bias"), vec![cout], Init::Zeros);
        self.push(name, ConvLayer { x, w: wp, b: bp, s }, [n, cout, h, w])
    }
}

impl Taps for Conv2d {
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let s = self;
        let (plane, pad) = (s.h * s.w, s.k / 2);
        // Flat index of input pixel `(oy + ky - pad, ox + kx - pad)` within one plane, if inside.
        let tap = |oy: usize, ox: usize, ky: usize, kx: usize| -> Option<usize> {
            let (iy, ix) = ((oy + ky).checked_sub(pad)?, (ox + kx).checked_sub(pad)?);
            (iy < s.h && ix < s.w).then_some(iy * s.w + ix)
        };
        for n in 0..s.n {
            for co in 0..s.cout {
                for oy in 0..s.h {
                    for ox in 0..s.w {
                        let yi = (n * s.cout + co) * plane + oy * s.w + ox;
                        for ci in 0..s.cin {
                            for ky in 0..s.k {
                                for kx in 0..s.k {
                                    if let Some(p) = tap(oy, ox, ky, kx) {
                                        let xi = (n * s.cin + ci) * plane + p;
                                        let wi = ((co * s.cin + ci) * s.k + ky) * s.k + kx;
                                        f(yi, xi, wi);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    fn sizes(&self) -> TapSizes {
        let (input, weight, output) = (self.input_len(), self.weight_len(), self.output_len());
        TapSizes { input, weight, output, out_channels: self.cout, out_plane: self.h * self.w }
    }
}

pub mod reference {
    use super::Conv2d;
    use crate::ops::conv::tap_reference;
    pub use tap_reference::{backward, backward_bias, backward_input, backward_weight};

    /// Applies ReLU if `s.relu`.
    pub fn forward(s: &Conv2d, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = tap_reference::forward(s, x, w, b);
        if s.relu {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        y
    }
}

/// Forward (with the fused ReLU if any) and all three gradients of `s` against the reference.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, s: &Conv2d) -> Result<Vec<CaseReport>> {
    let relu = if s.relu { " relu" } else { "" };
    let shape = format!("{}->{} k{}{relu}", check::shape4(s.n, s.cin, s.h, s.w), s.cout, s.k);
    conv::check(gpu, rng, s, "conv2d", &shape)
}

/// The awkward shapes: odd sizes, batch 1 and 2, cin 1, channel counts that leave a partial
/// channel tile or reduction workgroup, both kernel sizes, with and without ReLU, and reductions
/// from 1 to 128 invocations an output, in one workgroup or several.
pub const CHECK_SHAPES: &[Conv2d] = &[
    Conv2d { n: 1, cin: 3, cout: 5, h: 17, w: 23, k: 3, relu: true },
    Conv2d { n: 2, cin: 33, cout: 5, h: 9, w: 7, k: 3, relu: false },
    Conv2d { n: 2, cin: 5, cout: 33, h: 8, w: 8, k: 1, relu: false },
    Conv2d { n: 1, cin: 1, cout: 3, h: 17, w: 23, k: 3, relu: true },
    Conv2d { n: 2, cin: 3, cout: 2, h: 61, w: 67, k: 3, relu: false },
    // Rows of whole 8-pixel runs (the CPU-lane kernel): rows that span two subgroups, rows of 3
    // runs that start mid-subgroup (each at heights where an invocation computes 1, 2 and 4
    // output rows), one run a row.
    Conv2d { n: 1, cin: 3, cout: 5, h: 5, w: 136, k: 3, relu: true },
    Conv2d { n: 1, cin: 3, cout: 5, h: 6, w: 136, k: 3, relu: false },
    Conv2d { n: 1, cin: 4, cout: 3, h: 8, w: 136, k: 3, relu: true },
    Conv2d { n: 2, cin: 5, cout: 6, h: 9, w: 24, k: 3, relu: false },
    Conv2d { n: 2, cin: 5, cout: 6, h: 10, w: 24, k: 3, relu: true },
    Conv2d { n: 1, cin: 4, cout: 6, h: 12, w: 24, k: 3, relu: false },
    Conv2d { n: 3, cin: 7, cout: 9, h: 7, w: 8, k: 3, relu: true },
    Conv2d { n: 2, cin: 6, cout: 3, h: 5, w: 16, k: 1, relu: false },
    Conv2d { n: 3, cin: 9, cout: 7, h: 4, w: 4, k: 3, relu: true },
    Conv2d { n: 1, cin: 4, cout: 5, h: 3, w: 12, k: 3, relu: false },
    // Small maps: rows of one run at either run length, where the lane kernel's weight gradient
    // gives each lane its own input channel (8 a subgroup, the last group partial), one row,
    // batch 1 and 3; two runs a row; and maps too narrow for the lane kernels (1×1, 2×2, 3×5),
    // which the CPU variant computes with conv2d_narrow.wgsl (as the odd widths above: 7 with
    // 33 channels, four a lane in the input gradient and two in the weight gradient, each
    // leaving a last group of one; 67 in blocks of 4 × 8 pixels; and a 1×1 kernel on 7 columns
    // below).
    Conv2d { n: 1, cin: 11, cout: 6, h: 1, w: 4, k: 3, relu: false },
    Conv2d { n: 3, cin: 10, cout: 5, h: 2, w: 8, k: 3, relu: true },
    Conv2d { n: 3, cin: 17, cout: 3, h: 3, w: 4, k: 1, relu: false },
    Conv2d { n: 1, cin: 5, cout: 9, h: 2, w: 32, k: 3, relu: false },
    Conv2d { n: 3, cin: 6, cout: 4, h: 1, w: 1, k: 3, relu: true },
    Conv2d { n: 1, cin: 7, cout: 5, h: 2, w: 2, k: 3, relu: false },
    Conv2d { n: 3, cin: 4, cout: 6, h: 3, w: 5, k: 3, relu: false },
    Conv2d { n: 2, cin: 9, cout: 17, h: 3, w: 7, k: 1, relu: true },
    // 64 items of four rows' runs of 8 pixels: the lane forward's 64-invocation workgroups (the
    // others use 8).
    Conv2d { n: 2, cin: 3, cout: 5, h: 32, w: 32, k: 3, relu: true },
    // The gpu variant's GEMM (8 × 8 blocks on wide layers, the default) with partial tiles in
    // every dimension: forward 32 × 32 tiles of 8 × 4 blocks (2 row tiles, the last of 5
    // channels; 10 column tiles, the last of 9 pixels; 4 K slices, the last of 15), its input
    // gradient 8-channel tiles of 2 a block holding 7 channels and 21 K slices; then 64 × 64
    // tiles of 8 × 8 blocks (2 × 64 tiles, the last row tile of 1 channel and the last column
    // tile of 63 pixels), its input gradient 4 × 32 tiles of one channel a block; then the
    // 128 × 128 tile of 256 invocations with K slices of 8 (2 × 65 tiles, the last row tile of
    // 1 channel and the last column tile of 64 pixels; 4 K slices, the last of 3).
    Conv2d { n: 3, cin: 7, cout: 37, h: 9, w: 11, k: 3, relu: true },
    Conv2d { n: 1, cin: 2, cout: 65, h: 63, w: 65, k: 3, relu: false },
    Conv2d { n: 1, cin: 3, cout: 129, h: 64, w: 129, k: 3, relu: true },
    // The gpu variant's GEMM split over K (one tile of output each way): forward in 2 parts of
    // 22 and 21 slices of 16 (the last partial), its input gradient in 4 of 17 slices of 8.
    Conv2d { n: 2, cin: 75, cout: 60, h: 5, w: 7, k: 3, relu: true },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every forward tiling the GEMM driver picks, at either register block, meets what the
    /// WGSL's loads assume, stays within WebGPU's default limits, is no larger than the layer
    /// needs where the layer is small, and splits K only where the unshrunk grid is small.
    #[test]
    fn gemm_tiles_fit_the_kernel_and_the_layer() {
        for block in [4, 8] {
            for rows in (1..=80).chain([128, 256, 512, 1024]) {
                for columns in [1, 3, 17, 64, 100, 512, 4095, 8192, 131072, 1 << 22] {
                    for k in [9, 27, 288, 4608] {
                        let (t, splits) = GemmTile::for_forward(rows, columns, k, block);
                        let why = format!("block {block}, {rows} rows × {columns} columns, K {k}: {t:?} {splits}");
                        assert!(t.fits_forward(), "{why}");
                        assert!(t.wg_x * t.wg_y <= 256 && t.tile_bytes(t.bk) <= 16384, "{why}");
                        assert!(t.rows() as usize <= rows.next_power_of_two().max(4), "{why}");
                        let workgroups = t.workgroups(rows, columns);
                        if splits > 1 {
                            // A split keeps the full tile and gives each part enough of K.
                            assert_eq!(t, GemmTile::new(rows, block), "{why}");
                            assert!(k.div_ceil(t.bk as usize) / splits >= GEMM_MIN_SLICES_PER_SPLIT, "{why}");
                            assert!(workgroups < GEMM_MIN_WORKGROUPS, "{why}");
                        }
                        // Tiles shrink only while the grid is small, so they never multiply it
                        // past need.
                        let shrunk = t.wg_x < 16 || (t.rows() as usize) < rows.min(64);
                        assert!(!shrunk || workgroups < GEMM_MIN_WORKGROUPS * 4, "{why}: {workgroups} workgroups");
                    }
                    // The weight gradient's tiles (columns = input channels × taps here).
                    let w = GemmTile::for_weight_gradient(rows, columns, 8, block);
                    let why = format!("block {block}, {rows} rows × {columns} columns: weight gradient {w:?}");
                    assert!(w.fits() && w.bk == 8, "{why}");
                    assert!(w.columns() as usize <= columns.next_power_of_two().max(4), "{why}");
                }
            }
        }
        let forward = |rows, columns, k, block| GemmTile::for_forward(rows, columns, k, block);
        // Block 4 keeps the first GPU check's tiles; block 8 the classic 128 × 128 × 8. Layers of
        // 3 or 7 input channels have too short a K to split: their small grids shrink the tile.
        assert_eq!(forward(65, 4095, 27, 4), (GemmTile { tm: 4, tn: 4, wg_x: 16, wg_y: 16, bk: 16 }, 1));
        assert_eq!(forward(37, 297, 63, 4), (GemmTile { tm: 4, tn: 4, wg_x: 8, wg_y: 4, bk: 16 }, 1));
        assert_eq!(forward(7, 297, 63, 4), (GemmTile { tm: 2, tn: 4, wg_x: 8, wg_y: 4, bk: 16 }, 1));
        assert_eq!(forward(128, 131072, 1152, 8), (GemmTile { tm: 8, tn: 8, wg_x: 16, wg_y: 16, bk: 8 }, 1));
        // CHECK_SHAPES' widest layer exercises that tile.
        assert_eq!(forward(129, 64 * 129, 27, 8), (GemmTile { tm: 8, tn: 8, wg_x: 16, wg_y: 16, bk: 8 }, 1));
        assert_eq!(forward(32, 131072, 288, 8), (GemmTile { tm: 4, tn: 8, wg_x: 16, wg_y: 8, bk: 16 }, 1));
        assert_eq!(forward(37, 297, 63, 8), (GemmTile { tm: 8, tn: 4, wg_x: 8, wg_y: 4, bk: 16 }, 1));
        // The deepest layer at 128² batch 8 (512 → 512 channels on 8×8 maps: 16 tiles, K 4608
        // in 576 slices of 8) splits K in 16 rather than shrinking to 4 × 4 blocks; 256 → 512 there
        // (K 2304) too.
        assert_eq!(forward(512, 512, 4608, 8), (GemmTile { tm: 8, tn: 8, wg_x: 16, wg_y: 16, bk: 8 }, 16));
        assert_eq!(forward(512, 512, 2304, 8).1, 16);
        // CHECK_SHAPES' split layer: forward 2 parts of 22 and 21 slices of 16, the input
        // gradient 4 parts of 17 slices of 8.
        assert_eq!(forward(60, 70, 675, 8), (GemmTile { tm: 8, tn: 8, wg_x: 16, wg_y: 8, bk: 16 }, 2));
        assert_eq!(forward(75, 70, 540, 8), (GemmTile { tm: 8, tn: 8, wg_x: 16, wg_y: 16, bk: 8 }, 4));
        // conv_transpose2d's CHECK_SHAPES split too: 520 → 130 channels on 2 × 3 (forward 520
        // rows of (co, a, c) over K = 520 input channels; its input gradient the same sizes) in
        // 4 parts; 33 → 9 on 31 × 35, batch 2 (weight gradient: 33 × 36 outputs, 186 slices) in 11.
        assert_eq!(forward(520, 6, 520, 8).1, 4);
        let w = GemmTile::for_weight_gradient(33, 36, 35, 8);
        assert_eq!(k_splits(w.workgroups(33, 36), 2 * 31 * 35usize.div_ceil(w.bk as usize), 33 * 36), 11);
        // The weight gradient of 32 → 32 channels at 3×3 on 128-pixel rows: 32 × 128 tiles.
        let w = GemmTile::for_weight_gradient(32, 288, 128, 8);
        assert_eq!(w, GemmTile { tm: 4, tn: 8, wg_x: 16, wg_y: 8, bk: 16 });
    }

    /// A GEMM splits K only where its output has too few tiles to fill a GPU, into parts of at
    /// least GEMM_MIN_SLICES_PER_SPLIT slices whose partial sums stay within
    /// SCRATCH_FLOATS (the weight gradient's cases).
    #[test]
    fn gemms_split_k_where_the_output_is_small() {
        // 32 → 32 channels at 128² × 8 (3 tiles, 8192 slices of 16 pixels): 86 parts.
        assert_eq!(k_splits(3, 8192, 9216), 86);
        // 128 → 128 at 32² × 8 (9 tiles, 512 slices of 16): 28 parts (29 would pass 16 MiB).
        assert_eq!(k_splits(9, 512, 128 * 128 * 9), 28);
        // 512 → 512 at 8² × 8 (144 tiles of 128 × 128, 64 slices of 8): 2 parts would take
        // 18 MiB, so none.
        assert_eq!(k_splits(144, 64, 512 * 512 * 9), 1);
        // GEMM_MIN_WORKGROUPS tiles or more, or too few slices: no split.
        assert_eq!(k_splits(128, 8192, 9216), 1);
        assert_eq!(k_splits(3, 31, 9216), 1);
        // Few tiles of a large weight: as many parts as 16 MiB of partial sums allow.
        assert_eq!(k_splits(1, 1 << 20, 1 << 20), 4);
        for tiles in [1, 2, 3, 7, 100, 255, 256, 1000] {
            for slices in [1, 15, 16, 100, 8192, 1 << 20] {
                for weights in [1, 27, 9216, 1 << 21, 1 << 23] {
                    let splits = k_splits(tiles, slices, weights);
                    let why = format!("{tiles} tiles, {slices} slices, {weights} weights: {splits} parts");
                    assert!(splits >= 1, "{why}");
                    if splits > 1 {
                        assert!(slices / splits >= GEMM_MIN_SLICES_PER_SPLIT, "{why}");
                        assert!(splits * weights <= SCRATCH_FLOATS, "{why}");
                        assert!(tiles < GEMM_MIN_WORKGROUPS, "{why}");
                        assert!(tiles * (splits - 1) < 2 * GEMM_MIN_WORKGROUPS, "{why}");
                    }
                }
            }
        }
    }
}
