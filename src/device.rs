//! Adapters: listing them, choosing one (`--device`), and opening it as a [`Gpu`].
//!
//! wgpu panics on validation errors and device loss unless told otherwise; we install an
//! uncaptured-error handler that records the first error, and every submission checks it, so a
//! user sees a sentence with what to do instead of a panic.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};

/// What `--device` asked for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceChoice {
    /// Best hardware adapter: discrete before integrated.
    Gpu,
    /// The software rasteriser: Mesa lavapipe on Vulkan, or llvmpipe through OpenGL.
    Cpu,
    /// A GPU if there is one, else the CPU adapter (with a notice).
    Auto,
    /// An index from `wgunet devices`.
    Index(usize),
    /// Part of an adapter's name, case-insensitive.
    Name(String),
}

impl FromStr for DeviceChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "gpu" => DeviceChoice::Gpu,
            "cpu" => DeviceChoice::Cpu,
            "auto" => DeviceChoice::Auto,
            other => match other.parse::<usize>() {
                Ok(i) => DeviceChoice::Index(i),
                Err(_) => DeviceChoice::Name(s.to_string()),
            },
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Gpu => write!(f, "gpu"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Index(i) => write!(f, "{i}"),
            DeviceChoice::Name(n) => write!(f, "{n}"),
        }
    }
}

/// Which family of kernel variants the op drivers build: the convolutions are specialised (by
/// override constants) for the two kinds of adapter, which want opposite things. A software
/// adapter (lavapipe) runs 8 invocations as the lanes of one CPU vector and suspends them at
/// every barrier, so it wants no barriers and register reuse; a GPU wants coalesced loads into
/// workgroup-memory tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum KernelVariant {
    /// For CPU adapters: no barriers, one operand uniform across lanes.
    Cpu,
    /// For GPUs: workgroup-memory tiles, several outputs per invocation.
    Gpu,
}

/// Environment variable that forces a kernel variant (`cpu` or `gpu`); `--kernels` wins over it.
pub const KERNELS_ENV: &str = "WGUNET_KERNELS";

/// Environment variable that sets the register block of the gpu variant's convolution GEMM on
/// layers of more than 32 channels: `8` (8 × 8 outputs an invocation, the default) or `4` (4 × 4,
/// the block of the first GPU check). A tuning knob for comparing them on one card
/// (`benches/gpu_check.sh` does); the cpu variant ignores it.
pub const GEMM_BLOCK_ENV: &str = "WGUNET_GEMM_BLOCK";

/// The GEMM register block `WGUNET_GEMM_BLOCK` sets (see [`GEMM_BLOCK_ENV`]).
fn gemm_block_from_env() -> Result<u32> {
    match std::env::var(GEMM_BLOCK_ENV) {
        Err(_) => Ok(8),
        Ok(s) => match s.trim() {
            "" | "8" => Ok(8),
            "4" => Ok(4),
            _ => bail!(
                "{GEMM_BLOCK_ENV}={s}: expected 4 or 8 (outputs a side of each invocation's block); unset it for 8"
            ),
        },
    }
}

/// The `--kernels` choice of this process (set once by the CLI, before any device is opened).
static KERNELS_OPTION: std::sync::OnceLock<KernelVariant> = std::sync::OnceLock::new();

impl KernelVariant {
    /// Every variant, in the order `selftest` checks them.
    pub const ALL: [KernelVariant; 2] = [KernelVariant::Cpu, KernelVariant::Gpu];

    /// The variant made for this kind of adapter.
    pub fn for_device_type(t: wgpu::DeviceType) -> KernelVariant {
        match t {
            wgpu::DeviceType::Cpu => KernelVariant::Cpu,
            _ => KernelVariant::Gpu,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KernelVariant::Cpu => "cpu",
            KernelVariant::Gpu => "gpu",
        }
    }

    /// Makes every device this process opens use `variant` (the `--kernels` option); the first
    /// call wins.
    pub fn force(variant: KernelVariant) {
        let _ = KERNELS_OPTION.set(variant);
    }

    /// The variant a device of type `t` gets: the forced one, else the one made for it.
    pub fn resolve(t: wgpu::DeviceType) -> Result<KernelVariant> {
        Ok(KernelVariant::forced()?.unwrap_or(KernelVariant::for_device_type(t)))
    }

    /// The variant forced by `--kernels` or, failing that, by `WGUNET_KERNELS`; `None` when
    /// the adapter type decides.
    pub fn forced() -> Result<Option<KernelVariant>> {
        if let Some(v) = KERNELS_OPTION.get() {
            return Ok(Some(*v));
        }
        match std::env::var(KERNELS_ENV) {
            Ok(s) if s.is_empty() || s.eq_ignore_ascii_case("auto") => Ok(None),
            Ok(s) => <KernelVariant as clap::ValueEnum>::from_str(&s, true).map(Some).map_err(|_| {
                anyhow!("{KERNELS_ENV}={s}: expected cpu, gpu or auto; unset it to choose from the adapter type")
            }),
            Err(_) => Ok(None),
        }
    }
}

impl fmt::Display for KernelVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12 | wgpu::Backends::GL;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds, in a stable order (the order `wgunet devices` prints).
pub fn adapters() -> Vec<wgpu::Adapter> {
    let mut list = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    // GL duplicates of a Vulkan device come last so that indices favour the native API.
    list.sort_by_key(|a| backend_rank(a.get_info().backend));
    list
}

fn backend_rank(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

fn hardware_rank(t: wgpu::DeviceType) -> Option<u8> {
    match t {
        wgpu::DeviceType::DiscreteGpu => Some(0),
        wgpu::DeviceType::IntegratedGpu => Some(1),
        wgpu::DeviceType::VirtualGpu => Some(2),
        _ => None,
    }
}

pub fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

/// One line per adapter, for error messages.
fn found_list(list: &[wgpu::Adapter]) -> String {
    if list.is_empty() {
        return "no adapter at all".into();
    }
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let info = a.get_info();
            format!("  [{i}] {} ({:?}, {})", info.name, info.backend, device_type_name(info.device_type))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const INSTALL_HINT: &str = "install Mesa's software Vulkan driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libvulkan1`; Fedora: `dnf install mesa-vulkan-drivers`)";

/// NVIDIA's Vulkan driver lives in both its GLX and its EGL library. The ICD file its driver
/// installs names `libGLX_nvidia.so.0`, which returns no `vkCreateInstance` on a machine without
/// a display (servers, containers: the H200 of 2026-12-04); through `libEGL_nvidia.so.0` the same
/// driver starts. When an NVIDIA device node exists and no GPU adapter did: the two commands
/// that load it that way, with the library's full path where one of `lib_dirs` holds it.
pub fn nvidia_headless_hint(device_node: &std::path::Path, lib_dirs: &[std::path::PathBuf]) -> Option<String> {
    if !device_node.exists() {
        return None;
    }
    let egl = "libEGL_nvidia.so.0";
    let library =
        lib_dirs.iter().map(|d| d.join(egl)).find(|p| p.exists()).map_or(egl.to_string(), |p| p.display().to_string());
    Some(format!(
        "This machine has an NVIDIA GPU ({}) whose Vulkan driver did not start. Without a display (a server, a container) \
         NVIDIA's ICD file names libGLX_nvidia.so.0, which cannot start there; load the same driver through EGL:\n  \
         echo '{{\"file_format_version\":\"1.0.0\",\"ICD\":{{\"library_path\":\"{library}\",\"api_version\":\"1.3\"}}}}' > /tmp/nvidia_egl_icd.json\n  \
         export VK_ICD_FILENAMES=/tmp/nvidia_egl_icd.json\n\
         (`VK_LOADER_DEBUG=error wgunet devices` shows why a driver fails.)",
        device_node.display()
    ))
}

/// [`nvidia_headless_hint`] for this machine: `/dev/nvidia0`, the library in the loader's
/// usual folders.
fn nvidia_hint() -> Option<String> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(Into::into)
        .collect();
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/nvidia/lib64"].map(Into::into));
    nvidia_headless_hint(std::path::Path::new("/dev/nvidia0"), &dirs)
}

/// `text`, and the NVIDIA hint after it where one applies.
fn with_nvidia_hint(text: String) -> String {
    match nvidia_hint() {
        Some(hint) => format!("{text}\n{hint}"),
        None => text,
    }
}

/// Picks an adapter. `Err` says what was found and what to try instead.
pub fn select(choice: &DeviceChoice) -> Result<wgpu::Adapter> {
    let list = adapters();
    let best_gpu = || {
        list.iter()
            .filter_map(|a| {
                let info = a.get_info();
                hardware_rank(info.device_type).map(|r| ((r, backend_rank(info.backend)), a))
            })
            .min_by_key(|(k, _)| *k)
            .map(|(_, a)| a.clone())
    };
    let best_cpu = || {
        list.iter()
            .filter(|a| a.get_info().device_type == wgpu::DeviceType::Cpu)
            .min_by_key(|a| backend_rank(a.get_info().backend))
            .cloned()
    };
    match choice {
        DeviceChoice::Gpu => best_gpu().ok_or_else(|| {
            anyhow!(with_nvidia_hint(format!(
                "--device gpu: no hardware GPU adapter found. Adapters found:\n{}\nUse `--device cpu` to run the same shaders on the software driver, or install your GPU's Vulkan driver.",
                found_list(&list)
            )))
        }),
        DeviceChoice::Cpu => best_cpu().ok_or_else(|| {
            anyhow!("--device cpu: no software adapter (lavapipe or llvmpipe) found. Adapters found:\n{}\nTo fix: {INSTALL_HINT}.", found_list(&list))
        }),
        DeviceChoice::Auto => {
            if let Some(a) = best_gpu() {
                return Ok(a);
            }
            if let Some(a) = best_cpu() {
                // Once a process: train opens the device to plan, to train and to score.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    eprintln!(
                        "{}",
                        with_nvidia_hint(format!(
                            "wgunet: no GPU found, running on the software adapter '{}' (slow; use --device to choose)",
                            a.get_info().name
                        ))
                    )
                });
                return Ok(a);
            }
            bail!(with_nvidia_hint(format!("no adapter found: no GPU driver and no software driver. To fix: {INSTALL_HINT}.")))
        }
        DeviceChoice::Index(i) => list.get(*i).cloned().ok_or_else(|| {
            anyhow!("--device {i}: there is no adapter with that index. Adapters found:\n{}", found_list(&list))
        }),
        DeviceChoice::Name(n) => {
            let needle = n.to_ascii_lowercase();
            list.iter()
                .filter(|a| a.get_info().name.to_ascii_lowercase().contains(&needle))
                .min_by_key(|a| backend_rank(a.get_info().backend))
                .cloned()
                .ok_or_else(|| anyhow!("--device {n}: no adapter name contains '{n}'. Adapters found:\n{}", found_list(&list)))
        }
    }
}

/// A cache whose values are computed once a key, also when threads ask for one key at once (the
/// executor builds its dispatches in parallel): the later callers wait for the first one's value
/// instead of computing it again. A failed computation stores nothing.
pub(crate) struct ComputedOnce<K, V> {
    entries: Mutex<HashMap<K, Arc<Mutex<Option<V>>>>>,
}

impl<K, V> Default for ComputedOnce<K, V> {
    fn default() -> Self {
        ComputedOnce { entries: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + std::hash::Hash, V: Clone> ComputedOnce<K, V> {
    /// `key`'s value, computed by `compute` if no caller has yet. Only callers of the same key wait
    /// on each other.
    pub(crate) fn get_or_try_insert(&self, key: K, compute: impl FnOnce() -> Result<V>) -> Result<V> {
        let entry = self.entries.lock().unwrap().entry(key).or_default().clone();
        let mut value = entry.lock().unwrap();
        if let Some(v) = value.as_ref() {
            return Ok(v.clone());
        }
        let v = compute()?;
        *value = Some(v.clone());
        Ok(v)
    }
}

/// An open device and everything a kernel launch needs from it.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Kernel variant the op drivers build (see [`Gpu::kernels`]).
    kernels: KernelVariant,
    /// The gpu variant's convolution GEMM register block on wide layers (see [`GEMM_BLOCK_ENV`]).
    gemm_block: u32,
    /// First error reported by wgpu outside an error scope (validation, out of memory, device lost).
    error: Arc<Mutex<Option<String>>>,
    pub(crate) modules: ComputedOnce<&'static str, wgpu::ShaderModule>,
    pub(crate) pipelines: ComputedOnce<String, Arc<wgpu::ComputePipeline>>,
    /// The textures tensors are copied into for kernels that read them as textures, by (which
    /// textured input of a dispatch, rows, layers): see `kernel::TextureUpload`.
    pub(crate) textures: Mutex<HashMap<(usize, u32, u32), Arc<wgpu::Texture>>>,
    /// The scratch buffer kernels share (`Gpu::scratch`), once one asked for it.
    pub(crate) scratch: Mutex<Option<crate::kernel::BufferView>>,
}

impl Gpu {
    /// The adapter a benchmark runs on: `WGUNET_BENCH_DEVICE` names it as `--device` does
    /// (default auto). Prints which it is.
    pub fn open_for_bench() -> Result<Gpu> {
        let choice: DeviceChoice = std::env::var("WGUNET_BENCH_DEVICE").as_deref().unwrap_or("auto").parse()?;
        let gpu = Gpu::open(&choice)?;
        println!("adapter: {}", gpu.describe());
        Ok(gpu)
    }

    /// Opens the adapter chosen by `choice`.
    pub fn open(choice: &DeviceChoice) -> Result<Gpu> {
        let adapter = select(choice)?;
        Gpu::from_adapter(adapter)
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let kernels = KernelVariant::resolve(info.device_type)?;
        let gemm_block = gemm_block_from_env()?;
        // Everything the adapter offers: larger buffers on real GPUs, and timestamp queries
        // for `wgunet bench` where they exist.
        let limits = adapter.limits();
        // Timestamp queries for `wgunet bench`; subgroups for the CPU-lane kernels.
        let features = adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgunet"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .with_context(|| format!("could not open adapter '{}' ({:?})", info.name, info.backend))?;
        let error = Arc::new(Mutex::new(None));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap();
            if slot.is_none() {
                *slot = Some(describe_error(&e));
            }
        }));
        let sink = error.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = sink.lock().unwrap();
            if slot.is_none() && reason != wgpu::DeviceLostReason::Destroyed {
                *slot = Some(format!(
                    "the GPU device was lost ({message}). The driver may have reset after a long kernel or run out of memory: try a smaller --batch or --size"
                ));
            }
        });
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            kernels,
            gemm_block,
            error,
            modules: ComputedOnce::default(),
            pipelines: ComputedOnce::default(),
            textures: Mutex::new(HashMap::new()),
            scratch: Default::default(),
        })
    }

    /// How this device's kernels read the tensors they only read: through textures where the
    /// lane kernels run (see [`crate::kernel::Reads`]).
    pub fn reads(&self) -> crate::kernel::Reads {
        if self.lane_kernels() {
            crate::kernel::Reads::Textures
        } else {
            crate::kernel::Reads::Storage
        }
    }

    /// Whether the op drivers build the `*_lanes.wgsl` kernels: the cpu variant, on a device with
    /// subgroups of exactly 8 lanes (lavapipe's), which those kernels are written for. Elsewhere
    /// the cpu variant falls back to the portable kernels.
    pub fn lane_kernels(&self) -> bool {
        self.kernels == KernelVariant::Cpu
            && self.features.contains(wgpu::Features::SUBGROUP)
            && self.info.subgroup_min_size == 8
            && self.info.subgroup_max_size == 8
    }

    /// The first device error since the last check, as an `Err`.
    pub fn check(&self) -> Result<()> {
        match self.error.lock().unwrap().take() {
            Some(e) => Err(anyhow!("{e}")),
            None => Ok(()),
        }
    }

    /// Blocks until the queue is idle, then reports any device error.
    pub fn wait(&self) -> Result<()> {
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        // A lost device fails the poll too; the error recorded first names the cause and the fix.
        self.check()?;
        polled.map_err(|e| anyhow!("waiting for the GPU failed: {e}"))?;
        Ok(())
    }

    /// The kernel variant the op drivers build for this device: from the adapter type, unless
    /// `--kernels` or `WGUNET_KERNELS` forced one.
    pub fn kernels(&self) -> KernelVariant {
        self.kernels
    }

    /// The register block (edge) of the gpu variant's convolution GEMM on layers of more than 32
    /// channels: 8 unless `WGUNET_GEMM_BLOCK` says 4.
    pub fn gemm_block(&self) -> u32 {
        self.gemm_block
    }

    /// The same device building `variant` kernels instead (for checking every variant on one
    /// adapter).
    pub fn with_kernels(mut self, variant: KernelVariant) -> Gpu {
        self.kernels = variant;
        // Compiled for the previous variant, which may read tensors another way (`reads`).
        self.modules = ComputedOnce::default();
        self.pipelines = ComputedOnce::default();
        self
    }

    /// `name (backend, type), V kernels` for logs and tables; the gpu variant's GEMM block too.
    pub fn describe(&self) -> String {
        let block = match self.kernels {
            KernelVariant::Gpu => format!(" with {0}×{0} blocks", self.gemm_block),
            KernelVariant::Cpu => String::new(),
        };
        format!(
            "{} ({:?}, {}), {} kernels{block}",
            self.info.name,
            self.info.backend,
            device_type_name(self.info.device_type),
            self.kernels
        )
    }
}

fn describe_error(e: &wgpu::Error) -> String {
    match e {
        wgpu::Error::OutOfMemory { .. } => {
            "the GPU ran out of memory: use a smaller --batch, --size or --filters".to_string()
        }
        other => {
            format!("GPU error (a bug in wgunet or the driver; please report it with `wgunet devices` output): {other}")
        }
    }
}

/// Human-readable byte count.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The `wgunet devices` table.
pub fn print_devices() {
    let list = adapters();
    if list.is_empty() {
        println!("{}", with_nvidia_hint(format!("No adapter found. To run on the CPU, {INSTALL_HINT}.")));
        return;
    }
    for (i, a) in list.iter().enumerate() {
        let info = a.get_info();
        let l = a.limits();
        let f = a.features();
        let yes = |b: bool| if b { "yes" } else { "no" };
        println!("[{i}] {}", info.name);
        println!(
            "    backend {:?}, type {}, {} kernels, driver {} {}",
            info.backend,
            device_type_name(info.device_type),
            KernelVariant::resolve(info.device_type).map_or_else(|e| format!("{e:#}"), |v| v.to_string()),
            info.driver,
            info.driver_info
        );
        println!(
            "    max storage-buffer binding {}, max buffer {}, workgroup storage {} KiB, invocations per workgroup {}",
            mib(l.max_storage_buffer_binding_size),
            mib(l.max_buffer_size),
            l.max_compute_workgroup_storage_size / 1024,
            l.max_compute_invocations_per_workgroup
        );
        println!(
            "    shader-f16 {}, subgroups {}, timestamp queries {}",
            yes(f.contains(wgpu::Features::SHADER_F16)),
            yes(f.contains(wgpu::Features::SUBGROUP)),
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY))
        );
    }
    let pick = |c: DeviceChoice| select(&c).ok().map(|a| a.get_info().name);
    let gpu = pick(DeviceChoice::Gpu);
    let name = |n: Option<String>| n.unwrap_or_else(|| "none".into());
    println!("--device gpu -> {}; --device cpu -> {}", name(gpu.clone()), name(pick(DeviceChoice::Cpu)));
    if let (None, Some(hint)) = (gpu, nvidia_hint()) {
        println!("{hint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads asking for one key at once compute its value once and all get it; a failed
    /// computation leaves the key to the next caller.
    #[test]
    fn computed_once_computes_a_key_once_across_threads() {
        let cache: ComputedOnce<u32, u64> = ComputedOnce::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let values: Vec<u64> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        cache
                            .get_or_try_insert(7, || {
                                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(20));
                                Ok(49)
                            })
                            .unwrap()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(values, vec![49; 8]);
        assert_eq!(calls.into_inner(), 1, "one computation for eight callers of one key");
        assert!(cache.get_or_try_insert(8, || Err(anyhow!("no value"))).is_err());
        assert_eq!(cache.get_or_try_insert(8, || Ok(64)).unwrap(), 64, "a failure is not cached");
        assert_eq!(cache.get_or_try_insert(8, || Ok(0)).unwrap(), 64, "a value is");
    }

    /// Where an NVIDIA device node exists, the hint names the EGL library by its full path when a
    /// searched folder holds it (by its name otherwise), in an ICD file the loader can read.
    #[test]
    fn nvidia_hint_loads_the_driver_through_egl() {
        let dir = std::env::temp_dir().join(format!("wgunet-nvidia-hint-{}", std::process::id()));
        let (node, libs) = (dir.join("nvidia0"), dir.join("lib64"));
        std::fs::create_dir_all(&libs).unwrap();
        let searched = [dir.join("elsewhere"), libs.clone()];
        assert_eq!(nvidia_headless_hint(&node, &searched), None, "no device node, no hint");
        std::fs::write(&node, b"").unwrap();
        let icd = |hint: String| -> serde_json::Value {
            let line = hint.lines().find(|l| l.trim_start().starts_with("echo '")).expect("an echo line").to_string();
            serde_json::from_str(line.split('\'').nth(1).unwrap()).expect("the ICD file is JSON")
        };
        let by_name = nvidia_headless_hint(&node, &searched).expect("a device node, a hint");
        assert!(by_name.contains(&node.display().to_string()) && by_name.contains("VK_ICD_FILENAMES"), "{by_name}");
        assert_eq!(icd(by_name)["ICD"]["library_path"], "libEGL_nvidia.so.0");
        std::fs::write(libs.join("libEGL_nvidia.so.0"), b"").unwrap();
        let by_path = nvidia_headless_hint(&node, &searched).unwrap();
        assert_eq!(icd(by_path)["ICD"]["library_path"], libs.join("libEGL_nvidia.so.0").display().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An error wgpu raises outside any error scope in the middle of work (here a buffer over
    /// the adapter's limit, which is as close to running out of memory as a test can get on a
    /// machine with plenty) comes back from the next wait as an error, once, instead of a panic.
    #[test]
    fn device_errors_come_back_from_the_next_wait() {
        let gpu = Gpu::open(&DeviceChoice::Cpu).expect("tests need lavapipe");
        let _too_large = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("too large"),
            size: gpu.limits.max_buffer_size + 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let err = gpu.wait().expect_err("the invalid buffer is reported").to_string();
        assert!(err.starts_with("GPU error") && err.contains("too large"), "{err}");
        gpu.wait().expect("an error is reported once");
    }

    #[test]
    fn out_of_memory_names_the_fix() {
        let oom = wgpu::Error::OutOfMemory { source: Box::new(std::io::Error::other("VK_ERROR_OUT_OF_DEVICE_MEMORY")) };
        assert_eq!(describe_error(&oom), "the GPU ran out of memory: use a smaller --batch, --size or --filters");
    }
}
