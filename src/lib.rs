//! wgunet: U-Net segmentation on any GPU through wgpu and hand-written WGSL.
//!
//! Read top-down: `device` (adapters) → `kernel` (pipelines, buffers, dispatches) → `ops`
//! (one module per kernel family: driver, CPU reference, check) → `check` (the shared
//! kernel-versus-reference harness) → `selftest`.
//!
//! The documentation is written for contributors: `cargo doc --document-private-items` renders
//! it with the links from public items to the private ones that explain them.
#![allow(rustdoc::private_intra_doc_links)]

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
