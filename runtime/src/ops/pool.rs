//! `MaxPool` and `AvgPool`, f32 or int8 (the output keeps the input's
//! quantization; the int8 average rounds with the input zero point).

use super::ctx::{axis_ok, mul, want, Ctx, Out, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, PoolGeometry};

/// The max pooling's name in `inspect` and errors.
pub(crate) const MAX_NAME: &str = "MaxPool";
/// The average pooling's name in `inspect` and errors.
pub(crate) const AVG_NAME: &str = "AvgPool";

/// Most taps an int8 average-pooling window may have (`qs8_avgpool2d`'s
/// documented bound).
const MAX_QS8_POOL_TAPS: usize = k::QS8_AVGPOOL_MAX_TAPS;

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

#[cfg(test)]
mod tests {
    use crate::graph::{DType, Op};
    use crate::ops::test_graph::{assert_varied, codes, noise_i8, q, run, TestGraph};
    use strix_kernels::reference::{self as k, PoolGeometry};

    fn geom(hw: usize, kk: usize, stride: usize, pad: usize, out: usize) -> PoolGeometry {
        PoolGeometry {
            channels: 1,
            in_h: hw,
            in_w: hw,
            out_h: out,
            out_w: out,
            kh: kk,
            kw: kk,
            stride_h: stride,
            stride_w: stride,
            pad_top: pad,
            pad_left: pad,
            count_include_pad: false,
        }
    }

    fn graph(geom: PoolGeometry, avg: bool, dtype: DType) -> TestGraph {
        let mut t = TestGraph::new();
        let shape = [1, geom.channels, geom.in_h, geom.in_w];
        let oshape = [1, geom.channels, geom.out_h, geom.out_w];
        let (x, y) = match dtype {
            DType::I8 => (t.input_i8(&shape, q(3)), t.act_i8(&oshape, q(3))),
            _ => (t.input(&shape), t.act_f32(&oshape)),
        };
        let op = if avg {
            Op::AvgPool { geom }
        } else {
            Op::MaxPool { geom }
        };
        t.node(op, &[x], y);
        t
    }

    /// f32 on `0..16` as a 4x4 plane, by hand: 2x2 windows with stride 2,
    /// and 3x3 windows with stride 2 and padding 1 averaged over their
    /// in-image taps.
    #[test]
    fn f32_pools_validate_prepare_and_run() {
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let max = graph(geom(4, 2, 2, 0, 2), false, DType::F32);
        let got = run(&max.load().unwrap(), &[&x]).f32();
        assert_eq!(got, [5.0, 7.0, 13.0, 15.0]);
        let avg = graph(geom(4, 3, 2, 1, 2), true, DType::F32);
        let got = run(&avg.load().unwrap(), &[&x]).f32();
        // (0+1+4+5)/4, (1+2+3+5+6+7)/6, (4+5+8+9+12+13)/6, (5+6+7+9+..+15)/9
        assert_eq!(got, [2.5, 4.0, 8.5, 10.0]);
    }

    /// int8 max and average pooling (8 planes of 9x9, 3x3 windows, stride
    /// 2, padding 1) give the reference's bytes; the output must keep the
    /// input's quantization.
    #[test]
    fn int8_pools_validate_prepare_and_run() {
        let g = PoolGeometry {
            channels: 8,
            ..geom(9, 3, 2, 1, 5)
        };
        let x = noise_i8(g.input_len(), 11, -128, 127);
        for avg in [false, true] {
            let t = graph(g, avg, DType::I8);
            let got = run(&t.load().unwrap(), &[&codes(&x, q(3))]).i8();
            let mut want = vec![0; g.output_len()];
            if avg {
                k::qs8_avgpool2d(&g, 3, &x, &mut want);
            } else {
                k::qs8_maxpool2d(&g, &x, &mut want);
            }
            assert_eq!(got, want, "avg: {avg}");
            assert_varied(&got, 20);

            let mut bad = t.clone();
            let y = bad.last().output;
            bad.g.tensors[y].quant = Some(q(4));
            assert!(bad.load_err().contains("must keep quantization"));
        }
    }
}
