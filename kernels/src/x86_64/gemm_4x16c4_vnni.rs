//! [`crate::reference::qs8_gemm_4x16c4`] on AVX-VNNI (`vpdpbusd`, VEX
//! encoded): the 4-channel x 16-pixel tile over all of K from the packed
//! layouts, with the AVX2 kernel's output stage ([`super::gemm_4x16c4`]).
//!
//! `vpdpbusd` adds to each i32 lane the four products of an *unsigned*
//! byte of its first source and a *signed* byte of its second: exactly one
//! c4 K group of one pixel (a panel dword) against one channel (a broadcast
//! weight dword). Both operands are int8, so one is made unsigned by
//! flipping its sign bit, `w ^ 0x80 = w + 128`, and the bias pays for it:
//! `sum (w + 128) b = sum w b + 128 sum b`. As in XNNPACK's `*avxvnni*`
//! kernels the flipped operand is the broadcast one (here the weights) and
//! the correction is the sum of the vector operand (here the panel):
//!
//! * once per call, per pixel, `P = sum_k 128 b[k]` (one `vpdpbusd` of the
//!   constant 0x80 bytes per panel vector and K group), shared by every
//!   channel group; each channel group's accumulators start at `bias - P`.
//! * per K group and channel group, 4 weight broadcasts, each flipped by
//!   one `vpxor` (as fast as flipping each channel group's weights into a
//!   stack copy first, measured with `examples/packed_speed.rs`), and 8
//!   `vpdpbusd` (4 channels x 2 octets of pixels) straight from the packed
//!   panel: its octets load unchanged, in pixel order. No staging, so no
//!   limit on K.
//!
//! Bit-exactness: `vpdpbusd` (not `vpdpbusds`) wraps, and every step is an
//! i32 addition mod 2^32: `bias - P + sum (w + 128) b = bias + sum w b`
//! mod 2^32, which is the reference's sum (its contract keeps that in
//! range). The output stage is the AVX2 kernel's, bit-exact with the
//! reference.

use core::arch::asm;
use core::arch::x86_64::*;

use super::gemm_4x16c4::{emit, Acc, OutStage};
use crate::reference::{QOut, PACK_MR, PACK_NR};
use crate::requant::Requant;

/// [`crate::reference::qs8_gemm_4x16c4`] with AVX-VNNI; same contract, same
/// output. Runs the AVX2 kernel (itself the reference without AVX2) on CPUs
/// without AVX-VNNI.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4__avxvnni(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    pairs: &[bool],
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &mut [i8],
    rs: usize,
) {
    if !super::has_avxvnni() {
        return super::qs8_gemm_4x16c4__avx2(m, n, kb, a, pairs, b, bias, rq, q, out, rs);
    }
    assert!(n <= PACK_NR, "qs8_gemm_4x16c4: n = {n} > {PACK_NR}");
    if m == 0 || n == 0 {
        return;
    }
    // Checked products: a wrapped length must not pass the bounds check.
    let fits = |len: usize, need: Option<usize>| need.is_some_and(|x| x <= len);
    assert!(
        fits(
            a.len(),
            m.div_ceil(PACK_MR)
                .checked_mul(kb)
                .and_then(|x| x.checked_mul(16))
        ) && fits(b.len(), kb.checked_mul(4 * PACK_NR))
            && bias.len() >= m
            && rq.len() >= m
            && fits(
                out.len(),
                (m - 1).checked_mul(rs).and_then(|x| x.checked_add(n))
            ),
        "qs8_gemm_4x16c4: buffers do not match m {m} n {n} kb {kb}"
    );
    // The reference's `clamp` panics on these; keep that behaviour.
    assert!(q.act_min <= q.act_max, "clamp: act_min > act_max");
    // SAFETY: AVX2 and AVX-VNNI are available (checked above), and the
    // asserts bound every access: weight groups of rows 0..m rounded up to a
    // channel group (the packing covers whole groups), the panel's kb
    // 64-byte groups, and n bytes of each output row 0..m.
    unsafe {
        if n > PACK_NR / 2 {
            gemm::<2>(
                m,
                n,
                kb,
                a.as_ptr(),
                b.as_ptr(),
                bias,
                rq,
                q,
                out.as_mut_ptr(),
                rs,
            )
        } else {
            gemm::<1>(
                m,
                n,
                kb,
                a.as_ptr(),
                b.as_ptr(),
                bias,
                rq,
                q,
                out.as_mut_ptr(),
                rs,
            )
        }
    }
}

/// All channel groups against one panel, `OCT` octets of pixels (2 for
/// `n > 8`, else 1).
///
/// Safety: AVX2 and AVX-VNNI available; `a` holds `m.div_ceil(4) * kb`
/// groups of 16 bytes, `b` `kb` groups of 64, `bias` and `rq` `m` values, and
/// `out` rows `0..m` of stride `rs` hold `n <= 8 * OCT` writable bytes;
/// `m, n >= 1`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<const OCT: usize>(
    m: usize,
    n: usize,
    kb: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: *mut i8,
    rs: usize,
) {
    // SAFETY: the caller's kb panel groups.
    let p = unsafe { panel_sums::<OCT>(b, kb) };
    let st = OutStage::new(q);
    for gi in 0..m.div_ceil(PACK_MR) {
        // Rows past m start anywhere: they are never stored.
        let mut acc: Acc = [[_mm256_setzero_si256(); 2]; 4];
        for (i, a) in (gi * PACK_MR..m).zip(acc.iter_mut()) {
            let bi = _mm256_set1_epi32(bias[i]);
            *a = [_mm256_sub_epi32(bi, p[0]), _mm256_sub_epi32(bi, p[1])];
        }
        // SAFETY: K groups 0..kb of channel group gi < the caller's groups;
        // the panel's kb groups.
        unsafe { kloop::<OCT>(&mut acc, kb, a.add(gi * kb * 16) as *const i32, b) };
        // SAFETY: as the caller's contract for the group's rows.
        unsafe { emit::<false>(&st, &acc, gi * PACK_MR, m, n, rq, out, rs) };
    }
}

/// `vpdpbusd acc, u, s` (VEX): per i32 lane, `acc + sum of the four
/// products u8(u) x i8(s)`, wrapping. Inline asm rather than
/// `_mm256_dpbusd_avx_epi32`: the intrinsic needs `avxvnni` enabled on the
/// caller, and LLVM then does not inline the AVX2-only output stage
/// ([`emit`]) into it (measured: the output stage as two out-of-line calls
/// per channel pair, about a fifth of the time of mobilenet_v2's convs).
///
/// Safety: the CPU has AVX-VNNI.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: AVX-VNNI is the caller's promise; registers only.
    unsafe {
        asm!(
            "{{vex}} vpdpbusd {acc}, {u}, {s}",
            acc = inout(ymm_reg) acc,
            u = in(ymm_reg) u,
            s = in(ymm_reg) s,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Per octet of pixels of the panel at `b`, `128 * sum_k b[p][k]` per pixel
/// (wrapping; octet 1 zero when `OCT == 1`).
///
/// Safety: AVX2 and AVX-VNNI available; `kb` groups of 64 readable bytes at
/// `b`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn panel_sums<const OCT: usize>(b: *const i8, kb: usize) -> [__m256i; 2] {
    let c128 = _mm256_set1_epi8(i8::MIN);
    // Two sums per octet (even and odd K groups) halve the dependency chain.
    let mut s = [[_mm256_setzero_si256(); 2]; 2];
    for g in 0..kb {
        for (o, so) in s.iter_mut().enumerate().take(OCT) {
            // SAFETY: group g < kb, octet o < 2 of its 64 bytes.
            let v = unsafe { _mm256_loadu_si256(b.add(g * 64 + o * 32) as *const __m256i) };
            // SAFETY: AVX-VNNI is the caller's promise.
            so[g & 1] = unsafe { dpbusd(so[g & 1], c128, v) };
        }
    }
    [
        _mm256_add_epi32(s[0][0], s[0][1]),
        _mm256_add_epi32(s[1][0], s[1][1]),
    ]
}

/// `len` K groups: `acc[r][o] += sum over k of (w[r][k] + 128) x
/// panel[o][k]` per pixel, the weights of one channel group at `w` (4
/// dwords per group, one per channel) and the panel at `b` (64 bytes per
/// group).
///
/// Safety: AVX2 and AVX-VNNI available; `w` and `b` hold `len` groups.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn kloop<const OCT: usize>(acc: &mut Acc, len: usize, w: *const i32, b: *const i8) {
    let sign = _mm256_set1_epi8(i8::MIN);
    for s in 0..len {
        // Plain loops, no `array::from_fn`: a closure calling AVX2 code
        // would not inline into the generic (featureless) `from_fn`.
        let mut g = [_mm256_setzero_si256(); OCT];
        for (o, v) in g.iter_mut().enumerate() {
            // SAFETY: group s < len, octet o < 2 of its 64 bytes.
            *v = unsafe { _mm256_loadu_si256(b.add(s * 64 + o * 32) as *const __m256i) };
        }
        for (r, accr) in acc.iter_mut().enumerate() {
            // SAFETY: dword r < 4 of group s < len.
            let wv = _mm256_xor_si256(
                _mm256_set1_epi32(unsafe { w.add(s * 4 + r).read_unaligned() }),
                sign,
            );
            for (a, go) in accr.iter_mut().zip(&g) {
                // SAFETY: AVX-VNNI is the caller's promise.
                *a = unsafe { dpbusd(*a, wv, *go) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self, pack_a_4c4, packed_a_len};
    use crate::requant::quantize_multiplier;

    /// Reductions longer than the shared grid's (K to 3077: panel sums and
    /// accumulators far from the bias), with extreme operands (all -128:
    /// the flipped weights are 0, every product sits in the panel sums; all
    /// 127 against -128: the largest flipped weight).
    #[test]
    fn long_reductions_match_the_reference() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni")) {
            eprintln!("SKIP long_reductions (avxvnni): this CPU lacks avxvnni");
            return;
        }
        let mut seed = 0x9e37_79b9u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for &(m, n, k) in &[
            (9, 16, 1028usize),
            (6, 13, 2051),
            (5, 7, 1020),
            (3, 16, 1024),
            (2, 9, 1400),
            (70, 11, 3077),
        ] {
            for extreme in [None, Some((-128i8, -128i8)), Some((127, -128))] {
                let kb = k.div_ceil(4);
                let w: Vec<i8> = (0..m * k)
                    .map(|_| extreme.map_or(rnd() as i8, |e| e.0))
                    .collect();
                let b: Vec<i8> = (0..kb * 64)
                    .map(|_| extreme.map_or(rnd() as i8, |e| e.1))
                    .collect();
                let bias: Vec<i32> = (0..m).map(|i| i as i32 * 7919 - 20_000).collect();
                let mag = if extreme.is_some() {
                    16384.0 * k as f64
                } else {
                    5500.0 * (k as f64).sqrt()
                };
                let rq: Vec<Requant> = (0..m)
                    .map(|i| quantize_multiplier(20.0 / (mag * (1.0 + 0.1 * i as f64))))
                    .collect();
                let q = QOut {
                    out_zp: 3,
                    act_min: -100,
                    act_max: 120,
                };
                let mut pa = vec![0i8; packed_a_len(m, k)];
                pack_a_4c4(m, k, &w, &mut pa);
                let rs = n + 2;
                let mut want = vec![0x55i8; m * rs];
                let mut got = want.clone();
                reference::qs8_gemm_4x16c4(m, n, kb, &pa, &[], &b, &bias, &rq, &q, &mut want, rs);
                qs8_gemm_4x16c4__avxvnni(m, n, kb, &pa, &[], &b, &bias, &rq, &q, &mut got, rs);
                assert_eq!(got, want, "m={m} n={n} k={k} extreme={extreme:?}");
                // Most outputs are not clamped: the test sees the sums.
                let clamped = got.iter().filter(|&&v| v == -100 || v == 120).count();
                assert!(clamped * 4 < m * n, "m={m} n={n} k={k}: {got:?}");
            }
        }
    }
}
