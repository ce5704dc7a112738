//! Concat: joins tensors along one axis. Int8: inputs whose quantization
//! differs from the output's are requantized on the way. Pruning: channels
//! flow through a concat along the channel axis (offsets rewritten).

use super::{norm_axis, norm_axis_upto, OnnxOp};
use crate::ir::{COp, HostTensor};
use crate::onnx::{Attrs, Importer};
use anyhow::{bail, Result};
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
    let axis = norm_axis_upto(a.int("axis", 0), r - 1)
        .or_else(|_| norm_axis_upto(a.int("axis", 0), r))?
        .min(r - 1);
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
