//! `Dequantize`: int8 -> f32 with the input's quantization.

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference as k;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Dequantize";

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(1, 1)?;
    cx.dtype(0, DType::I8)?;
    cx.out_dtype(DType::F32)?;
    want(
        cx.input(0).len() == cx.output().len() && cx.input(0).quant.is_some(),
        || "size/quantization".into(),
    )
}

pub(super) fn run(r: &Run, o: &mut [f32]) -> Res {
    let q = r.input(0).quant.ok_or("missing quantization")?;
    k::f32_dequantize(r.i8(0)?, q.scale, q.zero_point, o);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::Op;
    use crate::ops::test_graph::{codes, q, run, TestGraph};

    /// `(code - zero point) * scale`, by hand.
    #[test]
    fn dequantize_validates_prepares_and_runs() {
        let mut t = TestGraph::new();
        let x = t.input_i8(&[4], q(-2));
        let y = t.act_f32(&[4]);
        t.node(Op::Dequantize, &[x], y);
        let got = run(&t.load().unwrap(), &[&codes(&[-128, -2, 14, 127], q(-2))]).f32();
        assert_eq!(got, [-126.0 / 16.0, 0.0, 1.0, 129.0 / 16.0]);

        // The input must be int8.
        let mut bad = t.clone();
        let f = bad.g.inputs[0];
        bad.last().inputs = vec![f];
        assert!(bad.load_err().contains("input 0 must be I8"));
    }
}
