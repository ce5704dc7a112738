//! `QMul`: int8 broadcast multiply, inputs `[a, b]`; the product of the
//! centred inputs is requantized once.

use super::binary::{broadcast_ok, dims};
use super::ctx::{qact_ok, rq_sane, want, zp_ok, Ctx, Res, Run};
use crate::graph::DType;
use strix_kernels::reference::QMulParams;

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
