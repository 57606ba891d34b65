//! Kernel families. Each module holds, for one family of ops: the Rust driver that builds a
//! [`Dispatch`](crate::kernel::Dispatch) for each kernel (forward and backward) of its WGSL file
//! in `shaders/`, the plain f64 CPU `reference`, and `check_all`, which compares the two on
//! random inputs of awkward shapes (used by `cargo test` and `wgunet selftest`).

use anyhow::Result;

use crate::check::{CaseReport, CheckRng};
use crate::device::Gpu;

pub mod adam;
pub mod augment;
pub mod batchnorm;
pub mod concat;
pub mod conv2d;
pub mod conv_transpose2d;
pub mod dropout;
pub mod elementwise;
pub mod gate;
pub mod loss;
pub mod metrics;
pub mod pool;

/// A kernel family and its check over the standard awkward shapes.
pub struct Family {
    pub name: &'static str,
    pub check: fn(&Gpu, &mut CheckRng) -> Result<Vec<CaseReport>>,
}

pub static FAMILIES: &[Family] = &[
    Family {
        name: "elementwise",
        check: |gpu, rng| {
            let mut out = Vec::new();
            for n in [1, 3 * 17 * 23, 2 * 33 * 9 * 7] {
                out.extend(elementwise::check(gpu, rng, n)?);
            }
            Ok(out)
        },
    },
    Family { name: "conv2d", check: conv2d::check_all },
    Family { name: "conv_transpose2d", check: conv_transpose2d::check_all },
    Family { name: "loss", check: loss::check_all },
    Family { name: "adam", check: adam::check_all },
    Family { name: "max_pool", check: pool::check_all_max_pool },
    Family { name: "upsample", check: pool::check_all_upsample },
    Family { name: "concat", check: concat::check_all },
    Family { name: "metrics", check: metrics::check_all },
    Family { name: "class_counts", check: metrics::check_all_classes },
    Family { name: "augment", check: augment::check_all },
    Family { name: "batchnorm", check: batchnorm::check_all },
    Family { name: "dropout", check: dropout::check_all },
    Family { name: "gate", check: gate::check_all },
];

pub fn family(name: &str) -> &'static Family {
    FAMILIES.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no kernel family named {name}"))
}
