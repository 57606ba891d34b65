//! Kernel throughput on typical U-Net layer shapes: `cargo bench --bench kernels`
//! (`WGUNET_BENCH_DEVICE=gpu|cpu|…`, default auto). Prints ms per launch and GFLOP/s for the
//! convolutions, forward and backward, after warm-up.

use std::time::Instant;

use wgunet::kernel::Dispatch;
use wgunet::ops::conv2d::Conv2d;
use wgunet::ops::conv_transpose2d::ConvTranspose2d;
use wgunet::{DeviceChoice, Gpu};

fn time(gpu: &Gpu, d: &Dispatch, reps: usize) -> f64 {
    let run = |n: usize| {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..n {
                d.record(&mut pass);
            }
        }
        gpu.queue.submit([enc.finish()]);
        gpu.wait().unwrap();
    };
    run(1);
    let t0 = Instant::now();
    run(reps);
    t0.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let choice: DeviceChoice = std::env::var("WGUNET_BENCH_DEVICE").unwrap_or_else(|_| "auto".into()).parse().unwrap();
    let gpu = Gpu::open(&choice).expect("an adapter");
    let reps: usize = std::env::var("WGUNET_BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    println!("{}", gpu.describe());
    println!("{:<44} {:>10} {:>10}", "kernel and shape", "ms", "GFLOP/s");
    let buf = |n: usize| gpu.buffer("bench", n).unwrap();
    let shapes = [
        Conv2d { n: 8, cin: 16, cout: 8, h: 64, w: 64, k: 3, relu: true },
        Conv2d { n: 8, cin: 32, cout: 32, h: 32, w: 32, k: 3, relu: true },
        Conv2d { n: 8, cin: 128, cout: 128, h: 4, w: 4, k: 3, relu: true },
        Conv2d { n: 8, cin: 64, cout: 64, h: 128, w: 128, k: 3, relu: true },
    ];
    for s in shapes {
        let big = std::env::var("WGUNET_BENCH_BIG").is_ok();
        if s.h == 128 && !big {
            continue;
        }
        let (x, w, b, y) = (buf(s.input_len()), buf(s.weight_len()), buf(s.cout), buf(s.output_len()));
        let f = s.flops() as f64;
        let name = format!("{}x{}x{}x{}->{} k{}", s.n, s.cin, s.h, s.w, s.cout, s.k);
        for (label, d) in [
            ("forward", s.forward(&gpu, &x, &w, &b, &y).unwrap()),
            ("backward_input", s.backward_input(&gpu, &y, &w, &x).unwrap()),
            ("backward_weight", s.backward_weight(&gpu, &x, &y, &w).unwrap()),
        ] {
            let t = time(&gpu, &d, reps);
            println!("{:<44} {:>10.2} {:>10.2}", format!("conv2d {label} {name}"), t * 1e3, f / t / 1e9);
        }
    }
    let t = ConvTranspose2d { n: 8, cin: 64, cout: 32, h: 16, w: 16 };
    let (x, w, b, y) = (buf(t.input_len()), buf(t.weight_len()), buf(t.cout), buf(t.output_len()));
    for (label, d) in [
        ("forward", t.forward(&gpu, &x, &w, &b, &y).unwrap()),
        ("backward_input", t.backward_input(&gpu, &y, &w, &x).unwrap()),
        ("backward_weight", t.backward_weight(&gpu, &x, &y, &w).unwrap()),
    ] {
        let s = time(&gpu, &d, reps);
        println!(
            "{:<44} {:>10.2} {:>10.2}",
            format!("conv_transpose2d {label} 8x64x16x16->32"),
            s * 1e3,
            t.flops() as f64 / s / 1e9
        );
    }
}
