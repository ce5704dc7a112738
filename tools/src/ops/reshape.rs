//! Reshape, Flatten, Squeeze and Unsqueeze: one `COp::Reshape` (the runtime
//! aliases its input: no copy). Int8: the same op on int8 data. Pruning:
//! channels flow through a reshape of a pure channel vector only (the
//! classifier-head flatten `[1, C, 1, 1] -> [1, C]`).

use super::{norm_axis_upto, IrOp, OnnxOp};
use crate::ir::{CNode, COp, HostTensor};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{flow_vector, prune_vector, Chan, Flow, Kept, Prune};
use anyhow::{anyhow, bail, Result};
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new("Reshape", Some(import), Some(fold)).inputs(|opset| if opset >= 5 { 2 } else { 1 }),
    OnnxOp::new("Flatten", Some(import), Some(fold)),
    OnnxOp::new("Squeeze", Some(import), Some(fold)),
    OnnxOp::new("Unsqueeze", Some(import), Some(fold)),
];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let out = reshape_target(imp, n, a, &s)?;
    let x = imp.value(&n.input[0])?;
    imp.emit(n, COp::Reshape, vec![x], out)?;
    Ok(())
}

fn fold(imp: &Importer, n: &pb::NodeProto, a: &Attrs) -> Result<Vec<HostTensor>> {
    let t = imp.konst(&n.input[0])?;
    let shape = reshape_target(imp, n, a, &t.shape)?;
    Ok(vec![HostTensor {
        shape,
        data: t.data.clone(),
    }])
}

/// Target shape of Reshape / Flatten / Squeeze / Unsqueeze on `s`.
pub(crate) fn reshape_target(
    imp: &Importer,
    n: &pb::NodeProto,
    a: &Attrs,
    s: &[usize],
) -> Result<Vec<usize>> {
    let total: usize = s.iter().product();
    match n.op_type.as_str() {
        "Reshape" => {
            // Opset 5 on: the shape is input 1; Reshape-1 had a `shape` attribute.
            let spec = match (n.input.get(1), a.ints("shape")) {
                (Some(i), _) => imp
                    .konst(i)
                    .map_err(|_| anyhow!("Reshape with a non-constant shape"))?
                    .as_i64(),
                (None, Some(v)) => v,
                (None, None) => bail!("Reshape without a shape (no input 1, no `shape` attribute)"),
            };
            let allow_zero = a.int("allowzero", 0) != 0;
            let mut out: Vec<usize> = Vec::with_capacity(spec.len());
            let mut infer = None;
            for (i, &d) in spec.iter().enumerate() {
                match d {
                    -1i64 => {
                        if infer.replace(i).is_some() {
                            bail!("Reshape shape {spec:?} has two -1");
                        }
                        out.push(1);
                    }
                    0 if !allow_zero => out.push(
                        *s.get(i)
                            .ok_or_else(|| anyhow!("Reshape 0 beyond input rank"))?,
                    ),
                    d if d >= 0 => out.push(d as usize),
                    _ => bail!("Reshape shape {spec:?} is invalid"),
                }
            }
            if let Some(i) = infer {
                let known: usize = out.iter().product();
                if known == 0 || !total.is_multiple_of(known) {
                    bail!("cannot reshape {s:?} to {spec:?}");
                }
                out[i] = total / known;
            }
            if out.iter().product::<usize>() != total {
                bail!("cannot reshape {s:?} ({total} elements) to {out:?}");
            }
            Ok(out)
        }
        "Flatten" => {
            let axis = norm_axis_upto(a.int("axis", 1), s.len())?;
            Ok(vec![s[..axis].iter().product(), s[axis..].iter().product()])
        }
        "Squeeze" => {
            let axes = if imp.opset >= 13 {
                imp.opt_konst(n, 1)?.map(|t| t.as_i64())
            } else {
                a.ints("axes")
            };
            let axes: Vec<usize> = match axes {
                Some(v) => v
                    .iter()
                    .map(|&x| norm_axis_upto(x, s.len()))
                    .collect::<Result<_>>()?,
                None => (0..s.len()).filter(|&i| s[i] == 1).collect(),
            };
            if axes.iter().any(|&i| i >= s.len() || s[i] != 1) {
                bail!("Squeeze of non-unit axes {axes:?} of {s:?}");
            }
            Ok((0..s.len())
                .filter(|i| !axes.contains(i))
                .map(|i| s[i])
                .collect())
        }
        "Unsqueeze" => {
            let axes = if imp.opset >= 13 {
                imp.opt_konst(n, 1)?.map(|t| t.as_i64())
            } else {
                a.ints("axes")
            };
            let axes = axes.ok_or_else(|| anyhow!("Unsqueeze without axes"))?;
            let r = s.len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&x| {
                    let y = if x < 0 { x + r as i64 } else { x };
                    usize::try_from(y)
                        .ok()
                        .filter(|&y| y < r)
                        .ok_or_else(|| anyhow!("Unsqueeze axis {x} out of range"))
                })
                .collect::<Result<_>>()?;
            axes.sort();
            let mut out = Vec::with_capacity(r);
            let mut it = s.iter();
            for i in 0..r {
                if axes.contains(&i) {
                    out.push(1);
                } else {
                    out.push(
                        *it.next()
                            .ok_or_else(|| anyhow!("Unsqueeze axes out of range"))?,
                    );
                }
            }
            Ok(out)
        }
        _ => unreachable!(),
    }
}

/// `COp::Reshape`.
pub(crate) struct Reshape;

impl IrOp for Reshape {
    fn name(&self) -> &'static str {
        "Reshape"
    }
    fn f32_op(&self, _: &CNode) -> Op {
        Op::Reshape
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
