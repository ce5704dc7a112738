//! `Concat` along `axis`, f32 or int8; an int8 input whose quantization
//! differs from the output's is requantized while copied (`requant[i]`,
//! `None` for a plain copy).

use super::ctx::{rq_sane, want, Ctx, Out, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;
use strix_kernels::Requant;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Concat";

pub(super) fn validate(cx: &Ctx, axis: usize, requant: &[Option<Requant>]) -> Res {
    let out = cx.output();
    cx.arity(1, 4096)?;
    want(requant.len() == cx.n.inputs.len(), || {
        "one requantization per input".into()
    })?;
    let r = out.shape.len();
    want(axis < r, || "axis out of range".into())?;
    let mut sum = 0usize;
    for (k, rq) in requant.iter().enumerate() {
        cx.dtype(k, out.dtype)?;
        let s = &cx.input(k).shape;
        want(s.len() == r, || "rank mismatch".into())?;
        for d in 0..r {
            want(d == axis || s[d] == out.shape[d], || {
                format!("input {k} shape {s:?} vs {:?}", out.shape)
            })?;
        }
        sum = s[axis]
            .checked_add(sum)
            .ok_or_else(|| "concat sizes overflow".to_string())?;
        if let Some(rq) = *rq {
            want(
                out.dtype == DType::I8 && rq_sane(rq) && rq.shift <= 8,
                || "bad requantization".into(),
            )?;
        }
    }
    want(sum == out.shape[axis], || {
        "concat sizes do not add up".into()
    })
}

pub(super) fn run(r: &Run, axis: usize, requant: &[Option<Requant>], out: Out) -> Res {
    let oshape = &r.out.shape;
    let outer: usize = oshape[..axis].iter().product();
    let inner: usize = oshape[axis + 1..].iter().product();
    let mut off = 0;
    match out {
        Out::F32(o) => {
            for kx in 0..r.n.inputs.len() {
                let ax = r.shape(kx)[axis];
                k::concat(r.f32(kx)?, outer, ax, inner, oshape[axis], off, o);
                off += ax;
            }
        }
        Out::I8(o) => {
            let ozp = r.out.quant.map(|q| q.zero_point).unwrap_or(0);
            for (kx, rq) in requant.iter().enumerate() {
                let ax = r.shape(kx)[axis];
                let x = r.i8(kx)?;
                match *rq {
                    None => k::concat(x, outer, ax, inner, oshape[axis], off, o),
                    Some(rq) => {
                        let izp = r.input(kx).quant.map(|q| q.zero_point).unwrap_or(0);
                        let chunk = ax * inner;
                        for b in 0..outer {
                            let dst = b * oshape[axis] * inner + off * inner;
                            (r.ks.requantize_copy.run)(
                                &x[b * chunk..(b + 1) * chunk],
                                izp,
                                rq,
                                ozp,
                                &mut o[dst..dst + chunk],
                            );
                        }
                    }
                }
                off += ax;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::{Op, Quant};
    use crate::ops::test_graph::{codes, noise_i8, q, run, TestGraph};
    use strix_kernels::quantize_multiplier;

    /// f32 `[2, 2, 1] ++ [2, 1, 1]` along axis 1, by hand.
    #[test]
    fn f32_concat_validates_prepares_and_runs() {
        let mut t = TestGraph::new();
        let (a, b) = (t.input(&[2, 2, 1]), t.input(&[2, 1, 1]));
        let y = t.act_f32(&[2, 3, 1]);
        let op = Op::Concat {
            axis: 1,
            requant: vec![None, None],
        };
        t.node(op, &[a, b], y);
        let got = run(&t.load().unwrap(), &[&[1.0, 2.0, 3.0, 4.0], &[-1.0, -2.0]]).f32();
        assert_eq!(got, [1.0, 2.0, -1.0, 3.0, 4.0, -2.0]);

        let mut bad = t.clone();
        bad.g.tensors[y].shape = vec![2, 4, 1];
        assert!(bad.load_err().contains("concat sizes do not add up"));
    }

    /// int8 `[2, 2, 3] ++ [2, 1, 3]` along axis 1: the first input shares
    /// the output's quantization (copied), the second has half its scale
    /// (requantized: each code within one step of its real value).
    #[test]
    fn int8_concat_validates_prepares_and_runs() {
        let (qa, qb) = (
            q(3),
            Quant {
                scale: 1.0 / 32.0,
                zero_point: -4,
            },
        );
        let rq = quantize_multiplier((qb.scale / qa.scale) as f64);
        let mut t = TestGraph::new();
        let (ai, bi) = (t.input_i8(&[2, 2, 3], qa), t.input_i8(&[2, 1, 3], qb));
        let y = t.act_i8(&[2, 3, 3], qa);
        let op = Op::Concat {
            axis: 1,
            requant: vec![None, Some(rq)],
        };
        t.node(op, &[ai, bi], y);
        let (a, b) = (noise_i8(12, 1, -128, 127), noise_i8(6, 2, -128, 127));
        let got = run(&t.load().unwrap(), &[&codes(&a, qa), &codes(&b, qb)]).i8();
        for outer in 0..2 {
            let row = &got[outer * 9..(outer + 1) * 9];
            assert_eq!(row[..6], a[outer * 6..(outer + 1) * 6]);
            for (&o, &x) in row[6..].iter().zip(&b[outer * 3..(outer + 1) * 3]) {
                let want = (x as i32 - qb.zero_point) as f32 * qb.scale;
                let have = (o as i32 - qa.zero_point) as f32 * qa.scale;
                assert!((want - have).abs() <= qa.scale / 2.0 + 1e-6, "{x} -> {o}");
            }
        }

        // Requantization only exists for int8.
        let mut bad = t.clone();
        let Op::Concat { requant, .. } = &mut bad.last().op else {
            unreachable!()
        };
        requant[1] = Some(strix_kernels::Requant { mult: -1, shift: 0 });
        assert!(bad.load_err().contains("bad requantization"));
    }
}
