//! The pooling, up-sampling and concat references' backward functions against central finite
//! differences of their forwards, in f64 on the CPU (no device).

mod common;

use rand::seq::SliceRandom;
use wgunet::check::{self, CheckRng};
use wgunet::ops::concat::reference as concat_ref;
use wgunet::ops::pool::{reference as pool_ref, MaxPool2d, Upsample2x};

fn random64(rng: &mut CheckRng, n: usize) -> Vec<f64> {
    check::to_f64(&check::random(rng, n))
}

/// Distinct values in [-1, 1) in random order, at least 2/n apart: a finite-difference step can
/// never reorder two of them (independent draws would, now and then, land within the step).
fn shuffled_levels(rng: &mut CheckRng, n: usize) -> Vec<f64> {
    let mut ranks: Vec<usize> = (0..n).collect();
    ranks.shuffle(rng);
    ranks.into_iter().map(|k| -1.0 + 2.0 * k as f64 / n as f64).collect()
}

/// Max pooling is differentiable where no window has a tie, which distinct inputs guarantee.
/// 17×23 has a dropped row and column, whose gradient must be 0 in both the reference and the
/// finite differences.
#[test]
fn max_pool_backward() {
    let seed = common::seed();
    let mut rng = check::rng(seed);
    for s in [MaxPool2d { n: 2, c: 3, h: 17, w: 23 }, MaxPool2d { n: 1, c: 2, h: 4, w: 6 }] {
        let x = shuffled_levels(&mut rng, s.input_len());
        let r = random64(&mut rng, s.output_len());
        let analytic = pool_ref::max_pool_backward(&s, &x, &r);
        common::finite_difference_check(
            &format!("max_pool {s:?}"),
            seed,
            &x,
            &r,
            |x| pool_ref::max_pool_forward(&s, x),
            &analytic,
        );
    }
}

#[test]
fn upsample_backward() {
    let seed = common::seed();
    let mut rng = check::rng(seed);
    for s in [Upsample2x { n: 2, c: 3, h: 5, w: 7 }, Upsample2x { n: 1, c: 1, h: 1, w: 1 }] {
        let x = random64(&mut rng, s.input_len());
        let r = random64(&mut rng, s.output_len());
        let analytic = pool_ref::upsample_backward(&s, &r);
        common::finite_difference_check(
            &format!("upsample {s:?}"),
            seed,
            &x,
            &r,
            |x| pool_ref::upsample_forward(&s, x),
            &analytic,
        );
    }
}

/// Split is the adjoint of concat: with the parts laid end to end as one input vector, the
/// gradient of Σ concat(parts)·r is split(r) laid end to end the same way.
#[test]
fn concat_split_is_concat_backward() {
    let seed = common::seed();
    let mut rng = check::rng(seed);
    for (n, hw, channels) in [(2, 5 * 3, &[1, 3, 5][..]), (1, 7, &[33, 1])] {
        let c_total: usize = channels.iter().sum();
        let x = random64(&mut rng, n * c_total * hw);
        let r = random64(&mut rng, n * c_total * hw);
        let concat = |x: &[f64]| {
            let mut parts = Vec::new();
            let mut start = 0;
            for &c in channels {
                parts.push((&x[start..start + n * c * hw], c));
                start += n * c * hw;
            }
            concat_ref::concat(n, hw, &parts)
        };
        let analytic = concat_ref::split(n, hw, &r, channels).concat();
        common::finite_difference_check(&format!("concat {channels:?}"), seed, &x, &r, concat, &analytic);
    }
}
