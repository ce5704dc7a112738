//! `Slice`: a strided window of an f32 or int8 tensor (`starts`, `steps`
//! per axis, negative steps walk backwards; the output shape gives the
//! counts).

use super::ctx::{want, Ctx, Out, Res, Run};
use strix_kernels::reference as k;

pub(super) fn validate(cx: &Ctx, starts: &[usize], steps: &[isize]) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    let s = &x.shape;
    let r = s.len();
    want(
        starts.len() == r && steps.len() == r && out.shape.len() == r,
        || "rank".into(),
    )?;
    for d in 0..r {
        if out.shape[d] == 0 {
            continue;
        }
        // In i128: every term fits, so the first and last index are exact.
        let last = starts[d] as i128 + (out.shape[d] as i128 - 1) * steps[d] as i128;
        want(starts[d] < s[d] && last >= 0 && last < s[d] as i128, || {
            format!("axis {d} out of range")
        })?;
    }
    Ok(())
}

pub(super) fn run(r: &Run, starts: &[usize], steps: &[isize], out: Out) -> Res {
    let (shape, oshape) = (r.shape(0), &r.out.shape);
    match out {
        Out::F32(o) => k::slice(r.f32(0)?, shape, starts, steps, oshape, o),
        Out::I8(o) => k::slice(r.i8(0)?, shape, starts, steps, oshape, o),
    }
    Ok(())
}
