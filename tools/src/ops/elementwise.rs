//! Elementwise functions of two inputs (`COp::Binary`, numpy broadcast):
//! Add, Sub, Mul, Div, Pow, Max, Min, PRelu (and Equal, Less, Greater on
//! constants only). Int8: a lookup table when one operand is a scalar
//! constant, `QAdd`/`QMul` for two int8 activations. Pruning: channels flow
//! through; two channel-carrying operands tie their producers into a group.

use super::{cannot_fold, fields, is_i8, scalar_const, IrOp, OnnxOp};
use crate::ir::{CGraph, CNode, COp, HostData, HostTensor};
use crate::lower::{q_code, Int8Cx, Int8Node};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{slice_axis, Chan, Flow, Kept, Prune, FIXED};
use anyhow::{anyhow, bail, Result};
use strix_kernels::quantize_multiplier;
use strix_kernels::reference::{self as k, BinaryOp, QAddParams, QMulParams};
use strix_runtime::graph::{DType, Op};
use tract_onnx::pb;

const TWO: fn(i64) -> usize = |_| 2;

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new(
        "Add",
        Some(|i, n, _| binary(i, n, BinaryOp::Add)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Sub",
        Some(|i, n, _| binary(i, n, BinaryOp::Sub)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Mul",
        Some(|i, n, _| binary(i, n, BinaryOp::Mul)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Div",
        Some(|i, n, _| binary(i, n, BinaryOp::Div)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Pow",
        Some(|i, n, _| binary(i, n, BinaryOp::Pow)),
        Some(fold),
    )
    .inputs(TWO),
    OnnxOp::new(
        "Max",
        Some(|i, n, _| variadic(i, n, BinaryOp::Max)),
        Some(fold),
    ),
    OnnxOp::new(
        "Min",
        Some(|i, n, _| variadic(i, n, BinaryOp::Min)),
        Some(fold),
    ),
    OnnxOp::new("PRelu", Some(|i, n, _| binary(i, n, BinaryOp::Prelu)), None).inputs(TWO),
    OnnxOp::new("Equal", None, Some(fold)).inputs(TWO),
    OnnxOp::new("Less", None, Some(fold)).inputs(TWO),
    OnnxOp::new("Greater", None, Some(fold)).inputs(TWO),
];

/// Max/Min take any number of inputs in ONNX; two are supported.
fn variadic(imp: &mut Importer, n: &pb::NodeProto, op: BinaryOp) -> Result<()> {
    if n.input.len() != 2 {
        bail!("unsupported operator {} (opset {})", n.op_type, imp.opset);
    }
    binary(imp, n, op)
}

pub(crate) fn binary(imp: &mut Importer, n: &pb::NodeProto, op: BinaryOp) -> Result<()> {
    let (x, y) = (imp.value(&n.input[0])?, imp.value(&n.input[1])?);
    let out = broadcast(&imp.g.values[x].shape, &imp.g.values[y].shape)?;
    for v in [x, y] {
        if let Some(k) = &imp.g.values[v].konst {
            if k.is_i64() {
                let f = HostTensor::f32(k.shape.clone(), k.as_f32());
                imp.g.values[v].konst = Some(f);
            }
        }
    }
    imp.emit(n, COp::Binary(op), vec![x, y], out)?;
    Ok(())
}

/// Numpy broadcast of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
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

fn bin_i64(op: &str, x: i64, y: i64) -> Result<i64> {
    Ok(match op {
        "Add" => x.wrapping_add(y),
        "Sub" => x.wrapping_sub(y),
        "Mul" => x.wrapping_mul(y),
        "Div" => {
            if y == 0 {
                bail!("integer division by zero while folding")
            }
            x / y
        }
        "Max" => x.max(y),
        "Min" => x.min(y),
        "Equal" => (x == y) as i64,
        "Less" => (x < y) as i64,
        "Greater" => (x > y) as i64,
        _ => bail!("cannot fold {op}"),
    })
}

fn bin_f32(op: &str, x: f32, y: f32) -> Result<f32> {
    Ok(match op {
        "Add" => x + y,
        "Sub" => x - y,
        "Mul" => x * y,
        "Div" => x / y,
        "Pow" => x.powf(y),
        "Max" => x.max(y),
        "Min" => x.min(y),
        "Equal" => (x == y) as i64 as f32,
        "Less" => (x < y) as i64 as f32,
        "Greater" => (x > y) as i64 as f32,
        _ => bail!("cannot fold {op}"),
    })
}

/// `op` on `a` and `b` broadcast against each other (i64 when both are).
pub(crate) fn broadcast_apply(a: &HostTensor, b: &HostTensor, op: &str) -> Result<HostTensor> {
    let r = a.shape.len().max(b.shape.len());
    let out_shape: Vec<usize> = (0..r)
        .map(|i| {
            let da = if i + a.shape.len() >= r {
                a.shape[i + a.shape.len() - r]
            } else {
                1
            };
            let db = if i + b.shape.len() >= r {
                b.shape[i + b.shape.len() - r]
            } else {
                1
            };
            if da == db || db == 1 {
                Ok(da)
            } else if da == 1 {
                Ok(db)
            } else {
                Err(anyhow!("cannot broadcast {:?} and {:?}", a.shape, b.shape))
            }
        })
        .collect::<Result<_>>()?;
    if r > strix_kernels::shape::MAX_RANK {
        bail!("rank {r} too large to fold");
    }
    let (ad, bd, od) = (
        strix_kernels::shape::Dims::new(&a.shape),
        strix_kernels::shape::Dims::new(&b.shape),
        strix_kernels::shape::Dims::new(&out_shape),
    );
    let n: usize = out_shape.iter().product();
    let mut err = None;
    let data = if a.is_i64() && b.is_i64() {
        let (x, y) = (a.as_i64(), b.as_i64());
        let mut o = vec![0i64; n];
        strix_kernels::shape::for_each_broadcast(&ad, &bd, &od, |oi, i, j| {
            match bin_i64(op, x[i], y[j]) {
                Ok(v) => o[oi] = v,
                Err(e) => err = Some(e),
            }
        });
        HostData::I64(o)
    } else {
        let (x, y) = (a.as_f32(), b.as_f32());
        let mut o = vec![0f32; n];
        strix_kernels::shape::for_each_broadcast(&ad, &bd, &od, |oi, i, j| {
            match bin_f32(op, x[i], y[j]) {
                Ok(v) => o[oi] = v,
                Err(e) => err = Some(e),
            }
        });
        HostData::F32(o)
    };
    if let Some(e) = err {
        return Err(e);
    }
    Ok(HostTensor {
        shape: out_shape,
        data,
    })
}

fn fold(imp: &Importer, n: &pb::NodeProto, _: &Attrs) -> Result<Vec<HostTensor>> {
    if n.input.len() != 2 {
        return Err(cannot_fold(imp, n));
    }
    let (a, b) = (imp.konst(&n.input[0])?, imp.konst(&n.input[1])?);
    Ok(vec![broadcast_apply(a, b, &n.op_type)?])
}

/// `COp::Binary`.
pub(crate) struct Binary;

impl IrOp for Binary {
    fn name(&self) -> &'static str {
        "Binary"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        Op::Binary {
            kind: *fields!(n, COp::Binary(kind) => kind),
        }
    }

    /// Int8 with a scalar constant operand (a table; PRelu only with the
    /// constant second), or Add/Mul of two int8 activations.
    fn wants_int8(&self, cg: &CGraph, n: &CNode, prec: &[Option<DType>]) -> bool {
        let op = fields!(n, COp::Binary(op) => op);
        let (a, b) = (n.inputs[0], n.inputs[1]);
        (is_i8(prec, a) && scalar_const(cg, b))
            || (is_i8(prec, b) && scalar_const(cg, a) && *op != BinaryOp::Prelu)
            || (matches!(op, BinaryOp::Add | BinaryOp::Mul) && is_i8(prec, a) && is_i8(prec, b))
    }

    fn transparent(&self, cg: &CGraph, n: &CNode) -> bool {
        n.inputs.iter().any(|&v| scalar_const(cg, v))
    }

    fn f32_only(&self, cg: &CGraph, n: &CNode) -> bool {
        let op = fields!(n, COp::Binary(op) => op);
        !n.inputs.iter().any(|&v| scalar_const(cg, v))
            && (!matches!(op, BinaryOp::Add | BinaryOp::Mul)
                || n.inputs.iter().any(|&v| cg.is_const(v)))
    }

    fn int8(&self, cx: &mut Int8Cx, n: &CNode) -> Result<Int8Node> {
        let op = *fields!(n, COp::Binary(op) => op);
        let cg = cx.cg;
        let ov = &cg.values[n.output];
        let (a, c) = (n.inputs[0], n.inputs[1]);
        let oq = cx.quant_of(n.output)?;
        let scalar = |v: usize| cg.values[v].konst.as_ref().and_then(HostTensor::scalar);
        if let Some(cv) = scalar(c).or(scalar(a)) {
            let const_first = scalar(a).is_some() && scalar(c).is_none();
            let act_v = if const_first { c } else { a };
            let (x, xq) = cx.i8_input(act_v)?;
            let mut table = [0i8; 256];
            for (i, e) in table.iter_mut().enumerate() {
                let xr = (i as i32 - 128 - xq.zero_point) as f32 * xq.scale;
                let y = if const_first {
                    op.apply(cv, xr)
                } else {
                    op.apply(xr, cv)
                };
                *e = q_code(y, oq);
            }
            let tt = cx.b.const_i8(&format!("{}#lut", ov.name), &[256], &table);
            return Ok(Int8Node {
                op: Op::Lut,
                inputs: vec![x, tt],
                quant: Some(oq),
            });
        }
        let (x, xq) = cx.i8_input(a)?;
        let (y, yq) = cx.i8_input(c)?;
        let op = if op == BinaryOp::Add {
            let twice = 2.0 * xq.scale.max(yq.scale) as f64;
            let p = QAddParams {
                a_zp: xq.zero_point,
                b_zp: yq.zero_point,
                out_zp: oq.zero_point,
                a_rq: quantize_multiplier(xq.scale as f64 / twice),
                b_rq: quantize_multiplier(yq.scale as f64 / twice),
                out_rq: quantize_multiplier(
                    twice / ((1u64 << k::QADD_LEFT_SHIFT) as f64 * oq.scale as f64),
                ),
                act_min: -128,
                act_max: 127,
            };
            Op::QAdd { p }
        } else {
            let p = QMulParams {
                a_zp: xq.zero_point,
                b_zp: yq.zero_point,
                out_zp: oq.zero_point,
                rq: quantize_multiplier(xq.scale as f64 * yq.scale as f64 / oq.scale as f64),
                act_min: -128,
                act_max: 127,
            };
            Op::QMul { p }
        };
        Ok(Int8Node {
            op,
            inputs: vec![x, y],
            quant: Some(oq),
        })
    }

    /// Channels flow through. Two channel-carrying operands must carry the
    /// same layout: their producers are tied into one group. With one, the
    /// other must be a constant that broadcasts along the channel axis (1
    /// there, or one value per channel, which is sliced).
    fn flow(&self, cx: &mut Flow, _: usize, n: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        let g = cx.g;
        let (a, b) = (n.inputs[0], n.inputs[1]);
        match (&ins[0], &ins[1]) {
            (Some(ca), Some(cb)) => {
                let sa = &g.values[a].shape;
                let sb = &g.values[b].shape;
                let same = ca.axis == cb.axis
                    && sa.len() == sb.len()
                    && ca.segs.len() == cb.segs.len()
                    && ca.segs.iter().zip(&cb.segs).all(|(x, y)| x.1 == y.1);
                if same {
                    let mut ok = true;
                    for (x, y) in ca.segs.iter().zip(&cb.segs) {
                        match (x.0 == FIXED, y.0 == FIXED) {
                            (false, false) => cx.tie(x.0, y.0),
                            (true, true) => {}
                            _ => ok = false,
                        }
                    }
                    if ok {
                        Some(ca.clone())
                    } else {
                        cx.poison(&ins[0]);
                        cx.poison(&ins[1]);
                        None
                    }
                } else {
                    cx.poison(&ins[0]);
                    cx.poison(&ins[1]);
                    None
                }
            }
            (Some(c), None) | (None, Some(c)) => {
                let other = if ins[0].is_some() { b } else { a };
                let total: usize = c.segs.iter().map(|s| s.1).sum();
                let orank = g.values[n.output].shape.len();
                let ok = g.values[other].konst.as_ref().is_some_and(|k| {
                    // Right-aligned broadcast: the const's dim on the
                    // channel axis is 1 (nothing to do) or C (sliced).
                    let r = k.shape.len();
                    r <= orank
                        && (c.axis + r < orank || {
                            let d = k.shape[c.axis + r - orank];
                            d == 1 || d == total
                        })
                });
                if ok {
                    Some(c.clone())
                } else {
                    cx.poison(&Some(c.clone()));
                    None
                }
            }
            (None, None) => None,
        }
    }

    /// A constant operand with one value per channel loses the removed ones.
    fn prune(&self, cx: &mut Prune, ni: usize, n: &CNode, k0: Kept) -> Kept {
        let o = n.output;
        let k1 = cx.kept(n.inputs[1]);
        let (kk, other_slot) = match (k0, k1) {
            (Some(a), _) => (Some(a), 1),
            (None, Some(b)) => (Some(b), 0),
            _ => (None, 0),
        };
        let (axis, ks, orig) = kk?;
        let ov = cx.g.nodes[ni].inputs[other_slot];
        if let Some(t) = cx.g.values[ov].konst.clone() {
            let orank = cx.g.values[o].shape.len();
            let r = t.shape.len();
            if axis + r >= orank && t.shape[axis + r - orank] == orig && orig > 1 {
                cx.set_const(ni, other_slot, slice_axis(&t, axis + r - orank, &ks));
            }
        }
        Some((axis, ks, orig))
    }
}
