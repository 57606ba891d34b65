//! Concatenation along channels (`shaders/concat.wgsl`) as channel-slice copies. The U-Net's skip
//! connections concatenate an encoder feature map with the up-sampled decoder map: the forward
//! inserts each input into its channel slice of the joined tensor, the backward extracts each
//! input's gradient from the same slice. One kernel serves both, specialised by direction, a vec4 an
//! invocation.

use anyhow::{ensure, Result};

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::export::{int, OnnxNode};
use crate::graph::rule::op_kernel;
use crate::graph::{Backward, BufId, CpuBuffers, Forward, GpuBuffers, Graph, Kernel, Layer, TensorId};
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

uniform! {
    struct Params {
        n: u32,
        c_part: u32,
        c_total: u32,
        offset: u32,
        hw: u32,
    }
}

/// `part` is [n, c_part, hw]; `whole` is [n, c_total, hw]; the part occupies channels
/// offset..offset+c_part of whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelSlice {
    pub n: usize,
    pub c_part: usize,
    pub c_total: usize,
    pub offset: usize,
    pub hw: usize,
}

impl ChannelSlice {
    pub fn part_len(&self) -> usize {
        self.n * self.c_part * self.hw
    }
    pub fn whole_len(&self) -> usize {
        self.n * self.c_total * self.hw
    }

    /// Forward of concat, one per input: copies `part` into its slice of `whole`.
    pub fn insert(&self, gpu: &Gpu, part: &BufferView, whole: &BufferView) -> Result<Dispatch> {
        self.copy_slice(gpu, true, part, whole)
    }

    /// Backward of concat: d(part) = d(whole)[slice].
    pub fn extract(&self, gpu: &Gpu, whole: &BufferView, part: &BufferView) -> Result<Dispatch> {
        self.copy_slice(gpu, false, part, whole)
    }

    fn copy_slice(&self, gpu: &Gpu, insert: bool, part: &BufferView, whole: &BufferView) -> Result<Dispatch> {
        ensure!(
            self.offset + self.c_part <= self.c_total,
            "channel slice {}..{} does not fit in {} channels",
            self.offset,
            self.offset + self.c_part,
            self.c_total
        );
        let spec = KernelSpec::per_element("concat", "copy_slice")
            .constant("INSERT", insert as u8 as f64)
            .constant("ALIGNED", self.hw.is_multiple_of(4) as u8 as f64);
        let params = Params {
            n: self.n as u32,
            c_part: self.c_part as u32,
            c_total: self.c_total as u32,
            offset: self.offset as u32,
            hw: self.hw as u32,
        };
        let (part, whole) = ((part, self.part_len()), (whole, self.whole_len()));
        let ((src, src_len), (dst, dst_len)) = if insert { (part, whole) } else { (whole, part) };
        let vec4s = self.part_len().div_ceil(4);
        launch(gpu, &spec, &params, &[("src", src, src_len), ("dst", dst, dst_len)], grid_1d(vec4s, WG))
    }
}

/// Channel concatenation: each part with its slice of the output.
#[derive(Clone, Debug)]
pub struct ConcatLayer {
    pub parts: Vec<(TensorId, ChannelSlice)>,
}

impl Layer for ConcatLayer {
    fn name(&self) -> &'static str {
        "Concat"
    }
    fn onnx(&self, onnx: &mut OnnxNode) -> String {
        let inputs: Vec<String> = self.parts.iter().map(|&(p, _)| onnx.value(p)).collect();
        onnx.single("Concat", &inputs, vec![int("axis", 1)])
    }
    fn forward(&self, cx: &mut Forward) {
        for &(part, s) in &self.parts {
            cx.push(SliceInsert { s, part: cx.input(part), whole: cx.output() });
        }
    }
    fn backward(&self, cx: &mut Backward) {
        let whole = cx.dy();
        for &(part, s) in &self.parts {
            cx.propagate(part, s.part_len(), |dp| SliceExtract { s, whole, part: dp });
        }
    }
}

impl Graph {
    pub fn concat(&mut self, name: &str, parts: &[TensorId]) -> TensorId {
        let [n, _, h, w] = self.shape(parts[0]);
        for &p in parts {
            let [pn, _, ph, pw] = self.shape(p);
            assert!((pn, ph, pw) == (n, h, w), "concat {name}: parts differ in batch or spatial size");
        }
        let c_total = parts.iter().map(|&p| self.shape(p)[1]).sum();
        let mut offset = 0;
        let parts = parts
            .iter()
            .map(|&p| {
                let c_part = self.shape(p)[1];
                let s = ChannelSlice { n, c_part, c_total, offset, hw: h * w };
                offset += c_part;
                (p, s)
            })
            .collect();
        self.push(name, ConcatLayer { parts }, [n, c_total, h, w])
    }
}

/// Copies `part` into its channel slice of `whole`. Not an [`op_kernel!`]: it writes into a
/// buffer the other parts' inserts fill too, so its reference starts from that buffer.
#[derive(Clone, Debug)]
pub struct SliceInsert {
    pub s: ChannelSlice,
    pub part: BufId,
    pub whole: BufId,
}

impl Kernel for SliceInsert {
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        (vec![self.part], vec![self.whole])
    }
    fn dispatch(&self, g: &GpuBuffers) -> Result<Vec<Dispatch>> {
        Ok(vec![self.s.insert(g.gpu, g.buf(self.part), g.buf(self.whole))?])
    }
    fn reference(&self, c: &mut CpuBuffers) {
        let s = &self.s;
        let mut pieces = slice_pieces(s, &c.buffers[self.whole]);
        pieces[1] = c.buffers[self.part].clone();
        let rest = s.c_total - s.offset - s.c_part;
        c.buffers[self.whole] =
            reference::concat(s.n, s.hw, &[(&pieces[0], s.offset), (&pieces[1], s.c_part), (&pieces[2], rest)]);
    }
}

op_kernel!(
    /// Copies the channel slice of `whole` into `part`.
    SliceExtract(ChannelSlice): extract(buf whole) -> part, reference::extract
);

/// `whole` cut into the channels before the slice, the slice, and those after it.
fn slice_pieces(s: &ChannelSlice, whole: &[f64]) -> Vec<Vec<f64>> {
    reference::split(s.n, s.hw, whole, &[s.offset, s.c_part, s.c_total - s.offset - s.c_part])
}

/// Plain f64 references.
pub mod reference {
    use super::{slice_pieces, ChannelSlice};

    /// The channel slice `s` of `whole`.
    pub fn extract(s: &ChannelSlice, whole: &[f64]) -> Vec<f64> {
        slice_pieces(s, whole).swap_remove(1)
    }

    /// Joins `parts` (each `[n, channels, hw]`) along channels, in order.
    pub fn concat(n: usize, hw: usize, parts: &[(&[f64], usize)]) -> Vec<f64> {
        let mut whole = Vec::new();
        for b in 0..n {
            for &(part, c) in parts {
                whole.extend_from_slice(&part[b * c * hw..(b + 1) * c * hw]);
            }
        }
        whole
    }

    /// Cuts `whole` (`[n, Σchannels, hw]`) into parts of `channels` channels each, in order:
    /// the adjoint of [`concat()`].
    pub fn split(n: usize, hw: usize, whole: &[f64], channels: &[usize]) -> Vec<Vec<f64>> {
        let c_total: usize = channels.iter().sum();
        let mut parts = vec![Vec::new(); channels.len()];
        for b in 0..n {
            let mut first = b * c_total;
            for (part, &c) in parts.iter_mut().zip(channels) {
                part.extend_from_slice(&whole[first * hw..(first + c) * hw]);
                first += c;
            }
        }
        parts
    }
}

/// Concatenates random parts of `channels` channels each (one insert per part into a
/// NaN-poisoned whole, so a slice no insert covers shows as unwritten), then splits a random
/// gradient of the whole back into the parts.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, &(n, hw, channels): &(usize, usize, &[usize])) -> Result<Vec<CaseReport>> {
    let c_total: usize = channels.iter().sum();
    let shape = format!("{n}x{channels:?}x{hw}");
    let mut slices = Vec::new();
    let mut offset = 0;
    for &c_part in channels {
        slices.push(ChannelSlice { n, c_part, c_total, offset, hw });
        offset += c_part;
    }
    let parts: Vec<Vec<f32>> = slices.iter().map(|s| check::random(rng, s.part_len())).collect();
    let gparts = parts.iter().map(|p| gpu.upload("part", p)).collect::<Result<Vec<_>>>()?;
    let whole = check::poisoned(gpu, "whole", n * c_total * hw)?;
    let inserts =
        slices.iter().zip(&gparts).map(|(s, part)| s.insert(gpu, part, &whole)).collect::<Result<Vec<_>>>()?;
    gpu.run(&inserts.iter().collect::<Vec<_>>())?;
    let parts64: Vec<Vec<f64>> = parts.iter().map(|p| check::to_f64(p)).collect();
    let pairs: Vec<(&[f64], usize)> = parts64.iter().map(|p| p.as_slice()).zip(channels.iter().copied()).collect();
    let mut out =
        vec![check::compare("concat_insert", &shape, &gpu.read::<f32>(&whole)?, &reference::concat(n, hw, &pairs))];

    let dwhole = check::random(rng, n * c_total * hw);
    let gdwhole = gpu.upload("dwhole", &dwhole)?;
    let want = reference::split(n, hw, &check::to_f64(&dwhole), channels);
    for (s, want) in slices.iter().zip(want) {
        let dpart = check::poisoned(gpu, "dpart", s.part_len())?;
        gpu.run(&[&s.extract(gpu, &gdwhole, &dpart)?])?;
        let kernel = format!("concat_extract[{}..{}]", s.offset, s.offset + s.c_part);
        out.push(check::compare(&kernel, &shape, &gpu.read::<f32>(&dpart)?, &want));
    }
    Ok(out)
}

/// Concat of 2 and 3 parts with 1, 3, 5, 33 channels, batch 1 and 2, odd and 1×1 planes:
/// (n, hw, channels of each part): planes of odd sizes (elements copied one by one) and of whole
/// vec4s (4×6, 8×4: a vec4 at a time), parts of odd channel counts, 1×1 planes.
pub const CHECK_CASES: &[(usize, usize, &[usize])] = &[
    (1, 17 * 23, &[1, 3]),
    (2, 9 * 7, &[5, 33, 1]),
    (2, 17 * 23, &[33, 3]),
    (1, 1, &[3, 1, 5]),
    (3, 4 * 6, &[5, 3, 1]),
    (2, 8 * 4, &[1, 7]),
];
