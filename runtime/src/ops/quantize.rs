//! `Quantize`: f32 -> int8 with the output's quantization.

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(1, 1)?;
    cx.dtype(0, DType::F32)?;
    cx.out_dtype(DType::I8)?;
    want(cx.input(0).len() == cx.output().len(), || {
        "size mismatch".into()
    })
}

pub(super) fn run(r: &Run, o: &mut [i8]) -> Res {
    // Every int8 activation has a quantization (validated at load).
    let q = r.out.quant.ok_or("missing quantization")?;
    k::qs8_quantize(r.f32(0)?, q.scale, q.zero_point, o);
    Ok(())
}
