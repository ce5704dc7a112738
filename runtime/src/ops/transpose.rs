//! `Transpose`: permutes the axes of an f32 or int8 tensor.

use super::ctx::{want, Ctx, Out, Res, Run};
use strix_kernels::reference as k;
use strix_kernels::shape::MAX_RANK;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Transpose";

pub(super) fn validate(cx: &Ctx, perm: &[usize]) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    let r = x.shape.len();
    let mut seen = [false; MAX_RANK];
    want(perm.len() == r && out.shape.len() == r, || {
        "perm rank".into()
    })?;
    for (i, &p) in perm.iter().enumerate() {
        want(p < r && !seen[p], || "not a permutation".into())?;
        seen[p] = true;
        want(out.shape[i] == x.shape[p], || "output shape".into())?;
    }
    Ok(())
}

pub(super) fn run(r: &Run, perm: &[usize], out: Out) -> Res {
    match out {
        Out::F32(o) => k::transpose(r.f32(0)?, r.shape(0), perm, o),
        Out::I8(o) => k::transpose(r.i8(0)?, r.shape(0), perm, o),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{codes, noise_i8, q, run, TestGraph};

    /// f32 `[2, 3]` transposed by hand; int8 `[2, 3, 4]` by `[2, 0, 1]`
    /// against the index definition.
    #[test]
    fn transpose_validates_prepares_and_runs() {
        let mut t = TestGraph::new();
        let x = t.input(&[2, 3]);
        let y = t.act_f32(&[3, 2]);
        t.node(Op::Transpose { perm: vec![1, 0] }, &[x], y);
        let got = run(&t.load().unwrap(), &[&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]).f32();
        assert_eq!(got, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);

        let mut t = TestGraph::new();
        let x = t.input_i8(&[2, 3, 4], q(0));
        let y = t.act_i8(&[4, 2, 3], q(0));
        t.node(
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            &[x],
            y,
        );
        let xs = noise_i8(24, 5, -128, 127);
        let got = run(&t.load().unwrap(), &[&codes(&xs, q(0))]).i8();
        for (i, j, k) in
            (0..2).flat_map(|i| (0..3).flat_map(move |j| (0..4).map(move |k| (i, j, k))))
        {
            assert_eq!(got[(k * 2 + i) * 3 + j], xs[(i * 3 + j) * 4 + k]);
        }

        let mut bad = t.clone();
        bad.last().op = Op::Transpose {
            perm: vec![2, 0, 0],
        };
        assert!(bad.load_err().contains("not a permutation"));
    }
}
