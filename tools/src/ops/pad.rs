//! Pad: constant padding is `COp::Pad` (int8: the pad value quantized);
//! reflect and edge padding become one Gather per padded axis. Pruning:
//! channels flow through when the channel axis is not padded.

use super::{fields, is_i8, IrOp, OnnxOp};
use crate::ir::{CGraph, CNode, COp};
use crate::lower::{q_code, Int8Cx, Int8Node};
use crate::onnx::{elements, node_name, Attrs, Importer};
use crate::prune::graph::{Chan, Flow, Kept, Prune};
use anyhow::{anyhow, bail, Context, Result};
use strix_runtime::graph::{DType, Op};
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("Pad", Some(import), None)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let mode = a.string("mode", "constant");
    if !matches!(mode.as_str(), "constant" | "reflect" | "edge") {
        bail!("Pad mode '{mode}' is not supported (constant, reflect or edge)");
    }
    if imp.opset >= 18 && n.input.get(3).is_some_and(|s| !s.is_empty()) {
        bail!("Pad with an 'axes' input is not supported");
    }
    let (pads, value) = if imp.opset < 11 {
        (a.ints("pads").unwrap_or_default(), a.float("value", 0.0))
    } else {
        (
            imp.opt_konst(n, 1)?.map(|t| t.as_i64()).unwrap_or_default(),
            imp.opt_konst(n, 2)?.and_then(|t| t.scalar()).unwrap_or(0.0),
        )
    };
    let r = s.len();
    if pads.len() != 2 * r || pads.iter().any(|&p| p < 0) {
        bail!("Pad needs {} non-negative pads, got {pads:?}", 2 * r);
    }
    let before: Vec<usize> = pads[..r].iter().map(|&p| p as usize).collect();
    let out: Vec<usize> = (0..r)
        .map(|i| {
            usize::try_from(pads[i].checked_add(pads[r + i])?)
                .ok()?
                .checked_add(s[i])
        })
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("Pad of {s:?} by {pads:?} overflows"))?;
    elements(&out).context("Pad output")?;
    let x = imp.value(&n.input[0])?;
    if mode == "constant" {
        imp.emit(n, COp::Pad { before, value }, vec![x], out)?;
    } else {
        let after: Vec<usize> = pads[r..].iter().map(|&p| p as usize).collect();
        pad_by_gather(imp, n, &mode, x, &before, &after)?;
    }
    Ok(())
}

/// Reflect/edge padding as one Gather per padded axis (the runtime's
/// Gather takes a constant index list, which is exactly such a padding).
fn pad_by_gather(
    imp: &mut Importer,
    n: &pb::NodeProto,
    mode: &str,
    x: usize,
    before: &[usize],
    after: &[usize],
) -> Result<()> {
    let mut cur = x;
    let mut shape = imp.g.values[x].shape.clone();
    let axes: Vec<usize> = (0..shape.len())
        .filter(|&d| before[d] + after[d] > 0)
        .collect();
    if axes.is_empty() {
        imp.alias(n, x);
        return Ok(());
    }
    for (k, &d) in axes.iter().enumerate() {
        let len = shape[d];
        if len == 0 || (mode == "reflect" && (before[d] >= len || after[d] >= len)) {
            bail!(
                "Pad mode '{mode}' of {}+{} on axis {d} of length {len} is not supported \
                 (reflect padding must be shorter than the axis)",
                before[d],
                after[d]
            );
        }
        let indices: Vec<usize> = (0..before[d] + len + after[d])
            .map(|i| {
                let src = i as i64 - before[d] as i64;
                let last = len as i64 - 1;
                (if mode == "edge" {
                    src.clamp(0, last)
                } else if src < 0 {
                    -src
                } else if src > last {
                    2 * last - src
                } else {
                    src
                }) as usize
            })
            .collect();
        shape[d] = indices.len();
        let op = COp::Gather { axis: d, indices };
        if k + 1 == axes.len() {
            imp.emit(n, op, vec![cur], shape.clone())?;
        } else {
            let v = imp
                .g
                .add_value(&format!("{}#pad{d}", n.output[0]), shape.clone(), None);
            imp.g.nodes.push(CNode {
                name: format!("{}#pad{d}", node_name(n)),
                op,
                inputs: vec![cur],
                output: v,
            });
            cur = v;
        }
    }
    Ok(())
}

/// `COp::Pad`.
pub(crate) struct Pad;

impl IrOp for Pad {
    fn name(&self) -> &'static str {
        "Pad"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (before, value) = fields!(n, COp::Pad { before, value } => (before, value));
        Op::Pad {
            before: before.clone(),
            value: *value,
        }
    }
    fn wants_int8(&self, _: &CGraph, n: &CNode, prec: &[Option<DType>]) -> bool {
        is_i8(prec, n.inputs[0])
    }
    fn transparent(&self, _: &CGraph, _: &CNode) -> bool {
        true
    }
    fn f32_only(&self, _: &CGraph, _: &CNode) -> bool {
        false
    }
    /// The pad value becomes the input's code for it.
    fn int8(&self, cx: &mut Int8Cx, n: &CNode) -> Result<Int8Node> {
        let (before, value) = fields!(n, COp::Pad { before, value } => (before, value));
        let (x, xq) = cx.i8_input(n.inputs[0])?;
        Ok(Int8Node {
            op: Op::Pad {
                before: before.clone(),
                value: q_code(*value, xq) as f32,
            },
            inputs: vec![x],
            quant: Some(xq),
        })
    }
    /// Channels flow through when the channel axis is not padded.
    fn flow(&self, cx: &mut Flow, _: usize, n: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        let before = fields!(n, COp::Pad { before, .. } => before);
        let g = cx.g;
        match ins.first().cloned().flatten() {
            Some(c)
                if before.get(c.axis) == Some(&0)
                    && g.values[n.output].shape[c.axis] == g.values[n.inputs[0]].shape[c.axis] =>
            {
                Some(c)
            }
            c => {
                cx.poison(&c);
                None
            }
        }
    }
    fn prune(&self, _: &mut Prune, _: usize, _: &CNode, k0: Kept) -> Kept {
        k0
    }
}
