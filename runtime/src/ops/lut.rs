//! `Lut`: any int8 unary activation as a 256-entry table (built by the
//! compiler between the input's and the output's quantization), inputs
//! `[x, table (i8, 256)]`.

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(2, 2)?;
    cx.dtype(0, DType::I8)?;
    cx.out_dtype(DType::I8)?;
    want(
        cx.is_const(1) && cx.input(1).dtype == DType::I8 && cx.input(1).len() == 256,
        || "table must be 256 int8".into(),
    )?;
    want(cx.input(0).len() == cx.output().len(), || {
        "size mismatch".into()
    })
}

pub(super) fn run(r: &Run, o: &mut [i8]) -> Res {
    let table: &[i8; 256] = r
        .i8(1)?
        .try_into()
        .map_err(|_| "table must have 256 entries".to_string())?;
    k::qs8_lut(table, r.i8(0)?, o);
    Ok(())
}
