//! ReduceMean over adjacent axes (`COp::ReduceMean`, always f32).

use super::{fields, norm_axis, IrOp, OnnxOp};
use crate::ir::{CNode, COp};
use crate::onnx::{Attrs, Importer};
use anyhow::{bail, Result};
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("ReduceMean", Some(import), None)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let r = s.len();
    let axes = if imp.opset >= 18 {
        imp.opt_konst(n, 1)?.map(|t| t.as_i64())
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
    let x = imp.value(&n.input[0])?;
    imp.emit(
        n,
        COp::ReduceMean {
            outer,
            axis: ax,
            inner,
        },
        vec![x],
        out,
    )?;
    Ok(())
}

/// `COp::ReduceMean`.
pub(crate) struct ReduceMean;

impl IrOp for ReduceMean {
    fn name(&self) -> &'static str {
        "ReduceMean"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (outer, axis, inner) =
            fields!(n, COp::ReduceMean { outer, axis, inner } => (*outer, *axis, *inner));
        Op::ReduceMean { outer, axis, inner }
    }
}
