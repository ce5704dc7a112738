//! `ReduceMean`: f32 mean over the middle axis of `[outer, axis, inner]`,
//! into `[outer, inner]`.

use super::ctx::{want, Ctx, Res, Run};
use super::softmax::extents_ok;
use strix_kernels::reference as k;

pub(super) fn validate(cx: &Ctx, outer: usize, axis: usize, inner: usize) -> Res {
    extents_ok(cx, outer, axis, inner)?;
    // outer * inner <= outer * axis * inner, which did not overflow.
    want(cx.output().len() == outer * inner, || {
        "output size mismatch".into()
    })
}

pub(super) fn run(r: &Run, (outer, axis, inner): (usize, usize, usize), o: &mut [f32]) -> Res {
    k::f32_reduce_mean(r.f32(0)?, outer, axis, inner, o);
    Ok(())
}
