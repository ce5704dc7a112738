//! `Unary`: an f32 elementwise activation (relu, sigmoid, tanh, ...).

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::{self as k, UnaryOp};

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Unary";

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(1, 1)?;
    cx.dtype(0, DType::F32)?;
    cx.out_dtype(DType::F32)?;
    want(cx.input(0).len() == cx.output().len(), || {
        "size mismatch".into()
    })
}

pub(super) fn run(r: &Run, kind: UnaryOp, o: &mut [f32]) -> Res {
    k::f32_unary(kind, r.f32(0)?, o);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{run, TestGraph};
    use strix_kernels::reference::UnaryOp;

    /// Relu, Clip and HardSwish on a few values, by hand.
    #[test]
    fn unary_validates_prepares_and_runs() {
        let x = [-6.0, -2.0, -0.5, 0.0, 1.5, 7.0];
        for (kind, want) in [
            (UnaryOp::Relu, [0.0, 0.0, 0.0, 0.0, 1.5, 7.0]),
            (
                UnaryOp::Clip {
                    min: -1.0,
                    max: 1.0,
                },
                [-1.0, -1.0, -0.5, 0.0, 1.0, 1.0],
            ),
            // x * clamp(x / 6 + 1/2, 0, 1)
            (
                UnaryOp::HardSwish,
                [
                    -0.0,
                    -2.0 / 6.0,
                    -0.5 * (0.5 - 0.5 / 6.0),
                    0.0,
                    1.5 * 0.75,
                    7.0,
                ],
            ),
        ] {
            let mut t = TestGraph::new();
            let xi = t.input(&[2, 3]);
            let y = t.act_f32(&[2, 3]);
            t.node(Op::Unary { kind }, &[xi], y);
            let got = run(&t.load().unwrap(), &[&x]).f32();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= 1e-6, "{kind:?}: {got:?} vs {want:?}");
            }

            let mut bad = t.clone();
            bad.g.tensors[y].shape = vec![2, 2];
            assert!(bad.load_err().contains("size mismatch"));
        }
    }
}
