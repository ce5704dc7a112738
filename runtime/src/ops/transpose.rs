//! `Transpose`: permutes the axes of an f32 or int8 tensor.

use super::ctx::{want, Ctx, Out, Res, Run};
use strix_kernels::reference as k;
use strix_kernels::shape::MAX_RANK;

pub(super) fn validate(cx: &Ctx, perm: &[usize]) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    let r = x.shape.len();
    let mut seen = [false; MAX_RANK];
    want(perm.len() == r && out.shape.len() == r, || {
        "perm rank".into()
    })?;
    for (i, &p) in perm.iter().enumerate() {
        want(p < r && !seen[p], || "not a permutation".into())?;
        seen[p] = true;
        want(out.shape[i] == x.shape[p], || "output shape".into())?;
    }
    Ok(())
}

pub(super) fn run(r: &Run, perm: &[usize], out: Out) -> Res {
    match out {
        Out::F32(o) => k::transpose(r.f32(0)?, r.shape(0), perm, o),
        Out::I8(o) => k::transpose(r.i8(0)?, r.shape(0), perm, o),
    }
    Ok(())
}
