//! `Pad` with a constant, f32 or int8 (`value` is in the tensor's own
//! domain: a code for int8); `before` per axis, the output shape gives the
//! padding after.

use super::ctx::{want, Ctx, Out, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Pad";

pub(super) fn validate(cx: &Ctx, before: &[usize], value: f32) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype, || "dtype mismatch".into())?;
    let s = &x.shape;
    want(
        before.len() == s.len() && out.shape.len() == s.len() && !s.is_empty(),
        || "rank".into(),
    )?;
    for d in 0..s.len() {
        want(
            s[d].checked_add(before[d])
                .is_some_and(|end| out.shape[d] >= end),
            || {
                format!(
                    "axis {d}: output {:?} cannot hold input {s:?} after padding {before:?}",
                    out.shape
                )
            },
        )?;
    }
    want(
        value.is_finite() && (out.dtype == DType::F32 || (-128.0..=127.0).contains(&value)),
        || "bad pad value".into(),
    )
}

pub(super) fn run(r: &Run, before: &[usize], value: f32, out: Out) -> Res {
    let (shape, oshape) = (r.shape(0), &r.out.shape);
    match out {
        Out::F32(o) => k::pad_constant(r.f32(0)?, shape, before, oshape, value, o),
        Out::I8(o) => k::pad_constant(r.i8(0)?, shape, before, oshape, value as i8, o),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{codes, q, run, TestGraph};

    /// `[2, 2]` padded to `[4, 3]` (one row before, one row and one column
    /// after), f32 and int8, by hand.
    #[test]
    fn pad_validates_prepares_and_runs() {
        let mut t = TestGraph::new();
        let x = t.input(&[2, 2]);
        let y = t.act_f32(&[4, 3]);
        let op = Op::Pad {
            before: vec![1, 0],
            value: 9.5,
        };
        t.node(op, &[x], y);
        let got = run(&t.load().unwrap(), &[&[1.0, 2.0, 3.0, 4.0]]).f32();
        let p = 9.5;
        assert_eq!(got, [p, p, p, 1.0, 2.0, p, 3.0, 4.0, p, p, p, p]);

        let mut t = TestGraph::new();
        let x = t.input_i8(&[2, 2], q(-7));
        let y = t.act_i8(&[4, 3], q(-7));
        let op = Op::Pad {
            before: vec![1, 0],
            value: -7.0,
        };
        t.node(op, &[x], y);
        let got = run(&t.load().unwrap(), &[&codes(&[1, 2, 3, 4], q(-7))]).i8();
        let z = -7;
        assert_eq!(got, [z, z, z, 1, 2, z, 3, 4, z, z, z, z]);

        // An int8 pad value is a code.
        let mut bad = t.clone();
        bad.last().op = Op::Pad {
            before: vec![1, 0],
            value: 200.0,
        };
        assert!(bad.load_err().contains("bad pad value"));
    }
}
