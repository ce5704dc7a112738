//! Transpose (`COp::Transpose`). Int8: the same op on int8 data. Pruning:
//! channels flow through a transpose of a pure channel vector only.

use super::{fields, map_data, norm_axis, IrOp, OnnxOp};
use crate::ir::{CNode, COp, HostTensor};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{flow_vector, prune_vector, Chan, Flow, Kept, Prune};
use anyhow::{bail, Result};
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("Transpose", Some(import), Some(fold))];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
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
    let x = imp.value(&n.input[0])?;
    imp.emit(n, COp::Transpose { perm }, vec![x], out)?;
    Ok(())
}

fn fold(imp: &Importer, n: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let t = imp.konst(&n.input[0])?;
    let r = t.shape.len();
    // The same axis rules as `import`: a perm must permute exactly the
    // constant's axes (a scalar has none), or the index map below is wrong.
    let perm: Vec<usize> = match a.ints("perm") {
        Some(p) => p.iter().map(|&x| norm_axis(x, r)).collect::<Result<_>>()?,
        None => (0..r).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..r).collect::<Vec<_>>() {
        bail!("Transpose perm {perm:?} is not a permutation of {r} axes");
    }
    let out: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let total = t.len();
    let mut strides = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * t.shape[i + 1];
    }
    let outc = out.clone();
    Ok(vec![map_data(
        t,
        move |_, mut o| {
            let mut off = 0;
            for d in (0..r).rev() {
                off += (o % outc[d]) * strides[perm[d]];
                o /= outc[d];
            }
            off
        },
        out,
        total,
    )])
}

/// `COp::Transpose`.
pub(crate) struct Transpose;

impl IrOp for Transpose {
    fn name(&self) -> &'static str {
        "Transpose"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        Op::Transpose {
            perm: fields!(n, COp::Transpose { perm } => perm.clone()),
        }
    }
    fn keeps_quant(&self) -> bool {
        true
    }
    fn flow(&self, cx: &mut Flow, _: usize, n: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        flow_vector(cx, n, ins)
    }
    fn prune(&self, cx: &mut Prune, _: usize, n: &CNode, k0: Kept) -> Kept {
        prune_vector(cx, n, k0)
    }
}
