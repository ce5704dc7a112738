//! `Slice`: a strided window of an f32 or int8 tensor (`starts`, `steps`
//! per axis, negative steps walk backwards; the output shape gives the
//! counts).

use super::ctx::{want, Ctx, Out, Res, Run};
use strix_kernels::reference as k;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Slice";

pub(super) fn validate(cx: &Ctx, starts: &[usize], steps: &[isize]) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    let s = &x.shape;
    let r = s.len();
    want(
        starts.len() == r && steps.len() == r && out.shape.len() == r,
        || "rank".into(),
    )?;
    for d in 0..r {
        if out.shape[d] == 0 {
            continue;
        }
        // In i128: every term fits, so the first and last index are exact.
        let last = starts[d] as i128 + (out.shape[d] as i128 - 1) * steps[d] as i128;
        want(starts[d] < s[d] && last >= 0 && last < s[d] as i128, || {
            format!("axis {d} out of range")
        })?;
    }
    Ok(())
}

pub(super) fn run(r: &Run, starts: &[usize], steps: &[isize], out: Out) -> Res {
    let (shape, oshape) = (r.shape(0), &r.out.shape);
    match out {
        Out::F32(o) => k::slice(r.f32(0)?, shape, starts, steps, oshape, o),
        Out::I8(o) => k::slice(r.i8(0)?, shape, starts, steps, oshape, o),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{codes, q, run, TestGraph};

    /// Rows 1..3 and columns 3, 1 (a negative step) of a `[3, 4]` tensor,
    /// f32 and int8, by hand.
    #[test]
    fn slice_validates_prepares_and_runs() {
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let op = Op::Slice {
            starts: vec![1, 3],
            steps: vec![1, -2],
        };
        let mut t = TestGraph::new();
        let xi = t.input(&[3, 4]);
        let y = t.act_f32(&[2, 2]);
        t.node(op.clone(), &[xi], y);
        assert_eq!(run(&t.load().unwrap(), &[&x]).f32(), [7.0, 5.0, 11.0, 9.0]);

        let mut t = TestGraph::new();
        let xi = t.input_i8(&[3, 4], q(0));
        let y = t.act_i8(&[2, 2], q(0));
        t.node(op, &[xi], y);
        let c: Vec<i8> = (0..12).map(|v| v * 10 - 60).collect();
        assert_eq!(
            run(&t.load().unwrap(), &[&codes(&c, q(0))]).i8(),
            [10, -10, 50, 30]
        );

        // Three columns back from column 3 with step -2 would read column -1.
        let mut bad = t.clone();
        bad.g.tensors[y].shape = vec![2, 3];
        assert!(bad.load_err().contains("axis 1 out of range"));
    }
}
