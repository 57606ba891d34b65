//! The loss references' gradients against central finite differences in f64, and the losses'
//! behaviour at saturated logits (reference exact at ±1000, GPU finite at ±100).

mod common;

use rand::{Rng, SeedableRng};
use wgunet::check;
use wgunet::ops::loss::{reference, SigmoidBce, SoftDice, SoftmaxCe};

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Logits in [-3, 3] (where every loss has a useful gradient) and soft or 0/1 targets.
fn inputs(rng: &mut rand_pcg::Pcg64, n: usize) -> (Vec<f64>, Vec<f64>) {
    let z = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
    let t = (0..n).map(|_| if rng.random_bool(0.5) { 1.0 } else { 0.0 }).collect();
    (z, t)
}

#[test]
fn sigmoid_bce_gradient() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let (z, t) = inputs(&mut rng, 37);
    let (_, grad) = reference::sigmoid_bce(&z, &t);
    let loss = |z: &[f64]| vec![mean(&reference::sigmoid_bce(z, &t).0)];
    common::finite_difference_check("sigmoid_bce", seed, &z, &[1.0], loss, &grad);
}

#[test]
fn softmax_ce_gradient() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    for (n, k, hw) in [(1, 2, 7), (2, 3, 5), (2, 5, 3)] {
        let z: Vec<f64> = (0..n * k * hw).map(|_| rng.random_range(-3.0..3.0)).collect();
        let labels: Vec<u32> = (0..n * hw).map(|_| rng.random_range(0..k as u32)).collect();
        let (_, grad) = reference::softmax_ce(n, k, hw, &z, &labels);
        let loss = |z: &[f64]| vec![mean(&reference::softmax_ce(n, k, hw, z, &labels).0)];
        common::finite_difference_check(&format!("softmax_ce k={k}"), seed, &z, &[1.0], loss, &grad);
    }
}

#[test]
fn soft_dice_gradient() {
    let seed = common::seed();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let (images, pixels) = (3, 11);
    let (z, t) = inputs(&mut rng, images * pixels);
    let (_, grad) = reference::soft_dice(images, pixels, &z, &t);
    let loss = |z: &[f64]| vec![mean(&reference::soft_dice(images, pixels, z, &t).0)];
    common::finite_difference_check("soft_dice", seed, &z, &[1.0], loss, &grad);
}

#[test]
fn sigmoid_bce_reference_is_exact_at_saturation() {
    // (z, t) → loss: a confident right answer costs exp(−1000) = 0 in f64, a wrong one |z|.
    let z = [1000.0, 1000.0, -1000.0, -1000.0];
    let t = [1.0, 0.0, 0.0, 1.0];
    let (loss, grad) = reference::sigmoid_bce(&z, &t);
    assert_eq!(loss, vec![0.0, 1000.0, 0.0, 1000.0]);
    assert_eq!(grad, vec![0.0, 0.25, 0.0, -0.25]);
}

/// Every loss on the GPU at |z| = 100, where a naive log(σ) is log(0) and exp(|z|) overflows f32:
/// everything finite, and matching the reference.
#[test]
fn gpu_losses_are_finite_at_saturated_logits() {
    let gpu = common::gpu();
    let (images, pixels) = (2, 6);
    let n = images * pixels;
    let z: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -100.0 } else { 100.0 }).collect();
    let t: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
    let (z64, t64) = (check::to_f64(&z), check::to_f64(&t));
    let gz = gpu.upload("logits", &z).unwrap();
    let gt = gpu.upload("target", &t).unwrap();
    let all_finite = |v: &[f32]| v.iter().all(|x| x.is_finite());

    let loss = check::poisoned(gpu, "loss", n).unwrap();
    let grad = check::poisoned(gpu, "grad", n).unwrap();
    gpu.run(&[&SigmoidBce { elems: n }.forward_backward(gpu, &gz, &gt, &loss, &grad, 1.0).unwrap()]).unwrap();
    let (gl, gg) = (gpu.read::<f32>(&loss).unwrap(), gpu.read::<f32>(&grad).unwrap());
    assert!(all_finite(&gl) && all_finite(&gg), "BCE at |z| = 100: loss {gl:?} grad {gg:?}");
    let (want_loss, want_grad) = reference::sigmoid_bce(&z64, &t64);
    let reports = [check::compare("bce loss", "", &gl, &want_loss), check::compare("bce grad", "", &gg, &want_grad)];

    let dice = SoftDice { images, pixels };
    let sums = check::poisoned(gpu, "sums", 3 * images).unwrap();
    let dice_loss = check::poisoned(gpu, "dice loss", images).unwrap();
    let grad = check::poisoned(gpu, "grad", n).unwrap();
    gpu.run(&[
        &dice.sums(gpu, &gz, &gt, &sums).unwrap(),
        &dice.backward(gpu, &gz, &gt, &sums, &dice_loss, &grad, 1.0, false).unwrap(),
    ])
    .unwrap();
    let (dl, dg) = (gpu.read::<f32>(&dice_loss).unwrap(), gpu.read::<f32>(&grad).unwrap());
    assert!(all_finite(&dl) && all_finite(&dg), "Dice at |z| = 100: loss {dl:?} grad {dg:?}");
    // σ'(±100) ≈ e^−100 is denormal in f32 (flushed to zero on some devices): compare magnitudes only.
    assert!(dg.iter().all(|g| g.abs() < 1e-30), "Dice gradient at |z| = 100 should vanish: {dg:?}");
    let (want_loss, _) = reference::soft_dice(images, pixels, &z64, &t64);
    let dice_report = check::compare("dice loss", "", &dl, &want_loss);

    let (k, hw) = (3, 4);
    let zc: Vec<f32> = (0..k * hw).map(|i| [100.0, -100.0, 0.0][i % 3]).collect();
    let labels: Vec<u32> = (0..hw as u32).map(|q| q % k as u32).collect();
    let ce = SoftmaxCe { n: 1, k, hw };
    let gzc = gpu.upload("logits", &zc).unwrap();
    let glabels = gpu.upload("labels", &labels).unwrap();
    let loss = check::poisoned(gpu, "loss", hw).unwrap();
    let grad = check::poisoned(gpu, "grad", k * hw).unwrap();
    gpu.run(&[&ce.forward_backward(gpu, &gzc, &glabels, &loss, &grad, 1.0).unwrap()]).unwrap();
    let (cl, cg) = (gpu.read::<f32>(&loss).unwrap(), gpu.read::<f32>(&grad).unwrap());
    assert!(all_finite(&cl) && all_finite(&cg), "softmax CE at |z| = 100: loss {cl:?} grad {cg:?}");
    let (want_loss, want_grad) = reference::softmax_ce(1, k, hw, &check::to_f64(&zc), &labels);
    let ce_reports = [check::compare("ce loss", "", &cl, &want_loss), check::compare("ce grad", "", &cg, &want_grad)];

    for r in reports.iter().chain([&dice_report]).chain(&ce_reports) {
        assert!(r.pass(), "{r}");
    }
}
