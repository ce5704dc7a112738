//! Gemm and MatMul (`COp::Gemm`: `x[batch, m, k] @ w[k, n] + b`, with a
//! fused output clamp). Int8 when the weights are constant and unbatched:
//! per-output-channel weights (`QGemm`), or an f32 output (`QGemmF32`) when
//! only f32 ops read the result. Pruning: a gemm with constant weights
//! produces prunable channels (its last axis).

use super::OnnxOp;
use crate::ir::{Act, COp, HostTensor};
use crate::onnx::{Attrs, Importer};
use anyhow::{bail, Context, Result};
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
