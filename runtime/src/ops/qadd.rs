//! `QAdd`: int8 broadcast add, inputs `[a, b]`, each rescaled to a common
//! scale (multipliers below 1) before the sum is requantized.

use super::binary::{broadcast_ok, dims};
use super::ctx::{qact_ok, rq_sane, want, zp_ok, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::QAddParams;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "QAdd";

pub(super) fn validate(cx: &Ctx, p: &QAddParams) -> Res {
    broadcast_ok(cx, DType::I8)?;
    want(zp_ok(p.a_zp) && zp_ok(p.b_zp) && zp_ok(p.out_zp), || {
        "bad zero point".into()
    })?;
    want(
        rq_sane(p.a_rq) && rq_sane(p.b_rq) && rq_sane(p.out_rq),
        || "bad multiplier".into(),
    )?;
    want(p.a_rq.shift <= 0 && p.b_rq.shift <= 0, || {
        "input multipliers must be < 1".into()
    })?;
    qact_ok(p.act_min, p.act_max)
}

pub(super) fn run(r: &Run, p: &QAddParams, o: &mut [i8]) -> Res {
    let (ad, bd, od) = dims(r);
    (r.ks.vadd.run)(p, r.i8(0)?, &ad, r.i8(1)?, &bd, o, &od);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::graph::{Op, Quant};
    use crate::ops::test_graph::{assert_varied, codes, noise_i8, q, run, TestGraph};
    use strix_kernels::quantize_multiplier;
    use strix_kernels::reference::{self as k, QAddParams, QADD_LEFT_SHIFT};
    use strix_kernels::shape::Dims;

    /// `a [2, 3, 4] + b [1, 3, 1]` (scales 1/16 and 1/32, output 1/8) as
    /// the compiler sets it up: the reference's bytes, and within one
    /// output step of the real sum.
    #[test]
    fn qadd_validates_prepares_and_runs() {
        let (qa, qb) = (
            q(-3),
            Quant {
                scale: 1.0 / 32.0,
                zero_point: 7,
            },
        );
        let qo = Quant {
            scale: 1.0 / 8.0,
            zero_point: 2,
        };
        let twice_max = 2.0 * (qa.scale.max(qb.scale) as f64);
        let p = QAddParams {
            a_zp: qa.zero_point,
            b_zp: qb.zero_point,
            out_zp: qo.zero_point,
            a_rq: quantize_multiplier(qa.scale as f64 / twice_max),
            b_rq: quantize_multiplier(qb.scale as f64 / twice_max),
            out_rq: quantize_multiplier(
                twice_max / ((1u64 << QADD_LEFT_SHIFT) as f64 * qo.scale as f64),
            ),
            act_min: -128,
            act_max: 127,
        };
        let mut t = TestGraph::new();
        let (sa, sb) = ([2, 3, 4], [1, 3, 1]);
        let (ai, bi) = (t.input_i8(&sa, qa), t.input_i8(&sb, qb));
        let y = t.act_i8(&sa, qo);
        t.node(Op::QAdd { p }, &[ai, bi], y);
        let (a, b) = (noise_i8(24, 1, -128, 127), noise_i8(3, 2, -128, 127));
        let got = run(&t.load().unwrap(), &[&codes(&a, qa), &codes(&b, qb)]).i8();
        let mut want = vec![0; 24];
        let d = |s: &[usize]| Dims::new(s);
        k::qs8_vadd(&p, &a, &d(&sa), &b, &d(&sb), &mut want, &d(&sa));
        assert_eq!(got, want);
        assert_varied(&got, 10);
        let real = |c: i8, q: Quant| (c as i32 - q.zero_point) as f32 * q.scale;
        for (i, &o) in got.iter().enumerate() {
            let sum = real(a[i], qa) + real(b[i / 4 % 3], qb);
            let r = real(o, qo);
            assert!(
                (r - sum).abs() <= qo.scale || o == 127 || o == -128,
                "{i}: {r} vs {sum}"
            );
        }

        let mut bad = t.clone();
        let Op::QAdd { p } = &mut bad.last().op else {
            unreachable!()
        };
        p.a_rq.shift = 1;
        assert!(bad.load_err().contains("input multipliers must be < 1"));
    }
}
