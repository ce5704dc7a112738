//! `QGemm` (int8 `x[m, k] @ w[n, k]^T`, inputs `[x, w (i8), bias (i32),
//! requant]`) and `QGemmF32` (the same with f32 output, inputs `[x, w (i8),
//! bias (i32), scale (f32)]`). Both run the kernel path's NT gemm with the
//! input zero point folded into the bias at prepare (the reference kernel
//! when a folded value would leave the kernels' bound); a fully connected
//! layer with one input row splits its output channels over the threads.

use super::ctx::{act_ok, bias_ok, qact_ok, want, zp_ok, Ctx, Res, Run};
use super::gemm::sizes_ok;
use super::Prep;
use crate::graph::DType;
use crate::par::{split_channels, Workers};
use crate::pool::SharedOut;
use crate::validate::MAX_QS8_REDUCTION;
use strix_kernels::driver::fold_bias;
use strix_kernels::reference::{self as k, QGemmParams, QOut};
use strix_kernels::table::KernelSet;
use strix_kernels::Requant;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "QGemm";
/// The f32-output form's name in `inspect` and errors.
pub(crate) const F32OUT_NAME: &str = "QGemmF32";

pub(super) fn validate(cx: &Ctx, (m, n, k): (usize, usize, usize), q: &QGemmParams) -> Res {
    cx.arity(4, 4)?;
    cx.dtype(0, DType::I8)?;
    cx.dtype(1, DType::I8)?;
    cx.dtype(2, DType::I32)?;
    cx.out_dtype(DType::I8)?;
    sizes_ok(cx.input(0), cx.input(1), cx.output(), 1, m, n, k)?;
    want(cx.is_const(1), || "weights must be constant".into())?;
    want(cx.is_const(2) && cx.input(2).len() == n, || {
        "bias size".into()
    })?;
    cx.requant(3, n)?;
    want(k <= MAX_QS8_REDUCTION, || {
        "reduction exceeds the int8 bound".into()
    })?;
    want(zp_ok(q.in_zp) && zp_ok(q.out_zp), || {
        "bad zero point".into()
    })?;
    qact_ok(q.act_min, q.act_max)
}

pub(super) fn validate_f32out(
    cx: &Ctx,
    (m, n, k): (usize, usize, usize),
    in_zp: i32,
    act_min: f32,
    act_max: f32,
) -> Res {
    cx.arity(4, 4)?;
    cx.dtype(0, DType::I8)?;
    cx.dtype(1, DType::I8)?;
    cx.dtype(2, DType::I32)?;
    cx.dtype(3, DType::F32)?;
    cx.out_dtype(DType::F32)?;
    sizes_ok(cx.input(0), cx.input(1), cx.output(), 1, m, n, k)?;
    want(cx.is_const(1), || "weights must be constant".into())?;
    want(
        cx.is_const(2) && cx.input(2).len() == n && cx.input(3).len() == n,
        || "bias/scale size".into(),
    )?;
    want(k <= MAX_QS8_REDUCTION, || {
        "reduction exceeds the int8 bound".into()
    })?;
    want(zp_ok(in_zp), || "bad zero point".into())?;
    act_ok(act_min, act_max)?;
    bias_ok(cx.c, cx.input(2))
}

/// For both variants: the folded bias (`None` if a folded value leaves the
/// kernels' bound: `run` then takes the reference kernel).
pub(super) fn prepare(cx: &Ctx, k: usize, in_zp: i32) -> Prep {
    Prep {
        packed: None,
        folded: cx
            .const_i8(1)
            .zip(cx.const_i32(2))
            .and_then(|(w, b)| fold_bias(w, b, k, in_zp)),
        ..Prep::default()
    }
}

pub(super) fn run(
    r: &Run,
    wk: &mut Workers,
    (m, n, kk): (usize, usize, usize),
    q: &QGemmParams,
    o: &mut [i8],
) -> Res {
    let (x, w, b, rq) = (r.i8(0)?, r.i8(1)?, r.i32(2)?, r.requant(3)?);
    match r.folded {
        Some(fb) => {
            let qo = QOut {
                out_zp: q.out_zp,
                act_min: q.act_min,
                act_max: q.act_max,
            };
            gemm_i8(wk, r.ks, (m, n, kk), w, x, fb, rq, &qo, o)
        }
        None => {
            k::qs8_gemm(m, n, kk, q, x, w, b, rq, o);
            Ok(())
        }
    }
}

pub(super) fn run_f32out(
    r: &Run,
    (m, n, kk): (usize, usize, usize),
    in_zp: i32,
    (act_min, act_max): (f32, f32),
    o: &mut [f32],
) -> Res {
    let (x, w, b, sc) = (r.i8(0)?, r.i8(1)?, r.i32(2)?, r.f32(3)?);
    match r.folded {
        // Rows of the NT gemm are output channels, columns the input rows.
        Some(fb) => (r.ks.gemm_nt_f32out.run)(n, m, kk, w, x, fb, sc, act_min, act_max, o, 1, n),
        None => k::qs8_gemm_f32out(m, n, kk, in_zp, act_min, act_max, x, w, b, sc, o),
    }
    Ok(())
}

/// An int8 fully connected layer with one input row (`m == 1`), split by
/// output channel; other shapes run on the calling thread.
#[allow(clippy::too_many_arguments)]
fn gemm_i8(
    wk: &mut Workers,
    ks: &KernelSet,
    (m, n, k): (usize, usize, usize),
    w: &[i8],
    x: &[i8],
    fb: &[i32],
    rq: &[Requant],
    qo: &QOut,
    out: &mut [i8],
) -> Res {
    let Some(pool) = wk.pool_for(if m == 1 { n * k } else { 0 }) else {
        (ks.gemm_nt.run)(n, m, k, w, x, fb, rq, qo, out, 1, n);
        return Ok(());
    };
    let dst = SharedOut(out.as_mut_ptr());
    split_channels(pool, n, 1, &|c0, c1| {
        // SAFETY: with one input row, outputs c0..c1 are this piece's alone.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(c0), c1 - c0) };
        (ks.gemm_nt.run)(
            c1 - c0,
            1,
            k,
            &w[c0 * k..c1 * k],
            x,
            &fb[c0..c1],
            &rq[c0..c1],
            qo,
            o,
            1,
            c1 - c0,
        );
    })
}

#[cfg(test)]
mod tests {
    use crate::graph::{Node, Op};
    use crate::ops::test_graph::{assert_varied, codes, noise_i8, q, run, TestGraph};
    use strix_kernels::quantize_multiplier;
    use strix_kernels::reference::{self as k, QGemmParams};

    /// `x -> Quantize -> QGemm or QGemmF32`: one input row split by output
    /// channel over the threads (n * k above the threshold), several rows
    /// on the calling thread; the bytes of the reference, and the folded
    /// bias prepare made.
    #[test]
    fn qgemm_validates_prepares_and_runs() {
        for (m, n, kk) in [(1, 256, 512), (3, 10, 40)] {
            for f32_out in [false, true] {
                let qp = QGemmParams {
                    in_zp: -9,
                    out_zp: 4,
                    act_min: -128,
                    act_max: 100,
                };
                let w = noise_i8(n * kk, 1, -127, 127);
                let b: Vec<i32> = noise_i8(n, 2, -128, 127)
                    .iter()
                    .map(|&v| v as i32 * 30)
                    .collect();
                let rq: Vec<_> = (0..n)
                    .map(|o| quantize_multiplier(0.0003 * (o % 5 + 1) as f64))
                    .collect();
                let sc: Vec<f32> = (0..n).map(|o| 1e-5 * (o % 3 + 1) as f32).collect();
                let mut t = TestGraph::new();
                let xi = t.input_i8(&[m, kk], q(qp.in_zp));
                let wi = t.const_i8(&[n, kk], &w);
                let bi = t.const_i32(&[n], &b);
                if f32_out {
                    let si = t.const_f32(&[n], &sc);
                    let y = t.act_f32(&[m, n]);
                    let op = Op::QGemmF32 {
                        m,
                        n,
                        k: kk,
                        in_zp: qp.in_zp,
                        act_min: -2.0,
                        act_max: 2.0,
                    };
                    t.node(op, &[xi, wi, bi, si], y);
                } else {
                    let ri = t.const_requant(&rq);
                    let y = t.act_i8(&[m, n], q(qp.out_zp));
                    t.node(Op::QGemm { m, n, k: kk, q: qp }, &[xi, wi, bi, ri], y);
                }
                let model = t.load().unwrap();
                let fold = strix_kernels::driver::fold_bias(&w, &b, kk, qp.in_zp);
                assert!(fold.is_some());
                assert_eq!(model.prepared.folded[1], fold);
                let x = noise_i8(m * kk, 3, -128, 127);
                let got = run(&model, &[&codes(&x, q(qp.in_zp))]);
                if f32_out {
                    let mut want = vec![0.0; m * n];
                    k::qs8_gemm_f32out(m, n, kk, qp.in_zp, -2.0, 2.0, &x, &w, &b, &sc, &mut want);
                    assert_varied(&want, 10);
                    assert_eq!(got.f32(), want, "{m}x{n}x{kk}");
                } else {
                    let mut want = vec![0; m * n];
                    k::qs8_gemm(m, n, kk, &qp, &x, &w, &b, &rq, &mut want);
                    assert_varied(&want, 10);
                    assert_eq!(got.i8(), want, "{m}x{n}x{kk}");
                }

                // Weights must be constants (prepare folds them), not
                // computed.
                let mut bad = t.clone();
                let wf = bad.input(&[n, kk]);
                let wa = bad.act_i8(&[n, kk], q(0));
                bad.g.nodes.insert(
                    0,
                    Node {
                        name: "w".into(),
                        op: Op::Quantize,
                        inputs: vec![wf],
                        output: wa,
                    },
                );
                bad.last().inputs[1] = wa;
                let e = bad.load_err();
                assert!(e.contains("weights must be constant"), "{e}");
            }
        }
    }
}
