//! The conv2d and conv_transpose2d reference gradients (dx, dw, db) against central finite
//! differences of the reference forwards, in f64.

mod common;

use wgunet::check::{self, CheckRng};
use wgunet::ops::conv2d::{self, Conv2d};
use wgunet::ops::conv_transpose2d::{self, ConvTranspose2d};
use wgunet::ops::elementwise;

fn random(rng: &mut CheckRng, n: usize) -> Vec<f64> {
    check::to_f64(&check::random(rng, n))
}

/// Finite-difference checks of dx, dw and db for a forward `f(x, w, b)` whose gradients, given
/// the random output weighting `r`, are `grads(x, w, b, r)`.
fn check_gradients(
    name: &str,
    lens: (usize, usize, usize, usize),
    f: impl Fn(&[f64], &[f64], &[f64]) -> Vec<f64>,
    grads: impl Fn(&[f64], &[f64], &[f64], &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>),
) {
    let seed = common::seed();
    let mut rng = check::rng(seed);
    let (x_len, w_len, b_len, y_len) = lens;
    let (x, w, b, r) =
        (random(&mut rng, x_len), random(&mut rng, w_len), random(&mut rng, b_len), random(&mut rng, y_len));
    let (dx, dw, db) = grads(&x, &w, &b, &r);
    common::finite_difference_check(&format!("{name} dx"), seed, &x, &r, |x| f(x, &w, &b), &dx);
    common::finite_difference_check(&format!("{name} dw"), seed, &w, &r, |w| f(&x, w, &b), &dw);
    common::finite_difference_check(&format!("{name} db"), seed, &b, &r, |b| f(&x, &w, b), &db);
}

fn check_conv2d(s: Conv2d) {
    let name = format!("conv2d {s:?}");
    check_gradients(
        &name,
        (s.input_len(), s.weight_len(), s.cout, s.output_len()),
        |x, w, b| conv2d::reference::forward(&s, x, w, b),
        |x, w, b, r| {
            // The reference backward takes the pre-activation gradient: with ReLU fused, that is
            // relu_backward of the output gradient r.
            let dz = if s.relu {
                elementwise::reference::relu_backward(&conv2d::reference::forward(&s, x, w, b), r)
            } else {
                r.to_vec()
            };
            conv2d::reference::backward(&s, x, w, &dz)
        },
    );
}

#[test]
fn conv2d_3x3() {
    check_conv2d(Conv2d { n: 2, cin: 3, cout: 2, h: 5, w: 4, k: 3, relu: false });
}

#[test]
fn conv2d_1x1() {
    check_conv2d(Conv2d { n: 2, cin: 3, cout: 2, h: 5, w: 4, k: 1, relu: false });
}

#[test]
fn conv2d_3x3_relu_composed_with_relu_backward() {
    check_conv2d(Conv2d { n: 2, cin: 3, cout: 2, h: 5, w: 4, k: 3, relu: true });
}

#[test]
fn conv_transpose2d() {
    let s = ConvTranspose2d { n: 2, cin: 3, cout: 2, h: 3, w: 4 };
    check_gradients(
        "conv_transpose2d",
        (s.input_len(), s.weight_len(), s.cout, s.output_len()),
        |x, w, b| conv_transpose2d::reference::forward(&s, x, w, b),
        |x, w, _, r| conv_transpose2d::reference::backward(&s, x, w, r),
    );
}
