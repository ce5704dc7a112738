//! `Binary`: f32 elementwise add, sub, mul, div, pow, max, min or prelu
//! with numpy broadcasting, inputs `[a, b]`. Also the broadcast check the
//! int8 elementwise ops share (`qadd`, `qmul`).

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, BinaryOp};
use strix_kernels::shape::{broadcast_shape, Dims, MAX_RANK};

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Binary";

pub(super) fn validate(cx: &Ctx) -> Res {
    broadcast_ok(cx, DType::F32)
}

pub(super) fn run(r: &Run, kind: BinaryOp, o: &mut [f32]) -> Res {
    let (ad, bd, od) = dims(r);
    k::f32_binary(kind, r.f32(0)?, &ad, r.f32(1)?, &bd, o, &od);
    Ok(())
}

/// Two inputs and the output of dtype `d`; the output's shape is the
/// inputs' broadcast shape.
pub(super) fn broadcast_ok(cx: &Ctx, d: DType) -> Res {
    cx.arity(2, 2)?;
    cx.dtype(0, d)?;
    cx.dtype(1, d)?;
    cx.out_dtype(d)?;
    let (a, b) = (&cx.input(0).shape, &cx.input(1).shape);
    let mut shape = [0; MAX_RANK];
    let r = broadcast_shape(a, b, &mut shape)
        .ok_or_else(|| format!("shapes {a:?} and {b:?} do not broadcast"))?;
    want(shape[..r] == cx.output().shape[..], || {
        "output shape is not the broadcast shape".into()
    })
}

/// The shapes of both inputs and the output, for the broadcasting kernels.
pub(super) fn dims(r: &Run) -> (Dims, Dims, Dims) {
    (
        Dims::new(r.shape(0)),
        Dims::new(r.shape(1)),
        Dims::new(&r.out.shape),
    )
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{run, TestGraph};
    use strix_kernels::reference::BinaryOp;

    /// `a [2, 3] op b [3]` (b broadcast over the rows), by hand.
    #[test]
    fn binary_validates_prepares_and_runs() {
        let a = [1.0, -2.0, 3.0, -4.0, 5.0, -6.0];
        let b = [0.5, 2.0, -1.0];
        for (kind, want) in [
            (BinaryOp::Sub, [0.5, -4.0, 4.0, -4.5, 3.0, -5.0]),
            (BinaryOp::Mul, [0.5, -4.0, -3.0, -2.0, 10.0, 6.0]),
            (BinaryOp::Prelu, [1.0, -4.0, 3.0, -2.0, 5.0, 6.0]),
        ] {
            let mut t = TestGraph::new();
            let (ai, bi) = (t.input(&[2, 3]), t.const_f32(&[3], &b));
            let y = t.act_f32(&[2, 3]);
            t.node(Op::Binary { kind }, &[ai, bi], y);
            assert_eq!(run(&t.load().unwrap(), &[&a]).f32(), want, "{kind:?}");

            let mut bad = t.clone();
            bad.g.tensors[bi].shape = vec![2];
            let e = bad.load_err();
            assert!(e.contains("do not broadcast"), "{e}");
        }
    }
}
