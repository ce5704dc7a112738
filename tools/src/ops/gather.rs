//! Gather with constant indices (`COp::Gather`: a constant index list along
//! one axis; a Reshape restores the shape of the indices). Also what
//! reflect/edge Pad lowers to (see [`super::pad`]). Int8: the same op on
//! int8 data.

use super::{fields, map_data, norm_axis, IrOp, OnnxOp};
use crate::ir::{CNode, COp, HostTensor};
use crate::onnx::{node_name, Attrs, Importer};
use anyhow::{anyhow, Context, Result};
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("Gather", Some(import), Some(fold)).inputs(|_| 2)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let axis = norm_axis(a.int("axis", 0), s.len())?;
    let idx_t = imp
        .konst(&n.input[1])
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
    let x = imp.value(&n.input[0])?;
    // Output shape: data[:axis] + indices.shape + data[axis+1:]; the op
    // gathers a flat index list, a reshape restores the index shape.
    let mut flat = s.clone();
    flat[axis] = indices.len();
    let mut out: Vec<usize> = s[..axis].to_vec();
    out.extend(&idx_t.shape);
    out.extend(&s[axis + 1..]);
    if out == flat {
        imp.emit(n, COp::Gather { axis, indices }, vec![x], out)?;
    } else {
        let tmp = imp
            .g
            .add_value(&format!("{}#flat", n.output[0]), flat, None);
        imp.g.nodes.push(CNode {
            name: node_name(n),
            op: COp::Gather { axis, indices },
            inputs: vec![x],
            output: tmp,
        });
        imp.emit(n, COp::Reshape, vec![tmp], out)?;
    }
    Ok(())
}

fn fold(imp: &Importer, n: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let (t, idx) = (imp.konst(&n.input[0])?, imp.konst(&n.input[1])?);
    let r = t.shape.len();
    // As `import`: a scalar has no axis to gather along.
    let axis = norm_axis(a.int("axis", 0), r)?;
    let dim = t.shape[axis];
    let ids: Vec<usize> = idx
        .as_i64()
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < dim)
                .ok_or_else(|| anyhow!("Gather index {i} out of range"))
        })
        .collect::<Result<_>>()?;
    let outer: usize = t.shape[..axis].iter().product();
    let inner: usize = t.shape[axis + 1..].iter().product();
    let mut shape: Vec<usize> = t.shape[..axis].to_vec();
    shape.extend(&idx.shape);
    shape.extend(&t.shape[axis + 1..]);
    let total = outer
        .checked_mul(ids.len())
        .and_then(|n| n.checked_mul(inner))
        .filter(|&n| n <= crate::onnx::MAX_TENSOR_ELEMENTS)
        .ok_or_else(|| anyhow!("Gather of {} indices folds to too many elements", ids.len()))?;
    Ok(vec![map_data(
        t,
        |_, o| {
            let b = o / (ids.len() * inner);
            let rem = o % (ids.len() * inner);
            (b * dim + ids[rem / inner]) * inner + rem % inner
        },
        shape,
        total,
    )])
}

/// `COp::Gather`. Channels stop here (pruning leaves its producers alone).
pub(crate) struct Gather;

impl IrOp for Gather {
    fn name(&self) -> &'static str {
        "Gather"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (axis, indices) = fields!(n, COp::Gather { axis, indices } => (axis, indices));
        Op::Gather {
            axis: *axis,
            indices: indices.clone(),
        }
    }
    fn keeps_quant(&self) -> bool {
        true
    }
}
