//! Kernel families. Each module holds, for one family of ops: the Rust driver that builds a
//! [`Dispatch`](crate::kernel::Dispatch) for each kernel (forward and backward) of its WGSL file
//! in `shaders/`, the plain f64 CPU `reference`, and `check`, which compares the two on random
//! inputs of one of its awkward shapes; [`FAMILIES`] runs each over all of them (for
//! `cargo test` and `wgunet selftest`).

use anyhow::Result;

use crate::check::{run_cases, CaseReport, CheckRng};
use crate::device::Gpu;

pub mod adam;
pub mod augment;
pub mod batchnorm;
pub mod concat;
pub mod conv;
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

/// The family `$name`: `$check` over each of `$cases` (see [`run_cases`]).
macro_rules! family {
    ($name:literal, $cases:expr, $check:path) => {
        Family { name: $name, check: |gpu, rng| run_cases(gpu, rng, $cases, $check) }
    };
}

pub static FAMILIES: &[Family] = &[
    family!("elementwise", elementwise::CHECK_CASES, elementwise::check),
    family!("conv2d", conv2d::CHECK_SHAPES, conv2d::check),
    family!("conv_transpose2d", conv_transpose2d::CHECK_SHAPES, conv_transpose2d::check),
    Family {
        name: "loss",
        check: |gpu, rng| {
            let mut out = run_cases(gpu, rng, loss::CHECK_CASES, loss::check)?;
            out.extend(run_cases(gpu, rng, loss::REDUCE_SUM_CASES, loss::check_reduce_sum)?);
            Ok(out)
        },
    },
    family!("adam", adam::CHECK_CASES, adam::check),
    family!("max_pool", pool::MAX_POOL_CASES, pool::check_max_pool),
    family!("upsample", pool::UPSAMPLE_CASES, pool::check_upsample),
    family!("concat", concat::CHECK_CASES, concat::check),
    family!("metrics", metrics::CHECK_CASES, metrics::check),
    family!("class_counts", metrics::CLASS_CASES, metrics::check_classes),
    family!("augment", augment::CHECK_CASES, augment::check),
    family!("batchnorm", batchnorm::CHECK_CASES, batchnorm::check),
    family!("dropout", dropout::CHECK_CASES, dropout::check),
    family!("gate", gate::CHECK_CASES, gate::check),
];

pub fn family(name: &str) -> &'static Family {
    FAMILIES.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no kernel family named {name}"))
}
