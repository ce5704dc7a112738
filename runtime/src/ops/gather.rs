//! `Gather` with constant indices along one axis, f32 or int8.

use super::ctx::{want, Ctx, Out, Res, Run};
use strix_kernels::reference as k;

pub(super) fn validate(cx: &Ctx, axis: usize, indices: &[usize]) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    let s = &x.shape;
    want(axis < s.len(), || "axis".into())?;
    want(indices.iter().all(|&i| i < s[axis]), || {
        "index out of range".into()
    })?;
    let mut expect = s.clone();
    expect[axis] = indices.len();
    want(out.shape == expect, || "output shape".into())
}

pub(super) fn run(r: &Run, axis: usize, indices: &[usize], out: Out) -> Res {
    match out {
        Out::F32(o) => k::gather(r.f32(0)?, r.shape(0), axis, indices, o),
        Out::I8(o) => k::gather(r.i8(0)?, r.shape(0), axis, indices, o),
    }
    Ok(())
}
