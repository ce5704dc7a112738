//! `Pad` with a constant, f32 or int8 (`value` is in the tensor's own
//! domain: a code for int8); `before` per axis, the output shape gives the
//! padding after.

use super::ctx::{want, Ctx, Out, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;

pub(super) fn validate(cx: &Ctx, before: &[usize], value: f32) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    let s = &x.shape;
    want(
        before.len() == s.len() && out.shape.len() == s.len() && !s.is_empty(),
        || "rank".into(),
    )?;
    for d in 0..s.len() {
        want(
            s[d].checked_add(before[d])
                .is_some_and(|end| out.shape[d] >= end),
            || {
                format!(
                    "axis {d}: output {:?} cannot hold input {s:?} after padding {before:?}",
                    out.shape
                )
            },
        )?;
    }
    want(
        value.is_finite() && (out.dtype == DType::F32 || (-128.0..=127.0).contains(&value)),
        || "bad pad value".into(),
    )
}

pub(super) fn run(r: &Run, before: &[usize], value: f32, out: Out) -> Res {
    let (shape, oshape) = (r.shape(0), &r.out.shape);
    match out {
        Out::F32(o) => k::pad_constant(r.f32(0)?, shape, before, oshape, value, o),
        Out::I8(o) => k::pad_constant(r.i8(0)?, shape, before, oshape, value as i8, o),
    }
    Ok(())
}
