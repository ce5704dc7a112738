//! ONNX import: the protobuf (parsed by `tract-onnx`) -> [`CGraph`].
//!
//! Every node is either folded to a constant (all inputs constant: shape
//! arithmetic, weight transposes, ...) or translated into a [`COp`] with its
//! output shape computed here. BatchNorm folds into the preceding Conv,
//! activations fuse into their producer, Identity/Dropout vanish. An op Strix
//! does not run is an error naming the node, op type and opset.

use crate::ir::{Act, CGraph, CNode, COp, HostData, HostTensor};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use strix_kernels::reference::{
    BinaryOp, ConvGeometry, CoordMode, LstmGeometry, PoolGeometry, ResizeGeometry, ResizeKind,
    UnaryOp,
};
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
fn elements(shape: &[usize]) -> Result<usize> {
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
    g: CGraph,
    by_name: HashMap<String, usize>,
    opset: i64,
    /// Remaining readers of each ONNX value name (for fusion decisions).
    readers: HashMap<String, usize>,
}

/// Imports an ONNX file. `input_shapes` overrides dynamic input dims.
pub fn import(path: &Path) -> Result<CGraph> {
    import_proto(&load_proto(path)?, path)
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
    };
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
    imp.g.remove_dead();
    fuse_silu(&mut imp.g);
    Ok(imp.g)
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
                "input '{}' has a dynamic dimension {i}: export the model with static shapes",
                inp.name
            )),
        })
        .collect::<Result<Vec<usize>>>()
        .and_then(|shape| {
            elements(&shape).with_context(|| format!("input '{}'", inp.name))?;
            Ok(shape)
        })
}

/// Numpy broadcast of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            if da == db || db == 1 {
                Ok(da)
            } else if da == 1 {
                Ok(db)
            } else {
                bail!("shapes {a:?} and {b:?} do not broadcast")
            }
        })
        .collect()
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    // Every caller indexes the shape with the result: a scalar has no axis.
    if a < 0 || a as usize >= rank {
        bail!("axis {axis} out of range for rank {rank}");
    }
    Ok(a as usize)
}

impl Importer {
    fn value(&self, name: &str) -> Result<usize> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("unknown value '{name}'"))
    }
    fn konst(&self, name: &str) -> Result<&HostTensor> {
        let v = self.value(name)?;
        self.g.values[v]
            .konst
            .as_ref()
            .ok_or_else(|| anyhow!("input '{name}' must be a constant"))
    }
    fn opt_konst(&self, n: &pb::NodeProto, i: usize) -> Result<Option<&HostTensor>> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => Ok(Some(self.konst(name)?)),
            None => Ok(None),
        }
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.g.values[self.value(name)?].shape.clone())
    }
    fn bind_const(&mut self, name: &str, t: HostTensor) {
        let v = self.g.add_value(name, t.shape.clone(), Some(t));
        self.by_name.insert(name.to_string(), v);
    }
    /// Adds the node computing `n`'s first output, of shape `shape` (bounded by
    /// [`MAX_TENSOR_ELEMENTS`]).
    fn emit(
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
    fn alias(&mut self, n: &pb::NodeProto, input: usize) {
        if let Some(o) = n.output.first() {
            self.by_name.insert(o.clone(), input);
        }
    }
    /// Producer node of value `v` if it is fusible (single reader).
    fn fusible_producer(&self, v: usize, onnx_name: &str) -> Option<usize> {
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
        // Every translation and constant fold below indexes the inputs it
        // needs: a node with fewer is refused here, not with a panic.
        let need = min_inputs(op, self.opset);
        if n.input.len() < need {
            bail!("needs at least {need} input(s), has {}", n.input.len());
        }
        if n.output.is_empty() {
            bail!("has no outputs");
        }
        let inputs: Vec<&str> = n.input.iter().map(|s| s.as_str()).collect();
        // Constant folding: every real input is a constant.
        let all_const = op != "Shape"
            && !inputs
                .iter()
                .filter(|s| !s.is_empty())
                .any(|s| self.by_name.get(*s).is_none_or(|&v| !self.g.is_const(v)));
        if op == "Constant" {
            let t = if let Some(t) = a.tensor("value") {
                tensor_from_proto(t)?
            } else if let Some(v) = a.get("value_float") {
                HostTensor::f32(vec![], vec![v.f])
            } else if let Some(v) = a.get("value_int") {
                HostTensor::i64(vec![], vec![v.i])
            } else if let Some(v) = a.get("value_ints") {
                HostTensor::i64(vec![v.ints.len()], v.ints.clone())
            } else if let Some(v) = a.get("value_floats") {
                HostTensor::f32(vec![v.floats.len()], v.floats.clone())
            } else {
                bail!("Constant without a supported value attribute")
            };
            self.bind_const(&n.output[0], t);
            return Ok(());
        }
        if op == "Shape" {
            let s = self.shape(inputs[0])?;
            let r = s.len() as i64;
            let start = a.int("start", 0);
            let end = a.int("end", r);
            let clampi = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
            let v: Vec<i64> = s[clampi(start)..clampi(end).max(clampi(start))]
                .iter()
                .map(|&d| d as i64)
                .collect();
            self.bind_const(&n.output[0], HostTensor::i64(vec![v.len()], v));
            return Ok(());
        }
        if all_const {
            let outs = crate::fold::eval(self, n)?;
            for (name, t) in n.output.iter().zip(outs) {
                self.bind_const(name, t);
            }
            return Ok(());
        }
        match op {
            "Identity" | "Dropout" => {
                let v = self.value(inputs[0])?;
                self.alias(n, v);
            }
            "Cast" => {
                let to = a.int("to", 1);
                if to != DataType::Float as i64 {
                    bail!("Cast of an activation to type {to} is not supported (only to float)");
                }
                let v = self.value(inputs[0])?;
                self.alias(n, v);
            }
            "Conv" => self.conv(n, &a)?,
            "BatchNormalization" => self.batchnorm(n, &a)?,
            "Relu" => self.activation(
                n,
                Act {
                    min: 0.0,
                    max: f32::INFINITY,
                },
                UnaryOp::Relu,
            )?,
            "Clip" => {
                let (lo, hi) = if self.opset < 11 {
                    (
                        a.float("min", f32::NEG_INFINITY),
                        a.float("max", f32::INFINITY),
                    )
                } else {
                    (
                        self.opt_konst(n, 1)?
                            .and_then(|t| t.scalar())
                            .unwrap_or(f32::NEG_INFINITY),
                        self.opt_konst(n, 2)?
                            .and_then(|t| t.scalar())
                            .unwrap_or(f32::INFINITY),
                    )
                };
                self.activation(
                    n,
                    Act { min: lo, max: hi },
                    UnaryOp::Clip { min: lo, max: hi },
                )?
            }
            "Sigmoid" => self.unary(n, UnaryOp::Sigmoid)?,
            "Tanh" => self.unary(n, UnaryOp::Tanh)?,
            "Exp" => self.unary(n, UnaryOp::Exp)?,
            "Sqrt" => self.unary(n, UnaryOp::Sqrt)?,
            "Neg" => self.unary(n, UnaryOp::Neg)?,
            "Abs" => self.unary(n, UnaryOp::Abs)?,
            "Erf" => self.unary(n, UnaryOp::Erf)?,
            "LeakyRelu" => self.unary(
                n,
                UnaryOp::LeakyRelu {
                    alpha: a.float("alpha", 0.01),
                },
            )?,
            "HardSigmoid" => self.unary(
                n,
                UnaryOp::HardSigmoid {
                    alpha: a.float("alpha", 0.2),
                    beta: a.float("beta", 0.5),
                },
            )?,
            "HardSwish" => self.unary(n, UnaryOp::HardSwish)?,
            "Gelu" => self.unary(n, UnaryOp::Gelu)?,
            "Add" => self.binary(n, BinaryOp::Add)?,
            "Sub" => self.binary(n, BinaryOp::Sub)?,
            "Mul" => self.binary(n, BinaryOp::Mul)?,
            "Div" => self.binary(n, BinaryOp::Div)?,
            "Pow" => self.binary(n, BinaryOp::Pow)?,
            "Max" if inputs.len() == 2 => self.binary(n, BinaryOp::Max)?,
            "Min" if inputs.len() == 2 => self.binary(n, BinaryOp::Min)?,
            "PRelu" => self.binary(n, BinaryOp::Prelu)?,
            "Gemm" => self.gemm(n, &a)?,
            "MatMul" => self.matmul(n)?,
            "MaxPool" | "AveragePool" => self.pool(n, &a, op == "MaxPool", false)?,
            "GlobalAveragePool" => self.pool(n, &a, false, true)?,
            "GlobalMaxPool" => self.pool(n, &a, true, true)?,
            "Softmax" => {
                let s = self.shape(inputs[0])?;
                let r = s.len();
                let axis = norm_axis(a.int("axis", if self.opset < 13 { 1 } else { -1 }), r)?;
                let (outer, ax, inner) = if self.opset < 13 {
                    (s[..axis].iter().product(), s[axis..].iter().product(), 1)
                } else {
                    (
                        s[..axis].iter().product(),
                        s[axis],
                        s[axis + 1..].iter().product(),
                    )
                };
                let x = self.value(inputs[0])?;
                self.emit(
                    n,
                    COp::Softmax {
                        outer,
                        axis: ax,
                        inner,
                    },
                    vec![x],
                    s,
                )?;
            }
            "ReduceMean" => {
                let s = self.shape(inputs[0])?;
                let r = s.len();
                let axes = if self.opset >= 18 {
                    self.opt_konst(n, 1)?.map(|t| t.as_i64())
                } else {
                    a.ints("axes")
                };
                // No (or empty) axes: reduce over all of them.
                let mut axes: Vec<usize> = match axes.filter(|v| !v.is_empty()) {
                    Some(v) => v.iter().map(|&x| norm_axis(x, r)).collect::<Result<_>>()?,
                    None => (0..r).collect(),
                };
                if axes.is_empty() {
                    bail!("ReduceMean of a scalar");
                }
                axes.sort();
                axes.dedup();
                if axes.windows(2).any(|w| w[1] != w[0] + 1) {
                    bail!("ReduceMean over non-adjacent axes {axes:?} is not supported");
                }
                let (f, l) = (axes[0], axes[axes.len() - 1]);
                let outer = s[..f].iter().product();
                let ax = s[f..=l].iter().product();
                let inner = s[l + 1..].iter().product();
                let keep = a.int("keepdims", 1) != 0;
                let out: Vec<usize> = (0..r)
                    .filter_map(|i| {
                        if i >= f && i <= l {
                            keep.then_some(1)
                        } else {
                            Some(s[i])
                        }
                    })
                    .collect();
                let x = self.value(inputs[0])?;
                self.emit(
                    n,
                    COp::ReduceMean {
                        outer,
                        axis: ax,
                        inner,
                    },
                    vec![x],
                    out,
                )?;
            }
            "Concat" => {
                let vs: Vec<usize> = inputs
                    .iter()
                    .map(|s| self.value(s))
                    .collect::<Result<_>>()?;
                let s0 = self.g.values[vs[0]].shape.clone();
                let axis = norm_axis(a.int("axis", 0), s0.len())?;
                let mut out = s0.clone();
                out[axis] = 0;
                for &v in &vs {
                    let s = &self.g.values[v].shape;
                    if s.len() != s0.len() || (0..s.len()).any(|d| d != axis && s[d] != s0[d]) {
                        bail!(
                            "Concat inputs {:?} and {s:?} differ outside axis {axis}",
                            s0
                        );
                    }
                    out[axis] += s[axis];
                }
                // Constant inputs (rare) become constants in the graph.
                self.emit(n, COp::Concat { axis }, vs, out)?;
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                let s = self.shape(inputs[0])?;
                let out = crate::fold::reshape_target(self, n, &a, &s)?;
                let x = self.value(inputs[0])?;
                self.emit(n, COp::Reshape, vec![x], out)?;
            }
            "Transpose" => {
                let s = self.shape(inputs[0])?;
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p
                        .iter()
                        .map(|&x| norm_axis(x, s.len()))
                        .collect::<Result<_>>()?,
                    None => (0..s.len()).rev().collect(),
                };
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..s.len()).collect::<Vec<_>>() {
                    bail!(
                        "Transpose perm {perm:?} is not a permutation of {} axes",
                        s.len()
                    );
                }
                let out = perm.iter().map(|&p| s[p]).collect();
                let x = self.value(inputs[0])?;
                self.emit(n, COp::Transpose { perm }, vec![x], out)?;
            }
            "Slice" => {
                let s = self.shape(inputs[0])?;
                let (starts, steps, out) = crate::fold::slice_params(self, n, &a, &s)?;
                let x = self.value(inputs[0])?;
                self.emit(n, COp::Slice { starts, steps }, vec![x], out)?;
            }
            "Split" => {
                let s = self.shape(inputs[0])?;
                let axis = norm_axis(a.int("axis", 0), s.len())?;
                let sizes = crate::fold::split_sizes(self, n, &a, s[axis])?;
                let x = self.value(inputs[0])?;
                let mut off = 0;
                for (k, (name, size)) in n.output.iter().zip(sizes).enumerate() {
                    let mut starts = vec![0; s.len()];
                    starts[axis] = off;
                    let mut out = s.clone();
                    out[axis] = size;
                    let v = self.g.add_value(name, out, None);
                    self.g.nodes.push(CNode {
                        name: format!("{}#{k}", node_name(n)),
                        op: COp::Slice {
                            starts,
                            steps: vec![1; s.len()],
                        },
                        inputs: vec![x],
                        output: v,
                    });
                    self.by_name.insert(name.clone(), v);
                    off += size;
                }
            }
            "Gather" => {
                let s = self.shape(inputs[0])?;
                let axis = norm_axis(a.int("axis", 0), s.len())?;
                let idx_t = self
                    .konst(inputs[1])
                    .context("Gather with non-constant indices")?
                    .clone();
                let indices: Vec<usize> = idx_t
                    .as_i64()
                    .iter()
                    .map(|&i| {
                        let j = if i < 0 { i + s[axis] as i64 } else { i };
                        usize::try_from(j)
                            .ok()
                            .filter(|&j| j < s[axis])
                            .ok_or_else(|| anyhow!("index {i} out of range"))
                    })
                    .collect::<Result<_>>()?;
                let x = self.value(inputs[0])?;
                // Output shape: data[:axis] + indices.shape + data[axis+1:]; the op
                // gathers a flat index list, a reshape restores the index shape.
                let mut flat = s.clone();
                flat[axis] = indices.len();
                let mut out: Vec<usize> = s[..axis].to_vec();
                out.extend(&idx_t.shape);
                out.extend(&s[axis + 1..]);
                if out == flat {
                    self.emit(n, COp::Gather { axis, indices }, vec![x], out)?;
                } else {
                    let tmp = self
                        .g
                        .add_value(&format!("{}#flat", n.output[0]), flat, None);
                    self.g.nodes.push(CNode {
                        name: node_name(n),
                        op: COp::Gather { axis, indices },
                        inputs: vec![x],
                        output: tmp,
                    });
                    self.emit(n, COp::Reshape, vec![tmp], out)?;
                }
            }
            "Pad" => {
                let s = self.shape(inputs[0])?;
                let mode = a.string("mode", "constant");
                if !matches!(mode.as_str(), "constant" | "reflect" | "edge") {
                    bail!("Pad mode '{mode}' is not supported (constant, reflect or edge)");
                }
                if self.opset >= 18 && n.input.get(3).is_some_and(|s| !s.is_empty()) {
                    bail!("Pad with an 'axes' input is not supported");
                }
                let (pads, value) = if self.opset < 11 {
                    (a.ints("pads").unwrap_or_default(), a.float("value", 0.0))
                } else {
                    (
                        self.opt_konst(n, 1)?
                            .map(|t| t.as_i64())
                            .unwrap_or_default(),
                        self.opt_konst(n, 2)?
                            .and_then(|t| t.scalar())
                            .unwrap_or(0.0),
                    )
                };
                let r = s.len();
                if pads.len() != 2 * r || pads.iter().any(|&p| p < 0) {
                    bail!("Pad needs {} non-negative pads, got {pads:?}", 2 * r);
                }
                let before: Vec<usize> = pads[..r].iter().map(|&p| p as usize).collect();
                let out: Vec<usize> = (0..r)
                    .map(|i| {
                        usize::try_from(pads[i].checked_add(pads[r + i])?)
                            .ok()?
                            .checked_add(s[i])
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| anyhow!("Pad of {s:?} by {pads:?} overflows"))?;
                elements(&out).context("Pad output")?;
                let x = self.value(inputs[0])?;
                if mode == "constant" {
                    self.emit(n, COp::Pad { before, value }, vec![x], out)?;
                } else {
                    let after: Vec<usize> = pads[r..].iter().map(|&p| p as usize).collect();
                    self.pad_by_gather(n, &mode, x, &before, &after)?;
                }
            }
            "LSTM" => self.lstm(n, &a)?,
            "Resize" | "Upsample" => self.resize(n, &a)?,
            _ => bail!("unsupported operator {} (opset {})", op, self.opset),
        }
        Ok(())
    }

    /// Reflect/edge padding as one Gather per padded axis (the runtime's
    /// Gather takes a constant index list, which is exactly such a padding).
    fn pad_by_gather(
        &mut self,
        n: &pb::NodeProto,
        mode: &str,
        x: usize,
        before: &[usize],
        after: &[usize],
    ) -> Result<()> {
        let mut cur = x;
        let mut shape = self.g.values[x].shape.clone();
        let axes: Vec<usize> = (0..shape.len())
            .filter(|&d| before[d] + after[d] > 0)
            .collect();
        if axes.is_empty() {
            self.alias(n, x);
            return Ok(());
        }
        for (k, &d) in axes.iter().enumerate() {
            let len = shape[d];
            if len == 0 || (mode == "reflect" && (before[d] >= len || after[d] >= len)) {
                bail!(
                    "Pad mode '{mode}' of {}+{} on axis {d} of length {len} is not supported \
                     (reflect padding must be shorter than the axis)",
                    before[d],
                    after[d]
                );
            }
            let indices: Vec<usize> = (0..before[d] + len + after[d])
                .map(|i| {
                    let src = i as i64 - before[d] as i64;
                    let last = len as i64 - 1;
                    (if mode == "edge" {
                        src.clamp(0, last)
                    } else if src < 0 {
                        -src
                    } else if src > last {
                        2 * last - src
                    } else {
                        src
                    }) as usize
                })
                .collect();
            shape[d] = indices.len();
            let op = COp::Gather { axis: d, indices };
            if k + 1 == axes.len() {
                self.emit(n, op, vec![cur], shape.clone())?;
            } else {
                let v = self
                    .g
                    .add_value(&format!("{}#pad{d}", n.output[0]), shape.clone(), None);
                self.g.nodes.push(CNode {
                    name: format!("{}#pad{d}", node_name(n)),
                    op,
                    inputs: vec![cur],
                    output: v,
                });
                cur = v;
            }
        }
        Ok(())
    }

    /// ONNX LSTM, forward direction with the default activations: one
    /// [`COp::Lstm`] whose packed output is sliced into `Y`, `Y_h` and `Y_c`.
    fn lstm(&mut self, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
        let direction = a.string("direction", "forward");
        if direction != "forward" {
            bail!("LSTM attribute direction='{direction}' is not supported (only forward)");
        }
        if let Some(acts) = a.get("activations") {
            let names: Vec<String> = acts
                .strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
                .collect();
            if names != ["sigmoid", "tanh", "tanh"] {
                bail!(
                    "LSTM attribute activations={names:?} is not supported (only the default Sigmoid, Tanh, Tanh)"
                );
            }
        }
        for attr in ["activation_alpha", "activation_beta", "clip"] {
            if a.get(attr).is_some() {
                bail!("LSTM attribute '{attr}' is not supported");
            }
        }
        if a.int("input_forget", 0) != 0 {
            bail!("LSTM attribute input_forget=1 is not supported");
        }
        if a.int("layout", 0) != 0 {
            bail!("LSTM attribute layout=1 is not supported (only [seq, batch, input])");
        }
        let present = |i: usize| n.input.get(i).is_some_and(|s| !s.is_empty());
        if present(4) {
            bail!("LSTM input 'sequence_lens' is not supported (every sequence is full length)");
        }
        if present(7) {
            bail!("LSTM input 'P' (peepholes) is not supported");
        }
        let xs = self.shape(&n.input[0])?;
        if xs.len() != 3 {
            bail!("LSTM input X must be [seq, batch, input], got {xs:?}");
        }
        let (seq, batch, input) = (xs[0], xs[1], xs[2]);
        let w = self
            .konst(&n.input[1])
            .context("LSTM with non-constant W is not supported")?
            .clone();
        let r = self
            .konst(&n.input[2])
            .context("LSTM with non-constant R is not supported")?
            .clone();
        let hidden = match a.get("hidden_size") {
            Some(h) if h.i > 0 && h.i as u64 <= MAX_TENSOR_ELEMENTS as u64 => h.i as usize,
            Some(h) => bail!("LSTM attribute hidden_size={} is invalid", h.i),
            None => r.shape.last().copied().unwrap_or(0),
        };
        // W and R hold 4 * hidden rows, so with a bounded hidden size every
        // product below is bounded by the tensors themselves.
        if hidden == 0
            || hidden > MAX_TENSOR_ELEMENTS
            || w.shape != [1, 4 * hidden, input]
            || r.shape != [1, 4 * hidden, hidden]
        {
            bail!(
                "LSTM W {:?} / R {:?} do not match input {input}, hidden_size {hidden} (one direction)",
                w.shape,
                r.shape
            );
        }
        // The two ONNX biases (Wb, Rb) are always added together: fold them.
        let bias: Vec<f32> = match self.opt_konst(n, 3).context("LSTM B must be constant")? {
            Some(b) if b.shape == [1, 8 * hidden] => {
                let v = b.as_f32();
                (0..4 * hidden).map(|i| v[i] + v[4 * hidden + i]).collect()
            }
            Some(b) => bail!("LSTM B {:?} must be [1, {}]", b.shape, 8 * hidden),
            None => vec![0.0; 4 * hidden],
        };
        let base = n.output.first().cloned().unwrap_or_else(|| node_name(n));
        let mut state = |k: usize, what: &str| -> Result<usize> {
            if present(k) {
                let v = self.value(&n.input[k])?;
                let s = &self.g.values[v].shape;
                if *s != [1, batch, hidden] {
                    bail!("LSTM {what} {s:?} must be [1, {batch}, {hidden}]");
                }
                if let Some(kt) = &self.g.values[v].konst {
                    let f = HostTensor::f32(kt.shape.clone(), kt.as_f32());
                    self.g.values[v].konst = Some(f);
                }
                Ok(v)
            } else {
                let z = HostTensor::f32(vec![1, batch, hidden], vec![0.0; batch * hidden]);
                Ok(self
                    .g
                    .add_value(&format!("{base}#{what}"), z.shape.clone(), Some(z)))
            }
        };
        elements(&[seq + 2, batch, hidden]).context("LSTM state")?;
        let h0 = state(5, "initial_h")?;
        let c0 = state(6, "initial_c")?;
        let cst = |imp: &mut Self, what: &str, shape: Vec<usize>, v: Vec<f32>| {
            imp.g.add_value(
                &format!("{base}#{what}"),
                shape.clone(),
                Some(HostTensor::f32(shape, v)),
            )
        };
        let wv = cst(self, "w", vec![4 * hidden, input], w.as_f32());
        let rv = cst(self, "r", vec![4 * hidden, hidden], r.as_f32());
        let bv = cst(self, "b", vec![4 * hidden], bias);
        let x = self.value(&n.input[0])?;
        let packed = self.g.add_value(
            &format!("{base}#packed"),
            vec![seq + 2, batch, hidden],
            None,
        );
        self.g.nodes.push(CNode {
            name: node_name(n),
            op: COp::Lstm {
                geom: LstmGeometry {
                    seq,
                    batch,
                    input,
                    hidden,
                },
            },
            inputs: vec![x, wv, rv, bv, h0, c0],
            output: packed,
        });
        // Y = rows 0..seq (as [seq, 1, batch, hidden]), Y_h = row seq, Y_c = row seq + 1.
        for (k, name) in n.output.iter().enumerate().take(3) {
            if name.is_empty() {
                continue;
            }
            let (start, rows) = if k == 0 { (0, seq) } else { (seq + k - 1, 1) };
            let shape = vec![rows, batch, hidden];
            let sliced = self.g.add_value(
                &if k == 0 {
                    format!("{name}#rows")
                } else {
                    name.clone()
                },
                shape,
                None,
            );
            self.g.nodes.push(CNode {
                name: format!("{}#{}", node_name(n), ["Y", "Y_h", "Y_c"][k]),
                op: COp::Slice {
                    starts: vec![start, 0, 0],
                    steps: vec![1, 1, 1],
                },
                inputs: vec![packed],
                output: sliced,
            });
            let v = if k == 0 {
                let y = self.g.add_value(name, vec![seq, 1, batch, hidden], None);
                self.g.nodes.push(CNode {
                    name: format!("{}#Y_reshape", node_name(n)),
                    op: COp::Reshape,
                    inputs: vec![sliced],
                    output: y,
                });
                y
            } else {
                sliced
            };
            self.by_name.insert(name.clone(), v);
        }
        Ok(())
    }

    fn conv(&mut self, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
        let xs = self.shape(&n.input[0])?;
        let w = self
            .konst(&n.input[1])
            .context("Conv with non-constant weights is not supported")?
            .clone();
        let (one_d, xs4) = match xs.len() {
            3 => (true, vec![xs[0], xs[1], 1, xs[2]]),
            4 => (false, xs.clone()),
            r => bail!("Conv on a rank-{r} input is not supported (1-D and 2-D only)"),
        };
        if w.shape.len() != xs.len() {
            bail!(
                "Conv weights {:?} do not match the rank of input {xs:?}",
                w.shape
            );
        }
        let ws = if one_d {
            vec![w.shape[0], w.shape[1], 1, w.shape[2]]
        } else {
            w.shape.clone()
        };
        if ws.len() != 4 {
            bail!("Conv weights must be 4-D, got {:?}", w.shape);
        }
        let (kh, kw) = (ws[2], ws[3]);
        if kh == 0 || kw == 0 {
            bail!("Conv weights {:?} have an empty kernel", w.shape);
        }
        let spatial = if one_d { 1 } else { 2 };
        if let Some(k) = a.ints("kernel_shape") {
            let want: Vec<i64> = w.shape[2..].iter().map(|&d| d as i64).collect();
            if k != want {
                bail!(
                    "Conv attribute kernel_shape={k:?} differs from the weights {:?}",
                    w.shape
                );
            }
        }
        // 1-D attributes apply to the width; the height axis is trivial.
        let to_2d = |v: Vec<usize>, fill: usize| -> Vec<usize> {
            match (one_d, v.as_slice()) {
                (true, [x]) => vec![fill, *x],
                (true, [b, e]) => vec![fill, *b, fill, *e],
                _ => v,
            }
        };
        let strides = to_2d(window_attr(a, "strides", spatial)?, 1);
        let dil = to_2d(window_attr(a, "dilations", spatial)?, 1);
        let pads = to_2d(pads_attr(a, spatial)?, 0);
        let group = match a.int("group", 1) {
            g if g >= 1 => usize::try_from(g)?,
            g => bail!("Conv attribute group={g} must be >= 1"),
        };
        let (ih, iw) = (xs4[2], xs4[3]);
        let auto = a.string("auto_pad", "NOTSET");
        let (pt, pl, oh, ow) = conv_out(&auto, ih, iw, kh, kw, &strides, &dil, &pads)?;
        let geom = ConvGeometry {
            in_c: xs4[1],
            in_h: ih,
            in_w: iw,
            out_c: ws[0],
            out_h: oh,
            out_w: ow,
            kh,
            kw,
            stride_h: strides[0],
            stride_w: strides[1],
            dil_h: dil[0],
            dil_w: dil[1],
            pad_top: pt,
            pad_left: pl,
            groups: group,
        };
        if !geom.is_valid() || ws[1].checked_mul(group) != Some(xs4[1]) {
            bail!(
                "inconsistent Conv: input {xs:?}, weights {:?}, group {group}",
                w.shape
            );
        }
        let bias = match self.opt_konst(n, 2)? {
            Some(b) if b.shape.iter().product::<usize>() == ws[0] => b.clone(),
            Some(b) => bail!("Conv bias {:?} does not have {} values", b.shape, ws[0]),
            None => HostTensor::f32(vec![ws[0]], vec![0.0; ws[0]]),
        };
        let wv = self.g.add_value(
            &format!("{}#w", n.output[0]),
            ws.clone(),
            Some(HostTensor::f32(ws, w.as_f32())),
        );
        let bv = self.g.add_value(
            &format!("{}#b", n.output[0]),
            vec![geom.out_c],
            Some(HostTensor::f32(vec![geom.out_c], bias.as_f32())),
        );
        let x = self.value(&n.input[0])?;
        let out = if one_d {
            vec![xs[0], geom.out_c, ow]
        } else {
            vec![xs[0], geom.out_c, oh, ow]
        };
        self.emit(
            n,
            COp::Conv {
                geom,
                act: Act::NONE,
            },
            vec![x, wv, bv],
            out,
        )?;
        Ok(())
    }

    fn batchnorm(&mut self, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
        let eps = a.float("epsilon", 1e-5);
        let get = |i: usize| -> Result<Vec<f32>> { Ok(self.konst(&n.input[i])?.as_f32()) };
        let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let c = gamma.len();
        if [&beta, &mean, &var].iter().any(|v| v.len() != c) {
            bail!(
                "BatchNormalization scale, bias, mean and var have {c}, {}, {} and {} values",
                beta.len(),
                mean.len(),
                var.len()
            );
        }
        let scale: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
        let x = self.value(&n.input[0])?;
        if let Some(p) = self.fusible_producer(x, &n.input[0]) {
            if let COp::Conv { geom, act } = self.g.nodes[p].op.clone() {
                if act.is_none() && geom.out_c == c {
                    let (wv, bv) = (self.g.nodes[p].inputs[1], self.g.nodes[p].inputs[2]);
                    let per = geom.weight_len() / c;
                    let mut w = self.g.values[wv].konst.as_ref().unwrap().as_f32();
                    let mut b = self.g.values[bv].konst.as_ref().unwrap().as_f32();
                    for o in 0..c {
                        w[o * per..(o + 1) * per]
                            .iter_mut()
                            .for_each(|v| *v *= scale[o]);
                        b[o] = b[o] * scale[o] + shift[o];
                    }
                    let ws = self.g.values[wv].shape.clone();
                    self.g.values[wv].konst = Some(HostTensor::f32(ws, w));
                    self.g.values[bv].konst = Some(HostTensor::f32(vec![c], b));
                    self.alias(n, x);
                    return Ok(());
                }
            }
        }
        // Standalone BatchNorm: x * scale + shift per channel (axis 1).
        let s = self.g.values[x].shape.clone();
        let mut cs = vec![1; s.len().saturating_sub(1)];
        if !cs.is_empty() {
            cs[0] = c;
        }
        let sv = self.g.add_value(
            &format!("{}#scale", n.output[0]),
            cs.clone(),
            Some(HostTensor::f32(cs.clone(), scale)),
        );
        let hv = self.g.add_value(
            &format!("{}#shift", n.output[0]),
            cs.clone(),
            Some(HostTensor::f32(cs, shift)),
        );
        let mid = self
            .g
            .add_value(&format!("{}#scaled", n.output[0]), s.clone(), None);
        self.g.nodes.push(CNode {
            name: node_name(n),
            op: COp::Binary(BinaryOp::Mul),
            inputs: vec![x, sv],
            output: mid,
        });
        self.emit(n, COp::Binary(BinaryOp::Add), vec![mid, hv], s)?;
        Ok(())
    }

    /// Relu/Clip: fused into a Conv/Gemm producer when possible.
    fn activation(&mut self, n: &pb::NodeProto, act: Act, op: UnaryOp) -> Result<()> {
        let x = self.value(&n.input[0])?;
        if let Some(p) = self.fusible_producer(x, &n.input[0]) {
            if let COp::Conv { act: pa, .. } | COp::Gemm { act: pa, .. } = &mut self.g.nodes[p].op {
                *pa = Act {
                    min: pa.min.max(act.min),
                    max: pa.max.min(act.max),
                };
                self.alias(n, x);
                return Ok(());
            }
        }
        self.unary(n, op)
    }

    fn unary(&mut self, n: &pb::NodeProto, op: UnaryOp) -> Result<()> {
        let x = self.value(&n.input[0])?;
        let s = self.g.values[x].shape.clone();
        self.emit(n, COp::Unary(op), vec![x], s)?;
        Ok(())
    }

    fn binary(&mut self, n: &pb::NodeProto, op: BinaryOp) -> Result<()> {
        let (x, y) = (self.value(&n.input[0])?, self.value(&n.input[1])?);
        let out = broadcast(&self.g.values[x].shape, &self.g.values[y].shape)?;
        for v in [x, y] {
            if let Some(k) = &self.g.values[v].konst {
                if k.is_i64() {
                    let f = HostTensor::f32(k.shape.clone(), k.as_f32());
                    self.g.values[v].konst = Some(f);
                }
            }
        }
        self.emit(n, COp::Binary(op), vec![x, y], out)?;
        Ok(())
    }

    fn gemm(&mut self, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
        let xs = self.shape(&n.input[0])?;
        let (ta, tb) = (a.int("transA", 0) != 0, a.int("transB", 0) != 0);
        let (alpha, beta) = (a.float("alpha", 1.0), a.float("beta", 1.0));
        if ta || xs.len() != 2 {
            bail!("Gemm with transA or a non-2-D input {xs:?} is not supported");
        }
        let w = self
            .konst(&n.input[1])
            .context("Gemm with non-constant B is not supported")?
            .clone();
        if w.shape.len() != 2 {
            bail!("Gemm B must be 2-D");
        }
        let (k, nn) = if tb {
            (w.shape[1], w.shape[0])
        } else {
            (w.shape[0], w.shape[1])
        };
        if k != xs[1] {
            bail!("Gemm shapes {xs:?} x {:?} do not match", w.shape);
        }
        let wf = w.as_f32();
        // Stored as [k][n] (the f32 kernel's layout), scaled by alpha.
        let mut kn = vec![0f32; k * nn];
        for i in 0..k {
            for j in 0..nn {
                kn[i * nn + j] = alpha * if tb { wf[j * k + i] } else { wf[i * nn + j] };
            }
        }
        let bias: Vec<f32> = match self.opt_konst(n, 2)? {
            Some(c) => {
                let cv = c.as_f32();
                if cv.len() == nn {
                    cv.iter().map(|v| v * beta).collect()
                } else if cv.len() == 1 {
                    vec![cv[0] * beta; nn]
                } else {
                    bail!("Gemm bias of shape {:?} is not supported", c.shape)
                }
            }
            None => vec![0.0; nn],
        };
        let wv = self.g.add_value(
            &format!("{}#w", n.output[0]),
            vec![k, nn],
            Some(HostTensor::f32(vec![k, nn], kn)),
        );
        let bv = self.g.add_value(
            &format!("{}#b", n.output[0]),
            vec![nn],
            Some(HostTensor::f32(vec![nn], bias)),
        );
        let x = self.value(&n.input[0])?;
        self.emit(
            n,
            COp::Gemm {
                m: xs[0],
                n: nn,
                k,
                batch: 1,
                act: Act::NONE,
            },
            vec![x, wv, bv],
            vec![xs[0], nn],
        )?;
        Ok(())
    }

    fn matmul(&mut self, n: &pb::NodeProto) -> Result<()> {
        let xs = self.shape(&n.input[0])?;
        let ys = self.shape(&n.input[1])?;
        if xs.len() < 2 || ys.len() < 2 {
            bail!("MatMul on 1-D operands is not supported");
        }
        let k = xs[xs.len() - 1];
        let m = xs[xs.len() - 2];
        let x = self.value(&n.input[0])?;
        let y = self.value(&n.input[1])?;
        if ys[ys.len() - 2] != k {
            bail!("MatMul shapes {xs:?} x {ys:?} do not match");
        }
        let nn = ys[ys.len() - 1];
        let mut out = xs.clone();
        *out.last_mut().unwrap() = nn;
        if self.g.is_const(y) && ys.len() == 2 {
            // Constant weights: fold the leading axes into m.
            let rows: usize = xs[..xs.len() - 1].iter().product();
            let bv = self.g.add_value(
                &format!("{}#b", n.output[0]),
                vec![nn],
                Some(HostTensor::f32(vec![nn], vec![0.0; nn])),
            );
            let wk = self.g.values[y].konst.clone().unwrap();
            self.g.values[y].konst = Some(HostTensor::f32(wk.shape.clone(), wk.as_f32()));
            self.emit(
                n,
                COp::Gemm {
                    m: rows,
                    n: nn,
                    k,
                    batch: 1,
                    act: Act::NONE,
                },
                vec![x, y, bv],
                out,
            )?;
        } else {
            let bx: usize = xs[..xs.len() - 2].iter().product();
            let by: usize = ys[..ys.len() - 2].iter().product();
            if by != 1 && by != bx {
                bail!("MatMul batch broadcasting {xs:?} x {ys:?} is not supported");
            }
            let _ = m;
            self.emit(
                n,
                COp::Gemm {
                    m,
                    n: nn,
                    k,
                    batch: bx,
                    act: Act::NONE,
                },
                vec![x, y],
                out,
            )?;
        }
        Ok(())
    }

    fn pool(&mut self, n: &pb::NodeProto, a: &Attrs, max: bool, global: bool) -> Result<()> {
        let xs = self.shape(&n.input[0])?;
        if xs.len() != 4 {
            bail!(
                "pooling on a rank-{} input is not supported (2-D only)",
                xs.len()
            );
        }
        let (ih, iw) = (xs[2], xs[3]);
        let (geom, out) = if global {
            let g = PoolGeometry {
                channels: xs[0] * xs[1],
                in_h: ih,
                in_w: iw,
                out_h: 1,
                out_w: 1,
                kh: ih,
                kw: iw,
                stride_h: 1,
                stride_w: 1,
                pad_top: 0,
                pad_left: 0,
                count_include_pad: false,
            };
            (g, vec![xs[0], xs[1], 1, 1])
        } else {
            if a.get("kernel_shape").is_none() {
                bail!("kernel_shape missing");
            }
            let ks = window_attr(a, "kernel_shape", 2)?;
            let strides = window_attr(a, "strides", 2)?;
            let pads = pads_attr(a, 2)?;
            if a.ints("dilations")
                .is_some_and(|d| d.iter().any(|&x| x != 1))
            {
                bail!("dilated pooling is not supported");
            }
            let ceil = a.int("ceil_mode", 0) != 0;
            let auto = a.string("auto_pad", "NOTSET");
            let (pt, pl, mut oh, mut ow) =
                conv_out(&auto, ih, iw, ks[0], ks[1], &strides, &[1, 1], &pads)?;
            if ceil && auto == "NOTSET" {
                let f = |i: usize, p0: usize, p1: usize, k: usize, s: usize| {
                    let o = (i + p0 + p1 - k).div_ceil(s) + 1;
                    // The last window must start inside the input or left padding.
                    if (o - 1) * s >= i + p0 {
                        o - 1
                    } else {
                        o
                    }
                };
                oh = f(ih, pads[0], pads[2], ks[0], strides[0]);
                ow = f(iw, pads[1], pads[3], ks[1], strides[1]);
            }
            let g = PoolGeometry {
                channels: xs[0] * xs[1],
                in_h: ih,
                in_w: iw,
                out_h: oh,
                out_w: ow,
                kh: ks[0],
                kw: ks[1],
                stride_h: strides[0],
                stride_w: strides[1],
                pad_top: pt,
                pad_left: pl,
                count_include_pad: a.int("count_include_pad", 0) != 0,
            };
            (g, vec![xs[0], xs[1], oh, ow])
        };
        let x = self.value(&n.input[0])?;
        self.emit(
            n,
            if max {
                COp::MaxPool { geom }
            } else {
                COp::AvgPool { geom }
            },
            vec![x],
            out,
        )?;
        Ok(())
    }

    fn resize(&mut self, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
        let xs = self.shape(&n.input[0])?;
        if xs.len() != 4 {
            bail!(
                "Resize of a rank-{} tensor is not supported (NCHW only)",
                xs.len()
            );
        }
        let (scales, sizes) = if n.op_type == "Upsample" || self.opset < 11 {
            let sc = if self.opset < 9 {
                a.get("scales").map(|x| x.floats.clone())
            } else {
                self.opt_konst(n, 1)?.map(|t| t.as_f32())
            };
            (sc, None)
        } else {
            let sc = self
                .opt_konst(n, 2)?
                .map(|t| t.as_f32())
                .filter(|v| !v.is_empty());
            let sz = self
                .opt_konst(n, 3)?
                .map(|t| t.as_i64())
                .filter(|v| !v.is_empty());
            (sc, sz)
        };
        let out: Vec<usize> = match (sizes, scales) {
            (Some(sz), _) if sz.len() == 4 => sz
                .iter()
                .map(|&v| usize::try_from(v).ok().filter(|&v| v >= 1))
                .collect::<Option<_>>()
                .ok_or_else(|| anyhow!("Resize sizes {sz:?} must be >= 1"))?,
            (None, Some(sc)) if sc.len() == 4 => {
                if sc.iter().any(|s| !s.is_finite() || *s <= 0.0) {
                    bail!("Resize scales {sc:?} must be finite and > 0");
                }
                // Saturating float-to-int casts; `emit` bounds the shape.
                xs.iter()
                    .zip(&sc)
                    .map(|(&d, &s)| (d as f64 * f64::from(s)).floor() as usize)
                    .collect()
            }
            _ => bail!("Resize needs 4 scales or sizes"),
        };
        if out.contains(&0) {
            bail!("Resize of {xs:?} to {out:?} gives an empty tensor");
        }
        if out[0] != xs[0] || out[1] != xs[1] {
            bail!("Resize of the batch or channel axis is not supported");
        }
        let mode = a.string("mode", "nearest");
        let default_ct = if self.opset < 11 {
            "asymmetric"
        } else {
            "half_pixel"
        };
        let coord = match a
            .string("coordinate_transformation_mode", default_ct)
            .as_str()
        {
            "half_pixel" => CoordMode::HalfPixel,
            "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
            "align_corners" => CoordMode::AlignCorners,
            "asymmetric" => CoordMode::Asymmetric,
            other => bail!("Resize coordinate_transformation_mode '{other}' is not supported"),
        };
        let kind = match mode.as_str() {
            "nearest" => match a
                .string(
                    "nearest_mode",
                    if self.opset < 11 {
                        "floor"
                    } else {
                        "round_prefer_floor"
                    },
                )
                .as_str()
            {
                "round_prefer_floor" => ResizeKind::NearestRoundPreferFloor,
                "round_prefer_ceil" => ResizeKind::NearestRoundPreferCeil,
                "floor" => ResizeKind::NearestFloor,
                "ceil" => ResizeKind::NearestCeil,
                other => bail!("Resize nearest_mode '{other}' is not supported"),
            },
            "linear" | "bilinear" => ResizeKind::Linear,
            other => bail!("Resize mode '{other}' is not supported"),
        };
        let geom = ResizeGeometry {
            planes: xs[0] * xs[1],
            in_h: xs[2],
            in_w: xs[3],
            out_h: out[2],
            out_w: out[3],
            kind,
            coord,
        };
        let x = self.value(&n.input[0])?;
        self.emit(n, COp::Resize { geom }, vec![x], out)?;
        Ok(())
    }
}

/// Inputs an operator cannot do without (ONNX's required inputs).
fn min_inputs(op: &str, opset: i64) -> usize {
    match op {
        "BatchNormalization" => 5,
        "LSTM" | "Range" => 3,
        "Conv" | "Gemm" | "MatMul" | "Add" | "Sub" | "Mul" | "Div" | "Pow" | "PRelu" | "Gather"
        | "Equal" | "Less" | "Greater" | "Expand" => 2,
        "Reshape" if opset >= 5 => 2,
        "Slice" if opset >= 10 => 3,
        "Constant" => 0,
        _ => 1,
    }
}

pub(crate) fn node_name(n: &pb::NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

/// Output size and leading padding of a conv/pool window (ONNX `auto_pad`).
#[allow(clippy::too_many_arguments)]
fn conv_out(
    auto: &str,
    ih: usize,
    iw: usize,
    kh: usize,
    kw: usize,
    s: &[usize],
    d: &[usize],
    pads: &[usize],
) -> Result<(usize, usize, usize, usize)> {
    // Callers pass attributes checked by `window_attr`/`pads_attr`; the
    // arithmetic is checked anyway, so no value can divide by zero or wrap.
    if kh == 0
        || kw == 0
        || s.len() < 2
        || d.len() < 2
        || s[..2].contains(&0)
        || d[..2].contains(&0)
    {
        bail!("window {kh}x{kw}, strides {s:?} and dilations {d:?} must all be >= 1");
    }
    let too_big = || anyhow!("window {kh}x{kw} with dilations {d:?} and pads {pads:?} overflows");
    let span = |k: usize, d: usize| (k - 1).checked_mul(d).and_then(|v| v.checked_add(1));
    let ekh = span(kh, d[0]).ok_or_else(too_big)?;
    let ekw = span(kw, d[1]).ok_or_else(too_big)?;
    match auto {
        "NOTSET" | "" => {
            if pads.len() != 4 {
                bail!("pads {pads:?} must have 4 values");
            }
            let padded = |i: usize, a: usize, b: usize| i.checked_add(a)?.checked_add(b);
            let h = padded(ih, pads[0], pads[2]).ok_or_else(too_big)?;
            let w = padded(iw, pads[1], pads[3]).ok_or_else(too_big)?;
            if h < ekh || w < ekw {
                bail!("window {kh}x{kw} larger than the padded input {h}x{w}");
            }
            Ok((pads[0], pads[1], (h - ekh) / s[0] + 1, (w - ekw) / s[1] + 1))
        }
        "VALID" => {
            if ih < ekh || iw < ekw {
                bail!("window larger than the input");
            }
            Ok((0, 0, (ih - ekh) / s[0] + 1, (iw - ekw) / s[1] + 1))
        }
        "SAME_UPPER" | "SAME_LOWER" => {
            if ih == 0 || iw == 0 {
                bail!("empty input {ih}x{iw}");
            }
            let oh = ih.div_ceil(s[0]);
            let ow = iw.div_ceil(s[1]);
            // (o - 1) * s < i, so these cannot overflow beyond i + span.
            let th = ((oh - 1) * s[0])
                .checked_add(ekh)
                .ok_or_else(too_big)?
                .saturating_sub(ih);
            let tw = ((ow - 1) * s[1])
                .checked_add(ekw)
                .ok_or_else(too_big)?
                .saturating_sub(iw);
            let (pt, pl) = if auto == "SAME_UPPER" {
                (th / 2, tw / 2)
            } else {
                (th - th / 2, tw - tw / 2)
            };
            Ok((pt, pl, oh, ow))
        }
        other => bail!("auto_pad '{other}' is not supported"),
    }
}

/// A window attribute (`kernel_shape`, `strides`, `dilations`): one value of
/// at least 1 per spatial axis (1 when absent). Zero strides divided by zero
/// in the output size before (issue 12 L); now they name the attribute.
fn window_attr(a: &Attrs, name: &str, spatial: usize) -> Result<Vec<usize>> {
    let Some(v) = a.ints(name) else {
        return Ok(vec![1; spatial]);
    };
    if v.len() != spatial || v.iter().any(|&x| x < 1) {
        bail!("attribute {name}={v:?} must hold {spatial} value(s), each >= 1");
    }
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| anyhow!("attribute {name}={v:?} is too large")))
        .collect()
}

/// The `pads` attribute: `2 * spatial` non-negative values (zeros when
/// absent), in ONNX order (all begins, then all ends).
fn pads_attr(a: &Attrs, spatial: usize) -> Result<Vec<usize>> {
    let Some(v) = a.ints("pads") else {
        return Ok(vec![0; 2 * spatial]);
    };
    if v.len() != 2 * spatial || v.iter().any(|&x| x < 0) {
        bail!(
            "attribute pads={v:?} must hold {} values, each >= 0",
            2 * spatial
        );
    }
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| anyhow!("attribute pads={v:?} is too large")))
        .collect()
}

/// Rewrites `Mul(x, Sigmoid(x))` into one SiLU so int8 runs it as one table.
fn fuse_silu(g: &mut CGraph) {
    let uses = g.use_counts();
    let prod = g.producer();
    let mut dead = vec![];
    for i in 0..g.nodes.len() {
        if let COp::Binary(BinaryOp::Mul) = g.nodes[i].op {
            let (a, b) = (g.nodes[i].inputs[0], g.nodes[i].inputs[1]);
            for (x, s) in [(a, b), (b, a)] {
                if let Some(p) = prod[s] {
                    if g.nodes[p].op == COp::Unary(UnaryOp::Sigmoid)
                        && g.nodes[p].inputs[0] == x
                        && uses[s] == 1
                    {
                        g.nodes[i].op = COp::Unary(UnaryOp::Silu);
                        g.nodes[i].inputs = vec![x];
                        dead.push(p);
                        break;
                    }
                }
            }
        }
    }
    g.remove_dead();
}

impl Importer {
    pub(crate) fn opset(&self) -> i64 {
        self.opset
    }
    pub(crate) fn konst_of(&self, name: &str) -> Result<&HostTensor> {
        self.konst(name)
    }
    pub(crate) fn opt_konst_of(&self, n: &pb::NodeProto, i: usize) -> Result<Option<&HostTensor>> {
        self.opt_konst(n, i)
    }
}

pub(crate) use Attrs as NodeAttrs;
pub(crate) use Importer as OnnxImporter;

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
                "larger than the padded input",
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
