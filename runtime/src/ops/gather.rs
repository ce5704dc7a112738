//! `Gather` with constant indices along one axis, f32 or int8.

use super::ctx::{want, Ctx, Out, Res, Run};
use strix_kernels::reference as k;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Gather";

pub(super) fn validate(cx: &Ctx, axis: usize, indices: &[usize]) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    let s = &x.shape;
    want(axis < s.len(), || "axis".into())?;
    want(indices.iter().all(|&i| i < s[axis]), || {
        "index out of range".into()
    })?;
    let mut expect = s.clone();
    expect[axis] = indices.len();
    want(out.shape == expect, || "output shape".into())
}

pub(super) fn run(r: &Run, axis: usize, indices: &[usize], out: Out) -> Res {
    match out {
        Out::F32(o) => k::gather(r.f32(0)?, r.shape(0), axis, indices, o),
        Out::I8(o) => k::gather(r.i8(0)?, r.shape(0), axis, indices, o),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{codes, q, run, TestGraph};

    /// Rows 2, 0, 2 of a `[3, 2]` tensor (f32), and columns 1, 1, 0 of a
    /// `[2, 2]` one (int8), by hand.
    #[test]
    fn gather_validates_prepares_and_runs() {
        let mut t = TestGraph::new();
        let x = t.input(&[3, 2]);
        let y = t.act_f32(&[3, 2]);
        let op = Op::Gather {
            axis: 0,
            indices: vec![2, 0, 2],
        };
        t.node(op, &[x], y);
        let got = run(&t.load().unwrap(), &[&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]).f32();
        assert_eq!(got, [5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);

        let mut t = TestGraph::new();
        let x = t.input_i8(&[2, 2], q(-1));
        let y = t.act_i8(&[2, 3], q(-1));
        let op = Op::Gather {
            axis: 1,
            indices: vec![1, 1, 0],
        };
        t.node(op, &[x], y);
        let got = run(&t.load().unwrap(), &[&codes(&[10, 20, 30, 40], q(-1))]).i8();
        assert_eq!(got, [20, 20, 10, 40, 40, 30]);

        let mut bad = t.clone();
        bad.last().op = Op::Gather {
            axis: 1,
            indices: vec![1, 2, 0],
        };
        assert!(bad.load_err().contains("index out of range"));
    }
}
