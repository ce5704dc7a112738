//! `Quantize`: f32 -> int8 with the output's quantization.

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Quantize";

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(1, 1)?;
    cx.dtype(0, DType::F32)?;
    cx.out_dtype(DType::I8)?;
    want(cx.input(0).len() == cx.output().len(), || {
        "size mismatch".into()
    })
}

pub(super) fn run(r: &Run, o: &mut [i8]) -> Res {
    // Every int8 activation has a quantization (validated at load).
    let q = r.out.quant.ok_or("missing quantization")?;
    (r.ks.quantize.run)(r.f32(0)?, q.scale, q.zero_point, o);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::{DType, Op};
    use crate::ops::test_graph::{q, run, TestGraph};

    /// Scale 1/16, zero point 3, by hand: rounding half away from zero,
    /// saturation at both ends.
    #[test]
    fn quantize_validates_prepares_and_runs() {
        let mut t = TestGraph::new();
        let x = t.input(&[6]);
        let y = t.act_i8(&[6], q(3));
        t.node(Op::Quantize, &[x], y);
        let xs = [-1.0, 0.03, 0.5, -0.53125, 100.0, -100.0];
        let got = run(&t.load().unwrap(), &[&xs]).i8();
        // -16 + 3, 0.48 -> 0, 8, -8.5 -> -9, saturated, saturated
        assert_eq!(got, [-13, 3, 11, -6, 127, -128]);

        let mut bad = t.clone();
        bad.g.tensors[y].dtype = DType::F32;
        bad.g.tensors[y].quant = None;
        assert!(bad.load_err().contains("output must be I8"));
    }
}
