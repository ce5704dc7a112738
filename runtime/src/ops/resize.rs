//! `Resize` of the last two axes (nearest or bilinear, ONNX coordinate
//! modes), f32 or int8 (int8 keeps its quantization and interpolates in
//! fixed point).

use super::ctx::{want, Ctx, Out, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, ResizeGeometry};

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Resize";

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

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{assert_varied, codes, noise_i8, q, run, TestGraph};
    use strix_kernels::reference::{self as k, CoordMode, ResizeGeometry, ResizeKind};

    /// Nearest 2x upsampling of a 2x2 f32 plane by hand, and bilinear int8
    /// (2 planes of 5x4 to 7x9, half-pixel) against the reference.
    #[test]
    fn resize_validates_prepares_and_runs() {
        let geom = ResizeGeometry {
            planes: 1,
            in_h: 2,
            in_w: 2,
            out_h: 4,
            out_w: 4,
            kind: ResizeKind::NearestFloor,
            coord: CoordMode::Asymmetric,
        };
        let mut t = TestGraph::new();
        let x = t.input(&[1, 1, 2, 2]);
        let y = t.act_f32(&[1, 1, 4, 4]);
        t.node(Op::Resize { geom }, &[x], y);
        let got = run(&t.load().unwrap(), &[&[1.0, 2.0, 3.0, 4.0]]).f32();
        let want = [
            1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.,
        ];
        assert_eq!(got, want);

        let geom = ResizeGeometry {
            planes: 2,
            in_h: 5,
            in_w: 4,
            out_h: 7,
            out_w: 9,
            kind: ResizeKind::Linear,
            coord: CoordMode::HalfPixel,
        };
        let mut t = TestGraph::new();
        let x = t.input_i8(&[1, 2, 5, 4], q(2));
        let y = t.act_i8(&[1, 2, 7, 9], q(2));
        t.node(Op::Resize { geom }, &[x], y);
        let xs = noise_i8(geom.input_len(), 9, -128, 127);
        let got = run(&t.load().unwrap(), &[&codes(&xs, q(2))]).i8();
        let mut want = vec![0; geom.output_len()];
        k::qs8_resize(&geom, &xs, &mut want);
        assert_eq!(got, want);
        assert_varied(&got, 40);

        let mut bad = t.clone();
        bad.g.tensors[y].quant = Some(q(3));
        assert!(bad
            .load_err()
            .contains("int8 resize must keep quantization"));
    }
}
