//! `wgunet export` checked by an independent runtime: every architecture, binary and 3-class,
//! exported to ONNX and run by tract on random images must give the probabilities wgunet's own
//! inference gives for the same weights. And `train --init`: fine-tuning from another run.

mod common;

use std::path::Path;

use prost::Message;
use rand::{Rng, SeedableRng};
use tract_onnx::prelude::*;

use wgunet::checkpoint::{self, DatasetRecord, RunRecord};
use wgunet::data::Normalisation;
use wgunet::executor::ParamArena;
use wgunet::export::{self, proto};
use wgunet::graph::{Init, Loss};
use wgunet::infer::LoadedModel;
use wgunet::model::{Activation, Arch, ModelConfig};
use wgunet::ops::augment::AugmentPreset;
use wgunet::ops::elementwise::LEAKY_RELU_SLOPE;
use wgunet::DeviceChoice;

use common::TempDir;

/// The largest difference allowed between the two runtimes' probabilities.
const TOLERANCE: f32 = 1e-4;
/// Images per batch in the comparison: more than one, to exercise the dynamic batch axis.
const BATCH: usize = 2;

fn device() -> DeviceChoice {
    std::env::var("WGUNET_TEST_DEVICE").unwrap_or_else(|_| "cpu".into()).parse().unwrap()
}

/// A 16-px model of `arch` with 4 base filters (with 2, dead ReLUs often leave the output
/// nearly constant): grayscale and binary, or RGB and 3 classes.
fn tiny(arch: Arch, classes: usize) -> ModelConfig {
    let channels = if classes == 1 { 1 } else { 3 };
    let activation = Activation::Relu;
    ModelConfig {
        arch,
        size: 16,
        channels,
        filters: 4,
        dropout: 0.1,
        classes,
        activation,
        normalise: Normalisation::Unit,
    }
}

/// wgunet's random initialisation, with the parameters it starts at constants moved off them
/// so that every tensor's layout matters: biases and β random, γ around 1, and running
/// statistics of a trained batch norm (means around 0, variances between 0.5 and 2).
fn random_weights(cfg: &ModelConfig, seed: u64) -> Vec<Vec<f32>> {
    let graph = cfg.build(1);
    let arena = ParamArena::new(common::gpu(), &graph.params).unwrap();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let mut values = arena.initial_values(seed);
    for (p, v) in graph.params.iter().zip(&mut values) {
        let range = match (p.init, p.trained) {
            (Init::Zeros, _) => -0.3..0.3,
            (Init::Ones, true) => 0.5..1.5,
            (Init::Ones, false) => 0.5..2.0,
            _ => continue,
        };
        v.iter_mut().for_each(|x| *x = rng.random_range(range.clone()));
    }
    values
}

/// A run folder as `wgunet train` leaves it: model.json and best.safetensors.
fn write_run(dir: &Path, cfg: &ModelConfig, weights: &[Vec<f32>]) {
    let record = RunRecord {
        model: cfg.clone(),
        loss: Loss::monitor(cfg.classes),
        augment: AugmentPreset::None,
        dataset: DatasetRecord::Synthetic { seed: 1, count: 10, train: 0.7 },
        command: "wgunet train (written by tests/export.rs)".into(),
        epochs_run: 1,
        best_epoch: 1,
        wgunet_version: env!("CARGO_PKG_VERSION").into(),
        init: None,
        patch: None,
        tta: false,
    };
    checkpoint::save_record(dir, &record).unwrap();
    checkpoint::save_weights(&dir.join("best.safetensors"), &cfg.build(1).params, weights).unwrap();
}

/// `batch` images of the model's input: `[batch, channels, size, size]`, uniform in [0, 1].
fn random_images(cfg: &ModelConfig, seed: u64) -> Vec<f32> {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed ^ 0x1a6e);
    (0..BATCH * cfg.channels * cfg.size * cfg.size).map(|_| rng.random_range(0.0..1.0)).collect()
}

/// The exported model's probabilities of `images`, computed by tract.
fn tract_probabilities(onnx: &Path, cfg: &ModelConfig, images: &[f32]) -> Vec<f32> {
    let model = tract_onnx::onnx().model_for_path(onnx).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let input = Tensor::from_shape(&[BATCH, cfg.channels, cfg.size, cfg.size], images).unwrap();
    let outputs = model.run(tvec!(input.into())).unwrap();
    assert_eq!(outputs[0].shape(), [BATCH, cfg.classes, cfg.size, cfg.size]);
    outputs[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

/// wgunet's own inference (as `predict` loads a run) of `images`.
fn wgunet_probabilities(run: &Path, cfg: &ModelConfig, images: &[f32]) -> Vec<f32> {
    let model = LoadedModel::open(run, &device()).unwrap();
    let per_image = cfg.channels * cfg.size * cfg.size;
    let refs: Vec<&[f32]> = images.chunks(per_image).collect();
    model.evaluator(BATCH, BATCH).unwrap().probability_maps(&model.gpu, &refs).unwrap().concat()
}

/// Exports a random `arch` model with `activation`, binary and 3-class, and compares tract's
/// probabilities with wgunet's. Returns the binary model's ONNX file's bytes (its folder goes when
/// the comparison ends).
fn exports_like_wgunet_infers(arch: Arch, activation: Activation) -> Vec<u8> {
    let mut binary = None;
    for classes in [1, 3] {
        let seed = common::seed();
        let cfg = ModelConfig { activation, ..tiny(arch, classes) };
        let what = format!("{} ({activation:?})", arch.name());
        let label = format!("{what} with {classes} class(es), seed {seed} (rerun with WGUNET_SEED={seed})");
        let run = TempDir::new(&format!("export-{}-{activation:?}-{classes}", arch.name()));
        write_run(&run, &cfg, &random_weights(&cfg, seed));
        let onnx = run.join("model.onnx");
        export::export_run(&run, &onnx).unwrap_or_else(|e| panic!("{label}: export failed: {e:#}"));

        let images = random_images(&cfg, seed);
        let ours = wgunet_probabilities(&run, &cfg, &images);
        let theirs = tract_probabilities(&onnx, &cfg, &images);
        assert_eq!(ours.len(), theirs.len(), "{label}");
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= TOLERANCE, "{label}: probabilities differ by up to {worst:e}");
        // Probabilities that are all 0, 1 or 0.5 would agree however the graph were wired; the
        // two runtimes typically agree to 1e-7, random models spread over 0.01 to 0.8.
        let spread = ours.iter().fold((1.0f32, 0.0f32), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        assert!(spread.1 - spread.0 > 10.0 * TOLERANCE, "{label}: degenerate probabilities {spread:?}");
        if classes > 1 {
            let pixels = cfg.size * cfg.size;
            for image in theirs.chunks(classes * pixels) {
                for px in 0..pixels {
                    let sum: f32 = (0..classes).map(|k| image[k * pixels + px]).sum();
                    assert!((sum - 1.0).abs() < 1e-5, "{label}: a softmax sums to {sum}");
                }
            }
        }
        if binary.is_none() {
            binary = Some(std::fs::read(&onnx).unwrap());
        }
    }
    binary.unwrap()
}

#[test]
fn unet_exports() {
    exports_like_wgunet_infers(Arch::Unet, Activation::Relu);
}

#[test]
fn unet_upsample_exports() {
    exports_like_wgunet_infers(Arch::UnetUpsample, Activation::Relu);
}

#[test]
fn resunet_exports() {
    exports_like_wgunet_infers(Arch::Resunet, Activation::Relu);
}

#[test]
fn attention_unet_exports() {
    exports_like_wgunet_infers(Arch::AttentionUnet, Activation::Relu);
}

/// LeakyReLU exports as ONNX LeakyRelu with wgunet's slope, after each 3×3 convolution of the
/// U-Net (18) and in place of each ReLU of the residual U-Net's blocks (27).
#[test]
fn leaky_relu_exports() {
    for (arch, leaky_relus) in [(Arch::Unet, 18), (Arch::Resunet, 27)] {
        let onnx = exports_like_wgunet_infers(arch, Activation::LeakyRelu);
        let model = proto::ModelProto::decode(onnx.as_slice()).unwrap();
        let graph = model.graph.unwrap();
        let leaky: Vec<&proto::NodeProto> = graph.node.iter().filter(|n| n.op_type == "LeakyRelu").collect();
        assert_eq!(leaky.len(), leaky_relus, "{}", arch.name());
        assert_eq!(graph.node.iter().filter(|n| n.op_type == "Relu").count(), 0, "{}", arch.name());
        for node in leaky {
            let alpha = node.attribute.iter().find(|a| a.name == "alpha").expect("an alpha");
            assert_eq!(alpha.f, LEAKY_RELU_SLOPE as f32, "{}", node.name);
        }
    }
}

/// The file itself: opset, a named batch axis, the op set each architecture needs (batch norm
/// kept, dropout gone), and the metadata a user needs to prepare images.
#[test]
fn the_file_declares_its_interface_and_preprocessing() {
    let cfg = ModelConfig { dropout: 0.2, ..tiny(Arch::Resunet, 1) };
    let run = TempDir::new("export-declared");
    write_run(&run, &cfg, &random_weights(&cfg, 3));
    let onnx = run.join("resunet.onnx");
    export::export_run(&run, &onnx).unwrap();
    let model = proto::ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
    assert_eq!(model.opset_import.iter().map(|o| o.version).collect::<Vec<_>>(), [export::OPSET]);
    let graph = model.graph.unwrap();
    let dims = |v: &proto::ValueInfoProto| -> Vec<proto::DimensionValue> {
        let t = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
        assert_eq!(t.elem_type, proto::DATA_TYPE_FLOAT);
        t.shape.as_ref().unwrap().dim.iter().map(|d| d.value.clone().unwrap()).collect()
    };
    use proto::DimensionValue::{DimParam, DimValue};
    assert_eq!(graph.input[0].name, export::INPUT);
    assert_eq!(dims(&graph.input[0]), [DimParam("batch".into()), DimValue(1), DimValue(16), DimValue(16)]);
    assert_eq!(dims(&graph.output[0]), [DimParam("batch".into()), DimValue(1), DimValue(16), DimValue(16)]);

    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    // Two per residual block (after each 3×3) and one on its projection; 9 blocks.
    assert_eq!(count("BatchNormalization"), 27);
    assert_eq!(count("Dropout"), 0);
    assert_eq!(graph.node.last().unwrap().op_type, "Sigmoid");
    assert_eq!(graph.node.last().unwrap().output, [export::OUTPUT]);

    let meta = |key: &str| {
        model.metadata_props.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("no metadata {key}")).value.clone()
    };
    assert!(meta("preprocessing").contains("resize to 16x16") && meta("preprocessing").contains("/ 255"));
    assert_eq!(meta("input_size"), "16");
    assert_eq!(meta("model.json"), std::fs::read_to_string(run.join("model.json")).unwrap());
    assert!(meta("postprocessing").contains("above 0.5") && !meta("postprocessing").contains("mirrorings"));

    // A run that segments with flip TTA (the plan's) says how wgunet averages its outputs.
    let json = std::fs::read_to_string(run.join("model.json")).unwrap().replacen('{', "{\n  \"tta\": true,", 1);
    std::fs::write(run.join("model.json"), json).unwrap();
    export::export_run(&run, &onnx).unwrap();
    let model = proto::ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
    let post = model.metadata_props.iter().find(|p| p.key == "postprocessing").unwrap();
    assert!(post.value.contains("three mirrorings"), "{}", post.value);
}

#[test]
fn export_errors_name_the_file_and_what_to_do() {
    let root = TempDir::new("export-errors");
    let err = export::export_run(&root.join("no-such-run"), &root.join("m.onnx")).unwrap_err().to_string();
    assert!(err.contains("no-such-run") && err.contains("wgunet train"), "{err}");
    assert!(!root.join("m.onnx").exists());

    let cfg = tiny(Arch::Unet, 1);
    let run = root.join("run");
    std::fs::create_dir_all(&run).unwrap();
    write_run(&run, &cfg, &random_weights(&cfg, 4));
    let out = root.join("missing-folder").join("m.onnx");
    let err = format!("{:#}", export::export_run(&run, &out).unwrap_err());
    assert!(err.contains("missing-folder") && err.contains("does not exist"), "{err}");
}

fn wgunet(args: &[&str]) -> String {
    common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), args)
}

fn wgunet_fails(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgunet"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "wgunet {} succeeded:\n{text}", args.join(" "));
    text
}

/// A run's weights as a model `cfg` loads them (names and shapes checked), in its parameter order.
fn weights(run: &Path, file: &str, cfg: &ModelConfig) -> Vec<Vec<f32>> {
    checkpoint::load_weights(&run.join(file), &cfg.build(1).params).unwrap()
}

fn largest_change(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `train --init`: a run started from another starts at its weights (a learning rate too small
/// to move them shows it), records where it started, may start its head afresh for other
/// classes, and refuses a model of other shape, naming the difference.
#[test]
fn train_init_starts_from_the_run_and_records_it() {
    let root = TempDir::new("export-init");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (a, b, c, bad) = (root.join("a"), root.join("b"), root.join("c"), root.join("bad"));
    let train = |out: &Path, extra: &[&str]| -> Vec<String> {
        let base =
            ["train", "--device", "cpu", "--synth-count", "12", "--size", "32", "--epochs", "1", "--out", &s(out)];
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let run = |args: Vec<String>| wgunet(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let fails = |args: Vec<String>| wgunet_fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let binary = ModelConfig { size: 32, filters: 2, ..tiny(Arch::Unet, 1) };

    run(train(&a, &["--filters", "2", "--seed", "1"]));
    let out = run(train(&b, &["--filters", "2", "--seed", "2", "--lr", "1e-12", "--init", &s(&a)]));
    assert!(out.contains("starting from the weights of"), "{out}");
    let from = weights(&a, "best.safetensors", &binary);
    let tuned = weights(&b, "last.safetensors", &binary);
    for ((p, x), y) in binary.build(1).params.iter().zip(&from).zip(&tuned) {
        let moved = largest_change(x, y);
        assert!(moved < 1e-6, "{} moved by {moved} from the --init run's value", p.name);
    }
    let init = checkpoint::load_record(&b).unwrap().init.expect("model.json records --init");
    assert_eq!((init.run.as_str(), init.skip_head), (s(&a).as_str(), false));
    let report = std::fs::read_to_string(b.join("report.md")).unwrap();
    assert!(report.contains("| init.run |"), "report.md does not show the init run");

    // A 3-class model from the binary one: every tensor but the head's is the binary run's.
    run(train(&c, &["--filters", "2", "--classes", "3", "--lr", "1e-12", "--init", &s(&a), "--init-skip-head"]));
    let three = ModelConfig { classes: 3, ..binary.clone() };
    let tuned = weights(&c, "last.safetensors", &three);
    for ((p, x), y) in
        three.build(1).params.iter().zip(&from).zip(&tuned).filter(|((p, _), _)| !p.name.starts_with("head."))
    {
        let moved = largest_change(x, y);
        assert!(moved < 1e-6, "{} moved by {moved} with --init-skip-head", p.name);
    }
    assert!(checkpoint::load_record(&c).unwrap().init.unwrap().skip_head);

    let err = fails(train(&bad, &["--filters", "4", "--init", &s(&a)]));
    assert!(err.contains(&format!("{} has 2 filters, this run has 4: give --filters 2", s(&a))), "{err}");
    let err = fails(train(&bad, &["--filters", "2", "--classes", "3", "--init", &s(&a)]));
    assert!(err.contains("has 1 class, this run has 3 classes: use --init-skip-head"), "{err}");
    let err = fails(train(&bad, &["--filters", "2", "--init", &s(&root.join("nowhere"))]));
    assert!(err.contains("nowhere") && err.contains("no such run folder"), "{err}");
}
