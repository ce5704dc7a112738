//! `QMul`: int8 broadcast multiply, inputs `[a, b]`; the product of the
//! centred inputs is requantized once.

use super::binary::{broadcast_ok, dims};
use super::ctx::{qact_ok, rq_sane, want, zp_ok, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::QMulParams;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "QMul";

pub(super) fn validate(cx: &Ctx, p: &QMulParams) -> Res {
    broadcast_ok(cx, DType::I8)?;
    want(
        zp_ok(p.a_zp) && zp_ok(p.b_zp) && zp_ok(p.out_zp) && rq_sane(p.rq),
        || "bad parameters".into(),
    )?;
    want(p.rq.shift <= 14, || "multiplier too large".into())?;
    qact_ok(p.act_min, p.act_max)
}

pub(super) fn run(r: &Run, p: &QMulParams, o: &mut [i8]) -> Res {
    let (ad, bd, od) = dims(r);
    (r.ks.vmul.run)(p, r.i8(0)?, &ad, r.i8(1)?, &bd, o, &od);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::{Op, Quant};
    use crate::ops::test_graph::{assert_varied, codes, noise_i8, q, run, TestGraph};
    use strix_kernels::quantize_multiplier;
    use strix_kernels::reference::{self as k, QMulParams};
    use strix_kernels::shape::Dims;

    /// `a [3, 4] * b [3, 1]`: the reference's bytes, and within one output
    /// step of the real product.
    #[test]
    fn qmul_validates_prepares_and_runs() {
        let (qa, qb) = (
            q(5),
            Quant {
                scale: 1.0 / 64.0,
                zero_point: -2,
            },
        );
        let qo = Quant {
            scale: 1.0 / 8.0,
            zero_point: 0,
        };
        let p = QMulParams {
            a_zp: qa.zero_point,
            b_zp: qb.zero_point,
            out_zp: qo.zero_point,
            rq: quantize_multiplier((qa.scale * qb.scale / qo.scale) as f64),
            act_min: -128,
            act_max: 127,
        };
        let mut t = TestGraph::new();
        let (sa, sb) = ([3, 4], [3, 1]);
        let (ai, bi) = (t.input_i8(&sa, qa), t.input_i8(&sb, qb));
        let y = t.act_i8(&sa, qo);
        t.node(Op::QMul { p }, &[ai, bi], y);
        let (a, b) = (noise_i8(12, 3, -128, 127), noise_i8(3, 4, -128, 127));
        let got = run(&t.load().unwrap(), &[&codes(&a, qa), &codes(&b, qb)]).i8();
        let mut want = vec![0; 12];
        let d = |s: &[usize]| Dims::new(s);
        k::qs8_vmul(&p, &a, &d(&sa), &b, &d(&sb), &mut want, &d(&sa));
        assert_eq!(got, want);
        assert_varied(&got, 6);
        let real = |c: i8, q: Quant| (c as i32 - q.zero_point) as f32 * q.scale;
        for (i, &o) in got.iter().enumerate() {
            let prod = real(a[i], qa) * real(b[i / 4], qb);
            let r = real(o, qo);
            assert!(
                (r - prod).abs() <= qo.scale || o == 127 || o == -128,
                "{i}: {r} vs {prod}"
            );
        }

        let mut bad = t.clone();
        let Op::QMul { p } = &mut bad.last().op else {
            unreachable!()
        };
        p.rq.shift = 15;
        assert!(bad.load_err().contains("multiplier too large"));
    }
}
