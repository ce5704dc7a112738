//! Elementwise binary ops with numpy broadcasting.

use crate::requant::{clamp_i8, requantize, Requant};
use crate::shape::{for_each_broadcast, Dims};

/// f32 binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// PRelu: `x if x >= 0 else slope * x` (slope is the second operand).
    Prelu,
}

impl BinaryOp {
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => libm::powf(a, b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Prelu => {
                if a >= 0.0 {
                    a
                } else {
                    a * b
                }
            }
        }
    }
}

/// f32 broadcast binary op. Contract: lengths match the dims.
pub fn f32_binary(
    op: BinaryOp,
    a: &[f32],
    ad: &Dims,
    b: &[f32],
    bd: &Dims,
    out: &mut [f32],
    od: &Dims,
) {
    for_each_broadcast(ad, bd, od, |o, i, j| out[o] = op.apply(a[i], b[j]));
}

/// int8 addition (TFLite scheme): both inputs are shifted left by 20 bits,
/// rescaled to a common scale `2 * max(sa, sb)`, added, then requantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QAddParams {
    pub a_zp: i32,
    pub b_zp: i32,
    pub out_zp: i32,
    pub a_rq: Requant,
    pub b_rq: Requant,
    pub out_rq: Requant,
    pub act_min: i8,
    pub act_max: i8,
}

/// The left shift applied to both addends before rescaling.
pub const QADD_LEFT_SHIFT: i32 = 20;

/// Overflow bound: `|x - zp| <= 255 < 2^8`, shifted by 20 stays below 2^28;
/// the input multipliers are <= 1/2, so the sum stays below 2^28.
pub fn qs8_vadd(
    p: &QAddParams,
    a: &[i8],
    ad: &Dims,
    b: &[i8],
    bd: &Dims,
    out: &mut [i8],
    od: &Dims,
) {
    for_each_broadcast(ad, bd, od, |o, i, j| {
        let x = requantize((a[i] as i32 - p.a_zp) << QADD_LEFT_SHIFT, p.a_rq);
        let y = requantize((b[j] as i32 - p.b_zp) << QADD_LEFT_SHIFT, p.b_rq);
        out[o] = clamp_i8(requantize(x + y, p.out_rq) + p.out_zp, p.act_min, p.act_max);
    });
}

/// int8 multiplication: `out = zp + requantize((a - za) * (b - zb), rq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QMulParams {
    pub a_zp: i32,
    pub b_zp: i32,
    pub out_zp: i32,
    pub rq: Requant,
    pub act_min: i8,
    pub act_max: i8,
}

/// Overflow bound: the product is at most 255 * 255 < 2^16.
pub fn qs8_vmul(
    p: &QMulParams,
    a: &[i8],
    ad: &Dims,
    b: &[i8],
    bd: &Dims,
    out: &mut [i8],
    od: &Dims,
) {
    for_each_broadcast(ad, bd, od, |o, i, j| {
        let prod = (a[i] as i32 - p.a_zp) * (b[j] as i32 - p.b_zp);
        out[o] = clamp_i8(requantize(prod, p.rq) + p.out_zp, p.act_min, p.act_max);
    });
}
