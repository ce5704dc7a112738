//! Concat: joins tensors along one axis. Int8: inputs whose quantization
//! differs from the output's are requantized on the way. Pruning: channels
//! flow through a concat along the channel axis (offsets rewritten).

use super::{fields, is_i8, norm_axis, IrOp, OnnxOp};
use crate::ir::{CGraph, CNode, COp, HostTensor};
use crate::lower::{Int8Cx, Int8Node};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{Chan, Flow, Kept, Prune, FIXED};
use anyhow::{bail, Result};
use strix_kernels::{quantize_multiplier, Requant};
use strix_runtime::graph::{DType, Op};
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("Concat", Some(import), Some(fold))];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let vs: Vec<usize> = n
        .input
        .iter()
        .map(|s| imp.value(s))
        .collect::<Result<_>>()?;
    let s0 = imp.g.values[vs[0]].shape.clone();
    let axis = norm_axis(a.int("axis", 0), s0.len())?;
    let mut out = s0.clone();
    out[axis] = 0;
    for &v in &vs {
        let s = &imp.g.values[v].shape;
        if s.len() != s0.len() || (0..s.len()).any(|d| d != axis && s[d] != s0[d]) {
            bail!(
                "Concat inputs {:?} and {s:?} differ outside axis {axis}",
                s0
            );
        }
        out[axis] += s[axis];
    }
    // Constant inputs (rare) become constants in the graph.
    imp.emit(n, COp::Concat { axis }, vs, out)?;
    Ok(())
}

fn fold(imp: &Importer, n: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let ts: Vec<&HostTensor> = (0..n.input.len())
        .map(|i| imp.konst(&n.input[i]))
        .collect::<Result<_>>()?;
    let r = ts[0].shape.len().max(1);
    // A negative axis counts from the rank (-1 is the last axis): normalizing
    // it against r - 1 first joined yolov8n's anchor grids on the wrong axis.
    let axis = norm_axis(a.int("axis", 0), r)?;
    let any_f = ts.iter().any(|t| !t.is_i64());
    let mut shape = ts[0].shape.clone();
    if shape.is_empty() {
        shape = vec![1];
    }
    shape[axis] = ts
        .iter()
        .map(|t| t.shape.get(axis).copied().unwrap_or(1))
        .sum();
    let outer: usize = shape[..axis].iter().product();
    let (mut fv, mut iv) = (vec![], vec![]);
    for b in 0..outer {
        for t in &ts {
            let chunk = t.len() / outer.max(1);
            if any_f {
                fv.extend_from_slice(&t.as_f32()[b * chunk..(b + 1) * chunk]);
            } else {
                iv.extend_from_slice(&t.as_i64()[b * chunk..(b + 1) * chunk]);
            }
        }
    }
    Ok(vec![if any_f {
        HostTensor::f32(shape, fv)
    } else {
        HostTensor::i64(shape, iv)
    }])
}

/// `COp::Concat`.
pub(crate) struct Concat;

impl IrOp for Concat {
    fn name(&self) -> &'static str {
        "Concat"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        Op::Concat {
            axis: *fields!(n, COp::Concat { axis } => axis),
            requant: vec![None; n.inputs.len()],
        }
    }
    fn wants_int8(&self, _: &CGraph, n: &CNode, prec: &[Option<DType>]) -> bool {
        n.inputs.iter().all(|&v| is_i8(prec, v))
    }
    fn transparent(&self, _: &CGraph, _: &CNode) -> bool {
        true
    }
    fn f32_only(&self, _: &CGraph, _: &CNode) -> bool {
        false
    }
    fn int8(&self, cx: &mut Int8Cx, n: &CNode) -> Result<Int8Node> {
        let axis = *fields!(n, COp::Concat { axis } => axis);
        let oq = cx.quant_of(n.output)?;
        let mut inputs = vec![];
        let mut requant: Vec<Option<Requant>> = vec![];
        for &v in &n.inputs {
            let (x, xq) = cx.i8_input(v)?;
            inputs.push(x);
            requant.push(if xq == oq {
                None
            } else {
                Some(quantize_multiplier(xq.scale as f64 / oq.scale as f64))
            });
        }
        Ok(Int8Node {
            op: Op::Concat { axis, requant },
            inputs,
            quant: Some(oq),
        })
    }
    /// Along the channel axis, the inputs' channels follow each other (an
    /// input without prunable channels is a fixed segment); along any other
    /// axis channels stop.
    fn flow(&self, cx: &mut Flow, _: usize, n: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        let axis = *fields!(n, COp::Concat { axis } => axis);
        let any = ins.iter().any(|c| c.is_some());
        let aligned = ins
            .iter()
            .all(|c| c.as_ref().is_none_or(|c| c.axis == axis));
        if any && aligned {
            let mut segs = vec![];
            for (k, c) in ins.iter().enumerate() {
                match c {
                    Some(c) => segs.extend(c.segs.iter().copied()),
                    None => segs.push((FIXED, cx.g.values[n.inputs[k]].shape[axis])),
                }
            }
            Some(Chan { axis, segs })
        } else {
            cx.poison_all(ins);
            None
        }
    }
    /// The kept channels at their offsets in the output.
    fn prune(&self, cx: &mut Prune, _: usize, n: &CNode, _: Kept) -> Kept {
        let axis = *fields!(n, COp::Concat { axis } => axis);
        if !n.inputs.iter().any(|&v| cx.kept(v).is_some()) {
            return None;
        }
        let (mut ks, mut off) = (vec![], 0);
        for &v in &n.inputs {
            match cx.kept(v) {
                Some((_, kv, orig)) => {
                    ks.extend(kv.iter().map(|&c| c + off));
                    off += orig;
                }
                None => {
                    let len = cx.g.values[v].shape[axis];
                    ks.extend(off..off + len);
                    off += len;
                }
            }
        }
        Some((axis, ks, off))
    }
}
