//! Gemm and MatMul (`COp::Gemm`: `x[batch, m, k] @ w[k, n] + b`, with a
//! fused output clamp). Int8 when the weights are constant and unbatched:
//! per-output-channel weights (`QGemm`), or an f32 output (`QGemmF32`) when
//! only f32 ops read the result. Pruning: a gemm with constant weights
//! produces prunable channels (its last axis).

use super::{fields, IrOp, Layer, OnnxOp};
use crate::ir::{Act, CGraph, CNode, COp, HostTensor};
use crate::lower::{act_bounds, fin, requant_table, weight_consts, Int8Cx, Int8Node};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{slice_axis, Chan, Flow, Kept, Prune};
use anyhow::{bail, Context, Result};
use strix_kernels::reference::QGemmParams;
use strix_runtime::graph::{DType, Op};
use strix_runtime::validate::MAX_QS8_REDUCTION;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new("Gemm", Some(gemm), None).inputs(|_| 2),
    OnnxOp::new("MatMul", Some(|i, n, _| matmul(i, n)), None).inputs(|_| 2),
];

fn gemm(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let xs = imp.shape(&n.input[0])?;
    let (ta, tb) = (a.int("transA", 0) != 0, a.int("transB", 0) != 0);
    let (alpha, beta) = (a.float("alpha", 1.0), a.float("beta", 1.0));
    if ta || xs.len() != 2 {
        bail!("Gemm with transA or a non-2-D input {xs:?} is not supported");
    }
    let w = imp
        .konst(&n.input[1])
        .context("Gemm with non-constant B is not supported")?
        .clone();
    if w.shape.len() != 2 {
        bail!("Gemm B must be 2-D");
    }
    let (k, nn) = if tb {
        (w.shape[1], w.shape[0])
    } else {
        (w.shape[0], w.shape[1])
    };
    if k != xs[1] {
        bail!("Gemm shapes {xs:?} x {:?} do not match", w.shape);
    }
    let wf = w.as_f32();
    // Stored as [k][n] (the f32 kernel's layout), scaled by alpha.
    let mut kn = vec![0f32; k * nn];
    for i in 0..k {
        for j in 0..nn {
            kn[i * nn + j] = alpha * if tb { wf[j * k + i] } else { wf[i * nn + j] };
        }
    }
    let bias: Vec<f32> = match imp.opt_konst(n, 2)? {
        Some(c) => {
            let cv = c.as_f32();
            if cv.len() == nn {
                cv.iter().map(|v| v * beta).collect()
            } else if cv.len() == 1 {
                vec![cv[0] * beta; nn]
            } else {
                bail!("Gemm bias of shape {:?} is not supported", c.shape)
            }
        }
        None => vec![0.0; nn],
    };
    let wv = imp.g.add_value(
        &format!("{}#w", n.output[0]),
        vec![k, nn],
        Some(HostTensor::f32(vec![k, nn], kn)),
    );
    let bv = imp.g.add_value(
        &format!("{}#b", n.output[0]),
        vec![nn],
        Some(HostTensor::f32(vec![nn], bias)),
    );
    let x = imp.value(&n.input[0])?;
    imp.emit(
        n,
        COp::Gemm {
            m: xs[0],
            n: nn,
            k,
            batch: 1,
            act: Act::NONE,
        },
        vec![x, wv, bv],
        vec![xs[0], nn],
    )?;
    Ok(())
}

fn matmul(imp: &mut Importer, n: &pb::NodeProto) -> Result<()> {
    let xs = imp.shape(&n.input[0])?;
    let ys = imp.shape(&n.input[1])?;
    if xs.len() < 2 || ys.len() < 2 {
        bail!("MatMul on 1-D operands is not supported");
    }
    let k = xs[xs.len() - 1];
    let m = xs[xs.len() - 2];
    let x = imp.value(&n.input[0])?;
    let y = imp.value(&n.input[1])?;
    if ys[ys.len() - 2] != k {
        bail!("MatMul shapes {xs:?} x {ys:?} do not match");
    }
    let nn = ys[ys.len() - 1];
    let mut out = xs.clone();
    *out.last_mut().unwrap() = nn;
    if imp.g.is_const(y) && ys.len() == 2 {
        // Constant weights: fold the leading axes into m.
        let rows: usize = xs[..xs.len() - 1].iter().product();
        let bv = imp.g.add_value(
            &format!("{}#b", n.output[0]),
            vec![nn],
            Some(HostTensor::f32(vec![nn], vec![0.0; nn])),
        );
        let wk = imp.g.values[y].konst.clone().unwrap();
        imp.g.values[y].konst = Some(HostTensor::f32(wk.shape.clone(), wk.as_f32()));
        imp.emit(
            n,
            COp::Gemm {
                m: rows,
                n: nn,
                k,
                batch: 1,
                act: Act::NONE,
            },
            vec![x, y, bv],
            out,
        )?;
    } else {
        let bx: usize = xs[..xs.len() - 2].iter().product();
        let by: usize = ys[..ys.len() - 2].iter().product();
        if by != 1 && by != bx {
            bail!("MatMul batch broadcasting {xs:?} x {ys:?} is not supported");
        }
        let _ = m;
        imp.emit(
            n,
            COp::Gemm {
                m,
                n: nn,
                k,
                batch: bx,
                act: Act::NONE,
            },
            vec![x, y],
            out,
        )?;
    }
    Ok(())
}

/// `COp::Gemm`.
pub(crate) struct Gemm;

/// Whether the gemm's weights are a constant (with a bias): its int8 form.
fn const_weights(cg: &CGraph, n: &CNode) -> bool {
    n.inputs.len() == 3 && cg.is_const(n.inputs[1])
}

impl IrOp for Gemm {
    fn name(&self) -> &'static str {
        "Gemm"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (m, nn, k, batch, act) =
            fields!(n, COp::Gemm { m, n, k, batch, act } => (m, n, k, batch, act));
        Op::Gemm {
            m: *m,
            n: *nn,
            k: *k,
            batch: *batch,
            act_min: fin(act.min),
            act_max: fin(act.max),
        }
    }

    /// The runtime's count (`Op::macs`).
    fn macs(&self, _: &CGraph, n: &CNode) -> u64 {
        self.f32_op(n).macs(1)
    }

    fn layer(&self, cg: &CGraph, n: &CNode) -> Option<Layer> {
        let (nn, k) = fields!(n, COp::Gemm { n, k, .. } => (*n, *k));
        Some(Layer {
            out: nn,
            inp: k,
            taps: 1,
            groups: 1,
            chan_last: true,
            const_w: n.inputs.len() >= 2 && cg.is_const(n.inputs[1]),
        })
    }

    fn wants_int8(&self, cg: &CGraph, n: &CNode, _: &[Option<DType>]) -> bool {
        let (k, batch) = fields!(n, COp::Gemm { k, batch, .. } => (k, batch));
        const_weights(cg, n) && *k <= MAX_QS8_REDUCTION && *batch == 1
    }

    fn f32_only(&self, cg: &CGraph, n: &CNode) -> bool {
        !const_weights(cg, n)
    }

    fn has_f32_output(&self) -> bool {
        true
    }

    fn int8(&self, cx: &mut Int8Cx, n: &CNode) -> Result<Int8Node> {
        let (m, nn, kk, act) = fields!(n, COp::Gemm { m, n, k, act, .. } => (*m, *n, *k, act));
        let cg = cx.cg;
        let ov = &cg.values[n.output];
        let (x, xq) = cx.i8_input(n.inputs[0])?;
        if cx.f32_output {
            let (wt, bt, ws) = weight_consts(&mut cx.b, cg, n, nn, Some((kk, nn)), xq.scale);
            let sc: Vec<f32> = ws.iter().map(|&s| s * xq.scale).collect();
            let st = cx.b.const_f32(&format!("{}#scale", ov.name), &[nn], &sc);
            let op = Op::QGemmF32 {
                m,
                n: nn,
                k: kk,
                in_zp: xq.zero_point,
                act_min: fin(act.min),
                act_max: fin(act.max),
            };
            return Ok(Int8Node {
                op,
                inputs: vec![x, wt, bt, st],
                quant: None,
            });
        }
        let oq = cx.quant_of(n.output)?;
        let (wt, bt, ws) = weight_consts(&mut cx.b, cg, n, nn, Some((kk, nn)), xq.scale);
        let rt = cx.b.const_i32(
            &format!("{}#rq", ov.name),
            &[nn, 2],
            &requant_table(xq.scale, &ws, oq.scale),
        );
        let (act_min, act_max) = act_bounds(*act, oq);
        let q = QGemmParams {
            in_zp: xq.zero_point,
            out_zp: oq.zero_point,
            act_min,
            act_max,
        };
        Ok(Int8Node {
            op: Op::QGemm { m, n: nn, k: kk, q },
            inputs: vec![x, wt, bt, rt],
            quant: Some(oq),
        })
    }

    fn f16_weight_slots(&self) -> &'static [usize] {
        &[1]
    }

    /// A gemm with constant weights (and bias) produces prunable channels on
    /// its last axis, reading its input's channels on their last axis.
    fn flow(&self, cx: &mut Flow, ni: usize, n: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        let nout = fields!(n, COp::Gemm { n, .. } => *n);
        let in0 = ins.first().cloned().flatten();
        let g = cx.g;
        let konst_ok = |v: usize| g.values[v].konst.is_some();
        let wconst = n.inputs.len() >= 2 && konst_ok(n.inputs[1]);
        let bias_ok = n.inputs.len() < 3 || konst_ok(n.inputs[2]);
        let x_rank = g.values[n.inputs[0]].shape.len();
        if wconst && bias_ok {
            if in0.as_ref().is_some_and(|c| c.axis + 1 != x_rank) {
                cx.poison(&in0);
            }
            cx.produces(ni);
            Some(Chan {
                axis: g.values[n.output].shape.len() - 1,
                segs: vec![(ni, nout)],
            })
        } else {
            cx.poison_all(ins);
            None
        }
    }

    /// Input channels removed: the weights (`[k][n]`) lose those rows
    /// (refitted when `cx` has statistics); output channels removed: the
    /// weights lose those columns and the bias those values.
    fn prune(&self, cx: &mut Prune, ni: usize, n: &CNode, k0: Kept) -> Kept {
        let (m, mut nn, mut k, batch, act) =
            fields!(n, COp::Gemm { m, n, k, batch, act } => (*m, *n, *k, *batch, *act));
        let o = n.output;
        let mut out: Kept = None;
        if let Some((_, ks, _)) = &k0 {
            cx.consumer(ni, ks.clone());
            let w = cx.konst(cx.g.nodes[ni].inputs[1]).clone();
            let refit = if cx.g.nodes[ni].inputs.len() >= 3 {
                let b = cx.konst(cx.g.nodes[ni].inputs[2]).as_f32();
                cx.refit(ni, ks, &w, &b)
            } else {
                None
            };
            match refit {
                Some((nw, nb)) => {
                    let bl = nb.len();
                    cx.set_const(ni, 1, nw);
                    cx.set_const(ni, 2, HostTensor::f32(vec![bl], nb));
                }
                None => cx.set_const(ni, 1, slice_axis(&w, 0, ks)),
            }
            k = ks.len();
        }
        if let Some(ks) = cx.output_keep(ni) {
            let w = slice_axis(cx.konst(cx.g.nodes[ni].inputs[1]), 1, ks);
            cx.set_const(ni, 1, w);
            if cx.g.nodes[ni].inputs.len() >= 3 {
                let b = slice_axis(cx.konst(cx.g.nodes[ni].inputs[2]), 0, ks);
                cx.set_const(ni, 2, b);
            }
            out = Some((cx.g.values[o].shape.len() - 1, ks.to_vec(), nn));
            nn = ks.len();
        }
        cx.g.nodes[ni].op = COp::Gemm {
            m,
            n: nn,
            k,
            batch,
            act,
        };
        out
    }
}
