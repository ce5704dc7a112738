//! Softmax (`COp::Softmax`, always f32; opset < 13 flattens the axes from
//! `axis` on).

use super::{fields, norm_axis, IrOp, OnnxOp};
use crate::ir::{CNode, COp};
use crate::onnx::{Attrs, Importer};
use anyhow::Result;
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("Softmax", Some(import), None)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let r = s.len();
    let axis = norm_axis(a.int("axis", if imp.opset < 13 { 1 } else { -1 }), r)?;
    let (outer, ax, inner) = if imp.opset < 13 {
        (s[..axis].iter().product(), s[axis..].iter().product(), 1)
    } else {
        (
            s[..axis].iter().product(),
            s[axis],
            s[axis + 1..].iter().product(),
        )
    };
    let x = imp.value(&n.input[0])?;
    imp.emit(
        n,
        COp::Softmax {
            outer,
            axis: ax,
            inner,
        },
        vec![x],
        s,
    )?;
    Ok(())
}

/// `COp::Softmax`.
pub(crate) struct Softmax;

impl IrOp for Softmax {
    fn name(&self) -> &'static str {
        "Softmax"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (outer, axis, inner) =
            fields!(n, COp::Softmax { outer, axis, inner } => (*outer, *axis, *inner));
        Op::Softmax { outer, axis, inner }
    }
}
