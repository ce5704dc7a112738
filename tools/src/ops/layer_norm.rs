//! LayerNormalization (`COp::LayerNorm`, always f32; opset 17): each row of
//! the axes from `axis` on is normalized by its mean and variance, then
//! scaled and shifted per element by the constant `Scale` and `B`.

use super::{fields, norm_axis, IrOp, OnnxOp};
use crate::ir::{CNode, COp, HostTensor};
use crate::onnx::{Attrs, Importer};
use anyhow::{bail, Result};
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] =
    &[OnnxOp::new("LayerNormalization", Some(import), None).inputs(|_| 2)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let axis = norm_axis(a.int("axis", -1), s.len())?;
    let epsilon = a.float("epsilon", 1e-5);
    if !(epsilon.is_finite() && epsilon > 0.0) {
        bail!("LayerNormalization epsilon {epsilon} is not a positive number");
    }
    // stash_type 1: mean and variance in f32 or wider, which the runtime's
    // f64 sums are.
    let stash = a.int("stash_type", 1);
    if stash != 1 {
        bail!("LayerNormalization stash_type {stash} is not supported (only 1, float)");
    }
    if n.output.iter().skip(1).any(|o| !o.is_empty()) {
        bail!("LayerNormalization outputs Mean and InvStdDev are not supported (only Y)");
    }
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis..].iter().product();
    let mut inputs = vec![imp.value(&n.input[0])?];
    for (i, what) in [(1, "scale"), (2, "bias")] {
        let Some(t) = imp.opt_konst(n, i)? else {
            continue; // B is optional (Scale is required: min_inputs)
        };
        // Broadcasting a smaller Scale/B over the normalized shape is legal
        // ONNX but not exported in practice: refused, not guessed.
        if t.len() != inner {
            bail!(
                "LayerNormalization {what} {:?} does not have the {inner} values of the normalized shape {:?}",
                t.shape,
                &s[axis..]
            );
        }
        let v = imp.g.add_value(
            &format!("{}#{what}", n.output[0]),
            vec![inner],
            Some(HostTensor::f32(vec![inner], t.as_f32())),
        );
        inputs.push(v);
    }
    imp.emit(
        n,
        COp::LayerNorm {
            outer,
            inner,
            epsilon,
        },
        inputs,
        s,
    )?;
    Ok(())
}

/// `COp::LayerNorm`.
pub(crate) struct LayerNorm;

impl IrOp for LayerNorm {
    fn name(&self) -> &'static str {
        "LayerNorm"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (outer, inner, epsilon) =
            fields!(n, COp::LayerNorm { outer, inner, epsilon } => (*outer, *inner, *epsilon));
        Op::LayerNorm {
            outer,
            inner,
            epsilon,
        }
    }
}
