//! [`crate::reference::qs8_gemm_4x16c4`] on AVX-512 VNNI (`vpdpbusd` on
//! zmm): one 64-byte panel K group is one vector (16 pixels x 4 K), so each
//! channel's tile row is one accumulator.
//!
//! `vpdpbusd` multiplies unsigned bytes of its first source by signed bytes
//! of its second, whose EVEX form can broadcast a dword from memory
//! (`{1to16}`). So here the *panel* is the flipped operand (`b ^ 0x80 =
//! b + 128`, one `vpxord` per K group and block of channel groups) and the
//! weights stay signed, broadcast straight from the packed layout:
//! `sum w (b + 128) = sum w b + 128 sum w`, and each channel's accumulator
//! starts at `bias - 128 sum_k w` (the column sums: one `vpdpbusd` of 0x80
//! bytes per four K groups of a channel group, once per call).
//!
//! * Channel groups run in blocks of 4 (16 accumulators: 16 independent
//!   `vpdpbusd` chains per panel load), then 2, then 1.
//! * The output stage is 16 lanes wide. Requantization takes the form of
//!   [`crate::requant::requantize`] for `shift <= 0` and `mult != i32::MIN`
//!   (every multiplier below 1, [`super::requant::RqRow`]'s domain) as one
//!   64-bit rounding shift (see [`requant_row`]); other channels go through
//!   the scalar function lane by lane. `vpmovsdb` narrows with the int8
//!   saturation the final clamp subsumes.
//!
//! Bit-exactness: `vpdpbusd` (not `vpdpbusds`) wraps, and every step is an
//! i32 addition mod 2^32, so the accumulator is the reference's sum (its
//! contract keeps that in range); [`requant_row`] is exact (proof at the
//! function, exhaustive edges in the tests).

use core::arch::x86_64::*;

use crate::reference::{QOut, PACK_MR, PACK_NR};
use crate::requant::{requantize, Requant};

/// [`crate::reference::qs8_gemm_4x16c4`] with AVX-512 VNNI; same contract,
/// same output. Runs the AVX-VNNI kernel (which falls back to AVX2, then
/// the reference) on CPUs without AVX-512 F/BW/VL/VNNI.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4__avx512vnni(
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
    if !super::has_avx512vnni() {
        return super::qs8_gemm_4x16c4__avxvnni(m, n, kb, a, pairs, b, bias, rq, q, out, rs);
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
    // SAFETY: AVX-512 F/BW/VL/VNNI are available (checked above), and the
    // asserts bound every access: weight groups of rows 0..m rounded up to a
    // channel group (the packing covers whole groups), the panel's kb
    // 64-byte groups, and n bytes of each output row 0..m.
    unsafe {
        gemm(
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

/// The operands of one call, shared by its blocks.
struct Call<'a> {
    m: usize,
    kb: usize,
    a: *const i8,
    b: *const i8,
    bias: &'a [i32],
    rq: &'a [Requant],
    out: *mut i8,
    rs: usize,
    st: OutStage,
}

/// All channel groups against one panel.
///
/// Safety: AVX-512 F/BW/VL/VNNI available; `a` holds `m.div_ceil(4) * kb`
/// groups of 16 bytes, `b` `kb` groups of 64, `bias` and `rq` `m` values, and
/// `out` rows `0..m` of stride `rs` hold `n <= 16` writable bytes;
/// `m, n >= 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
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
    let c = Call {
        m,
        kb,
        a,
        b,
        bias,
        rq,
        out,
        rs,
        st: OutStage::new(q, n),
    };
    let groups = m.div_ceil(PACK_MR);
    let mut g0 = 0;
    // SAFETY (all three): channel groups g0..g0 + G <= groups, as the
    // caller's contract.
    while g0 + 4 <= groups {
        unsafe { block::<4>(&c, g0) };
        g0 += 4;
    }
    if g0 + 2 <= groups {
        unsafe { block::<2>(&c, g0) };
        g0 += 2;
    }
    if g0 < groups {
        unsafe { block::<1>(&c, g0) };
    }
}

/// Channel groups `g0..g0 + G` over all of K, then their output stage.
///
/// Safety: as [`gemm`], with `g0 + G <= m.div_ceil(4)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block<const G: usize>(c: &Call, g0: usize) {
    let (m, kb) = (c.m, c.kb);
    let mut acc = [[_mm512_setzero_si512(); PACK_MR]; G];
    for (g, accg) in acc.iter_mut().enumerate() {
        // SAFETY: channel group g0 + g holds kb groups of 16 bytes.
        let sums = unsafe { col_sums(c.a.add((g0 + g) * kb * 16), kb) };
        // The group's biases in one masked load (rows past m read nothing
        // and start anywhere: they are never stored), then each lane
        // broadcast: no trip through scalar registers per channel.
        let i0 = (g0 + g) * PACK_MR;
        let rows = (m - i0).min(PACK_MR);
        // SAFETY: i0 < m <= bias.len() (the group is one of m's), and the
        // mask covers only rows i0..m.
        let b = unsafe { _mm_maskz_loadu_epi32((1u8 << rows) - 1, c.bias.as_ptr().add(i0)) };
        let init = _mm_sub_epi32(b, sums);
        accg[0] = _mm512_broadcastd_epi32(init);
        accg[1] = _mm512_broadcastd_epi32(_mm_shuffle_epi32::<0x55>(init));
        accg[2] = _mm512_broadcastd_epi32(_mm_shuffle_epi32::<0xaa>(init));
        accg[3] = _mm512_broadcastd_epi32(_mm_shuffle_epi32::<0xff>(init));
    }
    let sign = _mm512_set1_epi8(i8::MIN);
    for s in 0..kb {
        // SAFETY: panel group s < kb.
        let pv = unsafe { _mm512_loadu_si512(c.b.add(s * 64) as *const _) };
        let pv = _mm512_xor_si512(pv, sign);
        for (g, accg) in acc.iter_mut().enumerate() {
            let w = c.a.wrapping_add(((g0 + g) * kb + s) * 16) as *const i32;
            for (r, acc) in accg.iter_mut().enumerate() {
                // SAFETY: dword r < 4 of K group s < kb of channel group
                // g0 + g.
                let wv = _mm512_set1_epi32(unsafe { w.add(r).read_unaligned() });
                *acc = _mm512_dpbusd_epi32(*acc, pv, wv);
            }
        }
    }
    for (g, accg) in acc.iter().enumerate() {
        for (r, acc) in accg.iter().enumerate() {
            let i = (g0 + g) * PACK_MR + r;
            if i < m {
                // SAFETY: row i < m of `out` holds n bytes.
                unsafe { c.st.emit(*acc, c.rq[i], c.out.add(i * c.rs)) };
            }
        }
    }
}

/// `128 * sum_k w[r][k]` (wrapping) for the four channels of the channel
/// group at `w` (`kb` K groups of 16 bytes).
///
/// Safety: AVX-512 F/BW/VNNI available; `16 * kb` readable bytes at `w`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn col_sums(w: *const i8, kb: usize) -> __m128i {
    let c128 = _mm512_set1_epi8(i8::MIN);
    // Lane 4j + r: K group j (mod 4) of channel r; two chains.
    let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    let mut k = 0;
    // SAFETY (loads): K groups k..k + 8 (or k + 4) <= kb.
    while k + 8 <= kb {
        let (v0, v1) = unsafe {
            (
                _mm512_loadu_si512(w.add(k * 16) as *const _),
                _mm512_loadu_si512(w.add(k * 16 + 64) as *const _),
            )
        };
        s0 = _mm512_dpbusd_epi32(s0, c128, v0);
        s1 = _mm512_dpbusd_epi32(s1, c128, v1);
        k += 8;
    }
    if k + 4 <= kb {
        let v = unsafe { _mm512_loadu_si512(w.add(k * 16) as *const _) };
        s0 = _mm512_dpbusd_epi32(s0, c128, v);
        k += 4;
    }
    if k < kb {
        // The last 1-3 K groups; masked-off bytes are not read.
        let mask = (1u64 << ((kb - k) * 16)) - 1;
        // SAFETY: the mask covers K groups k..kb.
        let v = unsafe { _mm512_maskz_loadu_epi8(mask, w.add(k * 16)) };
        s1 = _mm512_dpbusd_epi32(s1, c128, v);
    }
    let s = _mm512_add_epi32(s0, s1);
    let h = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// `requantize(x, r)` per lane for `0 <= -r.shift <= 31` and
/// `r.mult != i32::MIN`.
///
/// The reference is `h = floor((x m + 2^30) / 2^31)` (its nudged,
/// truncating division; no saturation unless `m == i32::MIN`) followed,
/// for `s = -shift >= 1`, by a rounding divide by `2^s`, halves away from
/// zero: with `h = q 2^s + t` (`0 <= t < 2^s`) it adds one to `q` when
/// `t >= 2^(s-1) + [h < 0]`, i.e. it is `floor((h + c) / 2^s)` for `c =
/// 2^(s-1) - [h < 0]` (`0 <= t + c < 2^(s+1)`). Nested floors of divisions
/// by powers of two merge, so the result is `floor((x m + 2^30 + c 2^31) /
/// 2^(31+s))`, and `h < 0` exactly when `x m + 2^30 < 0`. One 64-bit sum and
/// arithmetic shift per lane, no overflow: `|x m| <= 2^62`, `c 2^31 <=
/// 2^61`. For `s = 0`, `c = 0`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn requant_row(x: __m512i, r: Requant) -> __m512i {
    let s = -r.shift;
    let mult = _mm512_set1_epi32(r.mult);
    let base = _mm512_set1_epi64((1i64 << 30) + if s > 0 { 1i64 << (s + 30) } else { 0 });
    let neg_fix = _mm512_set1_epi64(if s > 0 { 1i64 << 31 } else { 0 });
    let limit = _mm512_set1_epi64(-(1i64 << 30));
    let count = _mm_cvtsi32_si128(31 + s);
    // Even lanes in the qwords' low dwords; odd lanes shifted down. (No
    // closure: it would not inherit `target_feature`.)
    let mut half = [x, _mm512_srli_epi64::<32>(x)];
    for h in &mut half {
        let p = _mm512_mul_epi32(*h, mult);
        let t = _mm512_add_epi64(p, base);
        let t = _mm512_mask_sub_epi64(t, _mm512_cmplt_epi64_mask(p, limit), t, neg_fix);
        *h = _mm512_sra_epi64(t, count);
    }
    _mm512_mask_blend_epi32(0xaaaa, half[0], _mm512_slli_epi64::<32>(half[1]))
}

/// The output stage's constants.
struct OutStage {
    zp: __m512i,
    lo: __m128i,
    hi: __m128i,
    n: usize,
}

impl OutStage {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn new(q: &QOut, n: usize) -> OutStage {
        OutStage {
            zp: _mm512_set1_epi32(q.out_zp),
            lo: _mm_set1_epi8(q.act_min),
            hi: _mm_set1_epi8(q.act_max),
            n,
        }
    }

    /// `clamp(requantize(x, r) + zp)` of one channel's 16 pixels, the first
    /// `n` stored at `dst`. The `+ zp` wraps where the scalar i32 add
    /// would overflow, as in [`super::requant`]'s stage.
    ///
    /// Safety: `n` writable bytes at `dst`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn emit(&self, x: __m512i, r: Requant, dst: *mut i8) {
        let y = if r.shift <= 0 && r.shift >= -31 && r.mult != i32::MIN {
            requant_row(x, r)
        } else {
            // Multipliers of 1 or more: the scalar function per lane.
            let mut v = [0i32; 16];
            // SAFETY: 64 bytes to and from `v`.
            unsafe {
                _mm512_storeu_si512(v.as_mut_ptr() as *mut _, x);
                for e in &mut v {
                    *e = requantize(*e, r);
                }
                _mm512_loadu_si512(v.as_ptr() as *const _)
            }
        };
        let v = _mm512_cvtsepi32_epi8(_mm512_add_epi32(y, self.zp));
        let v = _mm_min_epi8(_mm_max_epi8(v, self.lo), self.hi);
        // SAFETY: the caller's n <= 16 bytes at `dst`.
        unsafe {
            if self.n == PACK_NR {
                _mm_storeu_si128(dst as *mut __m128i, v);
            } else {
                _mm_mask_storeu_epi8(dst, ((1u32 << self.n) - 1) as u16, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self, pack_a_4c4, packed_a_len};
    use crate::requant::quantize_multiplier;

    fn has() -> bool {
        super::super::has_avx512vnni()
    }

    /// [`requant_row`] against the scalar `requantize` over every right
    /// shift, the edge inputs and multipliers, and random ones.
    #[test]
    fn requant_row_matches_scalar() {
        if !has() {
            eprintln!("SKIP requant_row (avx512vnni): this CPU lacks avx512vnni");
            return;
        }
        let mut seed = 0x2545_f491u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as i32
        };
        let edges = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30) - 1,
            -(1 << 30),
            -(1 << 30) + 1,
            -65537,
            -65536,
            -3,
            -2,
            -1,
            0,
            1,
            2,
            3,
            65535,
            65536,
            1 << 30,
            i32::MAX - 1,
            i32::MAX,
        ];
        let mut checked = 0;
        for shift in -31..=0 {
            let mut mults = vec![i32::MIN + 1, -1, 0, 1, 1 << 30, (1 << 30) + 1, i32::MAX];
            mults.extend((0..40).map(|_| rnd()));
            for mult in mults {
                let r = Requant { mult, shift };
                let mut xs: Vec<i32> = edges.to_vec();
                xs.extend((0..45).map(|_| rnd() >> (rnd() as u32 % 31)));
                for chunk in xs.chunks(16) {
                    let mut v = [0i32; 16];
                    v[..chunk.len()].copy_from_slice(chunk);
                    let mut got = [0i32; 16];
                    // SAFETY: features checked; 64 bytes each way.
                    unsafe {
                        let x = _mm512_loadu_si512(v.as_ptr() as *const _);
                        _mm512_storeu_si512(got.as_mut_ptr() as *mut _, requant_row(x, r));
                    }
                    for (x, g) in v.iter().zip(got) {
                        assert_eq!(g, requantize(*x, r), "x {x} {r:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 50_000, "{checked}");
    }

    /// Reductions longer than the shared grid's (K to 3077), every block
    /// size (4, 2, 1 channel groups) and column-sum tail, with extreme
    /// operands (all -128; 127 weights against -128 inputs) and a
    /// multiplier of 1 or more (the scalar stage).
    #[test]
    fn long_reductions_match_the_reference() {
        if !has() {
            eprintln!("SKIP long_reductions (avx512vnni): this CPU lacks avx512vnni");
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
            (9usize, 16usize, 1028usize),
            (6, 13, 2051),
            (5, 7, 1020),
            (3, 16, 1024),
            (2, 9, 1400),
            (70, 11, 3077),
            (28, 16, 36),
            (27, 16, 44),
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
                let mut rq: Vec<Requant> = (0..m)
                    .map(|i| quantize_multiplier(20.0 / (mag * (1.0 + 0.1 * i as f64))))
                    .collect();
                // Channel 1: the same scale as a positive shift (the
                // scalar stage's domain).
                let r1 = rq[1];
                rq[1] = Requant {
                    mult: r1.mult >> (1 - r1.shift).min(31),
                    shift: 1,
                };
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
                qs8_gemm_4x16c4__avx512vnni(m, n, kb, &pa, &[], &b, &bias, &rq, &q, &mut got, rs);
                assert_eq!(got, want, "m={m} n={n} k={k} extreme={extreme:?}");
                // Most outputs are not clamped: the test sees the sums.
                let clamped = got.iter().filter(|&&v| v == -100 || v == 120).count();
                assert!(clamped * 3 < m * n, "m={m} n={n} k={k}: {got:?}");
            }
        }
    }
}
