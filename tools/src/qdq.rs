//! ONNX QDQ import: models already quantized as QuantizeLinear /
//! DequantizeLinear pairs (onnxruntime's `quantize_static` in QDQ format,
//! QAT exports) keep the file's scales and zero points as
//! [`crate::lower::Pinned`] quantization instead of being calibrated.
//!
//! - `DequantizeLinear` of a constant (weights, int32 biases) folds to the
//!   dequantized f32 constant; the integer codes are remembered, and when a
//!   Conv, Gemm or MatMul reads the constant, its weights and bias are
//!   pinned (re-derived from the f32 constant the op built and the file's
//!   scales, and checked to reproduce it exactly).
//! - `QuantizeLinear` -> `DequantizeLinear` on an activation is removed (the
//!   output aliases the input) and the activation is pinned to the pair's
//!   quantization. uint8 maps exactly onto Strix's int8: same scale, zero
//!   point - 128. A Conv/Gemm whose output is pinned also clamps (in f32) to
//!   the pin's representable range, which is what the pair does (exporters
//!   drop the Relu/Clip it makes redundant).
//!
//! What the pins cannot represent is refused with an error naming the node
//! (int16/int4/float8 types, per-channel activations, a quantize pair with
//! two different quantizations, a value quantized twice differently, a
//! quantized tensor read without its DequantizeLinear), or, where Strix can
//! quantize the value itself, the pin is dropped and said so
//! ([`QdqState::notes`]: asymmetric weights, weights an op rescaled).

use crate::ir::{Act, COp, HostTensor};
use crate::lower::PinnedWeights;
use crate::onnx::{node_name, Attrs, Importer};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use strix_runtime::graph::Quant;
use tract_onnx::pb::{self, tensor_proto::DataType};

/// The integer types of a quantized tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QType {
    I8,
    U8,
    I32,
}

impl QType {
    fn from_onnx(dt: i32, what: &str) -> Result<QType> {
        Ok(match DataType::try_from(dt) {
            Ok(DataType::Int8) => QType::I8,
            Ok(DataType::Uint8) => QType::U8,
            Ok(DataType::Int32) => QType::I32,
            Ok(other) => bail!(
                "{what} has type {other:?}: Strix's QDQ import takes int8 and uint8 \
                 (and int32 biases) only"
            ),
            Err(_) => bail!("{what} has unknown type {dt}"),
        })
    }
    fn range(self) -> (i64, i64) {
        match self {
            QType::I8 => (-128, 127),
            QType::U8 => (0, 255),
            QType::I32 => (i32::MIN as i64, i32::MAX as i64),
        }
    }
}

/// A quantize pair's first half, waiting for its DequantizeLinear.
#[derive(Clone, Debug)]
struct PendingQ {
    value: usize,
    scale: f32,
    zp: i64,
    ty: QType,
    node: String,
    /// Readers of the quantized value's ONNX name (the QuantizeLinear
    /// included) and of the QuantizeLinear's output.
    readers: (usize, usize),
}

/// A constant the file gives as integer codes, dequantized at import.
#[derive(Clone, Debug)]
struct QConst {
    codes: Vec<i64>,
    shape: Vec<usize>,
    ty: QType,
    /// One value (per tensor) or one per index of `axis`.
    scales: Vec<f32>,
    zps: Vec<i64>,
    axis: usize,
    node: String,
}

/// The QDQ bookkeeping of one ONNX import.
#[derive(Debug, Default)]
pub(crate) struct QdqState {
    /// Element type of every initializer and Constant output, by name.
    dtypes: HashMap<String, i32>,
    /// Op types reading each ONNX name.
    reader_ops: HashMap<String, Vec<String>>,
    /// Quantized activations by the QuantizeLinear output name.
    pending: HashMap<String, PendingQ>,
    /// Dequantized constants by value.
    consts: HashMap<usize, QConst>,
    /// For each pinned activation: the node that pinned it and its
    /// producer's fused clamp at the time (a later Relu/Clip fusion changes
    /// the value, and its second quantization then replaces the first).
    pin_src: HashMap<usize, (String, Option<Act>)>,
    /// Pins dropped (or not made) and why, for the user.
    pub(crate) notes: Vec<String>,
}

impl QdqState {
    /// Records the types and readers of `graph` (before its nodes import).
    pub(crate) fn scan(&mut self, graph: &pb::GraphProto) {
        for i in &graph.initializer {
            self.dtypes.insert(i.name.clone(), i.data_type);
        }
        for n in &graph.node {
            for i in &n.input {
                self.reader_ops
                    .entry(i.clone())
                    .or_default()
                    .push(n.op_type.clone());
            }
            if n.op_type == "Constant" {
                if let (Some(o), Some(t)) = (n.output.first(), Attrs(n).tensor("value")) {
                    self.dtypes.insert(o.clone(), t.data_type);
                }
            }
        }
        for o in &graph.output {
            self.reader_ops
                .entry(o.name.clone())
                .or_default()
                .push("(graph output)".into());
        }
    }
}

/// Whether the ONNX file at `path` holds QuantizeLinear/DequantizeLinear
/// nodes (an already-quantized QDQ model; see the module docs).
pub fn is_qdq_file(path: &Path) -> Result<bool> {
    let m = crate::onnx::load_proto(path)?;
    Ok(m.graph.as_ref().is_some_and(|g| {
        g.node
            .iter()
            .any(|n| matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear"))
    }))
}

/// The `(scale, zero point, type)` inputs of a Q/DQ node: constants, one
/// value (per tensor) or one per index of `axis` (per channel).
fn params(
    imp: &Importer,
    n: &pb::NodeProto,
    x_shape: &[usize],
) -> Result<(Vec<f32>, Vec<i64>, QType, usize)> {
    let st = imp
        .konst(&n.input[1])
        .context("the scale must be a constant (initializer)")?;
    let scales = st.as_f32();
    let zname = n.input.get(2).filter(|s| !s.is_empty());
    let (zps, ty) = match zname {
        Some(z) => {
            let zt = imp
                .konst(z)
                .context("the zero point must be a constant (initializer)")?;
            let dt = imp.qdq.dtypes.get(z.as_str()).copied().ok_or_else(|| {
                anyhow!("zero point '{z}': its element type is unknown (not an initializer)")
            })?;
            let ty = QType::from_onnx(dt, &format!("zero point '{z}'"))?;
            (zt.as_i64(), ty)
        }
        None => {
            // No zero point: uint8 0, unless opset 21's output_dtype says otherwise.
            let od = Attrs(n).int("output_dtype", 0);
            let ty = if od == 0 {
                QType::U8
            } else {
                QType::from_onnx(od as i32, "output_dtype")?
            };
            (vec![0; scales.len()], ty)
        }
    };
    if zps.len() != scales.len() {
        bail!("{} scales but {} zero points", scales.len(), zps.len());
    }
    if scales.is_empty() {
        bail!("empty scale");
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        bail!("scale {s} is not a positive finite number");
    }
    let (lo, hi) = ty.range();
    if let Some(z) = zps.iter().find(|z| !(lo..=hi).contains(*z)) {
        bail!("zero point {z} is outside the {ty:?} range {lo}..={hi}");
    }
    let rank = x_shape.len() as i64;
    let a = Attrs(n).int("axis", 1);
    let axis = if a < 0 { a + rank } else { a };
    if Attrs(n).int("block_size", 0) != 0 {
        bail!("blocked quantization (block_size) is not supported");
    }
    if scales.len() > 1 {
        if !(0..rank).contains(&axis) || x_shape[axis as usize] != scales.len() {
            bail!(
                "{} scales do not fit axis {a} of shape {x_shape:?}",
                scales.len()
            );
        }
        if st.shape.len() != 1 {
            bail!("per-axis scale of shape {:?} (1-D expected)", st.shape);
        }
    }
    Ok((scales, zps, ty, axis.max(0) as usize))
}

/// Index along `axis` of flat element `i` of `shape`.
fn axis_index(shape: &[usize], axis: usize, i: usize) -> usize {
    let inner: usize = shape[axis + 1..].iter().product();
    (i / inner.max(1)) % shape[axis].max(1)
}

/// Strix's int8 quantization of an int8/uint8 `(scale, zp)`.
fn strix_quant(scale: f32, zp: i64, ty: QType) -> Quant {
    Quant {
        scale,
        zero_point: match ty {
            QType::U8 => (zp - 128) as i32,
            _ => zp as i32,
        },
    }
}

/// Imports a QuantizeLinear or DequantizeLinear node.
pub(crate) fn node(imp: &mut Importer, n: &pb::NodeProto) -> Result<()> {
    if n.input.len() < 2 {
        bail!("needs at least 2 inputs, has {}", n.input.len());
    }
    if n.output.len() != 1 {
        bail!("has {} outputs (1 expected)", n.output.len());
    }
    let x = imp.value(&n.input[0])?;
    let xs = imp.g.values[x].shape.clone();
    let (scales, zps, ty, axis) = params(imp, n, &xs)?;
    let quantize = n.op_type == "QuantizeLinear";
    let name = node_name(n);
    let out = n.output[0].clone();
    if let Some(t) = imp.g.values[x].konst.clone() {
        if quantize {
            // A float constant quantized in the file (weights kept f32 with
            // their Q/DQ pair): its codes, which the DequantizeLinear reads.
            if ty == QType::I32 {
                bail!("QuantizeLinear to int32 is not supported");
            }
            let (lo, hi) = ty.range();
            let v = t.as_f32();
            let codes = (0..v.len())
                .map(|i| {
                    let c = if scales.len() == 1 {
                        0
                    } else {
                        axis_index(&t.shape, axis, i)
                    };
                    ((v[i] / scales[c]).round_ties_even() as i64 + zps[c]).clamp(lo, hi)
                })
                .collect();
            imp.bind_const(&out, HostTensor::i64(t.shape.clone(), codes));
            imp.qdq.dtypes.insert(
                out,
                match ty {
                    QType::I8 => DataType::Int8,
                    _ => DataType::Uint8,
                } as i32,
            );
            return Ok(());
        }
        let dt = imp
            .qdq
            .dtypes
            .get(&n.input[0])
            .copied()
            .ok_or_else(|| anyhow!("input '{}': its element type is unknown", n.input[0]))?;
        let cty = QType::from_onnx(dt, &format!("input '{}'", n.input[0]))?;
        if cty != ty && n.input.get(2).is_some_and(|z| !z.is_empty()) {
            bail!("input of type {cty:?} but zero point of type {ty:?}");
        }
        let codes = t.as_i64();
        let (lo, hi) = cty.range();
        if let Some(c) = codes.iter().find(|c| !(lo..=hi).contains(*c)) {
            bail!("code {c} is outside the {cty:?} range");
        }
        let f: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = if scales.len() == 1 {
                    0
                } else {
                    axis_index(&t.shape, axis, i)
                };
                (q - zps[c]) as f32 * scales[c]
            })
            .collect();
        imp.bind_const(&out, HostTensor::f32(t.shape.clone(), f));
        let v = imp.value(&out)?;
        imp.qdq.consts.insert(
            v,
            QConst {
                codes,
                shape: t.shape.clone(),
                ty: cty,
                scales,
                zps,
                axis,
                node: name,
            },
        );
        return Ok(());
    }
    if scales.len() != 1 {
        bail!(
            "per-channel quantization of an activation ({} scales) is not supported: \
             Strix quantizes activations per tensor",
            scales.len()
        );
    }
    if ty == QType::I32 {
        bail!("int32 activations are not supported (int8 and uint8 are)");
    }
    if quantize {
        let readers = imp.qdq.reader_ops.get(&out).cloned().unwrap_or_default();
        if let Some(r) = readers.iter().find(|r| *r != "DequantizeLinear") {
            bail!(
                "its quantized output '{out}' is read by {r}: Strix runs only the \
                 QuantizeLinear -> DequantizeLinear pairs of QDQ models"
            );
        }
        imp.qdq.pending.insert(
            out.clone(),
            PendingQ {
                value: x,
                scale: scales[0],
                zp: zps[0],
                ty,
                node: name,
                readers: (imp.readers_of(&n.input[0]), imp.readers_of(&out)),
            },
        );
        // Not a real value: only the DequantizeLinear reads it.
        imp.by_name.insert(out, x);
        return Ok(());
    }
    let Some(p) = imp.qdq.pending.get(&n.input[0]).cloned() else {
        bail!(
            "dequantizes '{}', which no QuantizeLinear produced: only \
             QuantizeLinear -> DequantizeLinear pairs are supported on activations",
            n.input[0]
        );
    };
    if (p.scale, p.zp, p.ty) != (scales[0], zps[0], ty) {
        bail!(
            "its quantization (scale {} zero point {} {ty:?}) differs from that of \
             QuantizeLinear '{}' (scale {} zero point {} {:?})",
            scales[0],
            zps[0],
            p.node,
            p.scale,
            p.zp,
            p.ty
        );
    }
    let q = strix_quant(p.scale, p.zp, p.ty);
    pin_act(imp, p.value, q, &name, p.readers.0 == 1 && p.readers.1 == 1)?;
    // Fusion into the producer must see every reader of the value.
    let total = imp.readers_of(&out) + p.readers.0 + p.readers.1 - 2;
    imp.set_readers(&out, total);
    // A graph output named by the pair's output keeps that name.
    if imp
        .qdq
        .reader_ops
        .get(&out)
        .is_some_and(|r| r.iter().any(|o| o == "(graph output)"))
    {
        imp.g.values[p.value].name = out.clone();
    }
    imp.by_name.insert(out, p.value);
    Ok(())
}

/// The fused clamp of `v`'s producer, if a Conv/Gemm.
fn producer_act(imp: &Importer, v: usize) -> Option<Act> {
    imp.g
        .nodes
        .iter()
        .rev()
        .find(|n| n.output == v)
        .and_then(|n| match n.op {
            COp::Conv { act, .. } | COp::Gemm { act, .. } => Some(act),
            _ => None,
        })
}

/// Pins activation `v` to `q` (set by node `node`); `sole`: the pair is the
/// value's only reader, so its clamp can move into the producer.
fn pin_act(imp: &mut Importer, v: usize, q: Quant, node: &str, sole: bool) -> Result<()> {
    let act_now = producer_act(imp, v);
    if let Some(&old) = imp.g.pinned.act.get(&v) {
        if old != q {
            let (src, act_then) = imp.qdq.pin_src[&v].clone();
            if act_then == act_now {
                bail!(
                    "'{}' is quantized twice differently: scale {} zero point {} by '{src}', \
                     scale {} zero point {} here (Strix holds one int8 tensor per value)",
                    imp.g.values[v].name,
                    old.scale,
                    old.zero_point,
                    q.scale,
                    q.zero_point
                );
            }
            // A Relu/Clip fused into the producer since: the value is now
            // its output, whose quantization this is.
        }
    }
    imp.g.pinned.act.insert(v, q);
    imp.qdq.pin_src.insert(v, (node.to_string(), act_now));
    // The pair clamps to its representable range: the Conv/Gemm producing
    // the value does too (exporters drop the Relu6 this makes redundant),
    // so f32 builds and calibration see what the int8 model computes.
    let lo = (-128 - q.zero_point) as f32 * q.scale;
    let hi = (127 - q.zero_point) as f32 * q.scale;
    if let Some(p) = imp
        .g
        .nodes
        .iter()
        .rposition(|n| n.output == v)
        .filter(|_| sole)
    {
        if let COp::Conv { act, .. } | COp::Gemm { act, .. } = &mut imp.g.nodes[p].op {
            act.min = act.min.max(lo);
            act.max = act.max.min(hi);
        }
    }
    Ok(())
}

/// After a Conv, Gemm or MatMul node `n` was imported: pins the weights and
/// bias of the node it emitted when the file gives them as quantized
/// constants (see the module docs). Pins that cannot be made are noted.
pub(crate) fn pin_weights(imp: &mut Importer, n: &pb::NodeProto) -> Result<()> {
    let Some(wsrc) = imp
        .by_name
        .get(&n.input[1])
        .and_then(|v| imp.qdq.consts.get(v))
        .cloned()
    else {
        return Ok(());
    };
    let name = node_name(n);
    let Some(out) = n.output.first().and_then(|o| imp.by_name.get(o)).copied() else {
        return Ok(());
    };
    let Some(ni) = imp.g.nodes.iter().rposition(|c| c.output == out) else {
        return Ok(());
    };
    let node = imp.g.nodes[ni].clone();
    let (rows, kn) = match node.op {
        COp::Conv { geom, .. } => (geom.out_c, false),
        COp::Gemm {
            n: nn, batch: 1, ..
        } => (nn, true),
        _ => return Ok(()),
    };
    if node.inputs.len() < 3 || !imp.g.is_const(node.inputs[1]) {
        return Ok(());
    }
    let note = |imp: &mut Importer, why: String| {
        imp.qdq.notes.push(format!(
            "node '{name}': weights requantized by Strix, not pinned: {why}"
        ));
    };
    if wsrc.ty != QType::I8 {
        note(imp, format!("{:?} weights (int8 expected)", wsrc.ty));
        return Ok(());
    }
    if wsrc.zps.iter().any(|&z| z != 0) {
        note(imp, "asymmetric weights (zero point not 0)".into());
        return Ok(());
    }
    // The file's output-channel axis: Conv [O, I, ...]: 0; Gemm: 0 with
    // transB, else 1; MatMul [K, N]: 1.
    let out_axis = match n.op_type.as_str() {
        "Conv" => 0,
        "Gemm" if Attrs(n).int("transB", 0) != 0 => 0,
        _ => wsrc.shape.len().saturating_sub(1),
    };
    let scales: Vec<f32> = if wsrc.scales.len() == 1 {
        vec![wsrc.scales[0]; rows]
    } else if wsrc.axis == out_axis && wsrc.scales.len() == rows {
        wsrc.scales.clone()
    } else {
        note(
            imp,
            format!(
                "quantized along axis {} of {:?}, not per output channel",
                wsrc.axis, wsrc.shape
            ),
        );
        return Ok(());
    };
    let x = node.inputs[0];
    let Some(xq) = imp.g.pinned.act.get(&x).copied() else {
        note(imp, "its input is not quantized in the file".into());
        return Ok(());
    };
    let (wv, bv) = (node.inputs[1], node.inputs[2]);
    let w = imp.g.values[wv].konst.as_ref().unwrap().as_f32();
    let per = w.len() / rows.max(1);
    let chan = |i: usize| if kn { i % rows } else { i / per.max(1) };
    let mut q = Vec::with_capacity(w.len());
    for (i, &wf) in w.iter().enumerate() {
        let s = scales[chan(i)];
        let c = (wf / s).round();
        if !(-128.0..=127.0).contains(&c) || c * s != wf {
            note(
                imp,
                format!("the op rescaled them (value {wf} is not a code times scale {s})"),
            );
            return Ok(());
        }
        q.push(c as i8);
    }
    let b = imp.g.values[bv].konst.as_ref().unwrap().as_f32();
    let bsrc = n
        .input
        .get(2)
        .and_then(|s| imp.by_name.get(s))
        .and_then(|v| imp.qdq.consts.get(v));
    let mut bias = Vec::with_capacity(rows);
    for (c, &bf) in b.iter().enumerate() {
        let s = xq.scale as f64 * scales[c] as f64;
        // The file's codes when its bias scale is input x weight scale (as
        // ORT and TFLite make it), else the f32 bias requantized.
        let own = (bf as f64 / s).round();
        let code = match bsrc {
            Some(bq)
                if bq.zps.iter().all(|&z| z == 0)
                    && bq.codes.len() == rows
                    && ((bq.scales[if bq.scales.len() == 1 { 0 } else { c }] as f64 - s).abs()
                        <= 1e-6 * s)
                    && (bq.codes[c] as f64 - bf as f64 / s).abs() <= 0.5 + 1e-3 * own.abs() =>
            {
                bq.codes[c] as f64
            }
            _ => own,
        };
        if code.abs() > (1u64 << 30) as f64 {
            note(imp, format!("bias {bf} overflows int32 at scale {s}"));
            return Ok(());
        }
        bias.push(code as i32);
    }
    imp.g.pinned.weights.insert(wv, PinnedWeights { q, scales });
    imp.g.pinned.bias.insert(bv, bias);
    let _ = wsrc.node;
    Ok(())
}

/// The names of the activations (graph inputs and node outputs) the file
/// does not quantize, in graph order: what calibration must cover when the
/// int8 graph holds them.
pub fn unpinned(cg: &crate::ir::CGraph) -> Vec<String> {
    cg.inputs
        .iter()
        .chain(cg.nodes.iter().map(|n| &n.output))
        .filter(|v| !cg.pinned.act.contains_key(v))
        .map(|&v| cg.values[v].name.clone())
        .collect()
}
