//! Batch norm and dropout: the references' gradients against central finite differences in f64,
//! the running-statistics update against a hand computation, and the dropout mask's statistics
//! (kept fraction, a new mask each step and stream, p = 0 the identity) on the GPU.

mod common;

use rand::{Rng, SeedableRng};
use wgunet::check;
use wgunet::ops::batchnorm::{self, BatchNorm};
use wgunet::ops::dropout::{self, Dropout};

fn random(rng: &mut rand_pcg::Pcg64, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Training-mode dx, dγ, dβ, for shapes with N·H·W from 2 up (at N·H·W = 1, y = β whatever x is).
#[test]
fn batchnorm_training_gradient() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    for (n, c, hw) in [(1, 1, 2), (2, 3, 5), (3, 2, 1), (1, 2, 7)] {
        let s = BatchNorm::keras(n, c, hw);
        let (x, gamma, beta, r) =
            (random(&mut rng, s.len()), random(&mut rng, c), random(&mut rng, c), random(&mut rng, s.len()));
        let y = |x: &[f64], gamma: &[f64], beta: &[f64]| {
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            batchnorm::reference::forward_train(&s, x, gamma, beta, &mut rm, &mut rv).0
        };
        let (dx, dgamma, dbeta) = batchnorm::reference::backward(&s, &x, &gamma, &r);
        let name = format!("batchnorm {n}x{c}x{hw}");
        common::finite_difference_check(&format!("{name} dx"), seed, &x, &r, |x| y(x, &gamma, &beta), &dx);
        common::finite_difference_check(&format!("{name} dgamma"), seed, &gamma, &r, |g| y(&x, g, &beta), &dgamma);
        common::finite_difference_check(&format!("{name} dbeta"), seed, &beta, &r, |b| y(&x, &gamma, b), &dbeta);
    }
}

/// Two channels of n = 2, hw = 2: channel 0 holds 1, 2 (image 0) and 3, 4 (image 1), so
/// μ = 2.5, biased σ² = 1.25, unbiased 5/3; channel 1 is constant 7: μ = 7, σ² = 0.
/// Momentum 0.75 (exact in f32) from running (0, 1) and (1, 2). Checked on the reference and on the GPU.
#[test]
fn batchnorm_running_statistics_by_hand() {
    let s = BatchNorm { n: 2, c: 2, hw: 2, eps: 1e-3, momentum: 0.75 };
    let x = [1.0, 2.0, 7.0, 7.0, 3.0, 4.0, 7.0, 7.0];
    let (gamma, beta) = ([1.0, 1.0], [0.0, 0.0]);
    let want_stats = [2.5, 1.25, 7.0, 0.0];
    let want_mean = [0.75 * 0.0 + 0.25 * 2.5, 0.75 * 1.0 + 0.25 * 7.0];
    let want_var = [0.75 * 1.0 + 0.25 * 5.0 / 3.0, 0.75 * 2.0 + 0.25 * 0.0];

    let (mut rm, mut rv) = (vec![0.0, 1.0], vec![1.0, 2.0]);
    let (y, stats) = batchnorm::reference::forward_train(&s, &x, &gamma, &beta, &mut rm, &mut rv);
    let close = |a: &[f64], b: &[f64], tol: f64| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= tol);
    assert!(close(&stats, &want_stats, 1e-15), "stats {stats:?}, want {want_stats:?}");
    assert!(close(&rm, &want_mean, 1e-15), "running mean {rm:?}, want {want_mean:?}");
    assert!(close(&rv, &want_var, 1e-15), "running var {rv:?}, want {want_var:?}");
    // The constant channel normalises to β = 0; channel 0 to ±(1.5, 0.5)/√(1.25 + ε).
    let r = 1.0 / (1.25f64 + 1e-3f32 as f64).sqrt();
    let want_y = [-1.5 * r, -0.5 * r, 0.0, 0.0, 0.5 * r, 1.5 * r, 0.0, 0.0];
    assert!(close(&y, &want_y, 1e-12), "y {y:?}, want {want_y:?}");

    let gpu = common::gpu();
    let upload = |name: &str, v: &[f64]| gpu.upload(name, &v.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap();
    let (gx, gg, gb) = (upload("x", &x), upload("gamma", &gamma), upload("beta", &beta));
    let (grm, grv) = (upload("running_mean", &[0.0, 1.0]), upload("running_var", &[1.0, 2.0]));
    let (gy, gstats) = (check::poisoned(gpu, "y", 8).unwrap(), check::poisoned(gpu, "stats", 4).unwrap());
    let train = s.forward_train(gpu, &gx, &gg, &gb, &gy, &gstats, &grm, &grv).unwrap();
    gpu.run(&train.iter().collect::<Vec<_>>()).unwrap();
    let read = |v| check::to_f64(&gpu.read::<f32>(v).unwrap());
    assert!(close(&read(&gstats), &want_stats, 1e-6), "GPU stats {:?}", read(&gstats));
    assert!(close(&read(&grm), &want_mean, 1e-6), "GPU running mean {:?}", read(&grm));
    assert!(close(&read(&grv), &want_var, 1e-6), "GPU running var {:?}", read(&grv));
    assert!(close(&read(&gy), &want_y, 1e-6), "GPU y {:?}", read(&gy));
}

#[test]
fn dropout_gradient() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let s = Dropout { n: 50, p: 0.3, stream: 0 };
    let (x, r) = (random(&mut rng, s.n), random(&mut rng, s.n));
    let (mask_seed, step) = (rng.random(), rng.random());
    let dx = dropout::reference::backward(&s, mask_seed, step, &r);
    let y = |x: &[f64]| dropout::reference::forward(&s, mask_seed, step, x);
    common::finite_difference_check("dropout", seed, &x, &r, y, &dx);
}

/// Over 10⁵ elements the kept count is Binomial(n, 1 − p): within 5σ of n(1 − p).
#[test]
fn dropout_keeps_one_minus_p() {
    let seed = common::seed();
    let n = 100_000u32;
    for p in [0.1f32, 0.5, 0.9] {
        let kept = (0..n).filter(|&i| dropout::keep(seed, 7, 0, i, p)).count() as f64;
        let (mean, sigma) = (n as f64 * (1.0 - p as f64), (n as f64 * p as f64 * (1.0 - p as f64)).sqrt());
        assert!(
            (kept - mean).abs() < 5.0 * sigma,
            "p = {p}: kept {kept} of {n}, expected {mean} ± {sigma:.0} (WGUNET_SEED={seed})"
        );
    }
}

/// One dispatch, the rng buffer rewritten: steps 0, 1 and 1 again, then p = 0. A new step (or
/// stream) gives a mask that agrees with the old one about as often as independent masks do
/// (p² + (1 − p)² = 1/2 at p = 1/2), the same step the same mask, and p = 0 copies x exactly.
#[test]
fn dropout_masks_change_with_step_and_stream() {
    let seed = common::seed();
    let gpu = common::gpu();
    let n = 100_000;
    let ones = gpu.upload("ones", &vec![1.0f32; n]).unwrap();
    let y = check::poisoned(gpu, "y", n).unwrap();
    let rng = dropout::rng_buffer(gpu);
    let mask = |s: Dropout, step: u32| -> Vec<bool> {
        gpu.write(&rng, &dropout::rng_words(seed, step));
        gpu.run(&[&s.forward(gpu, &rng, &ones, &y).unwrap()]).unwrap();
        gpu.read::<f32>(&y).unwrap().iter().map(|&v| v != 0.0).collect()
    };
    let half = Dropout { n, p: 0.5, stream: 0 };
    let (step0, step1, step1_again) = (mask(half, 0), mask(half, 1), mask(half, 1));
    let other_stream = mask(Dropout { stream: 1, ..half }, 1);
    let agreement = |a: &[bool], b: &[bool]| a.iter().zip(b).filter(|(a, b)| a == b).count() as f64 / n as f64;
    // σ of an agreement fraction of independent masks: 0.5/√n ≈ 0.0016.
    assert!((agreement(&step0, &step1) - 0.5).abs() < 0.01, "steps 0 and 1 agree on {}", agreement(&step0, &step1));
    assert!(
        (agreement(&step1, &other_stream) - 0.5).abs() < 0.01,
        "streams 0 and 1 agree on {}",
        agreement(&step1, &other_stream)
    );
    assert_eq!(step1, step1_again, "the same (seed, step) gave a different mask (WGUNET_SEED={seed})");

    let x = check::random(&mut check::rng(seed), n);
    let gx = gpu.upload("x", &x).unwrap();
    gpu.run(&[&Dropout { p: 0.0, ..half }.forward(gpu, &rng, &gx, &y).unwrap()]).unwrap();
    assert_eq!(gpu.read::<f32>(&y).unwrap(), x, "p = 0 is not the identity");
}
