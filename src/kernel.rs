//! The kernel layer: embedded WGSL, compiled pipelines, device buffers, and [`Dispatch`] — one
//! kernel launch with its bind group built once and recorded as often as needed.
//!
//! Conventions every shader in `shaders/` follows:
//! - binding 0 of group 0 is the op's uniform `Params` (shapes): its Rust side is declared with
//!   [`uniform!`] and written by [`launch`], which checks its fields against the WGSL struct;
//! - storage bindings are numbered per file, and each entry point uses only its own; drivers
//!   name them by their WGSL variable ([`launch`] looks the number up), so a number is written
//!   once, in the WGSL;
//! - workgroup sizes are `override` constants (`WG_X`, `WG_Y`), set from [`KernelSpec`], so a
//!   kernel can be re-tuned without editing its WGSL;
//! - `shaders/common.wgsl` is prepended to every file (grid-stride index helpers).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Result};

use crate::device::{mib, Gpu};

/// Invocations per workgroup of the kernels that run one invocation per element, or one workgroup
/// per reduction: WebGPU's default limit.
pub const WG: u32 = 256;

/// `divmod` in common.wgsl is exact for dividends below this (f32 division with a correction).
pub const DIVMOD_LIMIT: usize = 1 << 24;

uniform! {
    /// `ConvParams` in common.wgsl: the shape every convolution kernel reads (conv2d and
    /// conv_transpose2d, both variants).
    pub(crate) struct ConvParams {
        pub(crate) n: u32,
        pub(crate) cin: u32,
        pub(crate) cout: u32,
        pub(crate) h: u32,
        pub(crate) w: u32,
    }
}

/// A WGSL file compiled into the binary.
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shader {
    ($name:literal) => {
        Shader { name: $name, source: include_str!(concat!("../shaders/", $name, ".wgsl")) }
    };
}

pub const COMMON: &str = include_str!("../shaders/common.wgsl");

/// Every shader file; the naga test validates each (with [`COMMON`] prepended).
pub static SHADERS: &[Shader] = &[
    shader!("elementwise"),
    shader!("conv2d"),
    shader!("conv2d_lanes"),
    shader!("conv2d_narrow"),
    shader!("conv_transpose2d_lanes"),
    shader!("pool"),
    shader!("concat"),
    shader!("loss"),
    shader!("adam"),
    shader!("metrics"),
    shader!("augment"),
    shader!("batchnorm"),
    shader!("dropout"),
    shader!("gate"),
];

pub fn shader(name: &str) -> &'static Shader {
    SHADERS.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no shader named {name}"))
}

/// Full WGSL text of a shader as written, [`COMMON`] prepended.
pub fn full_source(s: &Shader) -> String {
    format!("{COMMON}\n{}", s.source)
}

/// How kernels reach the tensors they only read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// From storage buffers, as the WGSL is written.
    Storage,
    /// Through textures: on the lane-kernel devices (lavapipe), where a storage load is a loop
    /// over the 8 lanes and, on hosts without AVX-512, costs about ten texel fetches, every
    /// read-only `array<f32>` / `array<vec4<f32>>` binding is rewritten to a
    /// `TensorTexture` (common.wgsl: a read-only storage texture array; [`read_through_textures`])
    /// that [`launch`] fills. The `*_lanes` kernels declare their per-lane inputs as textures
    /// already.
    Textures,
}

/// WGSL text of a shader as a device with `reads` compiles it.
pub fn source(s: &Shader, reads: Reads) -> String {
    match reads {
        Reads::Storage => full_source(s),
        Reads::Textures => read_through_textures(&full_source(s)),
    }
}

/// `source` with each read-only storage binding of `f32` or `vec4<f32>` elements declared as a
/// texture of the same values, and each `name[index]` read as `texel_f32(name, index)` /
/// `texel(name, index)` (common.wgsl). Relies on the shaders' conventions: one declaration a
/// line, and no use of such a binding other than indexing it.
pub fn read_through_textures(source: &str) -> String {
    let mut readers: Vec<(String, &str)> = Vec::new();
    let declared: Vec<String> = source
        .lines()
        .map(|line| {
            let Some((head, rest)) = line.split_once("var<storage, read> ") else { return line.to_string() };
            let Some((name, ty)) = rest.trim_end_matches(';').split_once(": ") else { return line.to_string() };
            let reader = match ty {
                "array<f32>" => "texel_f32",
                "array<vec4<f32>>" => "texel",
                _ => return line.to_string(),
            };
            readers.push((name.to_string(), reader));
            format!("{head}var {name}: {TENSOR_TEXTURE};")
        })
        .collect();
    let mut out = declared.join("\n");
    for (name, reader) in &readers {
        out = rewrite_indexing(&out, name, reader);
    }
    out
}

/// `source` with every `name[index]` (name not part of a longer identifier) replaced by
/// `reader(name, index)`.
fn rewrite_indexing(source: &str, name: &str, reader: &str) -> String {
    let pattern = format!("{name}[");
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find(&pattern) {
        let part_of_longer = rest[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
        out.push_str(&rest[..at]);
        if part_of_longer {
            out.push_str(&pattern);
            rest = &rest[at + pattern.len()..];
            continue;
        }
        let inner = &rest[at + pattern.len()..];
        let mut depth = 1;
        let close = inner
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '[' => 1,
                    ']' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("unbalanced brackets after '{pattern}' in a shader"));
        out.push_str(&format!("{reader}({name}, {})", &inner[..close]));
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    out
}

/// `source` (whole WGSL, as [`full_source`] gives it) compiled as every kernel is: bounds checks
/// kept, forced loop bounding off — it wraps each loop in an extra counter that keeps llvmpipe
/// from unrolling the constant-trip loops the lane kernels rely on (a probe of the lane forward
/// with it on ran at a fifth of the speed).
pub fn compile_module(device: &wgpu::Device, label: &str, source: &str) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(source.into()) };
    let checks = wgpu::ShaderRuntimeChecks { force_loop_bounding: false, ..wgpu::ShaderRuntimeChecks::checked() };
    // SAFETY: every kernel's loops have bounds from its uniforms or override constants, so
    // none runs unbounded; the array and buffer bounds checks stay on.
    unsafe { device.create_shader_module_trusted(desc, checks) }
}

/// What [`launch`] reads of a shader's WGSL: its group-0 bindings and its structs.
struct Layout {
    /// (number, variable, type) of each `@group(0) @binding(N) var<…> variable: type;`.
    bindings: Vec<(u32, String, String)>,
    /// Each struct's members (name, type), in order.
    structs: HashMap<String, Vec<(String, String)>>,
}

impl Layout {
    /// The declarations of `source`, one per line as every shader writes them.
    fn parse(source: &str) -> Layout {
        let mut layout = Layout { bindings: Vec::new(), structs: HashMap::new() };
        let mut open: Option<(String, Vec<(String, String)>)> = None;
        for line in source.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            if let Some((name, members)) = &mut open {
                if line.starts_with('}') {
                    layout.structs.insert(std::mem::take(name), std::mem::take(members));
                    open = None;
                } else if let Some((member, ty)) = line.split_once(':') {
                    members.push((member.trim().to_string(), ty.trim().trim_end_matches(',').trim().to_string()));
                }
            } else if let Some(name) = line.strip_prefix("struct ").and_then(|l| l.strip_suffix('{')) {
                open = Some((name.trim().to_string(), Vec::new()));
            } else if let Some(binding) = Self::parse_binding(line) {
                layout.bindings.push(binding);
            }
        }
        layout
    }

    fn parse_binding(line: &str) -> Option<(u32, String, String)> {
        let (number, rest) = line.strip_prefix("@group(0) @binding(")?.split_once(')')?;
        let rest = rest.trim().strip_prefix("var")?;
        // Skip the address space, `<uniform>` or `<storage, read>`.
        let rest = if rest.starts_with('<') { &rest[rest.find('>')? + 1..] } else { rest };
        let (variable, ty) = rest.split_once(':')?;
        Some((number.parse().ok()?, variable.trim().to_string(), ty.trim().trim_end_matches(';').to_string()))
    }

    /// The layout of `shader` as a device with `reads` compiles it, parsed once.
    fn of(shader: &Shader, reads: Reads) -> &'static Layout {
        static LAYOUTS: [OnceLock<Vec<Layout>>; 2] = [OnceLock::new(), OnceLock::new()];
        let layouts =
            LAYOUTS[reads as usize].get_or_init(|| SHADERS.iter().map(|s| Layout::parse(&source(s, reads))).collect());
        &layouts[SHADERS.iter().position(|s| s.name == shader.name).expect("shaders come from SHADERS")]
    }

    /// The number and WGSL type of the binding of `variable`.
    fn binding(&self, variable: &str) -> Option<(u32, &str)> {
        self.bindings.iter().find(|(_, v, _)| v == variable).map(|(number, _, ty)| (*number, ty.as_str()))
    }

    /// The members of binding 0's struct.
    fn params(&self) -> &[(String, String)] {
        let ty = self.bindings.iter().find(|(number, _, _)| *number == 0).map(|(_, _, ty)| ty);
        ty.and_then(|ty| self.structs.get(ty)).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether binding 0's struct is `fields` followed by padding (`_…`) only.
    fn params_are(&self, fields: &[(&str, &str)]) -> bool {
        let members = self.params();
        members.len() >= fields.len()
            && members.iter().zip(fields).all(|((m, t), (f, ft))| m == f && t == ft)
            && members[fields.len()..].iter().all(|(m, _)| m.starts_with('_'))
    }
}

/// The Rust side of a shader's uniform `Params` (binding 0), declared with [`uniform!`].
pub trait Uniform: bytemuck::Pod {
    /// (name, type) of each field, in order: [`launch`] requires the WGSL struct's members,
    /// padding aside, to be the same.
    const FIELDS: &'static [(&'static str, &'static str)];
}

/// Declares a [`Uniform`]: a `#[repr(C)]` struct of `u32` and `f32` fields named and ordered as
/// the WGSL struct's. No padding fields: [`Dispatch`] rounds the buffer up to 16 bytes.
macro_rules! uniform {
    ($(#[$attr:meta])* $vis:vis struct $name:ident { $($(#[$fattr:meta])* $fvis:vis $field:ident: $ty:ident),* $(,)? }) => {
        $(#[$attr])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fattr])* $fvis $field: $ty,)*
        }

        impl $crate::kernel::Uniform for $name {
            const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($field), stringify!($ty))),*];
        }
    };
}
pub(crate) use uniform;

/// One launch of `spec` over `groups` workgroups: `params` in binding 0, and each
/// `(variable, view, elems)` bound to the WGSL variable of that name, which the kernel reads or
/// writes `elems` elements of. Too small a view is refused here with its name: on the device,
/// robust buffer access would clamp the accesses silently.
pub fn launch<P: Uniform>(
    gpu: &Gpu,
    spec: &KernelSpec,
    params: &P,
    bindings: &[(&str, &BufferView, usize)],
    groups: [u32; 3],
) -> Result<Dispatch> {
    let layout = Layout::of(shader(spec.shader), gpu.reads());
    if !layout.params_are(P::FIELDS) {
        bail!(
            "kernel {}::{}: the Rust params {:?} are not the WGSL struct's {:?} (a bug in wgunet)",
            spec.shader,
            spec.entry,
            P::FIELDS,
            layout.params()
        );
    }
    let (mut tensors, mut textures) = (Vec::new(), Vec::new());
    for &(variable, view, elems) in bindings {
        let Some((number, ty)) = layout.binding(variable) else {
            bail!("kernel {}::{} binds '{variable}', which its WGSL does not declare", spec.shader, spec.entry);
        };
        if view.elems() < elems {
            bail!(
                "kernel {}::{}: tensor '{}' holds {} elements, its {variable} needs {elems}",
                spec.shader,
                spec.entry,
                view.name,
                view.elems()
            );
        }
        // A vec4 binding's last vec4 may reach past the tensor into its buffer's padding.
        if ty == "array<vec4<f32>>" && view.texel_bytes() < elems.div_ceil(4) as u64 * TEXEL_BYTES {
            bail!(
                "kernel {}::{}: tensor '{}' does not end on a whole vec4 for its {variable} (a bug in wgunet)",
                spec.shader,
                spec.entry,
                view.name
            );
        }
        if ty == TENSOR_TEXTURE {
            let ordinal = textures.len();
            textures.push((number, TextureUpload::new(gpu, ordinal, view, elems)?));
        } else {
            tensors.push((number, view));
        }
    }
    Dispatch::new(gpu, spec, params, &tensors, textures, groups)
}

/// Texels a row of the textures tensors are copied into, and rows a layer (`TEXTURE_ROW`,
/// `TEXTURE_LAYER_ROWS` in common.wgsl): 16 KiB rows (a multiple of the 256-byte copy pitch).
const TEXTURE_ROW: u32 = 1024;
const TEXTURE_LAYER_ROWS: u32 = 2048;
/// The WGSL type of a binding `launch` fills with a texture copy of a tensor (an alias in
/// common.wgsl).
const TENSOR_TEXTURE: &str = "TensorTexture";
/// Bytes of an rgba32float texel.
const TEXEL_BYTES: u64 = 16;

/// An rgba32float texture (array, with layers) that kernels read texels of and copies fill.
pub fn input_texture(device: &wgpu::Device, size: wgpu::Extent3d) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some("tensor texture"),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    })
}

/// A tensor copied into an rgba32float texture array before the dispatch that reads it, for a
/// binding its WGSL declares a `TensorTexture` (read with `texel()` from common.wgsl).
/// Textures are pooled by size and by which of its textured inputs a dispatch takes them for
/// (first, second, …): every dispatch refills its own just before it runs, so dispatches may
/// share one, but the textures one dispatch reads never alias.
pub(crate) struct TextureUpload {
    source: BufferView,
    texture: Arc<wgpu::Texture>,
    texels: u32,
}

impl TextureUpload {
    fn new(gpu: &Gpu, ordinal: usize, source: &BufferView, elems: usize) -> Result<TextureUpload> {
        // The last texel may reach past the tensor into its buffer's padding ([`Gpu::buffer`],
        // the parameter arena's alignment): those floats are copied, never read.
        let texels = elems.div_ceil(4) as u64;
        let end = source.offset + texels * TEXEL_BYTES;
        if !source.offset.is_multiple_of(TEXEL_BYTES) || end > source.buffer.size() || texels > u32::MAX as u64 {
            bail!("tensor '{}' cannot be copied into a texture of {texels} texels (a bug in wgunet)", source.name);
        }
        let rows = (texels as u32).div_ceil(TEXTURE_ROW).max(1);
        let size = wgpu::Extent3d {
            width: TEXTURE_ROW,
            height: rows.min(TEXTURE_LAYER_ROWS),
            depth_or_array_layers: rows.div_ceil(TEXTURE_LAYER_ROWS),
        };
        if size.depth_or_array_layers > gpu.limits.max_texture_array_layers {
            bail!(
                "tensor '{}' needs {} texture layers, more than '{}' allows: use a smaller --batch or --size",
                source.name,
                size.depth_or_array_layers,
                gpu.info.name
            );
        }
        let key = (ordinal, size.height, size.depth_or_array_layers);
        let texture = gpu
            .textures
            .lock()
            .unwrap()
            .entry(key)
            .or_insert_with(|| Arc::new(input_texture(&gpu.device, size)))
            .clone();
        Ok(TextureUpload { source: source.clone(), texture, texels: texels as u32 })
    }

    fn view(&self) -> wgpu::TextureView {
        self.texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        })
    }

    /// The copies filling the texture: whole layers, the whole rows left, the last partial row.
    fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let full_rows = self.texels / TEXTURE_ROW;
        let layers = full_rows / TEXTURE_LAYER_ROWS;
        let rows_left = full_rows % TEXTURE_LAYER_ROWS;
        let copies = [
            (0, TEXTURE_ROW, TEXTURE_LAYER_ROWS, layers),
            (layers * TEXTURE_LAYER_ROWS, TEXTURE_ROW, rows_left, 1),
            (full_rows, self.texels % TEXTURE_ROW, 1, 1),
        ];
        for (first_row, width, height, depth) in copies {
            if width * height * depth == 0 {
                continue;
            }
            let layout = wgpu::TexelCopyBufferLayout {
                offset: self.source.offset + first_row as u64 * TEXTURE_ROW as u64 * TEXEL_BYTES,
                bytes_per_row: Some(TEXTURE_ROW * TEXEL_BYTES as u32),
                rows_per_image: Some(TEXTURE_LAYER_ROWS),
            };
            let origin = wgpu::Origin3d { x: 0, y: first_row % TEXTURE_LAYER_ROWS, z: first_row / TEXTURE_LAYER_ROWS };
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo { buffer: &self.source.buffer, layout },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture,
                    mip_level: 0,
                    origin,
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d { width, height, depth_or_array_layers: depth },
            );
        }
    }
}

/// Floats of the device's one scratch buffer ([`Gpu::scratch`]): 16 MiB.
pub const SCRATCH_FLOATS: usize = 1 << 22;

/// A region of a device buffer that holds one tensor (f32 or u32 elements).
#[derive(Clone)]
pub struct BufferView {
    pub buffer: Arc<wgpu::Buffer>,
    pub offset: u64,
    pub bytes: u64,
    pub name: String,
}

impl BufferView {
    pub fn elems(&self) -> usize {
        (self.bytes / 4) as usize
    }
    /// Bytes from `offset` to the end of its last 16-byte texel, within the buffer: what it is
    /// bound as, so that kernels reading or writing vec4s (elementwise.wgsl, adam.wgsl,
    /// concat.wgsl: [`launch`] checks) reach its last elements. Buffers are allocated in whole texels ([`Gpu::buffer`]) and views start
    /// on texel boundaries (slots at 0, parameters at the arena's alignment), so that padding
    /// belongs to no other tensor.
    pub fn texel_bytes(&self) -> u64 {
        self.bytes.next_multiple_of(TEXEL_BYTES).min(self.buffer.size() - self.offset)
    }
    fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.texel_bytes()),
        })
    }
}

/// Which entry point of which shader, with which workgroup shape and specialisation constants.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub shader: &'static str,
    pub entry: &'static str,
    pub workgroup: [u32; 3],
    /// Bytes of `var<workgroup>` memory the entry point declares (checked against the adapter).
    pub workgroup_bytes: u32,
    /// Extra `override` constants (besides WG_X/WG_Y/WG_Z).
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelSpec {
    pub fn new(shader: &'static str, entry: &'static str, workgroup: [u32; 3]) -> Self {
        KernelSpec { shader, entry, workgroup, workgroup_bytes: 0, constants: Vec::new() }
    }
    /// `entry` of `shader` run one invocation per element (or one workgroup per reduction), in
    /// workgroups of [`WG`] along x.
    pub fn per_element(shader: &'static str, entry: &'static str) -> Self {
        Self::new(shader, entry, [WG, 1, 1])
    }
    pub fn constant(mut self, name: &'static str, value: f64) -> Self {
        self.constants.push((name, value));
        self
    }
    pub fn workgroup_memory(mut self, bytes: u32) -> Self {
        self.workgroup_bytes = bytes;
        self
    }
    fn key(&self) -> String {
        format!("{}:{}:{:?}:{:?}", self.shader, self.entry, self.workgroup, self.constants)
    }
}

impl Gpu {
    /// A compiled pipeline, cached by spec.
    pub fn pipeline(&self, spec: &KernelSpec) -> Result<Arc<wgpu::ComputePipeline>> {
        self.pipelines.get_or_try_insert(spec.key(), || self.compile_pipeline(spec))
    }

    /// wgpu 30 does not check workgroup limits at pipeline creation on every backend, so this
    /// does.
    fn compile_pipeline(&self, spec: &KernelSpec) -> Result<Arc<wgpu::ComputePipeline>> {
        let l = &self.limits;
        let [x, y, z] = spec.workgroup;
        let invocations = x * y * z;
        if invocations > l.max_compute_invocations_per_workgroup
            || x > l.max_compute_workgroup_size_x
            || y > l.max_compute_workgroup_size_y
            || z > l.max_compute_workgroup_size_z
        {
            bail!(
                "kernel {}::{} needs a {x}x{y}x{z} workgroup, more than '{}' allows ({} invocations, {}x{}x{})",
                spec.shader,
                spec.entry,
                self.info.name,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroup_size_x,
                l.max_compute_workgroup_size_y,
                l.max_compute_workgroup_size_z
            );
        }
        if spec.workgroup_bytes > l.max_compute_workgroup_storage_size {
            bail!(
                "kernel {}::{} needs {} bytes of workgroup memory, '{}' has {}",
                spec.shader,
                spec.entry,
                spec.workgroup_bytes,
                self.info.name,
                l.max_compute_workgroup_storage_size
            );
        }
        let shader = shader(spec.shader);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.modules.get_or_try_insert(shader.name, || {
            Ok(compile_module(&self.device, shader.name, &source(shader, self.reads())))
        })?;
        let mut constants: Vec<(&str, f64)> = vec![("WG_X", x as f64), ("WG_Y", y as f64), ("WG_Z", z as f64)];
        constants.extend(spec.constants.iter().cloned());
        // Only pass the constants the entry point's module declares; naga rejects unknown ones.
        constants.retain(|(name, _)| [COMMON, shader.source].iter().any(|t| t.contains(&format!("override {name}"))));
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&spec.key()),
            layout: None,
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: true,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            bail!("could not compile kernel {}::{} on '{}': {e}", spec.shader, spec.entry, self.info.name);
        }
        Ok(Arc::new(pipeline))
    }

    /// Bytes of the textures kernels read tensors through ([`TextureUpload`]), so far.
    pub fn texture_pool_bytes(&self) -> u64 {
        let textures = self.textures.lock().unwrap();
        let texels = |t: &wgpu::Texture| t.width() as u64 * t.height() as u64 * t.depth_or_array_layers() as u64;
        textures.values().map(|t| texels(t) * TEXEL_BYTES).sum()
    }

    /// A zero-filled device buffer for `elems` 4-byte elements, allocated in whole 16-byte
    /// texels so that any tensor can be copied into a texture.
    pub fn buffer(&self, name: &str, elems: usize) -> Result<BufferView> {
        let bytes = (elems.max(1) * 4) as u64;
        let allocated = bytes.next_multiple_of(TEXEL_BYTES);
        if allocated > self.limits.max_buffer_size {
            bail!(
                "tensor '{name}' needs {}, more than this adapter's max buffer size ({}): use a smaller --batch or --size",
                mib(bytes),
                mib(self.limits.max_buffer_size)
            );
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: allocated,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if pollster::block_on(scope.pop()).is_some() {
            bail!("out of GPU memory allocating '{name}' ({}): use a smaller --batch, --size or --filters", mib(bytes));
        }
        Ok(BufferView { buffer: Arc::new(buffer), offset: 0, bytes, name: name.to_string() })
    }

    /// The device's scratch buffer ([`SCRATCH_FLOATS`] floats, made at the first call), which a
    /// kernel may fill and read back between its own dispatches (conv2d's split-K partial sums
    /// and their sum): a queue runs dispatches in order and wgpu orders their accesses, so every
    /// kernel can share one, as the activations share theirs.
    pub fn scratch(&self, elems: usize) -> Result<BufferView> {
        if elems > SCRATCH_FLOATS {
            bail!("a kernel asked for {elems} floats of scratch, more than {SCRATCH_FLOATS} (a bug in wgunet)");
        }
        let mut scratch = self.scratch.lock().unwrap();
        if scratch.is_none() {
            *scratch = Some(self.buffer("kernel scratch", SCRATCH_FLOATS)?);
        }
        Ok(scratch.clone().expect("made above"))
    }

    /// Bytes of the [`Gpu::scratch`] buffer: 0 until a kernel asked for it.
    pub fn scratch_bytes(&self) -> u64 {
        self.scratch.lock().unwrap().as_ref().map_or(0, |view| view.bytes)
    }

    /// A small uniform buffer the host rewrites between steps (e.g. Adam's learning rate).
    pub fn uniform_buffer(&self, name: &str, bytes: u64) -> BufferView {
        let bytes = bytes.div_ceil(16) * 16;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        BufferView { buffer: Arc::new(buffer), offset: 0, bytes, name: name.to_string() }
    }

    /// A device buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, name: &str, data: &[T]) -> Result<BufferView> {
        let view = self.buffer(name, std::mem::size_of_val(data) / 4)?;
        self.write(&view, data);
        Ok(view)
    }

    pub fn write<T: bytemuck::Pod>(&self, view: &BufferView, data: &[T]) {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        assert!(
            bytes.len() as u64 <= view.bytes,
            "write of {} bytes into '{}' ({} bytes)",
            bytes.len(),
            view.name,
            view.bytes
        );
        if !bytes.is_empty() {
            self.queue.write_buffer(&view.buffer, view.offset, bytes);
        }
    }

    /// Copies a tensor back to the host (waits for all queued work).
    pub fn read<T: bytemuck::Pod>(&self, view: &BufferView) -> Result<Vec<T>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: view.bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&view.buffer, view.offset, &staging, 0, view.bytes);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| anyhow!("reading '{}' back from the GPU failed: the device stopped answering", view.name))?
            .map_err(|e| anyhow!("reading '{}' back from the GPU failed: {e}", view.name))?;
        let mapped =
            slice.get_mapped_range().map_err(|e| anyhow!("reading '{}' back from the GPU failed: {e:?}", view.name))?;
        let out = bytemuck::cast_slice(&mapped).to_vec();
        drop(mapped);
        staging.unmap();
        Ok(out)
    }

    /// Records `dispatches`, submits, and waits.
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<()> {
        let mut recorder = Recorder::new(self);
        dispatches.iter().for_each(|d| recorder.dispatch(d));
        recorder.submit(self);
        self.wait()
    }
}

/// Number of workgroups along x and y covering `threads` invocations of `per_group` each.
/// Dispatches are limited to 65535 groups a dimension, so large 1-D launches wrap into y;
/// shaders recover the linear index with `linear_id()` from `common.wgsl`.
pub fn grid_1d(threads: usize, per_group: u32) -> [u32; 3] {
    let groups = threads.div_ceil(per_group as usize).max(1) as u64;
    let x = groups.min(65535);
    let y = groups.div_ceil(x);
    [x as u32, y as u32, 1]
}

/// One kernel launch: a pipeline, its bind group (params + tensors), and its grid.
/// Built once; [`Dispatch::record`] adds it to a compute pass at no further cost.
pub struct Dispatch {
    pub label: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// Tensors copied into textures before it runs.
    uploads: Vec<TextureUpload>,
    _params: wgpu::Buffer,
}

/// A step of one dispatch, where steps of several are expected.
impl From<Dispatch> for Vec<Dispatch> {
    fn from(d: Dispatch) -> Vec<Dispatch> {
        vec![d]
    }
}

/// Records dispatches into one command encoder, in order. Consecutive dispatches share a compute
/// pass; it ends before a dispatch whose tensors must first be copied into textures, as copies
/// cannot be recorded inside a pass.
pub struct Recorder {
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
}

impl Recorder {
    pub fn new(gpu: &Gpu) -> Recorder {
        Recorder { encoder: gpu.device.create_command_encoder(&Default::default()), pass: None }
    }

    pub fn dispatch(&mut self, d: &Dispatch) {
        if !d.uploads.is_empty() {
            self.pass = None;
            d.uploads.iter().for_each(|u| u.record(&mut self.encoder));
        }
        let pass =
            self.pass.get_or_insert_with(|| self.encoder.begin_compute_pass(&Default::default()).forget_lifetime());
        d.record(pass);
    }

    pub fn submit(mut self, gpu: &Gpu) {
        self.pass = None;
        gpu.queue.submit([self.encoder.finish()]);
    }
}

impl Dispatch {
    /// `params` is written to binding 0; `tensors` are `(binding number, view)` pairs (from
    /// [`launch`], which reads the numbers from the WGSL). Every tensor is checked against the
    /// adapter's max storage-buffer binding first.
    fn new<P: bytemuck::Pod>(
        gpu: &Gpu,
        spec: &KernelSpec,
        params: &P,
        tensors: &[(u32, &BufferView)],
        textures: Vec<(u32, TextureUpload)>,
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let max_binding = gpu.limits.max_storage_buffer_binding_size;
        for (_, t) in tensors {
            if t.bytes > max_binding {
                bail!(
                    "tensor '{}' is {}, more than this adapter's max storage-buffer binding ({}, '{}'): use a smaller --batch or --size",
                    t.name,
                    mib(t.bytes),
                    mib(max_binding),
                    gpu.info.name
                );
            }
        }
        let max_groups = gpu.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&g| g > max_groups) {
            bail!(
                "kernel {}::{} needs a grid of {:?} workgroups; '{}' allows {max_groups} a dimension",
                spec.shader,
                spec.entry,
                workgroups,
                gpu.info.name
            );
        }
        let pipeline = gpu.pipeline(spec)?;
        let params_buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: (std::mem::size_of::<P>() as u64).div_ceil(16) * 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.queue.write_buffer(&params_buf, 0, bytemuck::bytes_of(params));
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params_buf.as_entire_binding() }];
        entries.extend(tensors.iter().map(|(b, t)| wgpu::BindGroupEntry { binding: *b, resource: t.binding() }));
        let views: Vec<(u32, wgpu::TextureView)> = textures.iter().map(|(b, t)| (*b, t.view())).collect();
        entries.extend(
            views
                .iter()
                .map(|(b, v)| wgpu::BindGroupEntry { binding: *b, resource: wgpu::BindingResource::TextureView(v) }),
        );
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(spec.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            bail!("binding tensors for kernel {}::{} failed (a bug in wgunet): {e}", spec.shader, spec.entry);
        }
        Ok(Dispatch {
            label: format!("{}::{}", spec.shader, spec.entry),
            pipeline,
            bind_group,
            workgroups,
            uploads: textures.into_iter().map(|(_, t)| t).collect(),
            _params: params_buf,
        })
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line-by-line reading of every shader finds what naga finds: each group-0 binding's
    /// number and variable, and each struct's members.
    #[test]
    fn layouts_agree_with_naga() {
        for s in SHADERS {
            for reads in [Reads::Storage, Reads::Textures] {
                let layout = Layout::of(s, reads);
                let module =
                    naga::front::wgsl::parse_str(&source(s, reads)).expect("the naga test validates every shader");
                let mut bindings: Vec<(u32, String)> = module
                    .global_variables
                    .iter()
                    .filter_map(|(_, v)| Some((v.binding.as_ref()?.binding, v.name.clone()?)))
                    .collect();
                bindings.sort();
                let mut parsed: Vec<(u32, String)> = layout.bindings.iter().map(|(n, v, _)| (*n, v.clone())).collect();
                parsed.sort();
                assert_eq!(parsed, bindings, "{}.wgsl", s.name);
                for (_, ty) in module.types.iter() {
                    // Names starting with "__" are naga's own (e.g. atomic results), not declared.
                    if let (Some(name), naga::TypeInner::Struct { members, .. }) = (&ty.name, &ty.inner) {
                        if name.starts_with("__") {
                            continue;
                        }
                        let names: Vec<_> = members.iter().map(|m| m.name.clone().unwrap_or_default()).collect();
                        let parsed: Vec<_> = layout.structs[name].iter().map(|(m, _)| m.clone()).collect();
                        assert_eq!(parsed, names, "{}.wgsl: struct {name}", s.name);
                    }
                }
            }
        }
    }

    /// Read-only f32 and vec4 bindings become textures, read with texel_f32 / texel wherever
    /// they are indexed (nested indices included); other bindings and longer names are kept.
    #[test]
    fn read_only_bindings_are_read_through_textures() {
        let source = "@group(0) @binding(1) var<storage, read> a: array<f32>;\n\
                      @group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;\n\
                      @group(0) @binding(3) var<storage, read> idx: array<u32>;\n\
                      @group(0) @binding(4) var<storage, read_write> out: array<f32>;\n\
                      fn f(i: u32) { out[i] = a[idx[i] + 1u] + a4[a4_index[i]].x + data[i] + out[a[i]]; }";
        let want = "@group(0) @binding(1) var a: TensorTexture;\n\
                    @group(0) @binding(2) var a4: TensorTexture;\n\
                    @group(0) @binding(3) var<storage, read> idx: array<u32>;\n\
                    @group(0) @binding(4) var<storage, read_write> out: array<f32>;\n\
                    fn f(i: u32) { out[i] = texel_f32(a, idx[i] + 1u) + texel(a4, a4_index[i]).x + data[i] + out[texel_f32(a, i)]; }";
        assert_eq!(read_through_textures(source), want);
    }

    #[test]
    fn params_match_up_to_trailing_padding() {
        let layout = Layout::of(shader("gate"), Reads::Storage);
        assert!(layout.params_are(&[("n", "u32"), ("c", "u32"), ("hw", "u32")]));
        assert!(!layout.params_are(&[("n", "u32"), ("hw", "u32"), ("c", "u32")]));
        assert!(!layout.params_are(&[("n", "u32"), ("c", "u32"), ("hw", "f32")]));
        assert!(!layout.params_are(&[("n", "u32"), ("c", "u32")]));
        assert!(!layout.params_are(&[("n", "u32"), ("c", "u32"), ("hw", "u32"), ("extra", "u32"), ("more", "u32")]));
        assert_eq!(layout.binding("out"), Some((4, "array<f32>")));
        assert_eq!(layout.binding("p"), Some((0, "Params")));
        assert_eq!(layout.binding("nothing"), None);
        assert_eq!(Layout::of(shader("conv2d_lanes"), Reads::Storage).binding("x"), Some((1, TENSOR_TEXTURE)));
        assert_eq!(Layout::of(shader("gate"), Reads::Textures).binding("x"), Some((1, TENSOR_TEXTURE)));
        assert_eq!(Layout::of(shader("gate"), Reads::Textures).binding("out"), Some((4, "array<f32>")));
    }
}
