//! Unary activations: f32 math, and the int8 form as a 256-entry lookup table
//! built at compile time from the f32 definition (exact for every input).

/// Elementwise unary functions. Parameters are stored in the variant.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum UnaryOp {
    Relu,
    Clip { min: f32, max: f32 },
    LeakyRelu { alpha: f32 },
    Sigmoid,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Silu,
    Tanh,
    Exp,
    Sqrt,
    Neg,
    Abs,
    Erf,
    Gelu,
}

impl UnaryOp {
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Clip { min, max } => x.max(min).min(max),
            UnaryOp::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            UnaryOp::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Tanh => libm::tanhf(x),
            UnaryOp::Exp => libm::expf(x),
            UnaryOp::Sqrt => libm::sqrtf(x),
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Erf => libm::erff(x),
            UnaryOp::Gelu => 0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2)),
        }
    }
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// `clamp(round_half_away(x * inv_scale) + zp, -128, 127)`; NaN maps to `zp`.
#[inline]
pub fn quantize_one(x: f32, inv_scale: f32, zp: i32) -> i8 {
    // round-half-away-from-zero of the clamped value, without a libm call
    // and in a form that vectorizes (this runs on every input element):
    // within +-1e6 the truncation and the fraction `c - trunc(c)` are exact
    // in f32. +-inf clamps to +-1e6.
    let v = x * inv_scale;
    let c = if v.is_nan() {
        0.0
    } else {
        v.clamp(-1.0e6, 1.0e6)
    };
    // SAFETY: `c` is finite and within +-1e6, so it fits an i32.
    let t = unsafe { c.to_int_unchecked::<i32>() };
    let frac = c - t as f32;
    let v = t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32;
    (v + zp).clamp(-128, 127) as i8
}

/// The table of `op` between two quantizations: entry `q + 128` is the output
/// code for input code `q`.
pub fn build_lut(op: UnaryOp, in_scale: f32, in_zp: i32, out_scale: f32, out_zp: i32) -> [i8; 256] {
    let mut t = [0i8; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let q = i as i32 - 128;
        let x = (q - in_zp) as f32 * in_scale;
        *e = quantize_one(op.apply(x), 1.0 / out_scale, out_zp);
    }
    t
}

/// Applies a 256-entry table. Contract: `input.len() == output.len()`.
pub fn qs8_lut(table: &[i8; 256], input: &[i8], output: &mut [i8]) {
    for (o, &x) in output.iter_mut().zip(input) {
        *o = table[(x as i32 + 128) as usize];
    }
}

/// f32 -> int8 with the given quantization.
pub fn qs8_quantize(input: &[f32], scale: f32, zp: i32, output: &mut [i8]) {
    let inv = 1.0 / scale;
    for (o, &x) in output.iter_mut().zip(input) {
        *o = quantize_one(x, inv, zp);
    }
}

/// int8 -> f32: `(q - zp) * scale`.
pub fn f32_dequantize(input: &[i8], scale: f32, zp: i32, output: &mut [f32]) {
    for (o, &q) in output.iter_mut().zip(input) {
        *o = (q as i32 - zp) as f32 * scale;
    }
}

/// f32 elementwise unary op.
pub fn f32_unary(op: UnaryOp, input: &[f32], output: &mut [f32]) {
    for (o, &x) in output.iter_mut().zip(input) {
        *o = op.apply(x);
    }
}

#[cfg(test)]
mod quantize_tests {
    use super::quantize_one;

    /// The definition: libm's round-half-away-from-zero, NaN to 0.
    fn by_definition(x: f32, inv: f32, zp: i32) -> i8 {
        let v = libm::roundf(x * inv);
        let v = if v.is_nan() {
            0.0
        } else {
            v.clamp(-1.0e6, 1.0e6)
        };
        (v as i32 + zp).clamp(-128, 127) as i8
    }

    #[test]
    fn quantize_one_matches_round_half_away_from_zero() {
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
            127.5,
            -128.5,
            126.49999,
            1e6,
            -1e6,
            3e9,
            -3e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            8388607.5,
            8388608.0,
            1e-40,
        ];
        let mut s = 0x9E37_79B9u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            // Mostly near the int8 range, with exact halves mixed in.
            let v = (s % 1_000_000) as f32 / 1000.0 - 500.0;
            xs.push(if s.is_multiple_of(7) {
                v.trunc() + 0.5
            } else {
                v
            });
        }
        for &x in &xs {
            for (inv, zp) in [(1.0, 0), (1.0, -128), (1.0, 127), (3.7, 5), (0.01, -3)] {
                assert_eq!(
                    quantize_one(x, inv, zp),
                    by_definition(x, inv, zp),
                    "x {x} inv {inv} zp {zp}"
                );
            }
        }
    }
}
