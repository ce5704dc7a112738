//! `Lut`: any int8 unary activation as a 256-entry table (built by the
//! compiler between the input's and the output's quantization), inputs
//! `[x, table (i8, 256)]`.

use super::ctx::{want, Ctx, Res, Run};
use crate::graph::DType;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Lut";

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(2, 2)?;
    cx.dtype(0, DType::I8)?;
    cx.out_dtype(DType::I8)?;
    want(
        cx.is_const(1) && cx.input(1).dtype == DType::I8 && cx.input(1).len() == 256,
        || "table must be 256 int8".into(),
    )?;
    want(cx.input(0).len() == cx.output().len(), || {
        "size mismatch".into()
    })
}

pub(super) fn run(r: &Run, o: &mut [i8]) -> Res {
    let table: &[i8; 256] = r
        .i8(1)?
        .try_into()
        .map_err(|_| "table must have 256 entries".to_string())?;
    (r.ks.lut.run)(table, r.i8(0)?, o);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::{Op, Quant};
    use crate::ops::test_graph::{codes, q, run, TestGraph};
    use strix_kernels::reference::{build_lut, UnaryOp};

    /// A sigmoid table over every input code: each output is its code's
    /// entry, the quantized sigmoid of the code's real value.
    #[test]
    fn lut_validates_prepares_and_runs() {
        let (qi, qo) = (
            q(-10),
            Quant {
                scale: 1.0 / 256.0,
                zero_point: -128,
            },
        );
        let table = build_lut(
            UnaryOp::Sigmoid,
            qi.scale,
            qi.zero_point,
            qo.scale,
            qo.zero_point,
        );
        let mut t = TestGraph::new();
        let xi = t.input_i8(&[256], qi);
        let ti = t.const_i8(&[256], &table);
        let y = t.act_i8(&[256], qo);
        t.node(Op::Lut, &[xi, ti], y);
        let x: Vec<i8> = (-128..=127).collect();
        let got = run(&t.load().unwrap(), &[&codes(&x, qi)]).i8();
        for (&c, &o) in x.iter().zip(&got) {
            let real = 1.0 / (1.0 + (-((c as i32 - qi.zero_point) as f64 / 16.0)).exp());
            let back = (o as i32 - qo.zero_point) as f64 * qo.scale as f64;
            assert!(
                (back - real).abs() <= 0.5 / 256.0 + 1e-6 || o == 127,
                "{c}: {o}"
            );
            assert_eq!(o, table[(c as i32 + 128) as usize]);
        }

        let mut bad = t.clone();
        bad.g.tensors[ti].shape = vec![255];
        assert!(bad.load_err().contains("table must be 256 int8"));
    }
}
