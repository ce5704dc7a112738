//! [`crate::reference::qs8_gemm_4x16c4`] on AVX2: the 4-channel x 16-pixel
//! tile over all of K from the packed layouts, with the output stage fused
//! (requantize, zero point, clamp, one 16-byte store per channel).
//!
//! AVX2 has no signed 4-way int8 dot product, so the K loop multiplies i16
//! pairs: `vpmaddwd` sums two exact products into an i32 lane (never
//! `vpmaddubsw`, which is unsigned x signed and saturates its i16 sums).
//! Each K group of four splits into its two pairs `h` (k0 k1 and k2 k3):
//!
//! * **panel**: each 16-byte quad of pixels is widened (`vpmovsxbw`) and two
//!   quads are transposed (`vshufps`) into pair vectors: for octet `o` of
//!   pixels and pair `h`, the dwords `(b[p][2h], b[p][2h + 1])` of pixels
//!   `8o + [0 1 4 5 | 2 3 6 7]` (the order is undone once per store). When
//!   the call has more than one channel group, this is done once per call
//!   into a stack copy that every group reads (for K past [`KB_STAGED`]
//!   groups, once per chunk of K and block of [`CB`] channel groups, whose
//!   accumulators wait on the stack between chunks); with one channel
//!   group, inside the K loop.
//! * **weights**: a channel group's 16 bytes per K group are widened to one
//!   vector of i16 (per chunk of [`KB_CHUNK`] groups, on the stack), so that
//!   `(w[r][2h], w[r][2h + 1])` is one `vpbroadcastd` load.
//! * per K group, 16 `vpmaddwd` + `vpaddd` into 8 accumulators (4 channels x
//!   2 octets). Both pairs of a group land in the same lane, so each lane
//!   holds one whole output and no horizontal reduction is needed (XNNPACK's
//!   `qs8-gemm` `c8` AVX2 kernels keep pair lanes and `vphaddd` them at the
//!   end, which takes twice the accumulators for the same tile). 8
//!   accumulators + 4 panel vectors + 1 broadcast fit the 16 ymm registers.
//!
//! Panels of at most 8 pixels take only the first octet.
//!
//! Bit-exactness: a `vpmaddwd` lane is `w0 b0 + w1 b1` with i8 values, at
//! most 2 * 128 * 128 = 32768 in magnitude (its one wrapping case, both
//! pairs -32768 * -32768, cannot occur), and the lanes sum in i32 with
//! wrapping adds: the same value as the reference's sum (whose contract keeps
//! it in range; addition mod 2^32 is associative). The output stage is the
//! bit-exact [`super::requant`] one; its saturating narrows (`vpackss*`)
//! cannot change a value the final clamp keeps, as the clamp bounds lie in
//! the int8 range.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::requant::{requantize_row, requantize_v, RqRow, RqV};
use crate::reference::{self, QOut, PACK_MR, PACK_NR};
use crate::requant::Requant;

/// Most K groups of widened panel staged on the stack at a time (128 bytes
/// each: 32 KiB); longer reductions are staged in chunks of this many.
const KB_STAGED: usize = 256;
/// K groups of weights widened at a time (32 bytes each: 4 KiB).
const KB_CHUNK: usize = 128;

/// One K group of the widened panel: `[octet][pair]`, eight pixels each.
type Group = [[__m256i; 2]; 2];

/// [`reference::qs8_gemm_4x16c4`] with AVX2; same contract, same output.
/// Runs the reference on CPUs without AVX2.
#[allow(clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4__avx2(
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
    if !super::has_avx2() {
        return reference::qs8_gemm_4x16c4(m, n, kb, a, pairs, b, bias, rq, q, out, rs);
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
    // SAFETY: AVX2 is available (checked above), and the asserts bound every
    // access: weight groups of rows 0..m rounded up to a channel group (the
    // packing covers whole groups), the panel's kb 64-byte groups, and n
    // bytes of each output row 0..m.
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

/// Accumulators of one channel group: `[channel][octet]`, eight pixels each.
pub(super) type Acc = [[__m256i; 2]; 4];

/// All channel groups against one panel, `OCT` octets of pixels (2 for
/// `n > 8`, else 1).
///
/// Safety: AVX2 available; `a` holds `m.div_ceil(4) * kb` groups of 16
/// bytes, `b` `kb` groups of 64, `bias` and `rq` `m` values, and `out` rows
/// `0..m` of stride `rs` hold `n <= 8 * OCT` writable bytes; `m, n >= 1`.
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
    let groups = m.div_ceil(PACK_MR);
    let mut panel = MaybeUninit::<[Group; KB_STAGED]>::uninit();
    let pp = panel.as_mut_ptr() as *mut Group;
    let mut wbuf = MaybeUninit::<[__m256i; KB_CHUNK]>::uninit();
    let wp = wbuf.as_mut_ptr() as *mut __m256i;
    let st = OutStage::new(q);
    // Channel group gi's accumulators start at its biases (0 past m).
    let init = |gi: usize| -> Acc {
        let mut acc = [[_mm256_setzero_si256(); 2]; 4];
        for (i, a) in (gi * PACK_MR..m).zip(acc.iter_mut()) {
            *a = [_mm256_set1_epi32(bias[i]); 2];
        }
        acc
    };
    if kb <= KB_STAGED || groups == 1 {
        // One pass over K per channel group, accumulators in registers.
        // Staging pays off once a second channel group reads the copy.
        let staged = groups > 1;
        if staged {
            // SAFETY: kb <= KB_STAGED groups of `b` into the buffer.
            unsafe { stage::<OCT>(b, kb, pp) };
        }
        for gi in 0..groups {
            let mut acc = init(gi);
            let src = if staged { Src::Staged(pp) } else { Src::Raw(b) };
            // SAFETY: channel group gi < groups of `a`; `src` holds kb groups.
            unsafe { accumulate::<OCT>(&mut acc, a.add(gi * kb * 16), kb, src, wp) };
            // SAFETY: as the caller's contract for the group's rows.
            unsafe { emit::<true>(&st, &acc, gi * PACK_MR, m, n, rq, out, rs) };
        }
        return;
    }
    // Long K and several channel groups: chunks of KB_STAGED groups, each
    // staged once per block of up to CB channel groups, whose accumulators
    // wait in `saved` between chunks.
    let mut saved = MaybeUninit::<[Acc; CB]>::uninit();
    let sp = saved.as_mut_ptr() as *mut Acc;
    let mut g0 = 0;
    while g0 < groups {
        let nb = (groups - g0).min(CB);
        let mut s0 = 0;
        while s0 < kb {
            let len = (kb - s0).min(KB_STAGED);
            // SAFETY: groups s0..s0 + len <= kb of `b`; len <= KB_STAGED.
            unsafe { stage::<OCT>(b.add(s0 * 64), len, pp) };
            for j in 0..nb {
                let gi = g0 + j;
                // SAFETY: slot j < nb <= CB was written by the previous
                // chunk (s0 > 0).
                let mut acc = if s0 == 0 {
                    init(gi)
                } else {
                    unsafe { sp.add(j).read() }
                };
                // SAFETY: groups s0..s0 + len of channel group gi < groups;
                // the staged chunk holds len groups.
                unsafe {
                    accumulate::<OCT>(
                        &mut acc,
                        a.add((gi * kb + s0) * 16),
                        len,
                        Src::Staged(pp),
                        wp,
                    )
                };
                if s0 + len == kb {
                    // SAFETY: as the caller's contract for the group's rows.
                    unsafe { emit::<true>(&st, &acc, gi * PACK_MR, m, n, rq, out, rs) };
                } else {
                    // SAFETY: j < CB.
                    unsafe { sp.add(j).write(acc) };
                }
            }
            s0 += len;
        }
        g0 += nb;
    }
}

/// Channel groups whose accumulators wait between K chunks (4 KiB).
const CB: usize = 16;

/// Where the K loop reads the panel.
#[derive(Clone, Copy)]
enum Src {
    /// Widened and transposed by [`stage`] (one [`Group`] per K group).
    Staged(*const Group),
    /// The packed bytes (64 per K group), widened in the loop.
    Raw(*const i8),
}

/// Widens and transposes `len` K groups of the panel at `b` into `dst`
/// (only the first octet when `OCT == 1`).
///
/// Safety: AVX2 available; `len` groups of 64 readable bytes at `b`, room
/// for `len` [`Group`]s at `dst`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn stage<const OCT: usize>(b: *const i8, len: usize, dst: *mut Group) {
    for s in 0..len {
        let mut g = [[_mm256_setzero_si256(); 2]; 2];
        for (o, v) in g.iter_mut().enumerate().take(OCT) {
            // SAFETY: group s < len, octet o < 2 of its 64 bytes.
            *v = unsafe { widen_octet(b.add(s * 64 + o * 32)) };
        }
        // SAFETY: s < len.
        unsafe { dst.add(s).write(g) };
    }
}

/// `len` K groups of one channel group (weights at `ag`, 16 bytes per K
/// group) into `acc`: the weights widened into `wbuf` per [`KB_CHUNK`]
/// groups, then the K loop.
///
/// Safety: AVX2 available; `len` weight groups at `ag`, `len` panel groups
/// in `src`; `wbuf` has room for `KB_CHUNK` vectors.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn accumulate<const OCT: usize>(
    acc: &mut Acc,
    ag: *const i8,
    len: usize,
    src: Src,
    wbuf: *mut __m256i,
) {
    let mut c0 = 0;
    while c0 < len {
        let clen = (len - c0).min(KB_CHUNK);
        for s in 0..clen {
            // SAFETY: group c0 + s < len; s < KB_CHUNK.
            unsafe {
                let w = _mm_loadu_si128(ag.add((c0 + s) * 16) as *const __m128i);
                wbuf.add(s).write(_mm256_cvtepi8_epi16(w));
            }
        }
        let w = wbuf as *const i32;
        // SAFETY: `wbuf` holds clen widened groups (above); `src` holds
        // groups c0..c0 + clen <= len.
        unsafe {
            match src {
                Src::Staged(p) => kloop::<OCT, true>(acc, clen, w, p.add(c0) as *const i8),
                Src::Raw(p) => kloop::<OCT, false>(acc, clen, w, p.add(c0 * 64)),
            }
        }
        c0 += clen;
    }
}

/// The output stage of channel group `i0 / 4` and its stores (rows `i0..m`,
/// at most four; `n` bytes each). `SHUFFLED`: the accumulators hold their
/// octets' pixels in the `[0 1 4 5 | 2 3 6 7]` order of [`widen_octet`]
/// (else in pixel order, as the VNNI kernel's, which load panel octets
/// unchanged).
///
/// Safety: AVX2 available; rows `i0..min(i0 + 4, m)` of stride `rs` at
/// `out` hold `n <= 16` writable bytes; `rq` holds `m` values.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn emit<const SHUFFLED: bool>(
    st: &OutStage,
    acc: &Acc,
    i0: usize,
    m: usize,
    n: usize,
    rq: &[Requant],
    out: *mut i8,
    rs: usize,
) {
    let mr = (m - i0).min(PACK_MR);
    let mut r = 0;
    while r < mr {
        let lo = st.finish(acc[r], rq[i0 + r]);
        // An odd last channel pairs with a dummy (never stored).
        let hi = if r + 1 < mr {
            st.finish(acc[r + 1], rq[i0 + r + 1])
        } else {
            lo
        };
        let v = st.pack::<SHUFFLED>(lo, hi);
        // SAFETY: rows i0 + r (and i0 + r + 1 when < m) hold n bytes.
        unsafe {
            store(_mm256_castsi256_si128(v), out.add((i0 + r) * rs), n);
            if r + 1 < mr {
                store(
                    _mm256_extracti128_si256::<1>(v),
                    out.add((i0 + r + 1) * rs),
                    n,
                );
            }
        }
        r += 2;
    }
}

/// The pair vectors of one octet of pixels (32 panel bytes at `p`): `[h]`
/// holds the i16 pairs `(b[2h], b[2h + 1])` of pixels `[0 1 4 5 | 2 3 6 7]`.
///
/// Safety: AVX2 available; 32 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen_octet(p: *const i8) -> [__m256i; 2] {
    // SAFETY: 32 readable bytes at `p`.
    let (qa, qb) = unsafe {
        (
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i)),
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(16) as *const __m128i)),
        )
    };
    // Dwords of a widened quad: [p0h0 p0h1 p1h0 p1h1 | p2h0 p2h1 p3h0 p3h1].
    let (qa, qb) = (_mm256_castsi256_ps(qa), _mm256_castsi256_ps(qb));
    [
        _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(qa, qb)),
        _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(qa, qb)),
    ]
}

/// `len` K groups: `acc[r][o] += sum over pairs h of
/// broadcast(w pair (r, h)) x panel[o][h]`. `w` holds 8 dwords (i16 pairs) per group; `bsrc` is the
/// staged panel ([`Group`]s) when `STAGED`, else the raw panel (64 bytes
/// per group).
///
/// Safety: AVX2 available; `w` and `bsrc` hold `len` groups.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn kloop<const OCT: usize, const STAGED: bool>(
    acc: &mut [[__m256i; 2]; 4],
    len: usize,
    w: *const i32,
    bsrc: *const i8,
) {
    for s in 0..len {
        // Plain loops, no `array::from_fn`: a closure calling AVX2 code
        // would not inline into the generic (featureless) `from_fn`.
        let mut g = [[_mm256_setzero_si256(); 2]; OCT];
        for (o, v) in g.iter_mut().enumerate() {
            *v = if STAGED {
                // SAFETY: group s < len of the staged panel (aligned
                // `Group`s), octet o < 2.
                unsafe { (*(bsrc as *const Group).add(s))[o] }
            } else {
                // SAFETY: group s < len of the raw panel, octet o < 2.
                unsafe { widen_octet(bsrc.add(s * 64 + o * 32)) }
            };
        }
        for (r, accr) in acc.iter_mut().enumerate() {
            for h in 0..2 {
                // SAFETY: dword 2r + h < 8 of group s < len.
                let wv = _mm256_set1_epi32(unsafe { *w.add(s * 8 + 2 * r + h) });
                for (a, go) in accr.iter_mut().zip(&g) {
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(wv, go[h]));
                }
            }
        }
    }
}

/// The output stage's constants.
pub(super) struct OutStage {
    zp: __m256i,
    lo: __m256i,
    hi: __m256i,
    /// `vpermd` index gathering each channel's four dwords into its lane.
    perm: __m256i,
    /// `vpshufb` index undoing the `[0 1 4 5 | 2 3 6 7]` pixel order.
    shuf: __m256i,
}

impl OutStage {
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn new(q: &QOut) -> OutStage {
        let shuf = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15];
        let s = _mm_setr_epi8(
            shuf[0], shuf[1], shuf[2], shuf[3], shuf[4], shuf[5], shuf[6], shuf[7], shuf[8],
            shuf[9], shuf[10], shuf[11], shuf[12], shuf[13], shuf[14], shuf[15],
        );
        OutStage {
            zp: _mm256_set1_epi32(q.out_zp),
            lo: _mm256_set1_epi8(q.act_min),
            hi: _mm256_set1_epi8(q.act_max),
            perm: _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
            shuf: _mm256_broadcastsi128_si256(s),
        }
    }

    /// `requantize(x, r) + zp` on both octets of one channel (the `+ zp`
    /// wraps where the scalar i32 add would overflow, as in
    /// [`super::requant::output_stage`]).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn finish(&self, acc: [__m256i; 2], r: Requant) -> [__m256i; 2] {
        // No closures here: they would not inherit `target_feature` and
        // end up as calls.
        let [a0, a1] = acc;
        let (y0, y1) = match RqRow::new(r) {
            Some(row) => (requantize_row(a0, &row), requantize_row(a1, &row)),
            None => {
                let rv = RqV::splat(r);
                (requantize_v(a0, &rv), requantize_v(a1, &rv))
            }
        };
        [_mm256_add_epi32(y0, self.zp), _mm256_add_epi32(y1, self.zp)]
    }

    /// Two channels' 16 pixels as clamped int8, in pixel order: channel `c0`
    /// in the low 16 bytes, `c1` in the high. `SHUFFLED`: as [`emit`]'s.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pack<const SHUFFLED: bool>(&self, c0: [__m256i; 2], c1: [__m256i; 2]) -> __m256i {
        // Per 128-bit lane, i16: [c 0 1 4 5, c 8 9 12 13 | c 2 3 6 7, c 10 11 14 15]
        // (unshuffled: [c 0 1 2 3, c 8 9 10 11 | c 4 5 6 7, c 12 13 14 15]).
        let p0 = _mm256_packs_epi32(c0[0], c0[1]);
        let p1 = _mm256_packs_epi32(c1[0], c1[1]);
        // Dwords of four bytes: [c0{0 1 4 5} c0{8 9 12 13} c1{..} c1{..} |
        // c0{2 3 6 7} c0{10 11 14 15} c1{..} c1{..}]; `vpermd` then puts
        // each channel's four dwords in its lane (unshuffled, already in
        // pixel order: [c0{0..3} c0{4..7} c0{8..11} c0{12..15} | c1{..}]).
        let y = _mm256_packs_epi16(p0, p1);
        let y = _mm256_permutevar8x32_epi32(y, self.perm);
        let y = if SHUFFLED {
            _mm256_shuffle_epi8(y, self.shuf)
        } else {
            y
        };
        _mm256_min_epi8(_mm256_max_epi8(y, self.lo), self.hi)
    }
}

/// Stores the first `n` bytes of `v` at `dst`.
///
/// Safety: `n <= 16` writable bytes at `dst`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store(v: __m128i, dst: *mut i8, n: usize) {
    // SAFETY: the caller's `n` bytes at `dst`; `buf` holds 16.
    unsafe {
        if n == PACK_NR {
            _mm_storeu_si128(dst as *mut __m128i, v);
        } else {
            let mut buf = [0i8; PACK_NR];
            _mm_storeu_si128(buf.as_mut_ptr() as *mut __m128i, v);
            core::ptr::copy_nonoverlapping(buf.as_ptr(), dst, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{pack_a_4c4, packed_a_len};
    use crate::requant::quantize_multiplier;

    /// Reductions the shared grid does not reach: the weight chunks
    /// (`KB_CHUNK`), the K chunks past `KB_STAGED` (one and several blocks
    /// of `CB` channel groups) and the unstaged panel, with extreme
    /// operands (all -128, so every pair is +32768).
    #[test]
    fn long_reductions_match_the_reference() {
        if !std::is_x86_feature_detected!("avx2") {
            eprintln!("SKIP long_reductions: no avx2");
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
            (9, 16, 4 * KB_CHUNK + 4),
            (6, 13, 4 * KB_STAGED + 3),
            (5, 7, 4 * KB_STAGED + 4),
            (3, 16, 4 * KB_STAGED),
            (8, 16, 4 * KB_STAGED + 4),
            (2, 9, 1400),
            // More than one block of CB channel groups, three K chunks.
            (4 * CB + 6, 11, 8 * KB_STAGED + 5),
            (4 * CB + 4, 16, 4 * KB_STAGED + 4),
        ] {
            for extreme in [false, true] {
                let kb = k.div_ceil(4);
                let w: Vec<i8> = (0..m * k)
                    .map(|_| if extreme { -128 } else { rnd() as i8 })
                    .collect();
                let b: Vec<i8> = (0..kb * 64)
                    .map(|_| if extreme { -128 } else { rnd() as i8 })
                    .collect();
                let bias: Vec<i32> = (0..m).map(|i| i as i32 * 7919 - 20_000).collect();
                // Outputs of tens: sums of k * 16384 (extreme) or about
                // 5500 * sqrt(k) (random).
                let mag = if extreme {
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
                qs8_gemm_4x16c4__avx2(m, n, kb, &pa, &[], &b, &bias, &rq, &q, &mut got, rs);
                assert_eq!(got, want, "m={m} n={n} k={k} extreme={extreme}");
                // Most outputs are not clamped: the test sees the sums.
                let clamped = got.iter().filter(|&&v| v == -100 || v == 120).count();
                assert!(clamped * 4 < m * n, "m={m} n={n} k={k}: {got:?}");
            }
        }
    }
}
