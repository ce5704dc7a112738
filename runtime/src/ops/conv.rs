//! `Conv`: f32 2-D convolution (1-D as height 1), inputs `[x, w, bias]`, one
//! geometry per batch element; small convs (few positions, long
//! reductions) run through im2col in f32 scratch. Also the geometry checks
//! every conv variant shares (`qconv`, `qconv_sparse`).

use super::ctx::{act_ok, axis_ok, macs_of, want, Ctx, Res, Run};
use super::Prep;
use crate::graph::{DType, Tensor};
use crate::par::Workers;
use strix_kernels::driver::CONV_TILE;
use strix_kernels::reference::{self as k, ConvGeometry};

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Conv";

/// Multiply-accumulates of a conv of `geom` over `batch` images: the dense
/// layer's work (the conv variants all count this way).
pub(crate) fn macs(geom: &ConvGeometry, batch: usize) -> u64 {
    let g = geom;
    macs_of(&[
        g.out_c,
        g.out_h,
        g.out_w,
        g.in_c.checked_div(g.groups).unwrap_or(0),
        g.kh,
        g.kw,
        batch,
    ])
}

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
        packed: None,
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

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{assert_varied, conv_geom, run, small_f32, TestGraph};
    use strix_kernels::reference::ConvGeometry;

    /// The convolution by its definition, one output at a time.
    fn by_hand(g: &ConvGeometry, x: &[f32], w: &[f32], b: &[f32], act: (f32, f32)) -> Vec<f32> {
        let (cin_g, cout_g) = (g.in_c / g.groups, g.out_c / g.groups);
        let mut out = vec![0.0; g.output_len()];
        for oc in 0..g.out_c {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut acc = b[oc];
                    for icg in 0..cin_g {
                        let ic = oc / cout_g * cin_g + icg;
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy =
                                    (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                                let ix =
                                    (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= g.in_h as isize
                                    || ix >= g.in_w as isize
                                {
                                    continue;
                                }
                                let xv = x[(ic * g.in_h + iy as usize) * g.in_w + ix as usize];
                                acc += xv * w[((oc * cin_g + icg) * g.kh + ky) * g.kw + kx];
                            }
                        }
                    }
                    out[(oc * g.out_h + oy) * g.out_w + ox] = acc.max(act.0).min(act.1);
                }
            }
        }
        out
    }

    /// An ungrouped conv (the im2col path, its scratch sized by prepare) and
    /// a depthwise one (the direct loop), batch 2, clamped, against the
    /// definition; integer-valued data keeps every sum exact.
    #[test]
    fn f32_conv_validates_prepares_and_runs() {
        for (geom, im2col) in [
            (conv_geom(3, 6, 4, 3, 1, 1), true),
            (conv_geom(4, 7, 4, 3, 2, 4), false),
        ] {
            let (batch, act) = (2, (-20.0, 30.0));
            let mut t = TestGraph::new();
            let x = t.input(&[batch, geom.in_c, geom.in_h, geom.in_w]);
            let w = small_f32(geom.weight_len(), 1);
            let b = small_f32(geom.out_c, 2);
            let wi = t.const_f32(&[geom.out_c, geom.in_c / geom.groups, 3, 3], &w);
            let bi = t.const_f32(&[geom.out_c], &b);
            let y = t.act_f32(&[batch, geom.out_c, geom.out_h, geom.out_w]);
            t.node(
                Op::Conv {
                    geom,
                    act_min: act.0,
                    act_max: act.1,
                },
                &[x, wi, bi],
                y,
            );
            let model = t.load().unwrap();
            let col = geom.out_h * geom.out_w * geom.k();
            assert_eq!(model.prepared.scratch_f32, if im2col { col } else { 0 });
            let xs = small_f32(batch * geom.input_len(), 3);
            let got = run(&model, &[&xs]).f32();
            let il = geom.input_len();
            let want: Vec<f32> = (0..batch)
                .flat_map(|bi| by_hand(&geom, &xs[bi * il..(bi + 1) * il], &w, &b, act))
                .collect();
            assert_eq!(got, want, "{geom:?}");
            assert_varied(&got, 20);
            assert!(got.contains(&act.0) || got.contains(&act.1), "clamp unused");

            // Validation: the weights must be what the geometry says.
            let mut bad = t.clone();
            bad.g.tensors[wi].shape[0] -= 1;
            assert!(bad.load_err().contains("weights/bias size"));
        }
    }
}
