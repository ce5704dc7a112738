//! `Conv`: f32 2-D convolution (1-D as height 1), inputs `[x, w, bias]`, one
//! geometry per batch element; small convs (few positions, long
//! reductions) run through im2col in f32 scratch. Also the geometry checks
//! every conv variant shares (`qconv`, `qconv_sparse`).

use super::ctx::{act_ok, axis_ok, want, Ctx, Res, Run};
use super::Prep;
use crate::graph::{DType, Tensor};
use crate::par::Workers;
use strix_kernels::driver::CONV_TILE;
use strix_kernels::reference::{self as k, ConvGeometry};

pub(super) fn validate(cx: &Ctx, geom: &ConvGeometry, act_min: f32, act_max: f32) -> Res {
    cx.arity(3, 3)?;
    for k in 0..3 {
        cx.dtype(k, DType::F32)?;
    }
    cx.out_dtype(DType::F32)?;
    geometry_ok(geom, cx.input(0), cx.output())?;
    let (wl, _) = sizes(geom)?;
    want(
        cx.input(1).len() == wl && cx.input(2).len() == geom.out_c,
        || "weights/bias size".into(),
    )?;
    act_ok(act_min, act_max)
}

/// The im2col scratch, for the convs that take that path.
pub(super) fn prepare(geom: &ConvGeometry) -> Prep {
    Prep {
        scratch_f32: k::f32_im2col_len(geom).unwrap_or(0),
        ..Prep::default()
    }
}

pub(super) fn run(
    r: &Run,
    wk: &mut Workers,
    geom: &ConvGeometry,
    (act_min, act_max): (f32, f32),
    o: &mut [f32],
) -> Res {
    let (x, w, b) = (r.f32(0)?, r.f32(1)?, r.f32(2)?);
    let (il, ol) = (geom.input_len(), geom.output_len());
    // Prepare sized scratch_f32 for every conv that takes im2col.
    let col = k::f32_im2col_len(geom).and_then(|n| wk.scratch_f32().get_mut(..n));
    match col {
        Some(col) => {
            for bi in 0..r.shape(0)[0] {
                k::f32_conv2d_im2col(
                    geom,
                    &x[bi * il..(bi + 1) * il],
                    w,
                    b,
                    act_min,
                    act_max,
                    col,
                    &mut o[bi * ol..(bi + 1) * ol],
                );
            }
        }
        None => {
            for bi in 0..r.shape(0)[0] {
                k::f32_conv2d(
                    geom,
                    &x[bi * il..(bi + 1) * il],
                    w,
                    b,
                    act_min,
                    act_max,
                    &mut o[bi * ol..(bi + 1) * ol],
                );
            }
        }
    }
    Ok(())
}

/// Geometry and tensors of a conv agree exactly; returns the batch.
pub(super) fn geometry_ok(geom: &ConvGeometry, x: &Tensor, out: &Tensor) -> Res<usize> {
    want(geom.is_valid(), || format!("invalid geometry {geom:?}"))?;
    axis_ok(
        "height",
        geom.in_h,
        geom.pad_top,
        geom.kh,
        geom.stride_h,
        geom.dil_h,
        geom.out_h,
    )?;
    axis_ok(
        "width",
        geom.in_w,
        geom.pad_left,
        geom.kw,
        geom.stride_w,
        geom.dil_w,
        geom.out_w,
    )?;
    // 1-D convs keep their `[N, C, W]` shape (height 1 in the geometry).
    let one_d = x.shape.len() == 3 && out.shape.len() == 3 && geom.in_h == 1 && geom.out_h == 1;
    want(
        one_d || (x.shape.len() == 4 && out.shape.len() == 4),
        || "conv tensors must be 4-D (or 3-D with height 1)".into(),
    )?;
    let batch = x.shape[0];
    let shape = |c: usize, h: usize, w: usize| {
        if one_d {
            vec![batch, c, w]
        } else {
            vec![batch, c, h, w]
        }
    };
    // Whole shapes, not only lengths: every loop bound is then a dimension
    // of a tensor validation has bounded.
    let expect = shape(geom.in_c, geom.in_h, geom.in_w);
    want(x.shape == expect, || {
        format!(
            "input {:?} does not match the geometry ({expect:?})",
            x.shape
        )
    })?;
    let expect = shape(geom.out_c, geom.out_h, geom.out_w);
    want(out.shape == expect, || {
        format!(
            "output {:?} does not match the geometry ({expect:?})",
            out.shape
        )
    })?;
    Ok(batch)
}

/// `geom.weight_len()` and `geom.k()`, checked.
pub(super) fn sizes(geom: &ConvGeometry) -> Res<(usize, usize)> {
    match (geom.checked_weight_len(), geom.checked_k()) {
        (Some(w), Some(k)) => Ok((w, k)),
        _ => Err(format!("weight size of {geom:?} overflows")),
    }
}

/// Output values of one pixel tile of `g` (all channels): the gemm output
/// tile a worker thread needs.
pub(super) fn tile_len(g: &ConvGeometry) -> usize {
    g.out_c * CONV_TILE.min(g.out_h * g.out_w)
}
