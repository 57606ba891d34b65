//! Would the lane kernels gain from reading through textures? `cargo bench --bench texture_reads`.
//!
//! On lavapipe every storage-buffer load is a loop over the 8 lanes; on a host without AVX-512
//! each lane's value reaches the vector through the stack (a store-forwarding stall a lane), and
//! `load_paths` measures a storage load at about 10 texel fetches there. This runs
//! `conv2d_lanes.wgsl`'s `forward` at U-Net layer shapes three ways, from the same WGSL text:
//! as it is; with the weights read from an r32float texture; with `x` read from an rgba32float
//! texture (a texel is 4 pixels, 1024 texels a row); and with both (each `x[i]` / `wt[i]` rewritten to a
//! `textureLoad`, nothing else changed). It prints each time (the texture runs include copying
//! `x` into its texture, as a pass would) and checks the outputs equal the storage version's.
//! Environment: `WGUNET_BENCH_DEVICE=gpu|cpu|…` (default auto).

use std::time::Instant;

use wgpu::util::DeviceExt;
use wgunet::Gpu;

/// Texels per texture row: 16 KiB rows for rgba32float, a multiple of the 256-byte copy pitch.
const ROW: u32 = 1024;

/// `source` with the storage binding `name` (an array of `element`: `vec4<f32>` or `f32`)
/// replaced by a texture of the same values, and every `name[index]` read by `load_name(index)`.
fn read_through_texture(source: &str, name: &str, binding: &str, element: &str) -> String {
    let loader = format!("load_{name}");
    let component = if element == "f32" { ".x" } else { "" };
    let declaration = format!("var<storage, read> {name}: array<{element}>;");
    let texture = format!(
        "var {name}_texture: texture_2d<f32>;\n\
         fn {loader}(i: u32) -> {element} {{ return textureLoad({name}_texture, vec2<u32>(i % {ROW}u, i / {ROW}u), 0){component}; }}"
    );
    let source = source.replace(&format!("{binding} {declaration}"), &format!("{binding} {texture}"));
    let mut out = String::new();
    let mut rest = source.as_str();
    let pattern = format!("{name}[");
    while let Some(at) = rest.find(&pattern) {
        let preceded = rest[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..at]);
        if preceded {
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
            .expect("balanced brackets")
            .0;
        out.push_str(&format!("{loader}({})", &inner[..close]));
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    out
}

fn main() {
    let gpu = Gpu::open_for_bench().expect("adapter");
    let d = &gpu.device;
    let lanes = include_str!("../shaders/conv2d_lanes.wgsl");
    // (name, x from a texture, weights from a texture)
    let variants = [
        ("storage", false, false),
        ("weights from a texture", false, true),
        ("x from a texture", true, false),
        ("x and weights from textures", true, true),
    ];
    let sources = variants.map(|(_, x_textured, wt_textured)| {
        let mut source = lanes.to_string();
        if x_textured {
            source = read_through_texture(&source, "x", "@group(0) @binding(1)", "vec4<f32>");
            assert!(!source.contains(" x["), "an x read left on the storage path");
        }
        if wt_textured {
            source = read_through_texture(&source, "wt", "@group(0) @binding(2)", "f32");
            assert!(!source.contains("wt["), "a weight read left on the storage path");
        }
        source
    });
    // (n, cin, cout, h, w): the 128² F32 U-Net's first level, a middle one, the bottleneck; a 64² F8 layer.
    for (n, cin, cout, h, w) in
        [(8u32, 32u32, 32u32, 128u32, 128u32), (8, 64, 64, 64, 64), (8, 256, 256, 16, 16), (8, 8, 8, 64, 64)]
    {
        let x: Vec<f32> = (0..n * cin * h * w).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let wt: Vec<f32> = (0..cout * cin * 9).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 0.01).collect();
        let texture = |data: &[f32], format, texel_floats: u32| {
            let rows = (data.len() as u32 / texel_floats).div_ceil(ROW);
            let mut padded = data.to_vec();
            padded.resize((rows * ROW * texel_floats) as usize, 0.0);
            let size = wgpu::Extent3d { width: ROW, height: rows, depth_or_array_layers: 1 };
            let usage = wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST;
            let t = d.create_texture(&wgpu::TextureDescriptor {
                label: None,
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage,
                view_formats: &[],
            });
            let buffer = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(&padded),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            });
            (t, buffer, rows)
        };
        let (x_tex, x_buf, x_rows) = texture(&x, wgpu::TextureFormat::Rgba32Float, 4);
        let (wt_tex, wt_buf, wt_rows) = texture(&wt, wgpu::TextureFormat::R32Float, 1);
        let copy = |enc: &mut wgpu::CommandEncoder, t: &wgpu::Texture, b: &wgpu::Buffer, rows: u32, bytes: u32| {
            let layout =
                wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(ROW * bytes), rows_per_image: Some(rows) };
            let size = wgpu::Extent3d { width: ROW, height: rows, depth_or_array_layers: 1 };
            enc.copy_buffer_to_texture(wgpu::TexelCopyBufferInfo { buffer: b, layout }, t.as_image_copy(), size);
        };
        let (x_view, wt_view) = (x_tex.create_view(&Default::default()), wt_tex.create_view(&Default::default()));
        let buffer = |data: &[u8], usage| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: data, usage })
        };
        let params = buffer(bytemuck::cast_slice(&[n, cin, cout, h, w, 0, 0, 0]), wgpu::BufferUsages::UNIFORM);
        let wt_storage = buffer(bytemuck::cast_slice(&wt), wgpu::BufferUsages::STORAGE);
        let bias_buf = buffer(bytemuck::cast_slice(&bias), wgpu::BufferUsages::STORAGE);
        let y_bytes = (n * cout * h * w) as u64 * 4;
        let y = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: y_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: y_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // As the driver sets them for these shapes: 64-invocation workgroups of (image, row, run
        // of 8 pixels) items, 4 output channels each.
        let runs = w / 8;
        let items = n * h * runs;
        let crossing = if 8 % runs == 0 || runs % 8 == 0 { 0.0 } else { 1.0 };
        let constants = [
            ("WG_X", 64.0),
            ("WG_Y", 1.0),
            ("WG_Z", 1.0),
            ("K", 3.0),
            ("TILE", 4.0),
            ("PX", 8.0),
            ("CROSSING", crossing),
            ("TRANSPOSE", 0.0),
            ("RELU", 0.0),
        ];
        let flops = 2.0 * (n * cout * h * w * cin * 9) as f64;
        let mut reference: Option<Vec<f32>> = None;
        for ((name, x_textured, wt_textured), source) in variants.iter().zip(&sources) {
            let module = wgunet::kernel::compile_module(d, name, &format!("{}\n{source}", wgunet::kernel::COMMON));
            let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("forward"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            let x_resource =
                if *x_textured { wgpu::BindingResource::TextureView(&x_view) } else { x_buf.as_entire_binding() };
            let wt_resource = if *wt_textured {
                wgpu::BindingResource::TextureView(&wt_view)
            } else {
                wt_storage.as_entire_binding()
            };
            let bind_group = d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: x_resource },
                    wgpu::BindGroupEntry { binding: 2, resource: wt_resource },
                    wgpu::BindGroupEntry { binding: 3, resource: bias_buf.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 4, resource: y.as_entire_binding() },
                ],
            });
            let run = || {
                let t0 = Instant::now();
                let mut enc = d.create_command_encoder(&Default::default());
                if *x_textured {
                    copy(&mut enc, &x_tex, &x_buf, x_rows, 16);
                }
                if *wt_textured {
                    copy(&mut enc, &wt_tex, &wt_buf, wt_rows, 4);
                }
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bind_group, &[]);
                    pass.dispatch_workgroups(cout / 4, items.div_ceil(64), 1);
                }
                gpu.queue.submit([enc.finish()]);
                gpu.wait().expect("device");
                t0.elapsed().as_secs_f64()
            };
            run(); // compiles the pipeline
            let best = (0..5).map(|_| run()).fold(f64::INFINITY, f64::min);
            let mut enc = d.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&y, 0, &readback, 0, y_bytes);
            gpu.queue.submit([enc.finish()]);
            readback.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            gpu.wait().expect("device");
            let out: Vec<f32> =
                bytemuck::cast_slice(&readback.slice(..).get_mapped_range().expect("mapped")[..]).to_vec();
            readback.unmap();
            let differs =
                reference.as_ref().map_or(0.0, |r| r.iter().zip(&out).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max));
            println!(
                "{n}×{cin}×{h}×{w} → {cout:<4} {name:28} {:8.2} ms {:6.1} GFLOP/s   max |Δ| vs storage {differs:e}",
                best * 1e3,
                flops / best / 1e9
            );
            assert!(differs == 0.0, "{name} computed other values than the storage version");
            reference.get_or_insert(out);
        }
    }
}
