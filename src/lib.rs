//! wgunet: U-Net segmentation on any GPU through wgpu and hand-written WGSL.
//!
//! Read top-down: `device` (adapters) → `kernel` (pipelines, buffers, dispatches) → `ops`
//! (one module per kernel family: driver, CPU reference, check) → `check` (the shared
//! kernel-versus-reference harness) → `selftest`.

pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod executor;
pub mod export;
pub mod finetune;
pub mod folds;
pub mod graph;
pub mod infer;
pub mod kernel;
pub mod model;
pub mod ops;
pub mod plan;
pub mod report;
pub mod selftest;
pub mod train;

pub use device::{DeviceChoice, Gpu, KernelVariant};
