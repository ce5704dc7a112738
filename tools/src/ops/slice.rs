//! Slice (`COp::Slice`: a start and a step per axis; also what Split and the
//! LSTM outputs lower to). Int8: the same op on int8 data.

use super::{fields, map_data, norm_axis, IrOp, OnnxOp};
use crate::ir::{CNode, COp, HostTensor};
use crate::onnx::{Attrs, Importer};
use anyhow::{bail, Result};
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] =
    &[OnnxOp::new("Slice", Some(import), Some(fold))
        .inputs(|opset| if opset >= 10 { 3 } else { 1 })];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let (starts, steps, out) = slice_params(imp, n, a, &s)?;
    let x = imp.value(&n.input[0])?;
    imp.emit(n, COp::Slice { starts, steps }, vec![x], out)?;
    Ok(())
}

fn fold(imp: &Importer, n: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let t = imp.konst(&n.input[0])?;
    let (starts, steps, out) = slice_params(imp, n, a, &t.shape)?;
    let total: usize = out.iter().product();
    let mut strides = vec![1usize; t.shape.len()];
    for i in (0..t.shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * t.shape[i + 1];
    }
    let outc = out.clone();
    Ok(vec![map_data(
        t,
        move |_, mut o| {
            let mut off = 0isize;
            for d in (0..outc.len()).rev() {
                let i = o % outc[d];
                o /= outc[d];
                off += (starts[d] as isize + i as isize * steps[d]) * strides[d] as isize;
            }
            off as usize
        },
        out,
        total,
    )])
}

/// Per-axis start, step and output shape of an ONNX Slice on shape `s`.
pub(crate) fn slice_params(
    imp: &Importer,
    n: &pb::NodeProto,
    a: &Attrs,
    s: &[usize],
) -> Result<(Vec<usize>, Vec<isize>, Vec<usize>)> {
    let r = s.len();
    let (starts, ends, axes, steps) = if imp.opset < 10 {
        (
            a.ints("starts").unwrap_or_default(),
            a.ints("ends").unwrap_or_default(),
            a.ints("axes"),
            None,
        )
    } else {
        let get = |i| imp.opt_konst(n, i).map(|t| t.map(|t| t.as_i64()));
        (
            get(1)?.unwrap_or_default(),
            get(2)?.unwrap_or_default(),
            get(3)?,
            get(4)?,
        )
    };
    let axes: Vec<usize> = match axes {
        Some(v) => v
            .iter()
            // -1 is the last axis (normalizing against r - 1 first, as
            // this did, sliced the axis before it).
            .map(|&x| norm_axis(x, r))
            .collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let mut st = vec![0usize; r];
    let mut sp = vec![1isize; r];
    let mut out = s.to_vec();
    for (i, &ax) in axes.iter().enumerate() {
        if ax >= r {
            bail!("Slice axis {ax} out of range");
        }
        let d = s[ax] as i64;
        let step = steps.as_ref().map(|v| v[i]).unwrap_or(1);
        if step == 0 {
            bail!("Slice step 0");
        }
        let fix = |v: i64| if v < 0 { v + d } else { v };
        let (mut b, mut e) = (fix(starts[i]), fix(ends[i]));
        let len = if step > 0 {
            b = b.clamp(0, d);
            e = e.clamp(0, d);
            if e > b {
                (e - b + step - 1) / step
            } else {
                0
            }
        } else {
            b = b.clamp(-1, d - 1);
            e = e.clamp(-1, d - 1);
            if b > e {
                (b - e + (-step) - 1) / (-step)
            } else {
                0
            }
        };
        st[ax] = b.max(0) as usize;
        sp[ax] = step as isize;
        out[ax] = len as usize;
    }
    Ok((st, sp, out))
}

/// `COp::Slice`. Channels stop here (pruning leaves its producers alone).
pub(crate) struct Slice;

impl IrOp for Slice {
    fn name(&self) -> &'static str {
        "Slice"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (starts, steps) = fields!(n, COp::Slice { starts, steps } => (starts, steps));
        Op::Slice {
            starts: starts.clone(),
            steps: steps.clone(),
        }
    }
    fn keeps_quant(&self) -> bool {
        true
    }
}
