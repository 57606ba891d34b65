//! wgunet: U-Net segmentation on any GPU through wgpu and hand-written WGSL.
//!
//! Read top-down: `device` (adapters) → `kernel` (pipelines, buffers, dispatches) → `ops`
//! (one module per kernel family: driver, CPU reference, check) → `check` (the shared
//! kernel-versus-reference harness) → `selftest`.

pub mod check;
pub mod device;
pub mod kernel;
pub mod ops;
pub mod selftest;

pub use device::{DeviceChoice, Gpu};
