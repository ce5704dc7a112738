//! `ReduceMean`: f32 mean over the middle axis of `[outer, axis, inner]`,
//! into `[outer, inner]`.

use super::ctx::{want, Ctx, Res, Run};
use super::softmax::extents_ok;
use strix_kernels::reference as k;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "ReduceMean";

pub(super) fn validate(cx: &Ctx, outer: usize, axis: usize, inner: usize) -> Res {
    extents_ok(cx, outer, axis, inner)?;
    // outer * inner <= outer * axis * inner, which did not overflow.
    want(cx.output().len() == outer * inner, || {
        "output size mismatch".into()
    })
}

pub(super) fn run(r: &Run, (outer, axis, inner): (usize, usize, usize), o: &mut [f32]) -> Res {
    k::f32_reduce_mean(r.f32(0)?, outer, axis, inner, o);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{run, TestGraph};

    /// `[outer 2, axis 3, inner 2]` to `[2, 2]`, by hand.
    #[test]
    fn reduce_mean_validates_prepares_and_runs() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0, -6.0, 0.5, 0.0, 0.5, 3.0, 2.0];
        let mut t = TestGraph::new();
        let xi = t.input(&[2, 3, 2]);
        let y = t.act_f32(&[2, 2]);
        let op = Op::ReduceMean {
            outer: 2,
            axis: 3,
            inner: 2,
        };
        t.node(op, &[xi], y);
        let got = run(&t.load().unwrap(), &[&x]).f32();
        // (1+3+5)/3, (2+4+9)/3, (-6+0+3)/3, (0.5+0.5+2)/3
        assert_eq!(got, [3.0, 5.0, -1.0, 1.0]);

        let mut bad = t.clone();
        bad.g.tensors[y].shape = vec![2, 3];
        assert!(bad.load_err().contains("output size mismatch"));
    }
}
