//! `MaxPool` and `AvgPool`, f32 or int8 (the output keeps the input's
//! quantization; the int8 average rounds with the input zero point).

use super::ctx::{axis_ok, mul, want, Ctx, Out, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, PoolGeometry};

/// Most taps an int8 average-pooling window may have (`qs8_avgpool2d`'s
/// documented bound: sums of `|x - zp| <= 255` stay exact in `i32`).
const MAX_QS8_POOL_TAPS: usize = 1 << 23;

pub(super) fn validate(cx: &Ctx, geom: &PoolGeometry, avg: bool) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(geom.is_valid(), || format!("invalid geometry {geom:?}"))?;
    want(x.dtype == out.dtype && out.dtype != DType::I32, || {
        "dtype mismatch".into()
    })?;
    axis_ok(
        "height",
        geom.in_h,
        geom.pad_top,
        geom.kh,
        geom.stride_h,
        1,
        geom.out_h,
    )?;
    axis_ok(
        "width",
        geom.in_w,
        geom.pad_left,
        geom.kw,
        geom.stride_w,
        1,
        geom.out_w,
    )?;
    let (il, ol) = geom
        .checked_input_len()
        .zip(geom.checked_output_len())
        .ok_or_else(|| format!("size of {geom:?} overflows"))?;
    want(x.len() == il && out.len() == ol, || {
        format!(
            "input {:?} / output {:?} do not match the geometry ({il} / {ol} elements)",
            x.shape, out.shape
        )
    })?;
    let taps = mul("pooling window", geom.kh, geom.kw)?;
    if avg && out.dtype == DType::I8 {
        want(taps <= MAX_QS8_POOL_TAPS, || {
            format!("int8 average over {taps} taps exceeds the {MAX_QS8_POOL_TAPS}-tap bound")
        })?;
    }
    if out.dtype == DType::I8 {
        want(x.quant == out.quant, || {
            "int8 pooling must keep quantization".into()
        })?;
    }
    Ok(())
}

pub(super) fn run_max(r: &Run, geom: &PoolGeometry, out: Out) -> Res {
    match out {
        Out::F32(o) => k::f32_pool2d(geom, true, r.f32(0)?, o),
        Out::I8(o) => (r.ks.maxpool2d.run)(geom, r.i8(0)?, o),
    }
    Ok(())
}

pub(super) fn run_avg(r: &Run, geom: &PoolGeometry, out: Out) -> Res {
    match out {
        Out::F32(o) => k::f32_pool2d(geom, false, r.f32(0)?, o),
        Out::I8(o) => {
            let zp = r.input(0).quant.map(|q| q.zero_point).unwrap_or(0);
            (r.ks.avgpool2d.run)(geom, zp, r.i8(0)?, o)
        }
    }
    Ok(())
}
