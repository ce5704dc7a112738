//! `Softmax`: f32 softmax over the middle axis of `[outer, axis, inner]`.
//! Also the extent check `reduce_mean` shares.

use super::ctx::{mul, want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;

pub(super) fn validate(cx: &Ctx, outer: usize, axis: usize, inner: usize) -> Res {
    let total = extents_ok(cx, outer, axis, inner)?;
    want(cx.output().len() == total, || "output size mismatch".into())
}

pub(super) fn run(r: &Run, (outer, axis, inner): (usize, usize, usize), o: &mut [f32]) -> Res {
    k::f32_softmax(r.f32(0)?, outer, axis, inner, o);
    Ok(())
}

/// One f32 input of `outer x axis x inner` elements (all non-zero, the
/// product checked) and an f32 output; returns the product.
pub(super) fn extents_ok(cx: &Ctx, outer: usize, axis: usize, inner: usize) -> Res<usize> {
    cx.arity(1, 1)?;
    cx.dtype(0, DType::F32)?;
    cx.out_dtype(DType::F32)?;
    want(outer > 0 && axis > 0 && inner > 0, || {
        format!("empty extent {outer} x {axis} x {inner}")
    })?;
    let total = mul(
        "outer x axis x inner",
        mul("outer x axis", outer, axis)?,
        inner,
    )?;
    want(cx.input(0).len() == total, || {
        format!(
            "input {:?} is not {outer} x {axis} x {inner}",
            cx.input(0).shape
        )
    })?;
    Ok(total)
}
