//! Elementwise functions of one input (`COp::Unary`): Relu, Clip, Sigmoid,
//! Tanh, Exp, Sqrt, Neg, Abs, Erf, LeakyRelu, HardSigmoid, HardSwish, Gelu
//! (and Floor, Ceil, Reciprocal on constants only). Relu and Clip fuse into a
//! Conv/Gemm producer as its output clamp; `Mul(x, Sigmoid(x))` becomes one
//! SiLU ([`fuse_silu`]). Int8: one 256-entry lookup table.

use super::{fields, is_i8, IrOp, OnnxOp};
use crate::ir::{Act, CGraph, CNode, COp, HostTensor};
use crate::lower::{fin, Int8Cx, Int8Node};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{Chan, Flow, Kept, Prune};
use anyhow::Result;
use strix_kernels::reference::{self as k, BinaryOp, UnaryOp};
use strix_runtime::graph::{DType, Op};
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new("Relu", Some(relu), Some(fold)),
    OnnxOp::new("Clip", Some(clip), None),
    OnnxOp::new("Sigmoid", Some(sigmoid), Some(fold)),
    OnnxOp::new("Tanh", Some(|i, n, _| unary(i, n, UnaryOp::Tanh)), None),
    OnnxOp::new("Exp", Some(|i, n, _| unary(i, n, UnaryOp::Exp)), Some(fold)),
    OnnxOp::new(
        "Sqrt",
        Some(|i, n, _| unary(i, n, UnaryOp::Sqrt)),
        Some(fold),
    ),
    OnnxOp::new("Neg", Some(|i, n, _| unary(i, n, UnaryOp::Neg)), Some(fold)),
    OnnxOp::new("Abs", Some(|i, n, _| unary(i, n, UnaryOp::Abs)), Some(fold)),
    OnnxOp::new("Erf", Some(|i, n, _| unary(i, n, UnaryOp::Erf)), None),
    OnnxOp::new("LeakyRelu", Some(leaky_relu), None),
    OnnxOp::new("HardSigmoid", Some(hard_sigmoid), None),
    OnnxOp::new(
        "HardSwish",
        Some(|i, n, _| unary(i, n, UnaryOp::HardSwish)),
        None,
    ),
    OnnxOp::new("Gelu", Some(|i, n, _| unary(i, n, UnaryOp::Gelu)), None),
    OnnxOp::new("Floor", None, Some(fold)),
    OnnxOp::new("Ceil", None, Some(fold)),
    OnnxOp::new("Reciprocal", None, Some(fold)),
];

fn relu(imp: &mut Importer, n: &pb::NodeProto, _: &Attrs) -> Result<()> {
    activation(
        imp,
        n,
        Act {
            min: 0.0,
            max: f32::INFINITY,
        },
        UnaryOp::Relu,
    )
}

fn clip(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let (lo, hi) = if imp.opset < 11 {
        (
            a.float("min", f32::NEG_INFINITY),
            a.float("max", f32::INFINITY),
        )
    } else {
        (
            imp.opt_konst(n, 1)?
                .and_then(|t| t.scalar())
                .unwrap_or(f32::NEG_INFINITY),
            imp.opt_konst(n, 2)?
                .and_then(|t| t.scalar())
                .unwrap_or(f32::INFINITY),
        )
    };
    activation(
        imp,
        n,
        Act { min: lo, max: hi },
        UnaryOp::Clip { min: lo, max: hi },
    )
}

fn sigmoid(imp: &mut Importer, n: &pb::NodeProto, _: &Attrs) -> Result<()> {
    unary(imp, n, UnaryOp::Sigmoid)
}

fn leaky_relu(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    unary(
        imp,
        n,
        UnaryOp::LeakyRelu {
            alpha: a.float("alpha", 0.01),
        },
    )
}

fn hard_sigmoid(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    unary(
        imp,
        n,
        UnaryOp::HardSigmoid {
            alpha: a.float("alpha", 0.2),
            beta: a.float("beta", 0.5),
        },
    )
}

/// Relu/Clip: fused into a Conv/Gemm producer when possible.
fn activation(imp: &mut Importer, n: &pb::NodeProto, act: Act, op: UnaryOp) -> Result<()> {
    let x = imp.value(&n.input[0])?;
    if let Some(p) = imp.fusible_producer(x, &n.input[0]) {
        if let COp::Conv { act: pa, .. } | COp::Gemm { act: pa, .. } = &mut imp.g.nodes[p].op {
            *pa = Act {
                min: pa.min.max(act.min),
                max: pa.max.min(act.max),
            };
            imp.alias(n, x);
            return Ok(());
        }
    }
    unary(imp, n, op)
}

/// One `COp::Unary` of the shape of its input.
pub(crate) fn unary(imp: &mut Importer, n: &pb::NodeProto, op: UnaryOp) -> Result<()> {
    let x = imp.value(&n.input[0])?;
    let s = imp.g.values[x].shape.clone();
    imp.emit(n, COp::Unary(op), vec![x], s)?;
    Ok(())
}

fn fold(imp: &Importer, n: &pb::NodeProto, _: &Attrs) -> Result<Vec<HostTensor>> {
    let op = n.op_type.as_str();
    let t = imp.konst(&n.input[0])?;
    if t.is_i64() && matches!(op, "Neg" | "Abs" | "Relu") {
        let v = t.as_i64();
        let f = |x: i64| match op {
            "Neg" => -x,
            "Abs" => x.abs(),
            _ => x.max(0),
        };
        return Ok(vec![HostTensor::i64(
            t.shape.clone(),
            v.into_iter().map(f).collect(),
        )]);
    }
    let f = |x: f32| match op {
        "Sqrt" => x.sqrt(),
        "Neg" => -x,
        "Floor" => x.floor(),
        "Ceil" => x.ceil(),
        "Exp" => x.exp(),
        "Relu" => x.max(0.0),
        "Sigmoid" => 1.0 / (1.0 + (-x).exp()),
        "Abs" => x.abs(),
        _ => 1.0 / x,
    };
    Ok(vec![HostTensor::f32(
        t.shape.clone(),
        t.as_f32().into_iter().map(f).collect(),
    )])
}

/// Rewrites `Mul(x, Sigmoid(x))` into one SiLU so int8 runs it as one table.
pub(crate) fn fuse_silu(g: &mut CGraph) {
    let uses = g.use_counts();
    let prod = g.producer();
    let mut dead = vec![];
    for i in 0..g.nodes.len() {
        if let COp::Binary(BinaryOp::Mul) = g.nodes[i].op {
            let (a, b) = (g.nodes[i].inputs[0], g.nodes[i].inputs[1]);
            for (x, s) in [(a, b), (b, a)] {
                if let Some(p) = prod[s] {
                    if g.nodes[p].op == COp::Unary(UnaryOp::Sigmoid)
                        && g.nodes[p].inputs[0] == x
                        && uses[s] == 1
                    {
                        g.nodes[i].op = COp::Unary(UnaryOp::Silu);
                        g.nodes[i].inputs = vec![x];
                        dead.push(p);
                        break;
                    }
                }
            }
        }
    }
    g.remove_dead();
}

/// `COp::Unary`.
pub(crate) struct Unary;

impl IrOp for Unary {
    fn name(&self) -> &'static str {
        "Unary"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let kind = *fields!(n, COp::Unary(kind) => kind);
        Op::Unary {
            kind: match kind {
                UnaryOp::Clip { min, max } => UnaryOp::Clip {
                    min: fin(min),
                    max: fin(max),
                },
                k => k,
            },
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
    /// One 256-entry table from the input's codes to the output's.
    fn int8(&self, cx: &mut Int8Cx, n: &CNode) -> Result<Int8Node> {
        let u = *fields!(n, COp::Unary(u) => u);
        let (x, xq) = cx.i8_input(n.inputs[0])?;
        let oq = cx.quant_of(n.output)?;
        let table = k::build_lut(u, xq.scale, xq.zero_point, oq.scale, oq.zero_point);
        let name = &cx.cg.values[n.output].name;
        let tt = cx.b.const_i8(&format!("{name}#lut"), &[256], &table);
        Ok(Int8Node {
            op: Op::Lut,
            inputs: vec![x, tt],
            quant: Some(oq),
        })
    }
    fn flow(&self, _: &mut Flow, _: usize, _: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        ins.first().cloned().flatten()
    }
    fn prune(&self, _: &mut Prune, _: usize, _: &CNode, k0: Kept) -> Kept {
        k0
    }
}
