//! `Lstm`: one forward f32 ONNX LSTM layer (gates `i, o, f, c`, sigmoid /
//! tanh / tanh), inputs `[x [seq, batch, input], w [4h, input], r [4h, h],
//! b [4h] (Wb + Rb), h0 [batch, h], c0 [batch, h]]`; the output `[seq + 2,
//! batch, h]` packs `Y`, then `Y_h`, then `Y_c`, so no scratch is needed.

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, LstmGeometry};

pub(super) fn validate(cx: &Ctx, geom: &LstmGeometry) -> Res {
    cx.arity(6, 6)?;
    for k in 0..6 {
        cx.dtype(k, DType::F32)?;
    }
    cx.out_dtype(DType::F32)?;
    // The geometry is untrusted: every size it implies must be computable.
    let mul = |a: usize, b: usize| a.checked_mul(b);
    let sizes = (|| {
        let h4 = mul(4, geom.hidden)?;
        Some((
            mul(mul(geom.seq, geom.batch)?, geom.input)?,
            mul(h4, geom.input)?,
            mul(h4, geom.hidden)?,
            h4,
            mul(geom.batch, geom.hidden)?,
            mul(mul(geom.seq.checked_add(2)?, geom.batch)?, geom.hidden)?,
        ))
    })()
    .ok_or_else(|| format!("geometry {geom:?} overflows"))?;
    let (xl, wl, rl, bl, sl, ol) = sizes;
    want(geom.hidden > 0 && geom.batch > 0 && geom.input > 0, || {
        format!("empty geometry {geom:?}")
    })?;
    let t = |k: usize| cx.input(k);
    want(t(0).len() == xl, || {
        format!(
            "x has {} elements, geometry {geom:?} needs {xl}",
            t(0).len()
        )
    })?;
    want(
        t(1).len() == wl && t(2).len() == rl && t(3).len() == bl,
        || "w/r/b sizes do not match the geometry".into(),
    )?;
    want(t(4).len() == sl && t(5).len() == sl, || {
        format!("initial h/c must have {sl} elements")
    })?;
    let out = cx.output();
    want(out.len() == ol, || {
        format!("output has {} elements, expected {ol}", out.len())
    })
}

pub(super) fn run(r: &Run, geom: &LstmGeometry, o: &mut [f32]) -> Res {
    k::f32_lstm(
        geom,
        r.f32(0)?,
        r.f32(1)?,
        r.f32(2)?,
        r.f32(3)?,
        r.f32(4)?,
        r.f32(5)?,
        o,
    );
    Ok(())
}
