//! Attention gating, the sigmoid and LeakyReLU: the references' gradients against central
//! finite differences in f64.

mod common;

use rand::{Rng, SeedableRng};
use wgunet::ops::elementwise;
use wgunet::ops::gate::{self, Gate};

fn random(rng: &mut rand_pcg::Pcg64, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// dx and da of y = x·a (a broadcast over channels), including one channel and one pixel.
#[test]
fn gate_gradient() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    for (n, c, hw) in [(1, 1, 1), (2, 3, 5), (3, 1, 4), (1, 4, 1)] {
        let s = Gate { n, c, hw };
        let (x, a, r) = (random(&mut rng, s.len()), random(&mut rng, s.gate_len()), random(&mut rng, s.len()));
        let (dx, da) = gate::reference::backward(&s, &x, &a, &r);
        let name = format!("gate {n}x{c}x{hw}");
        common::finite_difference_check(
            &format!("{name} dx"),
            seed,
            &x,
            &r,
            |x| gate::reference::forward(&s, x, &a),
            &dx,
        );
        common::finite_difference_check(
            &format!("{name} da"),
            seed,
            &a,
            &r,
            |a| gate::reference::forward(&s, &x, a),
            &da,
        );
    }
}

/// dσ/dx from the output y = σ(x), over the range where the sigmoid bends and saturates.
#[test]
fn sigmoid_gradient() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let x: Vec<f64> = random(&mut rng, 50).iter().map(|v| 6.0 * v).collect();
    let r = random(&mut rng, x.len());
    let dx = elementwise::reference::sigmoid_backward(&elementwise::reference::sigmoid(&x), &r);
    common::finite_difference_check("sigmoid", seed, &x, &r, elementwise::reference::sigmoid, &dx);
}

/// LeakyReLU's dx from its output y on both sides of the kink; the negative side's gradient is
/// the slope, not zero, which a ReLU's backward would give.
#[test]
fn leaky_relu_gradient() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    // Away from 0, where the function has no derivative.
    let x: Vec<f64> = random(&mut rng, 50).iter().map(|v| v + 0.1 * v.signum()).collect();
    let r = random(&mut rng, x.len());
    let dx = elementwise::reference::leaky_relu_backward(&elementwise::reference::leaky_relu(&x), &r);
    common::finite_difference_check("leaky_relu", seed, &x, &r, elementwise::reference::leaky_relu, &dx);
    let negative = x.iter().position(|&v| v < 0.0).expect("a negative input");
    assert_eq!(dx[negative], elementwise::LEAKY_RELU_SLOPE * r[negative]);
}
