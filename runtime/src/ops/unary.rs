//! `Unary`: an f32 elementwise activation (relu, sigmoid, tanh, ...).

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, UnaryOp};

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(1, 1)?;
    cx.dtype(0, DType::F32)?;
    cx.out_dtype(DType::F32)?;
    want(cx.input(0).len() == cx.output().len(), || {
        "size mismatch".into()
    })
}

pub(super) fn run(r: &Run, kind: UnaryOp, o: &mut [f32]) -> Res {
    k::f32_unary(kind, r.f32(0)?, o);
    Ok(())
}
