//! ONNX import: the protobuf (parsed by `tract-onnx`) -> [`CGraph`].
//!
//! Every node is either folded to a constant (all inputs constant: shape
//! arithmetic, weight transposes, ...) or translated into a [`COp`] with its
//! output shape computed, by the functions its operator registers in
//! [`crate::ops::registry`] (one module per operator family). BatchNorm folds
//! into the preceding Conv, activations fuse into their producer,
//! Identity/Dropout vanish. An op Strix does not run is an error naming the
//! node, op type and opset. The import passes of [`crate::passes`] then run.
//!
//! [`COp`]: crate::ir::COp

use crate::ir::{CGraph, CNode, COp, HostData, HostTensor};
use crate::ops;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};
use tract_onnx::prelude::Framework;

pub fn load_proto(path: &Path) -> Result<pb::ModelProto> {
    tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| anyhow!("{}: not a readable ONNX model: {e}", path.display()))
}

fn opset(m: &pb::ModelProto) -> i64 {
    m.opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1)
}

/// Most elements of one tensor (constant or activation) the importer builds:
/// 2^28 values are 1 GiB of f32, far beyond any model Strix runs on a board.
/// With it every product of dimensions is computed without overflow, and a
/// corrupted shape is refused instead of allocating without bound.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

/// The number of elements of `shape`, refused above [`MAX_TENSOR_ELEMENTS`].
/// Zero dimensions count as one in the bound, so that every partial product
/// of the dimensions (`outer`, `inner`, ...) is bounded too.
pub(crate) fn elements(shape: &[usize]) -> Result<usize> {
    let bound = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&n| n <= MAX_TENSOR_ELEMENTS);
    match bound {
        Some(_) => Ok(shape.iter().product()),
        None => bail!(
            "shape {shape:?} has more than {MAX_TENSOR_ELEMENTS} elements (or a dimension \
             of zero beside huge ones)"
        ),
    }
}

/// Decodes an ONNX tensor (float, double, float16, int8/16/32/64, uint8, bool).
pub fn tensor_from_proto(t: &pb::TensorProto) -> Result<HostTensor> {
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| anyhow!("tensor '{}' has a negative dimension", t.name))
        })
        .collect::<Result<_>>()?;
    let n = elements(&shape).with_context(|| format!("tensor '{}'", t.name))?;
    let raw = &t.raw_data;
    let dt = DataType::try_from(t.data_type)
        .map_err(|_| anyhow!("tensor '{}': unknown data type {}", t.name, t.data_type))?;
    let check = |got: usize| {
        if got != n {
            Err(anyhow!(
                "tensor '{}' holds {got} values for shape {shape:?}",
                t.name
            ))
        } else {
            Ok(())
        }
    };
    let data = match dt {
        DataType::Float => {
            let v: Vec<f32> = if !raw.is_empty() {
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            } else {
                t.float_data.clone()
            };
            check(v.len())?;
            HostData::F32(v)
        }
        DataType::Double => {
            let v: Vec<f32> = if !raw.is_empty() {
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect()
            } else {
                t.double_data.iter().map(|&x| x as f32).collect()
            };
            check(v.len())?;
            HostData::F32(v)
        }
        DataType::Float16 => {
            let v: Vec<f32> = if !raw.is_empty() {
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect()
            } else {
                t.int32_data
                    .iter()
                    .map(|&x| half::f16::from_bits(x as u16).to_f32())
                    .collect()
            };
            check(v.len())?;
            HostData::F32(v)
        }
        DataType::Int64 => {
            let v: Vec<i64> = if !raw.is_empty() {
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            } else {
                t.int64_data.clone()
            };
            check(v.len())?;
            HostData::I64(v)
        }
        DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::Uint8
        | DataType::Bool
        | DataType::Uint16 => {
            let w = match dt {
                DataType::Int32 => 4,
                DataType::Int16 | DataType::Uint16 => 2,
                _ => 1,
            };
            let v: Vec<i64> = if !raw.is_empty() {
                raw.chunks_exact(w)
                    .map(|c| match dt {
                        DataType::Int32 => i32::from_le_bytes(c.try_into().unwrap()) as i64,
                        DataType::Int16 => i16::from_le_bytes(c.try_into().unwrap()) as i64,
                        DataType::Uint16 => u16::from_le_bytes(c.try_into().unwrap()) as i64,
                        DataType::Int8 => c[0] as i8 as i64,
                        _ => c[0] as i64,
                    })
                    .collect()
            } else {
                t.int32_data.iter().map(|&x| x as i64).collect()
            };
            check(v.len())?;
            HostData::I64(v)
        }
        other => bail!("tensor '{}' has unsupported data type {other:?}", t.name),
    };
    Ok(HostTensor { shape, data })
}

/// Typed access to a node's attributes.
pub(crate) struct Attrs<'a>(pub(crate) &'a pb::NodeProto);

impl Attrs<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i).unwrap_or(default)
    }
    pub(crate) fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map(|a| a.f).unwrap_or(default)
    }
    pub(crate) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub(crate) fn string(&self, name: &str, default: &str) -> String {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).to_string())
            .unwrap_or_else(|| default.to_string())
    }
    pub(crate) fn tensor(&self, name: &str) -> Option<&pb::TensorProto> {
        self.get(name)
            .filter(|a| a.r#type == AttributeType::Tensor as i32 || a.t.is_some())
            .and_then(|a| a.t.as_ref())
    }
}

pub(crate) struct Importer {
    /// The graph built so far.
    pub(crate) g: CGraph,
    /// The value bound to each ONNX value name.
    pub(crate) by_name: HashMap<String, usize>,
    /// The model's default-domain opset.
    pub(crate) opset: i64,
    /// Remaining readers of each ONNX value name (for fusion decisions).
    readers: HashMap<String, usize>,
    /// QDQ bookkeeping (already-quantized models, see [`crate::qdq`]).
    pub(crate) qdq: crate::qdq::QdqState,
}

/// Imports an ONNX file as it is (see [`import_with`] to pin dynamic
/// dimensions or take an NHWC image input).
pub fn import(path: &Path) -> Result<CGraph> {
    import_proto(&load_proto(path)?, path)
}

/// The memory layout of a model's 4-D image input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputLayout {
    /// `[N, C, H, W]`: the layout of the `.strix` input; nothing to do.
    #[default]
    Nchw,
    /// `[N, H, W, C]` (TensorFlow / TFLite exports): the compiled model takes
    /// `[N, C, H, W]` and transposes it back at its start.
    Nhwc,
}

/// What [`import_with`] changes in the ONNX file before importing it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportOptions {
    /// `(input name, full shape)`: pins the input's dimensions, like onnxsim's
    /// `--overwrite-input-shape`. Every name must be a graph input, the rank
    /// must match, every dimension must be at least 1, and a dimension the
    /// file fixes must be given unchanged.
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// The layout of the first graph input (applied after `input_shapes`,
    /// which are given in the file's own layout).
    pub input_layout: InputLayout,
}

/// Imports an ONNX file with `opts` applied to its inputs (see
/// [`ImportOptions`]); errors name the input and the dimension.
pub fn import_with(path: &Path, opts: &ImportOptions) -> Result<CGraph> {
    let mut model = load_proto(path)?;
    apply_import_options(&mut model, opts).with_context(|| path.display().to_string())?;
    import_proto(&model, path)
}

/// The non-constant graph inputs (old exporters also list weights as inputs).
fn real_inputs(graph: &pb::GraphProto) -> Vec<&pb::ValueInfoProto> {
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|i| i.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect()
}

/// The dims an input declares: `Some(n)` fixed, `None` symbolic or unknown;
/// `None` overall when the file gives no shape.
fn declared_dims(inp: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
    use tract_onnx::pb::type_proto::Value as TV;
    let Some(TV::TensorType(tt)) = inp.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return None;
    };
    let s = tt.shape.as_ref()?;
    Some(
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(D::DimValue(v)) if *v > 0 => Some(*v),
                _ => None,
            })
            .collect(),
    )
}

/// `[1, 3, h, w]` for messages: symbolic dims by their name, else `?`.
fn describe_dims(inp: &pb::ValueInfoProto) -> String {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
    use tract_onnx::pb::type_proto::Value as TV;
    let Some(TV::TensorType(tt)) = inp.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return "(not a tensor)".into();
    };
    let Some(s) = tt.shape.as_ref() else {
        return "(no shape)".into();
    };
    let dims: Vec<String> = s
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(D::DimValue(v)) if *v > 0 => v.to_string(),
            Some(D::DimParam(p)) if !p.is_empty() => p.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Sets the dims of input `inp` to `shape` (every dim fixed).
fn set_dims(inp: &mut pb::ValueInfoProto, shape: &[usize]) -> Result<()> {
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value as D, Dimension};
    use tract_onnx::pb::type_proto::Value as TV;
    let Some(TV::TensorType(tt)) = inp.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        bail!("input '{}' is not a tensor", inp.name)
    };
    let dims = shape
        .iter()
        .map(|&d| {
            Ok(Dimension {
                value: Some(D::DimValue(i64::try_from(d).map_err(|_| {
                    anyhow!("input '{}': dimension {d} is too large", inp.name)
                })?)),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    tt.shape = Some(pb::TensorShapeProto { dim: dims });
    Ok(())
}

/// Applies [`ImportOptions`] to the parsed model (see there).
pub fn apply_import_options(model: &mut pb::ModelProto, opts: &ImportOptions) -> Result<()> {
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("the ONNX file has no graph"))?;
    let listing = |graph: &pb::GraphProto| {
        real_inputs(graph)
            .iter()
            .map(|i| format!("'{}' {}", i.name, describe_dims(i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut seen = std::collections::HashSet::new();
    for (name, shape) in &opts.input_shapes {
        if !seen.insert(name.as_str()) {
            bail!("--input-shape gives input '{name}' twice");
        }
        let Some(inp) = real_inputs(graph).into_iter().find(|i| &i.name == name) else {
            bail!(
                "--input-shape {name}=...: the model has no input '{name}'; its inputs: {}",
                listing(graph)
            );
        };
        if let Some(d) = shape.iter().position(|&d| d == 0) {
            bail!("--input-shape {name}: dimension {d} is 0 (every dimension must be at least 1)");
        }
        let declared = declared_dims(inp);
        if let Some(declared) = &declared {
            if declared.len() != shape.len() {
                bail!(
                    "--input-shape {name}: gives {} dimensions {shape:?}, the input has {} {}",
                    shape.len(),
                    declared.len(),
                    describe_dims(inp)
                );
            }
            for (i, (&want, have)) in shape.iter().zip(declared).enumerate() {
                if let Some(have) = have {
                    if *have as usize != want {
                        bail!(
                            "--input-shape {name}: dimension {i} is fixed to {have} in the model \
                             {}, not {want}",
                            describe_dims(inp)
                        );
                    }
                }
            }
        }
        let inp = graph
            .input
            .iter_mut()
            .find(|i| &i.name == name)
            .ok_or_else(|| anyhow!("input '{name}' vanished"))?;
        set_dims(inp, shape)?;
    }
    if opts.input_layout == InputLayout::Nhwc {
        nhwc_to_nchw(graph)?;
    }
    Ok(())
}

/// Makes the first graph input `[N, C, H, W]` (keeping its name): its
/// readers read a Transpose of it back to NHWC, or, when every reader is
/// itself Transpose(perm 0,3,1,2) as tf2onnx emits right after an NHWC
/// input, those become Identity (the two transposes cancel).
fn nhwc_to_nchw(graph: &mut pb::GraphProto) -> Result<()> {
    let Some(first) = real_inputs(graph).first().map(|i| i.name.clone()) else {
        bail!("--input-layout nhwc: the model has no non-constant input");
    };
    let inp = graph
        .input
        .iter_mut()
        .find(|i| i.name == first)
        .ok_or_else(|| anyhow!("input '{first}' vanished"))?;
    let dims = declared_dims(inp).unwrap_or_default();
    if dims.len() != 4 {
        bail!(
            "--input-layout nhwc: input '{first}' {} is not 4-D [N, H, W, C]",
            describe_dims(inp)
        );
    }
    let fixed: Option<Vec<usize>> = dims
        .iter()
        .enumerate()
        .map(|(i, d)| d.map(|d| d as usize).or((i == 0).then_some(1)))
        .collect();
    let Some(nhwc) = fixed else {
        bail!(
            "--input-layout nhwc: input '{first}' {} has dynamic dimensions: pin them with \
             --input-shape {first}=N,H,W,C",
            describe_dims(inp)
        );
    };
    if !matches!(nhwc[3], 1 | 3) {
        bail!(
            "--input-layout nhwc: input '{first}' {} has {} channels in its last axis (an image \
             input has 1 or 3): is it NCHW already?",
            describe_dims(inp),
            nhwc[3]
        );
    }
    if graph.output.iter().any(|o| o.name == first) {
        bail!("--input-layout nhwc: input '{first}' is also a graph output");
    }
    set_dims(inp, &[nhwc[0], nhwc[3], nhwc[1], nhwc[2]])?;
    let is_to_nchw = |n: &pb::NodeProto| {
        n.op_type == "Transpose"
            && n.input.len() == 1
            && n.input[0] == first
            && Attrs(n).ints("perm").as_deref() == Some(&[0, 3, 1, 2][..])
    };
    let readers: Vec<usize> = (0..graph.node.len())
        .filter(|&k| graph.node[k].input.iter().any(|i| i == &first))
        .collect();
    if readers.iter().all(|&k| is_to_nchw(&graph.node[k])) {
        // The input now is what these transposes computed.
        for k in readers {
            graph.node[k].op_type = "Identity".into();
            graph.node[k].attribute.clear();
        }
    } else {
        let nhwc_name = format!("{first}__nhwc");
        for k in readers {
            for i in graph.node[k].input.iter_mut().filter(|i| **i == first) {
                *i = nhwc_name.clone();
            }
        }
        graph.node.insert(
            0,
            pb::NodeProto {
                name: format!("{first}__to_nhwc"),
                op_type: "Transpose".into(),
                input: vec![first.clone()],
                output: vec![nhwc_name],
                attribute: vec![pb::AttributeProto {
                    name: "perm".into(),
                    r#type: AttributeType::Ints as i32,
                    ints: vec![0, 2, 3, 1],
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
    }
    Ok(())
}

/// Imports a parsed ONNX model; `path` names it in errors.
pub fn import_proto(model: &pb::ModelProto, path: &Path) -> Result<CGraph> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("{}: the ONNX file has no graph", path.display()))?;
    let mut imp = Importer {
        g: CGraph::default(),
        by_name: HashMap::new(),
        opset: opset(model),
        readers: HashMap::new(),
        qdq: Default::default(),
    };
    imp.qdq.scan(graph);
    for n in &graph.node {
        for i in &n.input {
            *imp.readers.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *imp.readers.entry(o.name.clone()).or_default() += 1;
    }
    for init in &graph.initializer {
        let t = tensor_from_proto(init).with_context(|| format!("initializer '{}'", init.name))?;
        let v = imp.g.add_value(&init.name, t.shape.clone(), Some(t));
        imp.by_name.insert(init.name.clone(), v);
    }
    // Old exporters list every weight as a graph input too: initializers win.
    for inp in &graph.input {
        if imp.by_name.contains_key(&inp.name) {
            continue;
        }
        let shape = input_shape(inp)?;
        let v = imp.g.add_value(&inp.name, shape, None);
        imp.by_name.insert(inp.name.clone(), v);
        imp.g.inputs.push(v);
    }
    if imp.g.inputs.is_empty() {
        bail!("{}: the model has no non-constant input", path.display());
    }
    for n in &graph.node {
        imp.node(n).with_context(|| {
            format!(
                "node '{}' ({}{}, opset {})",
                n.name,
                if n.domain.is_empty() {
                    String::new()
                } else {
                    format!("{}:", n.domain)
                },
                n.op_type,
                imp.opset
            )
        })?;
    }
    for o in &graph.output {
        let v = imp.value(&o.name)?;
        if imp.g.is_const(v) {
            bail!("graph output '{}' is a constant: nothing to run", o.name);
        }
        imp.g.outputs.push(v);
    }
    for note in &imp.qdq.notes {
        eprintln!("note: {note}");
    }
    let mut g = imp.g;
    crate::passes::run_import_passes(&mut g)?;
    Ok(g)
}

fn input_shape(inp: &pb::ValueInfoProto) -> Result<Vec<usize>> {
    use tract_onnx::pb::type_proto::Value as TV;
    let Some(TV::TensorType(tt)) = inp.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        bail!("input '{}' is not a tensor", inp.name)
    };
    if tt.elem_type != DataType::Float as i32 {
        bail!(
            "input '{}' has element type {} (only float inputs are supported)",
            inp.name,
            tt.elem_type
        );
    }
    let dims = tt.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
    dims.iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                Ok(*v as usize)
            }
            // A symbolic batch dimension runs with batch 1.
            _ if i == 0 => Ok(1),
            _ => Err(anyhow!(
                "input '{}' {} has a dynamic dimension {i}: pin it with --input-shape {}={} \
                 (or export the model with static shapes)",
                inp.name,
                describe_dims(inp),
                inp.name,
                example_shape(inp)
            )),
        })
        .collect::<Result<Vec<usize>>>()
        .and_then(|shape| {
            elements(&shape).with_context(|| format!("input '{}'", inp.name))?;
            Ok(shape)
        })
}

/// `1,3,H,W`-style example for the error on a dynamic input: fixed dims as
/// they are, the batch as 1, symbolic ones by their name in capitals.
fn example_shape(inp: &pb::ValueInfoProto) -> String {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
    use tract_onnx::pb::type_proto::Value as TV;
    let Some(TV::TensorType(tt)) = inp.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return String::new();
    };
    let dims = tt.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
    dims.iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(D::DimValue(v)) if *v > 0 => v.to_string(),
            _ if i == 0 => "1".into(),
            Some(D::DimParam(p)) if !p.is_empty() => p.to_uppercase(),
            _ => format!("D{i}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Importer {
    pub(crate) fn value(&self, name: &str) -> Result<usize> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("unknown value '{name}'"))
    }
    pub(crate) fn konst(&self, name: &str) -> Result<&HostTensor> {
        let v = self.value(name)?;
        self.g.values[v]
            .konst
            .as_ref()
            .ok_or_else(|| anyhow!("input '{name}' must be a constant"))
    }
    pub(crate) fn opt_konst(&self, n: &pb::NodeProto, i: usize) -> Result<Option<&HostTensor>> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => Ok(Some(self.konst(name)?)),
            None => Ok(None),
        }
    }
    pub(crate) fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.g.values[self.value(name)?].shape.clone())
    }
    pub(crate) fn bind_const(&mut self, name: &str, t: HostTensor) {
        let v = self.g.add_value(name, t.shape.clone(), Some(t));
        self.by_name.insert(name.to_string(), v);
    }
    /// Adds the node computing `n`'s first output, of shape `shape` (bounded by
    /// [`MAX_TENSOR_ELEMENTS`]).
    pub(crate) fn emit(
        &mut self,
        n: &pb::NodeProto,
        op: COp,
        inputs: Vec<usize>,
        shape: Vec<usize>,
    ) -> Result<usize> {
        elements(&shape).context("output")?;
        let out_name = n.output.first().cloned().unwrap_or_default();
        let v = self.g.add_value(&out_name, shape, None);
        self.g.nodes.push(CNode {
            name: node_name(n),
            op,
            inputs,
            output: v,
        });
        self.by_name.insert(out_name, v);
        Ok(v)
    }
    pub(crate) fn alias(&mut self, n: &pb::NodeProto, input: usize) {
        if let Some(o) = n.output.first() {
            self.by_name.insert(o.clone(), input);
        }
    }
    /// Readers of ONNX name `name` (as the file gives them).
    pub(crate) fn readers_of(&self, name: &str) -> usize {
        self.readers.get(name).copied().unwrap_or(0)
    }
    /// Sets the readers of `name`: a QDQ pair's output counts the readers
    /// of the whole chain, so that fusion sees every reader of the value.
    pub(crate) fn set_readers(&mut self, name: &str, n: usize) {
        self.readers.insert(name.to_string(), n);
    }
    /// Producer node of value `v` if it is fusible (single reader).
    pub(crate) fn fusible_producer(&self, v: usize, onnx_name: &str) -> Option<usize> {
        if self.readers.get(onnx_name).copied().unwrap_or(0) != 1 {
            return None;
        }
        self.g.nodes.iter().rposition(|n| n.output == v)
    }

    fn node(&mut self, n: &pb::NodeProto) -> Result<()> {
        let a = Attrs(n);
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            bail!("operators of domain '{}' are not supported", n.domain);
        }
        let op = n.op_type.as_str();
        if matches!(op, "QuantizeLinear" | "DequantizeLinear") {
            return crate::qdq::node(self, n);
        }
        let def = ops::onnx_op(op);
        // Every translation and constant fold indexes the inputs it
        // needs: a node with fewer is refused here, not with a panic.
        let need = def.map_or(1, |d| (d.min_inputs)(self.opset));
        if n.input.len() < need {
            bail!("needs at least {need} input(s), has {}", n.input.len());
        }
        if n.output.is_empty() {
            bail!("has no outputs");
        }
        // Constant folding: every real input is a constant.
        let all_const = !n
            .input
            .iter()
            .filter(|s| !s.is_empty())
            .any(|s| self.by_name.get(s).is_none_or(|&v| !self.g.is_const(v)));
        if all_const {
            let fold = def
                .and_then(|d| d.fold)
                .ok_or_else(|| ops::cannot_fold(self, n))?;
            let outs = fold(self, n, &a)?;
            for (name, t) in n.output.iter().zip(outs) {
                self.bind_const(name, t);
            }
            return Ok(());
        }
        match def.and_then(|d| d.import) {
            Some(import) => {
                import(self, n, &a)?;
                if matches!(op, "Conv" | "Gemm" | "MatMul") {
                    crate::qdq::pin_weights(self, n)?;
                }
                Ok(())
            }
            None => bail!("unsupported operator {} (opset {})", op, self.opset),
        }
    }
}

pub(crate) fn node_name(n: &pb::NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};

    fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn int(name: &str, v: i64) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i: v,
            ..Default::default()
        }
    }

    fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(TypeValue::TensorType(TensorType {
                    elem_type: DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(Dim::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// X [1, 2, 8, 8] -> `node` -> Y, with `inits` as initializers.
    fn model(node: pb::NodeProto, inits: Vec<pb::TensorProto>) -> pb::ModelProto {
        pb::ModelProto {
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                node: vec![node],
                initializer: inits,
                input: vec![value_info("X", &[1, 2, 8, 8])],
                output: vec![value_info("Y", &[])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn weights(dims: &[i64]) -> pb::TensorProto {
        let n = dims.iter().product::<i64>() as usize;
        pb::TensorProto {
            name: "W".into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            float_data: vec![0.5; n],
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            name: format!("the_{op}"),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec!["Y".into()],
            attribute: attrs,
            ..Default::default()
        }
    }

    fn import_err(m: &pb::ModelProto) -> String {
        format!(
            "{:#}",
            import_proto(m, Path::new("t.onnx")).expect_err("hostile model was accepted")
        )
    }

    fn conv(attrs: Vec<pb::AttributeProto>) -> pb::ModelProto {
        model(
            node("Conv", &["X", "W"], attrs),
            vec![weights(&[4, 2, 3, 3])],
        )
    }

    #[test]
    fn valid_conv_and_pool_import() {
        let g = import_proto(&conv(vec![ints("strides", &[2, 2])]), Path::new("t.onnx")).unwrap();
        assert_eq!(g.values[g.outputs[0]].shape, [1, 4, 3, 3]);
        let pool = model(
            node(
                "MaxPool",
                &["X"],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ),
            vec![],
        );
        let g = import_proto(&pool, Path::new("t.onnx")).unwrap();
        assert_eq!(g.values[g.outputs[0]].shape, [1, 2, 4, 4]);
    }

    /// Reshape-1..4 take the shape as an attribute and have one input.
    /// Found by fuzzing: an opset lowered to 4 let a one-input Reshape
    /// through the arity check, and the importer indexed input 1.
    #[test]
    fn reshape_before_opset_5_reads_its_shape_attribute() {
        let old = |attrs| {
            let mut m = model(node("Reshape", &["X"], attrs), vec![]);
            m.opset_import[0].version = 4;
            m
        };
        let g = import_proto(&old(vec![ints("shape", &[1, 128])]), Path::new("t.onnx")).unwrap();
        assert_eq!(g.values[g.outputs[0]].shape, [1, 128]);
        let e = import_err(&old(vec![]));
        assert!(e.contains("Reshape without a shape"), "{e}");
    }

    /// Issue 12 L: a zero stride divided by zero in `strix convert`. Every
    /// degenerate window attribute is now an error naming the node and the
    /// attribute, for Conv and for pooling.
    #[test]
    fn degenerate_window_attributes_are_refused() {
        let cases: Vec<(Vec<pb::AttributeProto>, &str)> = vec![
            (vec![ints("strides", &[0, 1])], "strides=[0, 1]"),
            (vec![ints("strides", &[1, -2])], "strides=[1, -2]"),
            (vec![ints("strides", &[1])], "strides=[1]"),
            (vec![ints("dilations", &[0, 0])], "dilations=[0, 0]"),
            (vec![ints("pads", &[-1, 0, 0, 0])], "pads=[-1, 0, 0, 0]"),
            (vec![ints("pads", &[1, 1])], "pads=[1, 1]"),
            (vec![ints("pads", &[i64::MAX; 4])], "overflows"),
            (
                vec![ints("dilations", &[i64::MAX, 1])],
                "is too large (at most 2147483647)",
            ),
            (vec![ints("kernel_shape", &[0, 3])], "kernel_shape=[0, 3]"),
            (vec![int("group", 0)], "group=0"),
            (vec![int("group", 3)], "inconsistent Conv"),
            (
                vec![
                    ints("strides", &[0, 0]),
                    pb::AttributeProto {
                        name: "auto_pad".into(),
                        r#type: AttributeType::String as i32,
                        s: b"SAME_UPPER".to_vec(),
                        ..Default::default()
                    },
                ],
                "strides=[0, 0]",
            ),
        ];
        for (attrs, want) in cases {
            let err = import_err(&conv(attrs));
            assert!(err.contains("node 'the_Conv' (Conv"), "{err}");
            assert!(err.contains(want), "{want}: {err}");
        }
        let err = import_err(&model(
            node("Conv", &["X", "W"], vec![]),
            vec![weights(&[4, 2, 0, 3])],
        ));
        assert!(err.contains("empty kernel"), "{err}");

        for (attrs, want) in [
            (vec![ints("kernel_shape", &[2, 0])], "kernel_shape=[2, 0]"),
            (vec![ints("kernel_shape", &[-2, 2])], "kernel_shape=[-2, 2]"),
            (
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[0, 2])],
                "strides=[0, 2]",
            ),
            (
                vec![ints("kernel_shape", &[2, 2]), ints("pads", &[0, 0, -1, 0])],
                "pads=",
            ),
            (
                vec![ints("kernel_shape", &[2, 2]), ints("pads", &[i64::MAX; 4])],
                "overflows",
            ),
        ] {
            for op in ["MaxPool", "AveragePool"] {
                let err = import_err(&model(node(op, &["X"], attrs.clone()), vec![]));
                assert!(err.contains(&format!("node 'the_{op}' ({op}")), "{err}");
                assert!(err.contains(want), "{want}: {err}");
            }
        }
    }

    /// Missing inputs, huge declared shapes and inconsistent attributes of
    /// other operators are errors too, not panics or huge allocations.
    /// A pad as wide as the window (legal ONNX) would make windows of padding
    /// only, which the runtime refuses: the importer says so, naming the node
    /// (found by fuzzing: it used to emit a graph that failed validation).
    #[test]
    fn pads_as_wide_as_the_window_are_refused() {
        let conv = node(
            "Conv",
            &["X", "W"],
            vec![ints("pads", &[1, 1, 3, 1]), ints("strides", &[2, 2])],
        );
        let err = import_err(&model(conv, vec![weights(&[4, 2, 3, 3])]));
        assert!(
            err.contains("the_Conv") && err.contains("not all smaller"),
            "{err}"
        );
        // Strides beyond what the runtime indexes (also found by fuzzing).
        let conv = node("Conv", &["X", "W"], vec![ints("strides", &[1, i64::MAX])]);
        let err = import_err(&model(conv, vec![weights(&[4, 2, 3, 3])]));
        assert!(
            err.contains("the_Conv") && err.contains("too large"),
            "{err}"
        );
    }

    /// Constant folds follow the importer's axis rules: a Gather or a
    /// Transpose of a scalar constant is an error (both used to index an
    /// empty shape and panic).
    #[test]
    fn folds_of_scalar_constants_are_errors_not_panics() {
        let scalar = |name: &str| pb::TensorProto {
            name: name.into(),
            dims: vec![],
            data_type: DataType::Int64 as i32,
            int64_data: vec![0],
            ..Default::default()
        };
        let gather = node("Gather", &["S", "I"], vec![]);
        let err = import_err(&model(gather, vec![scalar("S"), scalar("I")]));
        assert!(err.contains("out of range for rank 0"), "{err}");
        let transpose = node("Transpose", &["S"], vec![ints("perm", &[0])]);
        let err = import_err(&model(transpose, vec![scalar("S")]));
        assert!(err.contains("out of range for rank 0"), "{err}");
        let swap = node("Transpose", &["W"], vec![ints("perm", &[0, 0])]);
        let err = import_err(&model(swap, vec![weights(&[2, 3])]));
        assert!(err.contains("not a permutation"), "{err}");
    }

    /// `--input-shape` pins symbolic dims and checks the rest; NHWC inputs
    /// become NCHW with a transpose back in front of their readers.
    #[test]
    fn import_options_pin_shapes_and_take_nhwc() {
        use tract_onnx::pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
        let mut m = model(node("Relu", &["X"], vec![]), vec![]);
        let g = m.graph.as_mut().unwrap();
        if let Some(TypeValue::TensorType(tt)) =
            g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            for (i, p) in [(1, "h"), (3, "c")] {
                tt.shape.as_mut().unwrap().dim[i] = Dimension {
                    value: Some(Dim::DimParam(p.into())),
                    ..Default::default()
                };
            }
        }
        let err = import_err(&m);
        assert!(err.contains("--input-shape X=1,H,8,C"), "{err}");
        let opts = |shape: &[usize], layout| ImportOptions {
            input_shapes: vec![("X".into(), shape.to_vec())],
            input_layout: layout,
        };
        let mut pinned = m.clone();
        apply_import_options(&mut pinned, &opts(&[1, 6, 8, 3], InputLayout::Nhwc)).unwrap();
        let g = import_proto(&pinned, Path::new("t.onnx")).unwrap();
        assert_eq!(g.values[g.inputs[0]].shape, [1, 3, 6, 8]);
        assert_eq!(g.values[g.outputs[0]].shape, [1, 6, 8, 3]);
        assert!(matches!(&g.nodes[0].op, COp::Transpose { perm } if perm == &[0, 2, 3, 1]));
        for (shape, want) in [
            (
                &[1, 6, 9, 8][..],
                "dimension 2 is fixed to 8 in the model [1, h, 8, c], not 9",
            ),
            (&[1, 6, 8], "gives 3 dimensions"),
        ] {
            let mut bad = m.clone();
            let e = apply_import_options(&mut bad, &opts(shape, InputLayout::Nchw)).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    /// A negative axis counts from the rank, in the constant fold of Concat
    /// (it joined yolov8n's anchor grids `[40, 40, 1]` along axis 1: its
    /// boxes' centres were off by up to 312 pixels, output cosine 0.92 vs
    /// tract in f32 as in int8) and in Slice (which sliced axis -2).
    #[test]
    fn negative_axes_are_the_last_ones() {
        let half = |name: &str, v: f32| pb::TensorProto {
            name: name.into(),
            dims: vec![1, 2, 8, 4],
            data_type: DataType::Float as i32,
            float_data: vec![v; 64],
            ..Default::default()
        };
        let mut m = model(
            node("Add", &["X", "C"], vec![]),
            vec![half("A", 0.0), half("B", 1.0)],
        );
        let g = m.graph.as_mut().unwrap();
        g.node.insert(
            0,
            pb::NodeProto {
                name: "join".into(),
                op_type: "Concat".into(),
                input: vec!["A".into(), "B".into()],
                output: vec!["C".into()],
                attribute: vec![int("axis", -1)],
                ..Default::default()
            },
        );
        let g = import_proto(&m, Path::new("t.onnx")).unwrap();
        let c = g.values.iter().find(|v| v.name == "C").unwrap();
        assert_eq!(c.shape, [1, 2, 8, 8]);
        let c = c.konst.as_ref().unwrap().as_f32();
        assert_eq!(&c[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);

        let k = |name: &str, v: i64| pb::TensorProto {
            name: name.into(),
            dims: vec![1],
            data_type: DataType::Int64 as i32,
            int64_data: vec![v],
            ..Default::default()
        };
        let m = model(
            node("Slice", &["X", "S", "E", "A"], vec![]),
            vec![k("S", 0), k("E", 3), k("A", -1)],
        );
        let g = import_proto(&m, Path::new("t.onnx")).unwrap();
        assert_eq!(g.values[g.outputs[0]].shape, [1, 2, 8, 3]);
    }

    #[test]
    fn malformed_nodes_are_errors_not_panics() {
        let err = import_err(&model(node("Conv", &["X"], vec![]), vec![]));
        assert!(err.contains("needs at least 2 input(s), has 1"), "{err}");
        let mut no_out = node("Relu", &["X"], vec![]);
        no_out.output.clear();
        assert!(import_err(&model(no_out, vec![])).contains("has no outputs"));

        let mut huge = model(node("Relu", &["X"], vec![]), vec![]);
        huge.graph.as_mut().unwrap().input = vec![value_info("X", &[1, 1 << 40, 1 << 40])];
        assert!(import_err(&huge).contains("elements"));
        // A constant whose dimensions multiply to 0 mod 2^64 with no data.
        let mut wrap = weights(&[1 << 32, 1 << 32]);
        wrap.float_data.clear();
        let err = import_err(&model(node("Add", &["X", "W"], vec![]), vec![wrap]));
        assert!(err.contains("elements"), "{err}");

        let err = import_err(&model(
            node("Transpose", &["X"], vec![ints("perm", &[0, 0, 1, 2])]),
            vec![],
        ));
        assert!(err.contains("not a permutation"), "{err}");
        let err = import_err(&model(
            node("Softmax", &["X"], vec![int("axis", 4)]),
            vec![],
        ));
        assert!(err.contains("out of range"), "{err}");
        let err = import_err(&model(
            node("Pad", &["X", "W"], vec![]),
            vec![pb::TensorProto {
                name: "W".into(),
                dims: vec![8],
                data_type: DataType::Int64 as i32,
                int64_data: vec![0, 0, 0, i64::MAX, 0, 0, 0, i64::MAX],
                ..Default::default()
            }],
        ));
        assert!(err.contains("overflows"), "{err}");
    }
}
