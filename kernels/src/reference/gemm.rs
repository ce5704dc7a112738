//! Fully connected layers and matrix products.

use crate::requant::{clamp_i8, requantize, Requant};

/// Quantization of an int8 gemm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QGemmParams {
    pub in_zp: i32,
    pub out_zp: i32,
    pub act_min: i8,
    pub act_max: i8,
}

/// `out[m][n] = clamp(out_zp + requantize(bias[n] + sum_k (a[m][k] - in_zp) * w[n][k], rq[n]))`.
///
/// Weights are `[n][k]` (one row per output channel, like ONNX Gemm with
/// `transB = 1`). Overflow bound: as [`super::qs8_conv2d`], `k <= 33_000`.
/// Contract: `a.len() == m*k`, `w.len() == n*k`, `bias.len() == rq.len() == n`,
/// `out.len() == m*n`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm(
    m: usize,
    n: usize,
    k: usize,
    q: &QGemmParams,
    a: &[i8],
    w: &[i8],
    bias: &[i32],
    rq: &[Requant],
    out: &mut [i8],
) {
    for i in 0..m {
        let row = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let wrow = &w[j * k..(j + 1) * k];
            let mut acc = bias[j];
            acc += dot_zp(row, wrow, q.in_zp);
            out[i * n + j] = clamp_i8(requantize(acc, rq[j]) + q.out_zp, q.act_min, q.act_max);
        }
    }
}

/// int8 gemm with real-valued output: `out = clamp(acc * scale[n], lo, hi)`
/// with the accumulator of [`qs8_gemm`].
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_f32out(
    m: usize,
    n: usize,
    k: usize,
    in_zp: i32,
    act_min: f32,
    act_max: f32,
    a: &[i8],
    w: &[i8],
    bias: &[i32],
    scale: &[f32],
    out: &mut [f32],
) {
    for i in 0..m {
        let row = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let mut acc = bias[j];
            acc += dot_zp(row, &w[j * k..(j + 1) * k], in_zp);
            out[i * n + j] = (acc as f32 * scale[j]).clamp(act_min, act_max);
        }
    }
}

/// f32 `out[m][n] = sum_k a[m][k] * b[k][n] + bias[n]` (b is `[k][n]`; `bias`
/// may be empty), then clamped to the activation bounds.
#[allow(clippy::too_many_arguments)]
pub fn f32_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    act_min: f32,
    act_max: f32,
    out: &mut [f32],
) {
    for i in 0..m {
        let orow = &mut out[i * n..(i + 1) * n];
        if bias.is_empty() {
            orow.fill(0.0);
        } else {
            orow.copy_from_slice(&bias[..n]);
        }
        for kk in 0..k {
            let av = a[i * k + kk];
            if av == 0.0 {
                continue;
            }
            for (o, bv) in orow.iter_mut().zip(&b[kk * n..(kk + 1) * n]) {
                *o += av * bv;
            }
        }
        for v in orow.iter_mut() {
            *v = v.clamp(act_min, act_max);
        }
    }
}

/// Output stage shared by the int8 "NT" gemm (both operands k-contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QOut {
    pub out_zp: i32,
    pub act_min: i8,
    pub act_max: i8,
}

/// The core of every fast int8 conv and fully connected layer:
/// `acc[i][j] = bias[i] + sum_k a[i][k] * b[j][k]` (plain int8 products; zero
/// points are folded into `bias` by the caller), then
/// `out[i * rs + j * cs] = clamp(out_zp + requantize(acc, rq[i]))`.
///
/// Overflow bound: `k <= 66_000` (products are at most 128 * 128 = 2^14) with
/// `|bias| <= 2^30`... callers keep `k * 2^14 + |bias| < 2^31`.
/// Contract: `a.len() >= m*k`, `b.len() >= n*k`, `bias.len() >= m`,
/// `rq.len() >= m`, every `i*rs + j*cs < out.len()`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_nt(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
    cs: usize,
) {
    for i in 0..m {
        let ar = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let br = &b[j * k..(j + 1) * k];
            let mut acc = bias[i];
            acc += dot_zp(br, ar, 0);
            out[i * rs + j * cs] =
                clamp_i8(requantize(acc, rq[i]) + q.out_zp, q.act_min, q.act_max);
        }
    }
}

/// [`qs8_gemm_nt`] with real-valued output: `out = clamp(acc * scale[i], lo, hi)`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_nt_f32out(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    scale: &[f32],
    act_min: f32,
    act_max: f32,
    out: &mut [f32],
    rs: usize,
    cs: usize,
) {
    for i in 0..m {
        let ar = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let br = &b[j * k..(j + 1) * k];
            let mut acc = bias[i];
            acc += dot_zp(br, ar, 0);
            out[i * rs + j * cs] = (acc as f32 * scale[i]).clamp(act_min, act_max);
        }
    }
}

/// `sum (x - zp) * w` over two equally long int8 rows (the shared inner loop
/// of every reference gemm; the overflow bounds are the callers').
#[inline]
fn dot_zp(x: &[i8], w: &[i8], zp: i32) -> i32 {
    x.iter()
        .zip(w)
        .map(|(&x, &w)| (x as i32 - zp) * w as i32)
        .sum()
}
