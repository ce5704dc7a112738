//! `Dequantize`: int8 -> f32 with the input's quantization.

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(1, 1)?;
    cx.dtype(0, DType::I8)?;
    cx.out_dtype(DType::F32)?;
    want(
        cx.input(0).len() == cx.output().len() && cx.input(0).quant.is_some(),
        || "size/quantization".into(),
    )
}

pub(super) fn run(r: &Run, o: &mut [f32]) -> Res {
    let q = r.input(0).quant.ok_or("missing quantization")?;
    k::f32_dequantize(r.i8(0)?, q.scale, q.zero_point, o);
    Ok(())
}
