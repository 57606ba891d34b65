//! `wgunet export`: a trained run as an ONNX file that any ONNX runtime can run.
//!
//! The exported graph is the inference form of the model's [`Graph`], translated node by node by
//! each op's rule ([`Layer::onnx`](crate::graph::Layer::onnx), beside its kernels in `src/ops/`,
//! through [`OnnxNode`]), so every architecture (and any new one built from the same ops)
//! exports without code of its own: batch norm with its running statistics, dropout left out
//! (the identity at inference), and the head's sigmoid (binary) or softmax over the classes
//! (K classes) appended so the output is probabilities. The batch axis is dynamic (`batch`); the
//! spatial size is the model's. How to turn an image file into the input, and `model.json`
//! itself, go into the file's metadata.

pub mod proto;

use std::path::Path;

use anyhow::{ensure, Context, Result};
use prost::Message;

use crate::checkpoint::{self, write_atomic, RunRecord};
use crate::graph::{Graph, Op, ParamId, ParamInfo, TensorId};
use crate::model::ModelConfig;
use proto::{
    AttributeProto, AttributeType, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto, DATA_TYPE_FLOAT,
};

/// The ONNX operator set the graph is written in: 13 has Softmax over one axis and Resize with
/// scales, and every current runtime reads it.
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13 (ONNX 1.8).
const IR_VERSION: i64 = 7;
/// Name of the graph's input: images, float32 `[batch, channels, size, size]`.
pub const INPUT: &str = "image";
/// Name of the graph's output: probabilities, float32 `[batch, classes, size, size]`.
pub const OUTPUT: &str = "probabilities";
/// The dynamic batch axis' name (`dim_param`).
pub const BATCH: &str = "batch";

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    pub nodes: usize,
    pub parameters: usize,
    pub bytes: usize,
}

/// Writes the run in folder `run` (its `model.json` and best, else last, weights) to `out` as an
/// ONNX model, atomically.
pub fn export_run(run: &Path, out: &Path) -> Result<Exported> {
    ensure!(
        run.is_dir(),
        "run folder {} does not exist: --model takes a folder written by `wgunet train`",
        run.display()
    );
    let record = checkpoint::load_record(run)?;
    let model_json_path = run.join("model.json");
    let model_json = std::fs::read_to_string(&model_json_path)
        .with_context(|| format!("could not read {}", model_json_path.display()))?;
    let graph = record.model.build(1);
    let weights = checkpoint::load_weights(&checkpoint::weights_path(run)?, &graph.params)?;
    let model = onnx_model(&record, &graph, &weights, &model_json);
    let bytes = model.encode_to_vec();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure!(parent.is_dir(), "cannot write {}: folder {} does not exist", out.display(), parent.display());
    }
    write_atomic(out, &bytes).with_context(|| format!("could not write the ONNX model {}", out.display()))?;
    Ok(Exported {
        nodes: model.graph.as_ref().map_or(0, |g| g.node.len()),
        parameters: graph.param_count() + graph.state_count(),
        bytes: bytes.len(),
    })
}

/// The ONNX model of `graph` (built from `cfg`; any batch size) with `weights` (in
/// `graph.params` order) as initializers; `model_json` is recorded in the metadata.
pub fn onnx_model(record: &RunRecord, graph: &Graph, weights: &[Vec<f32>], model_json: &str) -> ModelProto {
    let cfg = &record.model;
    let mut nodes = Vec::new();
    // Constant inputs the ops add (Resize's scales), stored after the parameters.
    let mut constants = Vec::new();
    // The ONNX value holding each graph tensor.
    let mut values: Vec<String> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let value = match &node.op {
            Op::Input => INPUT.to_string(),
            Op::Layer(layer) => layer.onnx(&mut OnnxNode {
                name: &node.name,
                values: &values,
                params: &graph.params,
                nodes: &mut nodes,
                constants: &mut constants,
            }),
        };
        values.push(value);
    }
    let logits = values.last().expect("a model has nodes").clone();
    nodes.push(if cfg.multiclass() {
        op("Softmax", OUTPUT, &[logits], OUTPUT, vec![int("axis", 1)])
    } else {
        op("Sigmoid", OUTPUT, &[logits], OUTPUT, vec![])
    });

    let initializer: Vec<TensorProto> =
        graph.params.iter().zip(weights).map(|(p, v)| tensor(p, v)).chain(constants).collect();

    let (size, channels) = (cfg.size as i64, cfg.channels as i64);
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "wgunet".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("wgunet {} segmentation model; see the metadata for preprocessing", cfg.arch.name()),
        graph: Some(GraphProto {
            node: nodes,
            name: cfg.arch.name().into(),
            initializer,
            doc_string: String::new(),
            input: vec![value_info(INPUT, [channels, size, size])],
            output: vec![value_info(OUTPUT, [cfg.classes as i64, size, size])],
        }),
        metadata_props: metadata(cfg, record.tta, model_json),
    }
}

/// How `wgunet predict` turns an image file into the input tensor and the output into a mask,
/// stated for users of the ONNX file (see `data::load::load_image` and `infer`).
pub fn preprocessing(cfg: &ModelConfig) -> String {
    let s = cfg.size;
    let colour = if cfg.channels == 1 {
        "convert to one grey channel (luma 0.2126 R + 0.7152 G + 0.0722 B; alpha ignored)"
    } else {
        "convert to RGB (a grey image repeated in all three channels; alpha ignored)"
    };
    format!(
        "Decode the image file; {colour}; scale to [0, 1] (8-bit values / 255, 16-bit / 65535); resize to \
         {s}x{s} (width x height) with a bilinear filter widened when shrinking (the image crate's \
         FilterType::Triangle, close to PIL's Image.resize(..., BILINEAR)); clamp to [0, 1]; lay out as float32 \
         [{c}, {s}, {s}] (channel planes, rows top to bottom); normalise: {n}; stack images into \
         [batch, {c}, {s}, {s}].",
        c = cfg.channels,
        n = cfg.normalise.describe()
    )
}

/// What the output means and how `wgunet predict` turns it into a mask.
fn postprocessing(cfg: &ModelConfig, tta: bool) -> String {
    let flips = if tta {
        " wgunet first averages the outputs of the image and its three mirrorings (flipped left-right, top-bottom \
         and both; each output flipped back): flip TTA, the run's default."
    } else {
        ""
    };
    let meaning = if cfg.multiclass() {
        format!(
            "'{OUTPUT}' is [batch, {k}, size, size]: a softmax over the {k} classes at each pixel. wgunet resizes the \
             maps bilinearly to the image's own size and takes the most probable class (argmax over axis 1).",
            k = cfg.classes
        )
    } else {
        format!(
            "'{OUTPUT}' is [batch, 1, size, size]: the sigmoid of the logit, the foreground probability. wgunet \
             resizes it bilinearly to the image's own size and marks foreground where it is above 0.5."
        )
    };
    format!("{meaning}{flips}")
}

fn metadata(cfg: &ModelConfig, tta: bool, model_json: &str) -> Vec<StringStringEntryProto> {
    [
        ("preprocessing", preprocessing(cfg)),
        ("postprocessing", postprocessing(cfg, tta)),
        ("input_size", cfg.size.to_string()),
        ("input_channels", cfg.channels.to_string()),
        ("input_scale", "1/255 (8-bit images)".into()),
        ("classes", cfg.classes.to_string()),
        ("model.json", model_json.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| StringStringEntryProto { key: key.into(), value })
    .collect()
}

/// What an op's ONNX rule ([`Layer::onnx`](crate::graph::Layer::onnx)) sees: the graph node's
/// name, the ONNX values of the tensors before it, the parameters' names, and where its ONNX
/// nodes and constants go.
pub struct OnnxNode<'a> {
    name: &'a str,
    values: &'a [String],
    params: &'a [ParamInfo],
    nodes: &'a mut Vec<NodeProto>,
    constants: &'a mut Vec<TensorProto>,
}

impl OnnxNode<'_> {
    /// The graph node's name.
    pub fn name(&self) -> &str {
        self.name
    }
    /// The ONNX value holding tensor `t`.
    pub fn value(&self, t: TensorId) -> String {
        self.values[t].clone()
    }
    /// The initializer holding parameter `p`.
    pub fn param(&self, p: ParamId) -> String {
        self.params[p].name.clone()
    }
    /// Appends the ONNX node `name` of type `op_type`, writing `output`.
    pub fn push(&mut self, op_type: &str, name: &str, inputs: &[String], output: &str, attrs: Vec<AttributeProto>) {
        self.nodes.push(op(op_type, name, inputs, output, attrs));
    }
    /// The graph node as one ONNX node of its name and output; returns that output.
    pub fn single(&mut self, op_type: &str, inputs: &[String], attrs: Vec<AttributeProto>) -> String {
        let name = self.name.to_string();
        self.push(op_type, &name, inputs, &name, attrs);
        name
    }
    /// A constant input `name` (an initializer) of `values`.
    pub fn constant(&mut self, name: &str, values: &[f32]) {
        self.constants.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: DATA_TYPE_FLOAT,
            name: name.into(),
            raw_data: little_endian(values),
        });
    }
}

fn op(op_type: &str, name: &str, inputs: &[String], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.to_vec(),
        output: vec![output.to_string()],
        name: name.to_string(),
        op_type: op_type.to_string(),
        attribute,
    }
}

fn attr(name: &str, r#type: AttributeType) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: r#type as i32, ..Default::default() }
}

pub(crate) fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { ints: values.to_vec(), ..attr(name, AttributeType::Ints) }
}

pub(crate) fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { i: value, ..attr(name, AttributeType::Int) }
}

pub(crate) fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { f: value, ..attr(name, AttributeType::Float) }
}

pub(crate) fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto { s: value.as_bytes().to_vec(), ..attr(name, AttributeType::String) }
}

/// A parameter as an initializer of the same name and layout (the safetensors ones: OIHW
/// convolutions and [in, out, kh, kw] transposed convolutions are ONNX's own layouts).
fn tensor(p: &ParamInfo, values: &[f32]) -> TensorProto {
    TensorProto {
        dims: p.shape.iter().map(|&d| d as i64).collect(),
        data_type: DATA_TYPE_FLOAT,
        name: p.name.clone(),
        raw_data: little_endian(values),
    }
}

/// ONNX's `raw_data` layout for float32.
fn little_endian(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A float32 NCHW value with a dynamic batch axis.
fn value_info(name: &str, chw: [i64; 3]) -> ValueInfoProto {
    let fixed = chw.map(|d| Dimension { value: Some(DimensionValue::DimValue(d)) });
    let batch = Dimension { value: Some(DimensionValue::DimParam(BATCH.into())) };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: DATA_TYPE_FLOAT,
                shape: Some(TensorShapeProto { dim: std::iter::once(batch).chain(fixed).collect() }),
            }),
        }),
    }
}
