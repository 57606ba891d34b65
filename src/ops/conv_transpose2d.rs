//! 2-D transposed convolution with a 2×2 kernel and stride 2 (`shaders/conv_transpose2d_lanes.wgsl`
//! on SIMD-lane adapters, else conv2d.wgsl's GEMMs with `UPSAMPLE`),
//! the U-Net's upsampling: Keras `Conv2DTranspose(filters, 2, strides=2)`, PyTorch
//! `ConvTranspose2d(cin, cout, 2, stride=2)`. No activation. The bias gradient is conv2d's
//! per-channel sum.

use anyhow::{bail, Result};

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::{ints, OnnxNode};
use crate::graph::{Graph, Init, TensorId};
use crate::kernel::{grid_1d, launch, BufferView, ConvParams, Dispatch, KernelSpec, DIVMOD_LIMIT};
use crate::ops::conv::{self, tap_reference, ConvLayer, Convolution, TapSizes, Taps};
use crate::ops::conv2d::{channel_sum, channel_tile, gemm_forward, gemm_weight_gradient, launch_split, WG_PIXELS};

/// Most output channels one invocation of the lane kernels' forward computes (one subgroup of 8).
const MAX_TILE: usize = 8;
/// Most input channels one invocation of the lane kernels' backward_input computes (two weight
/// loads of 8 lanes).
const MAX_LANE_GRADIENT_TILE: usize = 16;

/// Input `h×w`, output `2h×2w`. The weights are bound as `vec4`s, so a weight view's size must
/// be a multiple of 16 bytes (it is: `weight_len` is a multiple of 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2d {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
}

impl ConvTranspose2d {
    /// Layout `[cin][cout][2][2]` (PyTorch).
    pub fn weight_len(&self) -> usize {
        self.cin * self.cout * 4
    }
    pub fn input_len(&self) -> usize {
        self.n * self.cin * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.n * self.cout * 4 * self.h * self.w
    }

    /// Forward multiply-adds ×2.
    pub fn flops(&self) -> u64 {
        2 * (self.output_len() * self.cin) as u64
    }

    fn params(&self) -> Result<ConvParams> {
        if [self.n, self.cin, self.cout, self.h, self.w].contains(&0) {
            bail!("conv_transpose2d with an empty dimension: {self:?}");
        }
        Ok(ConvParams {
            n: self.n as u32,
            cin: self.cin as u32,
            cout: self.cout as u32,
            h: self.h as u32,
            w: self.w as u32,
        })
    }

    /// Whether `conv_transpose2d_lanes.wgsl` applies: see [`Gpu::lane_kernels`]; its pixel
    /// arithmetic (`divmod`) is exact below DIVMOD_LIMIT input pixels.
    fn lane_kernels(&self, gpu: &Gpu) -> bool {
        gpu.lane_kernels() && self.n * self.h * self.w < DIVMOD_LIMIT
    }

    /// The `SINGLE` override of the lane kernels' gradients: 1 on rows of an odd width, where
    /// they take input pixels one at a time rather than in pairs.
    fn single(&self) -> f64 {
        if self.w.is_multiple_of(2) {
            0.0
        } else {
            1.0
        }
    }

    /// The lane kernels' forward / backward_input: tiles of `channels` × runs of `pairs` input
    /// pixel pairs (forward, `pairs` 0: runs of 4 pixels on rows of a multiple of 4, else 1;
    /// backward_input on rows of an odd width: single pixels), in lane order, wrapping into z.
    fn lanes(&self, entry: &'static str, channels: usize, pairs: usize) -> (KernelSpec, [u32; 3]) {
        let max_tile = if pairs > 0 { MAX_LANE_GRADIENT_TILE } else { MAX_TILE };
        let tile = channel_tile(channels, max_tile);
        let px = if pairs == 0 && self.w.is_multiple_of(4) { 4 } else { 1 };
        let single = pairs > 0 && !self.w.is_multiple_of(2);
        let spec = KernelSpec::new("conv_transpose2d_lanes", entry, [WG_PIXELS, 1, 1])
            .constant("TILE", tile as f64)
            .constant("PAIRS", pairs.max(1) as f64)
            .constant("SINGLE", self.single())
            .constant("PX", px as f64);
        // Channel tiles along x: lavapipe runs them back to back on one block of pixels.
        let pixels_per_item = match (pairs, single) {
            (0, _) => px,
            (_, true) => 1,
            _ => 2 * pairs,
        };
        let [y, z, _] = grid_1d(self.n * self.h * self.w / pixels_per_item, WG_PIXELS);
        (spec, [channels.div_ceil(tile) as u32, y, z])
    }

    /// The GEMMs' view of the layer (conv2d.wgsl with UPSAMPLE, K = 1): the forward's rows are
    /// its cout·4 outputs (co, a, c) of an input pixel, summed over cin; the gradients' rows are
    /// its cin, their columns or K the cout·4 values of dy an input pixel feeds.
    fn gemm_params(&self, params: &ConvParams, forward: bool) -> ConvParams {
        match forward {
            true => ConvParams { cout: 4 * params.cout, ..*params },
            false => ConvParams { cin: 4 * params.cout, cout: params.cin, ..*params },
        }
    }

    /// `db[co] = Σ_n,pixel dy[n,co,pixel]`.
    pub fn backward_bias(&self, gpu: &Gpu, dy: &BufferView, db: &BufferView) -> Result<Dispatch> {
        self.params()?;
        channel_sum(gpu, self.n, self.cout, 4 * self.h * self.w, dy, db)
    }
}

impl Convolution for ConvTranspose2d {
    const NAME: &'static str = "ConvTranspose2d";
    fn input_len(&self) -> usize {
        ConvTranspose2d::input_len(self)
    }
    fn weight_len(&self) -> usize {
        ConvTranspose2d::weight_len(self)
    }
    fn flops(&self) -> u64 {
        ConvTranspose2d::flops(self)
    }
    fn fused_relu(&self) -> bool {
        false
    }

    /// `y[n,co,2i+a,2j+c] = b[co] + Σ_ci x[n,ci,i,j] w[ci,co,a,c]`: the lane kernel, or the
    /// GEMM Y[(co, a, c)][(n, i, j)] = Σ_ci w[ci][(co, a, c)] · x[ci][(n, i, j)] scattered to the
    /// doubled map.
    fn forward(
        &self,
        gpu: &Gpu,
        x: &BufferView,
        w: &BufferView,
        b: &BufferView,
        y: &BufferView,
    ) -> Result<Vec<Dispatch>> {
        let params = self.params()?;
        let inputs = [("x", x, self.input_len()), ("wt", w, self.weight_len()), ("bias", b, self.cout)];
        let out = ("y", y, self.output_len());
        if self.lane_kernels(gpu) {
            let (spec, grid) = self.lanes("forward", self.cout, 0);
            return Ok(vec![launch(gpu, &spec, &params, &[&inputs[..], &[out]].concat(), grid)?]);
        }
        let gemm = self.gemm_params(&params, true);
        let (spec, grid, splits) = gemm_forward(gpu, 1, &gemm, true, true);
        launch_split(gpu, &gemm, (spec.constant("UPSAMPLE", 1.0), grid, splits), &inputs, out)
    }

    /// `dx[n,ci,i,j] = Σ_co Σ_a,c dy[n,co,2i+a,2j+c] w[ci,co,a,c]`: the lane kernel, or the GEMM
    /// dX[ci][(n, i, j)] = Σ_(co, a, c) w[ci][(co, a, c)] · dy gathered at (2i + a, 2j + c).
    fn backward_input(&self, gpu: &Gpu, dy: &BufferView, w: &BufferView, dx: &BufferView) -> Result<Vec<Dispatch>> {
        let params = self.params()?;
        if self.lane_kernels(gpu) {
            // Runs of two pixel pairs where rows are whole runs: twice the sums per dy load.
            let pairs = if self.w.is_multiple_of(4) { 2 } else { 1 };
            let (spec, grid) = self.lanes("backward_input", self.cin, pairs);
            // The lane kernel reads dy over pixel pairs (or a pixel's block at a time).
            let bindings = [("dy4", dy, self.output_len()), ("wt", w, self.weight_len()), ("dx", dx, self.input_len())];
            return Ok(vec![launch(gpu, &spec, &params, &bindings, grid)?]);
        }
        let gemm = self.gemm_params(&params, false);
        let (spec, grid, splits) = gemm_forward(gpu, 1, &gemm, false, false);
        // No bias: the weights fill its binding in the layout.
        let inputs = [("x", dy, self.output_len()), ("wt", w, self.weight_len()), ("bias", w, 0)];
        launch_split(gpu, &gemm, (spec.constant("UPSAMPLE", 1.0), grid, splits), &inputs, ("y", dx, self.input_len()))
    }

    /// `dw[ci,co,a,c] = Σ_n,i,j x[n,ci,i,j] dy[n,co,2i+a,2j+c]`: the lane kernel, or the GEMM
    /// dW[ci][(co, a, c)] = Σ_(n, i, j) x[ci][(n, i, j)] · dy gathered at (2i + a, 2j + c).
    fn backward_weight(&self, gpu: &Gpu, x: &BufferView, dy: &BufferView, dw: &BufferView) -> Result<Vec<Dispatch>> {
        let params = self.params()?;
        let dw = ("dw", dw, self.weight_len());
        if self.lane_kernels(gpu) {
            // One 8-lane subgroup per 8 input × 8 output channels; dy read as vec4s over pixel
            // pairs (on odd widths a pixel's block at a time), x as two texels of 8 pixels
            // where planes hold whole groups of 8.
            let x8 = (self.h * self.w).is_multiple_of(8);
            let spec = KernelSpec::new("conv_transpose2d_lanes", "backward_weight", [8, 1, 1])
                .constant("X8", if x8 { 1.0 } else { 0.0 })
                .constant("SINGLE", self.single());
            let grid = [self.cin.div_ceil(8) as u32, self.cout.div_ceil(8) as u32, 1];
            let bindings = [("x", x, self.input_len()), ("dy4", dy, self.output_len()), dw];
            return Ok(vec![launch(gpu, &spec, &params, &bindings, grid)?]);
        }
        let gemm = self.gemm_params(&params, false);
        let (spec, grid, splits) = gemm_weight_gradient(gpu, 1, &gemm);
        // conv2d's weight gradient sums dz (its rows: here x) times im2col of x (here dy, gathered).
        let inputs = [("x", dy, self.output_len()), ("dz", x, self.input_len())];
        launch_split(gpu, &gemm, (spec.constant("UPSAMPLE", 1.0), grid, splits), &inputs, dw)
    }
    fn backward_bias(&self, gpu: &Gpu, dy: &BufferView, db: &BufferView) -> Result<Dispatch> {
        ConvTranspose2d::backward_bias(self, gpu, dy, db)
    }
    fn reference_forward(&self, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        reference::forward(self, x, w, b)
    }
    fn onnx(&self, onnx: &mut OnnxNode, inputs: [String; 3]) -> String {
        onnx.single("ConvTranspose", &inputs, vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])])
    }
}

impl Graph {
    /// 2×2 transposed convolution with stride 2 (doubles H and W).
    pub fn conv_transpose(&mut self, name: &str, x: TensorId, cout: usize) -> TensorId {
        let [n, cin, h, w] = self.shape(x);
        let s = ConvTranspose2d { n, cin, cout, h, w };
        // Keras computes the fans of a transposed kernel from its (k, k, out, in) shape.
        let wp = self.param(
            format!("{name}.weight"),
            vec![cin, cout, 2, 2],
            Init::GlorotUniform { fan_in: cout * 4, fan_out: cin * 4 },
        );
        let bp = self.param(format!("{name}.bias"), vec![cout], Init::Zeros);
        self.push(name, ConvLayer { x, w: wp, b: bp, s }, [n, cout, 2 * h, 2 * w])
    }
}

/// Plain f64 references.
impl Taps for ConvTranspose2d {
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let s = self;
        let (oh, ow) = (2 * s.h, 2 * s.w);
        for n in 0..s.n {
            for ci in 0..s.cin {
                for co in 0..s.cout {
                    for i in 0..s.h {
                        for j in 0..s.w {
                            for a in 0..2 {
                                for c in 0..2 {
                                    let yi = ((n * s.cout + co) * oh + 2 * i + a) * ow + 2 * j + c;
                                    let xi = ((n * s.cin + ci) * s.h + i) * s.w + j;
                                    let wi = ((ci * s.cout + co) * 2 + a) * 2 + c;
                                    f(yi, xi, wi);
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
        TapSizes { input, weight, output, out_channels: self.cout, out_plane: 4 * self.h * self.w }
    }
}

/// The f64 references: the shared [`tap_reference`] over this layer's taps.
pub mod reference {
    pub use super::tap_reference::{backward, backward_bias, backward_input, backward_weight, forward};
}

/// Forward and all three gradients of `s` against the reference.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, s: &ConvTranspose2d) -> Result<Vec<CaseReport>> {
    let shape = format!("{}->{}", check::shape4(s.n, s.cin, s.h, s.w), s.cout);
    conv::check(gpu, rng, s, "conv_transpose2d", &shape)
}

/// The awkward shapes: odd sizes, batch 1 and 2, cin 1, channel counts that leave a partial
/// channel tile or reduction workgroup, and reductions from 1 to 128 invocations an output, in
/// one workgroup or several.
pub const CHECK_SHAPES: &[ConvTranspose2d] = &[
    // Odd widths (these four): the lane gradients take a pixel at a time.
    ConvTranspose2d { n: 1, cin: 3, cout: 5, h: 9, w: 11 },
    ConvTranspose2d { n: 2, cin: 33, cout: 3, h: 4, w: 5 },
    ConvTranspose2d { n: 2, cin: 1, cout: 2, h: 3, w: 3 },
    ConvTranspose2d { n: 2, cin: 33, cout: 9, h: 31, w: 35 },
    // Channel counts that fill whole 8-lane tiles and leave partial ones in both axes; planes
    // of 6 pixels, so the last pixel pairs of a group of 8 lie past the plane.
    ConvTranspose2d { n: 3, cin: 16, cout: 17, h: 4, w: 6 },
    ConvTranspose2d { n: 2, cin: 9, cout: 8, h: 3, w: 2 },
    // The lane forward's runs of 4 pixels and the input gradient's of two pixel pairs (rows of a
    // multiple of 4 pixels: these and the next three), with
    // 16-channel tiles whose upper half is partial (13) or empty (40 = 16 + 16 + 8), and a
    // last block of lanes on clamped copies (18 runs).
    ConvTranspose2d { n: 2, cin: 13, cout: 5, h: 3, w: 12 },
    ConvTranspose2d { n: 1, cin: 40, cout: 9, h: 2, w: 4 },
    // Lane input gradients of tiles under 16 channels: 8 (5 used) with runs of two pairs, 4 (3
    // used) with one pair.
    ConvTranspose2d { n: 2, cin: 5, cout: 6, h: 3, w: 8 },
    ConvTranspose2d { n: 1, cin: 3, cout: 4, h: 2, w: 6 },
    // The gpu variant's GEMMs with K split (few tiles, K of 520): the forward's parts scattered
    // to the doubled map and summed with the bias there, the input gradient's gathered from it.
    // (The weight gradient's split is exercised at 2×33×31×35.)
    ConvTranspose2d { n: 1, cin: 520, cout: 130, h: 2, w: 3 },
];
