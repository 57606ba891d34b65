//! Adam and AdamW (`shaders/adam.wgsl`), updating parameters and both moments in place.
//!
//! The step's hyper-parameters live in a uniform buffer the host rewrites before each step, so a
//! learning-rate schedule needs no new dispatch: the bind group is built once per parameter tensor.

use anyhow::Result;

use crate::check::{self, CaseReport, CheckRng};
use crate::device::Gpu;
use crate::kernel::{grid_1d, launch, uniform, BufferView, Dispatch, KernelSpec, WG};

/// Host-written hyper-parameters (the `Hyper` uniform of adam.wgsl, same field order), rewritten
/// with `gpu.write` each step.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1 − β1^t.
    pub bias_correction1: f32,
    /// 1 − β2^t.
    pub bias_correction2: f32,
    pub _pad: f32,
}

impl AdamHyper {
    /// Keras's defaults: β1 0.9, β2 0.999, ε 1e-7. `step` counts from 1.
    pub fn new(lr: f32, weight_decay: f32, step: u32) -> Self {
        assert!(step >= 1, "Adam steps count from 1 (the bias corrections would divide by zero)");
        let (beta1, beta2) = (0.9f64, 0.999f64);
        AdamHyper {
            lr,
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: 1e-7,
            weight_decay,
            // In f64: 1 − β^t in f32 loses most digits once β^t is near 1.
            bias_correction1: (1.0 - beta1.powf(step as f64)) as f32,
            bias_correction2: (1.0 - beta2.powf(step as f64)) as f32,
            _pad: 0.0,
        }
    }
}

uniform! {
    struct Params {
        n: u32,
    }
}

/// One Adam update over `n` parameters, a vec4 of them an invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adam {
    pub n: usize,
    /// true: AdamW (p −= lr·wd·p); false: Adam with L2 (g += wd·p).
    pub decoupled: bool,
}

impl Adam {
    /// In place: m, v and param updated; m̂ = m/bc1, v̂ = v/bc2, p −= lr·m̂/(√v̂ + ε).
    /// `hyper` is a uniform buffer holding an [`AdamHyper`] (from `gpu.uniform_buffer`).
    pub fn step(
        &self,
        gpu: &Gpu,
        hyper: &BufferView,
        param: &BufferView,
        grad: &BufferView,
        m: &BufferView,
        v: &BufferView,
    ) -> Result<Dispatch> {
        let spec =
            KernelSpec::per_element("adam", "adam_step").constant("DECOUPLED", if self.decoupled { 1.0 } else { 0.0 });
        let n = self.n;
        let hyper_words = std::mem::size_of::<AdamHyper>() / 4;
        let bindings = [("h", hyper, hyper_words), ("param", param, n), ("grad", grad, n), ("m", m, n), ("v", v, n)];
        let vec4s = n.div_ceil(4);
        launch(gpu, &spec, &Params { n: vec4s as u32 }, &bindings, grid_1d(vec4s, WG))
    }
}

/// Plain f64 reference, with the hyper-parameters as the GPU sees them (f32).
pub mod reference {
    use super::AdamHyper;

    pub fn adam_step(h: &AdamHyper, decoupled: bool, p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]) {
        let (lr, b1, b2, eps, wd) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64, h.eps as f64, h.weight_decay as f64);
        for i in 0..p.len() {
            let g = if decoupled { g[i] } else { g[i] + wd * p[i] };
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let m_hat = m[i] / h.bias_correction1 as f64;
            let v_hat = v[i] / h.bias_correction2 as f64;
            let decay = if decoupled { wd * p[i] } else { 0.0 };
            p[i] -= lr * (m_hat / (v_hat.sqrt() + eps) + decay);
        }
    }
}

/// Three consecutive steps (t = 1..3) from zero moments through one dispatch, with a new
/// gradient and a different learning rate written into the same uniform buffer before each.
pub fn check(gpu: &Gpu, rng: &mut CheckRng, &(n, decoupled): &(usize, bool)) -> Result<Vec<CaseReport>> {
    let p0 = check::random(rng, n);
    let (mut p, mut m, mut v) = (check::to_f64(&p0), vec![0.0; n], vec![0.0; n]);
    let gp = gpu.upload("param", &p0)?;
    let gg = check::poisoned(gpu, "grad", n)?;
    let gm = gpu.upload("m", &vec![0.0f32; n])?;
    let gv = gpu.upload("v", &vec![0.0f32; n])?;
    let hyper = gpu.uniform_buffer("adam hyper", std::mem::size_of::<AdamHyper>() as u64);
    let step = Adam { n, decoupled }.step(gpu, &hyper, &gp, &gg, &gm, &gv)?;
    // Each parameter's gradients keep one sign and at least half their size over the steps: a
    // first moment that cancels to near 0 (a parameter's g1 ≈ −g2) would make f32 rounding look
    // like a relative error of 1e-4 when there is but one parameter.
    let signs: Vec<f32> = check::random(rng, n).iter().map(|&s| if s < 0.0 { -1.0 } else { 1.0 }).collect();
    for (t, lr) in [(1, 1e-2f32), (2, 1e-3), (3, 5e-2)] {
        let h = AdamHyper::new(lr, 0.1, t);
        let g: Vec<f32> =
            check::random(rng, n).iter().zip(&signs).map(|(&u, &sign)| sign * (0.5 + 0.5 * u.abs())).collect();
        gpu.write(&gg, &g);
        gpu.write(&hyper, &[h]);
        gpu.run(&[&step])?;
        reference::adam_step(&h, decoupled, &mut p, &check::to_f64(&g), &mut m, &mut v);
    }
    let variant = if decoupled { "adamw" } else { "adam+l2" };
    let shape = format!("{n} t=1..3");
    Ok(vec![
        check::compare(&format!("adam::{variant} param"), &shape, &gpu.read::<f32>(&gp)?, &p),
        check::compare(&format!("adam::{variant} m"), &shape, &gpu.read::<f32>(&gm)?, &m),
        check::compare(&format!("adam::{variant} v"), &shape, &gpu.read::<f32>(&gv)?, &v),
    ])
}

/// Both variants over 1 parameter, an odd count, and a conv-weight-sized one: (n, decoupled).
pub const CHECK_CASES: &[(usize, bool)] =
    &[(1, true), (1, false), (3 * 17 * 23, true), (3 * 17 * 23, false), (33 * 33 * 9, true), (33 * 33 * 9, false)];
