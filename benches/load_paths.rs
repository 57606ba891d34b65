//! What one load costs on this adapter, by address space and address pattern:
//! `cargo bench --bench load_paths`.
//!
//! The lane kernels (`shaders/*_lanes.wgsl`) are shaped by what a load costs on lavapipe, so
//! this measures it instead of assuming it: a loop of 1024 vec4 loads and FMAs per invocation,
//! from a storage buffer, a uniform buffer (one 64 KiB binding), a sampled texture or a read-only
//! storage texture array (the kernels' `TensorTexture`), with an address that is the
//! same in every lane (as a weight's is) or differs per lane (as an activation's does). Each
//! path is timed 7 times, interleaved with the others so that a busy machine hurts them alike;
//! the minimum is reported. Environment: `WGUNET_BENCH_DEVICE=gpu|cpu|…` (default auto).

use std::time::Instant;

use wgpu::util::DeviceExt;
use wgunet::Gpu;

const SOURCE: &str = r#"
@group(0) @binding(0) var<uniform> u: array<vec4<f32>, 4096>;
@group(0) @binding(1) var<storage, read> s: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var tex: texture_2d<f32>;
@group(0) @binding(5) var stex: texture_storage_2d_array<rgba32float, read>;
// 0: storage, same address in every lane; 1: uniform, same address;
// 2: storage, address per lane;            3: uniform, address per lane;
// 4: texture (64×64 rgba32float), same texel; 5: texture, texel per lane;
// 6: storage texture (the same texels, one layer), same texel; 7: storage texture, texel per lane.
override PATH: u32 = 0u;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>(0.0);
    let lane = gid.x % 512u;
    for (var i = 0u; i < 1024u; i++) {
        var v: vec4<f32>;
        switch PATH {
            case 0u: { v = s[i]; }
            case 1u: { v = u[i]; }
            case 2u: { v = s[(i + lane) % 4096u]; }
            case 3u: { v = u[(i + lane) % 4096u]; }
            case 4u: { v = textureLoad(tex, vec2<u32>(i % 64u, i / 64u), 0); }
            case 5u: {
                let t = (i + lane) % 4096u;
                v = textureLoad(tex, vec2<u32>(t % 64u, t / 64u), 0);
            }
            case 6u: { v = textureLoad(stex, vec2<u32>(i % 64u, i / 64u), 0u); }
            default: {
                let t = (i + lane) % 4096u;
                v = textureLoad(stex, vec2<u32>(t % 64u, t / 64u), 0u);
            }
        }
        acc = fma(v, v, acc);
    }
    out[gid.x] = acc.x + acc.y + acc.z + acc.w;
}
"#;

const PATHS: [&str; 8] = [
    "storage, same address",
    "uniform, same address",
    "storage, per-lane address",
    "uniform, per-lane address",
    "texture, same texel",
    "texture, per-lane texel",
    "storage texture, same texel",
    "storage texture, per-lane",
];
const INVOCATIONS: u32 = 64 * 512;
const LOADS_PER_INVOCATION: f64 = 1024.0;

fn main() {
    let gpu = Gpu::open_for_bench().expect("adapter");
    let d = &gpu.device;
    let data: Vec<f32> = (0..16384).map(|i| (i % 7) as f32 * 0.01).collect();
    let init = |usage| {
        d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&data),
            usage,
        })
    };
    let (uniform, storage) = (init(wgpu::BufferUsages::UNIFORM), init(wgpu::BufferUsages::STORAGE));
    // The same 4096 vec4s as a 64×64 rgba32float texture, read with textureLoad (no sampler), and
    // as a one-layer storage texture array, as the lane kernels read their inputs.
    let extent = wgpu::Extent3d { width: 64, height: 64, depth_or_array_layers: 1 };
    let sampled = d.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: extent,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let storage_texture = wgunet::kernel::input_texture(d, extent);
    for texture in [&sampled, &storage_texture] {
        gpu.queue.write_texture(
            texture.as_image_copy(),
            bytemuck::cast_slice(&data),
            wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(64 * 16), rows_per_image: Some(64) },
            extent,
        );
    }
    let texture_view = sampled.create_view(&Default::default());
    let array_view = storage_texture.create_view(&wgpu::TextureViewDescriptor {
        dimension: Some(wgpu::TextureViewDimension::D2Array),
        ..Default::default()
    });
    let out = d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: INVOCATIONS as u64 * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(SOURCE.into()),
    });
    let runs: Vec<_> = (0..PATHS.len())
        .map(|path| {
            let constants = [("PATH", path as f64)];
            let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(PATHS[path]),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            let bind_group = d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: storage.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: out.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 3, resource: wgpu::BindingResource::TextureView(&texture_view) },
                    wgpu::BindGroupEntry { binding: 5, resource: wgpu::BindingResource::TextureView(&array_view) },
                ],
            });
            (pipeline, bind_group)
        })
        .collect();
    let time = |(pipeline, bind_group): &(wgpu::ComputePipeline, wgpu::BindGroup)| {
        let t0 = Instant::now();
        let mut enc = d.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(INVOCATIONS / 64, 1, 1);
        }
        gpu.queue.submit([enc.finish()]);
        gpu.wait().expect("device");
        t0.elapsed().as_secs_f64()
    };
    for r in &runs {
        time(r); // compiles the pipeline
    }
    let mut best = vec![f64::INFINITY; runs.len()];
    for _ in 0..7 {
        for (b, r) in best.iter_mut().zip(&runs) {
            *b = b.min(time(r));
        }
    }
    for (name, seconds) in PATHS.iter().zip(&best) {
        let ns = seconds * 1e9 / (INVOCATIONS as f64 * LOADS_PER_INVOCATION);
        println!("{name:28} {ns:6.2} ns per vec4 load and FMA per invocation");
    }
}
