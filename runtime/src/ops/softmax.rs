//! `Softmax`: f32 softmax over the middle axis of `[outer, axis, inner]`.
//! Also the extent check `reduce_mean` shares.

use super::ctx::{mul, want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Softmax";

pub(super) fn validate(cx: &Ctx, outer: usize, axis: usize, inner: usize) -> Res {
    let total = extents_ok(cx, outer, axis, inner)?;
    want(cx.output().len() == total, || "output size mismatch".into())
}

pub(super) fn run(r: &Run, (outer, axis, inner): (usize, usize, usize), o: &mut [f32]) -> Res {
    k::f32_softmax(r.f32(0)?, outer, axis, inner, o);
    Ok(())
}

/// One f32 input of `outer x axis x inner` elements (all non-zero, the
/// product checked) and an f32 output; returns the product.
pub(super) fn extents_ok(cx: &Ctx, outer: usize, axis: usize, inner: usize) -> Res<usize> {
    cx.arity(1, 1)?;
    cx.dtype(0, DType::F32)?;
    cx.out_dtype(DType::F32)?;
    want(outer > 0 && axis > 0 && inner > 0, || {
        format!("empty extent {outer} x {axis} x {inner}")
    })?;
    let total = mul(
        "outer x axis x inner",
        mul("outer x axis", outer, axis)?,
        inner,
    )?;
    want(cx.input(0).len() == total, || {
        format!(
            "input {:?} is not {outer} x {axis} x {inner}",
            cx.input(0).shape
        )
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{run, TestGraph};

    /// `[outer 2, axis 3, inner 2]`: softmax along the middle axis (strided
    /// by `inner`), against the definition in f64.
    #[test]
    fn softmax_validates_prepares_and_runs() {
        let x = [1.0, -1.0, 2.0, 0.0, 3.0, 1.0, 0.0, 0.0, 0.0, 5.0, 0.0, -5.0];
        let mut t = TestGraph::new();
        let xi = t.input(&[2, 3, 2]);
        let y = t.act_f32(&[2, 3, 2]);
        let op = Op::Softmax {
            outer: 2,
            axis: 3,
            inner: 2,
        };
        t.node(op, &[xi], y);
        let got = run(&t.load().unwrap(), &[&x]).f32();
        for b in 0..2 {
            for i in 0..2 {
                let at = |k: usize| b * 6 + k * 2 + i;
                let sum: f64 = (0..3).map(|k| (x[at(k)] as f64).exp()).sum();
                for k in 0..3 {
                    let want = (x[at(k)] as f64).exp() / sum;
                    assert!((got[at(k)] as f64 - want).abs() < 1e-6, "{got:?}");
                }
            }
        }

        let mut bad = t.clone();
        let Op::Softmax { axis, .. } = &mut bad.last().op else {
            unreachable!()
        };
        *axis = 4;
        assert!(bad.load_err().contains("is not 2 x 4 x 2"));
    }
}
