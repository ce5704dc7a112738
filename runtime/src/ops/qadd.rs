//! `QAdd`: int8 broadcast add, inputs `[a, b]`, each rescaled to a common
//! scale (multipliers below 1) before the sum is requantized.

use super::binary::{broadcast_ok, dims};
use super::ctx::{qact_ok, rq_sane, want, zp_ok, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::QAddParams;

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
