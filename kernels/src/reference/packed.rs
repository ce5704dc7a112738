//! The packed int8 gemm `qs8_gemm_4x16c4`: both operands in the panel layouts
//! a micro-kernel reads with one vector load per step, so that one call owns
//! a 4-channel x 16-pixel output tile over all of K and writes int8 directly.
//!
//! Layouts (`c4`: K in groups of four consecutive values, zero-padded to
//! `kb = k.div_ceil(4)` groups; zeros on both sides add nothing):
//!
//! * **weights `a`**, packed once at prepare by [`pack_a_4c4`]: for each group
//!   of four output channels (rows past `m` zero), for each `kb`, 16 bytes
//!   `[r0 k0..4][r1 k0..4][r2 k0..4][r3 k0..4]`. A dot-product lane
//!   (`sdot v.4s, b.16b, a.4b[r]`) broadcasts channel `r`'s four values.
//! * **activations `b`** (a panel of at most 16 pixels, packed per tile by
//!   the conv driver): for each `kb`, 64 bytes `[p0 k0..4][p1 k0..4]...[p15
//!   k0..4]`: four 16-byte vectors of four pixels each.
//!
//! The arithmetic is [`super::qs8_gemm_nt`]'s: `bias` is the zero-point-folded
//! bias (`crate::driver::fold_bias`), the output stage is `requantize`, plus
//! the zero point, then the clamp. Overflow bound: as `qs8_gemm_nt`.

use super::QOut;
use crate::requant::{clamp_i8, requantize, Requant};

/// Output channels per packed weight group (the tile's height).
pub const PACK_MR: usize = 4;
/// Pixels per activation panel (the tile's width).
pub const PACK_NR: usize = 16;

/// Bytes of the packed weights of an `m x k` matrix.
pub fn packed_a_len(m: usize, k: usize) -> usize {
    m.div_ceil(PACK_MR) * k.div_ceil(4) * PACK_MR * 4
}

/// Bytes of one activation panel for reduction length `k`.
pub fn panel_len(k: usize) -> usize {
    k.div_ceil(4) * PACK_NR * 4
}

/// Packs row-major `w` (`m` rows of `k`) into the weight layout of the module
/// docs. Contract: `w.len() >= m * k`, `out.len() >= packed_a_len(m, k)`.
pub fn pack_a_4c4(m: usize, k: usize, w: &[i8], out: &mut [i8]) {
    let kb = k.div_ceil(4);
    let out = &mut out[..packed_a_len(m, k)];
    out.fill(0);
    for i in 0..m {
        let (g, r) = (i / PACK_MR, i % PACK_MR);
        for (kk, &v) in w[i * k..(i + 1) * k].iter().enumerate() {
            out[(g * kb + kk / 4) * 16 + r * 4 + kk % 4] = v;
        }
    }
}

/// The inverse of [`pack_a_4c4`]: row-major `w` (`m` rows of `k`) from
/// packed `a` (the padding is dropped). A runtime that keeps only the packed
/// copy of a conv's weights restores the stored form with it (to save the
/// model or prepare it for another path). Contract: `a.len() >=
/// packed_a_len(m, k)`, `w.len() >= m * k`.
pub fn unpack_a_4c4(m: usize, k: usize, a: &[i8], w: &mut [i8]) {
    let kb = k.div_ceil(4);
    for i in 0..m {
        let (g, r) = (i / PACK_MR, i % PACK_MR);
        for (kk, v) in w[i * k..(i + 1) * k].iter_mut().enumerate() {
            *v = a[(g * kb + kk / 4) * 16 + r * 4 + kk % 4];
        }
    }
}

/// Per group of four channels of packed weights `a` (`m` channels, `kb` K
/// groups, layout of [`pack_a_4c4`]): whether the group never holds -128 in
/// the same byte of K groups `2i` and `2i + 1`. Computed once at prepare and
/// passed to [`qs8_gemm_4x16c4`] as `pairs`: a kernel may then add the
/// products of two K groups in one i16 lane (`|w1 x1 + w2 x2| <= 2^14 +
/// 127 * 128 < 2^15`; only -128 * -128 twice overflows). Contract:
/// `out.len() >= m.div_ceil(4)`, `a.len() >= m.div_ceil(4) * kb * 16`.
pub fn pairable_4c4(m: usize, kb: usize, a: &[i8], out: &mut [bool]) {
    for (g, flag) in out[..m.div_ceil(PACK_MR)].iter_mut().enumerate() {
        let w = &a[g * kb * 16..(g + 1) * kb * 16];
        *flag = !w.chunks_exact(32).any(|p| {
            p[..16]
                .iter()
                .zip(&p[16..])
                .any(|(&x, &y)| x == i8::MIN && y == i8::MIN)
        });
    }
}

/// `out[i * rs + j]` for channels `i < m` and pixels `j < n` (`n <= 16`):
/// `clamp(out_zp + requantize(bias[i] + sum_k a[i][k] * b[j][k], rq[i]))`
/// with `a` and `b` in the packed layouts of the module docs (`kb` groups of
/// four). Contract: `a.len() >= m.div_ceil(4) * kb * 16`, `b.len() >= kb * 64`,
/// `bias` and `rq` hold `m` values, `out.len() >= (m - 1) * rs + n`.
/// `pairs[g]` (group `g` of four channels) may be true only where
/// [`pairable_4c4`] is: fast kernels then sum two K groups' products in
/// i16 (a wrong `true` gives wrong sums, never unsafety); missing entries
/// count as false, and the reference ignores it.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    _pairs: &[bool],
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
) {
    assert!(n <= PACK_NR, "qs8_gemm_4x16c4: n = {n} > {PACK_NR}");
    for i in 0..m {
        let (g, r) = (i / PACK_MR, i % PACK_MR);
        for j in 0..n {
            let mut acc = bias[i];
            for s in 0..kb {
                let av = &a[(g * kb + s) * 16 + r * 4..][..4];
                let bv = &b[s * 64 + j * 4..][..4];
                for t in 0..4 {
                    acc += av[t] as i32 * bv[t] as i32;
                }
            }
            out[i * rs + j] = clamp_i8(requantize(acc, rq[i]) + q.out_zp, q.act_min, q.act_max);
        }
    }
}

/// [`qs8_gemm_4x16c4`] with real-valued output, the stage of
/// [`super::qs8_gemm_nt_f32out`]: `out[i * rs + j] = clamp(acc as f32 *
/// scale[i], lo, hi)`. Contract: as `qs8_gemm_4x16c4` with `scale` for `bias`'s
/// `rq`, `lo <= hi`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4_f32out(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    scale: &[f32],
    lo: f32,
    hi: f32,
    out: &mut [f32],
    rs: usize,
) {
    assert!(n <= PACK_NR, "qs8_gemm_4x16c4_f32out: n = {n} > {PACK_NR}");
    for i in 0..m {
        let (g, r) = (i / PACK_MR, i % PACK_MR);
        for j in 0..n {
            let mut acc = bias[i];
            for s in 0..kb {
                let av = &a[(g * kb + s) * 16 + r * 4..][..4];
                let bv = &b[s * 64 + j * 4..][..4];
                for t in 0..4 {
                    acc += av[t] as i32 * bv[t] as i32;
                }
            }
            out[i * rs + j] = (acc as f32 * scale[i]).clamp(lo, hi);
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    /// Unpacking gives back the stored weights, for every remainder of `m`
    /// and `k` modulo the group sizes.
    #[test]
    fn unpack_inverts_pack() {
        for m in 1..10 {
            for k in 1..11 {
                let w: Vec<i8> = (0..m * k).map(|i| (i * 37 + m) as i8).collect();
                let mut pa = vec![0x55i8; packed_a_len(m, k)];
                pack_a_4c4(m, k, &w, &mut pa);
                let mut back = vec![0i8; m * k];
                unpack_a_4c4(m, k, &pa, &mut back);
                assert_eq!(back, w, "m {m} k {k}");
            }
        }
    }

    /// The packed product is `qs8_gemm_nt` of the unpacked operands.
    #[test]
    fn matches_gemm_nt() {
        let mut seed = 0x2545_f491u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for &(m, n, k) in &[(1, 1, 1), (4, 16, 4), (5, 7, 9), (13, 16, 35), (8, 3, 64)] {
            let a: Vec<i8> = (0..m * k).map(|_| rnd() as i8).collect();
            let b: Vec<i8> = (0..n * k).map(|_| rnd() as i8).collect();
            let bias: Vec<i32> = (0..m).map(|_| (rnd() % 4000) as i32 - 2000).collect();
            let rq: Vec<Requant> = (0..m)
                .map(|i| crate::quantize_multiplier(0.001 * (i + 1) as f64))
                .collect();
            let q = QOut {
                out_zp: -5,
                act_min: -128,
                act_max: 100,
            };
            let mut want = vec![0i8; m * n];
            super::super::qs8_gemm_nt(m, n, k, &a, &b, &bias, &rq, &q, &mut want, n, 1);
            let mut pa = vec![0i8; packed_a_len(m, k)];
            pack_a_4c4(m, k, &a, &mut pa);
            let kb = k.div_ceil(4);
            let mut pb = vec![0i8; panel_len(k)];
            for j in 0..n {
                for kk in 0..k {
                    pb[(kk / 4) * 64 + j * 4 + kk % 4] = b[j * k + kk];
                }
            }
            let mut got = vec![0i8; m * n];
            qs8_gemm_4x16c4(m, n, kb, &pa, &[], &pb, &bias, &rq, &q, &mut got, n);
            assert_eq!(got, want, "{m}x{n}x{k}");
        }
    }

    /// `pairable_4c4` clears a group's flag exactly when one channel holds
    /// -128 at the same K offset in groups `2i` and `2i + 1`; an odd last
    /// group and -128 in other positions leave it set.
    #[test]
    fn pairable_flags() {
        let (m, k) = (9usize, 20usize); // three channel groups, kb = 5
        let kb = k.div_ceil(4);
        let flags = |w: &[i8]| {
            let mut pa = vec![0i8; packed_a_len(m, k)];
            pack_a_4c4(m, k, w, &mut pa);
            let mut f = vec![true; 3];
            pairable_4c4(m, kb, &pa, &mut f);
            f
        };
        let mut w = vec![-127i8; m * k];
        assert_eq!(flags(&w), [true; 3]);
        // Channel 5 (group 1): k = 1 (group 0) and k = 5 (group 1).
        w[5 * k + 1] = i8::MIN;
        w[5 * k + 5] = i8::MIN;
        assert_eq!(flags(&w), [true, false, true]);
        // Different offsets, other channels, or the unpaired group 4.
        let mut w = vec![3i8; m * k];
        w[1] = i8::MIN;
        w[6] = i8::MIN; // channel 0: k = 1 and k = 6
        w[k + 1] = i8::MIN;
        w[2 * k + 5] = i8::MIN; // k = 1 and k = 5, channels 1 and 2
        w[8 * k + 16] = i8::MIN;
        w[8 * k + 17] = i8::MIN; // group 4 pairs with nothing
        assert_eq!(flags(&w), [true; 3]);
        // Groups 2 and 3 (k = 8 + t and k = 12 + t) of channel 8.
        w[8 * k + 10] = i8::MIN;
        w[8 * k + 14] = i8::MIN;
        assert_eq!(flags(&w), [true, true, false]);
    }
}
