use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use wgunet::{device, selftest, DeviceChoice, Gpu};

#[derive(Parser)]
#[command(name = "wgunet", version, about = "Train, evaluate and apply U-Net segmentation models on any GPU (wgpu + WGSL)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter wgpu finds, with the limits and features that matter to wgunet.
    Devices,
    /// Run every kernel (forward and backward) against its CPU reference on this adapter.
    Selftest {
        /// gpu | cpu | auto | adapter index | part of an adapter name
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Seed for the random inputs (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Devices => {
            device::print_devices();
            Ok(ExitCode::SUCCESS)
        }
        Command::Selftest { device, seed } => {
            let gpu = Gpu::open(&device)?;
            let seed = seed.unwrap_or_else(clock_seed);
            let failed = selftest::run(&gpu, seed)?;
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(42)
}
