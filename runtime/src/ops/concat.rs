//! `Concat` along `axis`, f32 or int8; an int8 input whose quantization
//! differs from the output's is requantized while copied (`requant[i]`,
//! `None` for a plain copy).

use super::ctx::{rq_sane, want, Ctx, Out, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;
use strix_kernels::Requant;

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
