//! `Resize` of the last two axes (nearest or bilinear, ONNX coordinate
//! modes), f32 or int8 (int8 keeps its quantization and interpolates in
//! fixed point).

use super::ctx::{want, Ctx, Out, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, ResizeGeometry};

pub(super) fn validate(cx: &Ctx, geom: &ResizeGeometry) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    want(
        geom.planes > 0 && geom.in_h > 0 && geom.in_w > 0 && geom.out_h > 0 && geom.out_w > 0,
        || format!("empty geometry {geom:?}"),
    )?;
    let (il, ol) = geom
        .checked_input_len()
        .zip(geom.checked_output_len())
        .ok_or_else(|| format!("size of {geom:?} overflows"))?;
    want(x.len() == il && out.len() == ol, || "size mismatch".into())?;
    if out.dtype == DType::I8 {
        want(x.quant == out.quant, || {
            "int8 resize must keep quantization".into()
        })?;
    }
    Ok(())
}

pub(super) fn run(r: &Run, geom: &ResizeGeometry, out: Out) -> Res {
    match out {
        Out::F32(o) => k::f32_resize(geom, r.f32(0)?, o),
        Out::I8(o) => k::qs8_resize(geom, r.i8(0)?, o),
    }
    Ok(())
}
