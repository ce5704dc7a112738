//! [`crate::reference::qs8_gemm_4x16c4`] on 32-bit ARMv7 NEON: the 4-channel
//! x 16-pixel tile in four passes of 4 channels x 4 pixels (a quarter of the
//! panel). One `asm!` block runs the passes of a channel group: per pass the
//! whole K loop, then the fused output stage.
//!
//! **K loop** (per K group of four): one `vld1.8` of the quarter's 16 panel
//! bytes (pixels p..p+3, four K values each), one `vld4.32` to all lanes that
//! splits the 16 weight bytes into four registers, each holding one channel's
//! four weights twice, then per channel two `vmull.s8` (each i16 lane holds a
//! single product, so `-128 * -128 = 2^14` cannot overflow) and two
//! `vpadal.s16` into i32 accumulators: the aarch64 `__neon` kernel's
//! `smull`/`sadalp` on the same c4 layout. Accumulator `acc[r][h]` holds
//! `[p k01, p k23, p+1 k01, p+1 k23]` of channel `r` and pixel pair `h`.
//! The first group initialises them with `vpaddl` (no zeroing); the rest run
//! two groups per loop iteration. Overflow: each i32 lane sums at most
//! `2 * kb` products of magnitude <= 2^14, plus the bias, all as the
//! reference adds them (wrapping adds give the same bits wherever the
//! reference's sum fits in i32, which its contract requires).
//!
//! **Pairing**: a channel group whose `pairs` flag is set
//! ([`crate::reference::pairable_4c4`], computed once at prepare: no weight
//! byte is -128 in both K groups `2i` and `2i + 1`) runs the K groups two at
//! a time: per channel and pixel pair one `vmull.s8` of group `2i`, one
//! `vmlal.s8` of group `2i + 1` into the same i16 lanes (`|w1 x1 + w2 x2| <=
//! 2^14 + 127 * 128 < 2^15`), one `vpadal.s16`, as the aarch64 `__neon`
//! kernel's `smull`/`smlal`/`sadalp`. A quarter's pair is 28 instructions
//! (2 panel loads, 2 weight `vld4`, 24 arithmetic) plus half a loop branch
//! pair (the loop runs two pairs per iteration): 58 per K group of the
//! whole tile instead of 76; an odd last group runs alone. Each i32 lane
//! then sums at most `kb` such i16 sums. (One pair per iteration: yolov8n
//! 8.0M instructions more per inference, 390.2M against 382.2M.)
//!
//! **Why this tile** (guest instructions under qemu, cortex-a7): the
//! accumulators take eight of the 16 q registers (two per channel and pixel
//! pair); a 4 x 8 pass would need all 16. A quarter's K group is 18
//! instructions plus half a loop branch pair: 76 per K group of the whole
//! tile (one group per iteration and one `asm!` call per pass measured
//! 3.05M instead of 2.90M on the k = 576 product below). The alternative
//! without pairwise adds (`vld4.8` to split the K values, `vmovl` to i16,
//! `vmlal.s16` by weight lane: 4 x 8 passes with eight accumulators) counts
//! 84 per K group by its instruction sequence, so it was not built. Against
//! im2row + `gemm_nt__armv7neon` on the same product (m = 64, 256 pixels,
//! panels prepacked): k = 64, 0.41M instructions against 2.24M; k = 576,
//! 2.90M against 4.86M (the `gemm_nt` output stage is scalar per element).
//!
//! **Output stage**: `vpadd` folds the K halves into four vectors, one per
//! pixel, each holding the four channels (so the per-channel bias and
//! requantization are plain 4-lane vectors, loaded once per pass); then
//! bias, `vqshl`, `vqrdmulh`, sign fix-up and `vrshl` (the requantization of
//! `elementwise.rs` and `dwconv.rs`, lane for lane `crate::requant::requantize`),
//! the zero point in i32, `vqmovn` to i16, a 4x4 transpose (`vtrn`) back to
//! channel rows, `vqmovn` to i8, the clamp, and one 4-byte store per channel:
//! 60 instructions per pass. The saturating narrows cannot change a value the
//! clamp keeps, since the clamp bounds lie inside the int8 range. The
//! accumulators are the reference's integer sums, so the output is
//! bit-identical.

use super::has_neon;
use crate::reference::{self, QOut, PACK_MR, PACK_NR};
use crate::requant::Requant;

/// Per call and channel group, at the offsets the `asm!` loads them from.
#[repr(C)]
struct Params {
    /// 0: the four channels' (zero-point-folded) biases.
    bias: [i32; 4],
    /// 16: requantization multipliers.
    mult: [i32; 4],
    /// 32: `max(shift, 0)`.
    left: [i32; 4],
    /// 48: `min(shift, 0)` (a right shift, as `vrshl` takes it).
    right: [i32; 4],
    /// 64: output zero point (added in i32, like the reference).
    zp: [i32; 4],
    /// 80, 96: activation bounds, sixteen lanes each.
    lo: [i8; 16],
    hi: [i8; 16],
    /// 112: K groups (>= 1).
    kb: usize,
    /// 116, 120, 124: what a pass advances the weight, panel and output
    /// pointers by, minus the step to the next quarter (`16 kb`,
    /// `64 kb - 16`, `4 rs - 4`).
    a_back: usize,
    b_back: usize,
    o_back: usize,
}

impl Params {
    /// The bias and requantization of one channel group.
    #[inline(always)]
    fn set(&mut self, bias: &[i32; PACK_MR], rq: &[Requant; PACK_MR]) {
        for r in 0..PACK_MR {
            self.bias[r] = bias[r];
            self.mult[r] = rq[r].mult;
            self.left[r] = rq[r].shift.max(0);
            self.right[r] = rq[r].shift.min(0);
        }
    }
}

/// [`Params`] of the f32 output stage: the same offsets for the loop
/// fields, so one K loop serves both.
#[repr(C)]
struct F32Params {
    /// 0: the four channels' (zero-point-folded) biases.
    bias: [i32; 4],
    /// 16: scales.
    scale: [f32; 4],
    /// 32, 48: output bounds.
    lo: [f32; 4],
    hi: [f32; 4],
    _unused: [u32; 12],
    /// 112..128: as in [`Params`] (`o_back` is `4 rs - 16` in bytes, `rs`
    /// in floats).
    kb: usize,
    a_back: usize,
    b_back: usize,
    o_back: usize,
}

/// `nq` quarter passes over consecutive panel quarters: pixels `4 j..4 j + 4`
/// (relative to `b` and `out`) of a 4-channel group over `prm.kb` K groups,
/// requantized and stored as four 4-byte rows at `out + 4 j`, `out + 4 j +
/// rs`, `out + 4 j + 2 rs`, `out + 4 j + 3 rs`. The K loop runs two groups
/// per iteration (one `subs`/`bne` pair per two groups), after the first
/// group (which initialises the accumulators) and, for an even `kb`, one
/// single group. With `paired`, the loop runs K groups `2i`, `2i + 1`
/// together (the first pair initialising) and an odd last group alone.
///
/// With `F32`, `prm` is an [`F32Params`] and the output stage is
/// [`reference::qs8_gemm_4x16c4_f32out`]'s: four 16-byte rows of f32 at
/// `out + 16 j`, `out + 16 j + rs`, ... (`rs` in bytes).
///
/// # Safety
/// NEON; `nq >= 1`; `prm.kb >= 1` (`>= 2` when `paired`, and then no
/// weight byte is -128 in both groups of a pair: [`reference::pairable_4c4`]), `prm.a_back == 16 * kb`, `prm.b_back ==
/// 64 * kb - 16`, `prm.o_back == 4 * rs - 4` (as `usize`, wrapping); `a`
/// addresses `kb` readable 16-byte weight groups; `b + 16 j` has 16 readable
/// bytes at every multiple of 64 below `64 * kb` for `j < nq`; the rows
/// above have 4 writable bytes each.
#[inline(always)]
unsafe fn passes<const F32: bool>(
    nq: usize,
    a: *const i8,
    b: *const i8,
    prm: *const u8,
    out: *mut u8,
    rs: usize,
    paired: bool,
) {
    // One K group into the accumulators q8-q15 (`$acc`: vpaddl to start
    // them, vpadal after), panel quarter in q0, the four channels' weights
    // splat to d4-d7, products in q4-q7.
    macro_rules! group {
        ($acc:literal) => {
            concat!(
                "vld1.8 {{d0, d1}}, [{b}], {s64}\n",
                "vld4.32 {{d4[], d5[], d6[], d7[]}}, [{a}]!\n",
                "vmull.s8 q4, d0, d4\n",
                "vmull.s8 q5, d1, d4\n",
                "vmull.s8 q6, d0, d5\n",
                "vmull.s8 q7, d1, d5\n",
                $acc,
                " q8, q4\n",
                $acc,
                " q9, q5\n",
                $acc,
                " q10, q6\n",
                $acc,
                " q11, q7\n",
                "vmull.s8 q4, d0, d6\n",
                "vmull.s8 q5, d1, d6\n",
                "vmull.s8 q6, d0, d7\n",
                "vmull.s8 q7, d1, d7\n",
                $acc,
                " q12, q4\n",
                $acc,
                " q13, q5\n",
                $acc,
                " q14, q6\n",
                $acc,
                " q15, q7\n",
            )
        };
    }
    // Two K groups `2i`, `2i + 1` of a pairable channel group: panels in
    // q0, q1, weights splat to d4-d7 and d8-d11, per channel and pixel pair
    // one `vmull` of the first group, one `vmlal` of the second (both
    // products in one i16 lane: `pairable_4c4` rules out -128 * -128
    // twice), then one pairwise add into the accumulators (q6, q7 temps).
    macro_rules! pair {
        ($acc:literal) => {
            concat!(
                "vld1.8 {{d0, d1}}, [{b}], {s64}\n",
                "vld4.32 {{d4[], d5[], d6[], d7[]}}, [{a}]!\n",
                "vld1.8 {{d2, d3}}, [{b}], {s64}\n",
                "vld4.32 {{d8[], d9[], d10[], d11[]}}, [{a}]!\n",
                pair!(@ch $acc, "d4", "d8", "q8", "q9"),
                pair!(@ch $acc, "d5", "d9", "q10", "q11"),
                pair!(@ch $acc, "d6", "d10", "q12", "q13"),
                pair!(@ch $acc, "d7", "d11", "q14", "q15"),
            )
        };
        (@ch $acc:literal, $w0:literal, $w1:literal, $q0:literal, $q1:literal) => {
            concat!(
                "vmull.s8 q6, d0, ", $w0, "\n",
                "vmull.s8 q7, d1, ", $w0, "\n",
                "vmlal.s8 q6, d2, ", $w1, "\n",
                "vmlal.s8 q7, d3, ", $w1, "\n",
                $acc, " ", $q0, ", q6\n",
                $acc, " ", $q1, ", q7\n",
            )
        };
    }
    // After the K loop: the fused output stage of one quarter, then the
    // pointer steps to the next quarter and the pass loop branch.
    macro_rules! tail {
        () => {
            concat!(
                // q0..q3: pixel p of channels 0..3 (d16 + 2p: channel 0, d20 + 2p:
                // channel 1, ... each [k01, k23]).
                "vpadd.i32 d0, d16, d20\n",
                "vpadd.i32 d1, d24, d28\n",
                "vpadd.i32 d2, d17, d21\n",
                "vpadd.i32 d3, d25, d29\n",
                "vpadd.i32 d4, d18, d22\n",
                "vpadd.i32 d5, d26, d30\n",
                "vpadd.i32 d6, d19, d23\n",
                "vpadd.i32 d7, d27, d31\n",
                // q4 bias, q5 mult, q6 left, q7 right.
                "vld1.32 {{d8-d11}}, [{prm}]!\n",
                "vld1.32 {{d12-d15}}, [{prm}]!\n",
                "vadd.i32 q0, q0, q4\n",
                "vadd.i32 q1, q1, q4\n",
                "vadd.i32 q2, q2, q4\n",
                "vadd.i32 q3, q3, q4\n",
                "vqshl.s32 q0, q0, q6\n",
                "vqshl.s32 q1, q1, q6\n",
                "vqshl.s32 q2, q2, q6\n",
                "vqshl.s32 q3, q3, q6\n",
                "vqrdmulh.s32 q0, q0, q5\n",
                "vqrdmulh.s32 q1, q1, q5\n",
                "vqrdmulh.s32 q2, q2, q5\n",
                "vqrdmulh.s32 q3, q3, q5\n",
                "vand q8, q0, q7\n",
                "vand q9, q1, q7\n",
                "vand q10, q2, q7\n",
                "vand q11, q3, q7\n",
                "vshr.s32 q8, q8, #31\n",
                "vshr.s32 q9, q9, #31\n",
                "vshr.s32 q10, q10, #31\n",
                "vshr.s32 q11, q11, #31\n",
                "vqadd.s32 q0, q0, q8\n",
                "vqadd.s32 q1, q1, q9\n",
                "vqadd.s32 q2, q2, q10\n",
                "vqadd.s32 q3, q3, q11\n",
                "vrshl.s32 q0, q0, q7\n",
                "vrshl.s32 q1, q1, q7\n",
                "vrshl.s32 q2, q2, q7\n",
                "vrshl.s32 q3, q3, q7\n",
                // q4 zero point, q5 lo, q6 hi.
                "vld1.32 {{d8, d9}}, [{prm}]!\n",
                "vld1.8 {{d10-d13}}, [{prm}]\n",
                "vadd.i32 q0, q0, q4\n",
                "vadd.i32 q1, q1, q4\n",
                "vadd.i32 q2, q2, q4\n",
                "vadd.i32 q3, q3, q4\n",
                "vqmovn.s32 d16, q0\n",
                "vqmovn.s32 d17, q1\n",
                "vqmovn.s32 d18, q2\n",
                "vqmovn.s32 d19, q3\n",
                // Pixel rows to channel rows: d16..d19 = channels 0..3.
                "vtrn.16 d16, d17\n",
                "vtrn.16 d18, d19\n",
                "vtrn.32 d16, d18\n",
                "vtrn.32 d17, d19\n",
                "vqmovn.s16 d0, q8\n",
                "vqmovn.s16 d1, q9\n",
                "vmax.s8 q0, q0, q5\n",
                "vmin.s8 q0, q0, q6\n",
                "vst1.32 {{d0[0]}}, [{o}], {rs}\n",
                "vst1.32 {{d0[1]}}, [{o}], {rs}\n",
                "vst1.32 {{d1[0]}}, [{o}], {rs}\n",
                "vst1.32 {{d1[1]}}, [{o}], {rs}\n",
                // Next quarter: parameters from the start, the same weights, the
                // next 16 panel bytes and 4 output bytes.
                "sub {prm}, {prm}, #80\n",
                "ldr {n}, [{prm}, #116]\n",
                "sub {a}, {a}, {n}\n",
                "ldr {n}, [{prm}, #120]\n",
                "sub {b}, {b}, {n}\n",
                "ldr {n}, [{prm}, #124]\n",
                "sub {o}, {o}, {n}\n",
                "subs {nq}, {nq}, #1\n",
                "bne 0b\n",
            )
        };
    }
    // The f32 output stage of one quarter (`qs8_gemm_4x16c4_f32out`):
    // bias, `vcvt` (round to nearest, as `as f32`), `vmul` by the scale, the
    // clamp as compare-and-select (`f32::clamp` keeps a -0 against a +0
    // bound and passes NaN, where `vmax`/`vmin` would not), a 4x4
    // transpose to channel rows and four 16-byte stores.
    macro_rules! tail_f32 {
        () => {
            concat!(
                "vpadd.i32 d0, d16, d20\n",
                "vpadd.i32 d1, d24, d28\n",
                "vpadd.i32 d2, d17, d21\n",
                "vpadd.i32 d3, d25, d29\n",
                "vpadd.i32 d4, d18, d22\n",
                "vpadd.i32 d5, d26, d30\n",
                "vpadd.i32 d6, d19, d23\n",
                "vpadd.i32 d7, d27, d31\n",
                // q4 bias, q5 scale, q6 lo, q7 hi.
                "vld1.32 {{d8-d11}}, [{prm}]!\n",
                "vld1.32 {{d12-d15}}, [{prm}]\n",
                "vadd.i32 q0, q0, q4\n",
                "vadd.i32 q1, q1, q4\n",
                "vadd.i32 q2, q2, q4\n",
                "vadd.i32 q3, q3, q4\n",
                "vcvt.f32.s32 q0, q0\n",
                "vcvt.f32.s32 q1, q1\n",
                "vcvt.f32.s32 q2, q2\n",
                "vcvt.f32.s32 q3, q3\n",
                "vmul.f32 q0, q0, q5\n",
                "vmul.f32 q1, q1, q5\n",
                "vmul.f32 q2, q2, q5\n",
                "vmul.f32 q3, q3, q5\n",
                // v < lo: lo.
                "vcgt.f32 q8, q6, q0\n",
                "vcgt.f32 q9, q6, q1\n",
                "vcgt.f32 q10, q6, q2\n",
                "vcgt.f32 q11, q6, q3\n",
                "vbsl q8, q6, q0\n",
                "vbsl q9, q6, q1\n",
                "vbsl q10, q6, q2\n",
                "vbsl q11, q6, q3\n",
                // v > hi: hi.
                "vcgt.f32 q0, q8, q7\n",
                "vcgt.f32 q1, q9, q7\n",
                "vcgt.f32 q2, q10, q7\n",
                "vcgt.f32 q3, q11, q7\n",
                "vbsl q0, q7, q8\n",
                "vbsl q1, q7, q9\n",
                "vbsl q2, q7, q10\n",
                "vbsl q3, q7, q11\n",
                // Pixel vectors to channel rows.
                "vtrn.32 q0, q1\n",
                "vtrn.32 q2, q3\n",
                "vswp d1, d4\n",
                "vswp d3, d6\n",
                "vst1.32 {{d0, d1}}, [{o}], {rs}\n",
                "vst1.32 {{d2, d3}}, [{o}], {rs}\n",
                "vst1.32 {{d4, d5}}, [{o}], {rs}\n",
                "vst1.32 {{d6, d7}}, [{o}], {rs}\n",
                "sub {prm}, {prm}, #32\n",
                "ldr {n}, [{prm}, #116]\n",
                "sub {a}, {a}, {n}\n",
                "ldr {n}, [{prm}, #120]\n",
                "sub {b}, {b}, {n}\n",
                "ldr {n}, [{prm}, #124]\n",
                "sub {o}, {o}, {n}\n",
                "subs {nq}, {nq}, #1\n",
                "bne 0b\n",
            )
        };
    }
    // SAFETY: reads the weight and panel groups the caller guarantees and
    // the 128 bytes of `prm`; writes the rows at `out`. Every NEON register
    // used is declared clobbered as d registers, so the compiler saves
    // d8-d15 (see `arm/mod.rs` on q-register clobbers). Unaligned
    // `vld`/`vst` without an alignment qualifier are architectural on ARMv7
    // user space.
    macro_rules! run {
        ($tail:expr; $($kloop:expr),+ $(,)?) => {
            core::arch::asm!(
                ".fpu neon",
                "0:",
                "ldr {n}, [{prm}, #112]",
                $($kloop,)+
                "3:",
                $tail,
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                nq = inout(reg) nq => _,
                prm = inout(reg) prm => _,
                o = inout(reg) out => _,
                rs = in(reg) rs,
                s64 = in(reg) 4 * PACK_NR,
                n = out(reg) _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                out("d16") _, out("d17") _, out("d18") _, out("d19") _, out("d20") _, out("d21") _, out("d22") _, out("d23") _,
                out("d24") _, out("d25") _, out("d26") _, out("d27") _, out("d28") _, out("d29") _, out("d30") _, out("d31") _,
                options(nostack),
            )
        };
    }
    // The K loops, for either output stage.
    macro_rules! kloops {
        ($tail:expr) => {
            if paired {
                // Pairs of K groups (the first one starting the
                // accumulators), the remaining pairs two per loop iteration
                // (one `subs`/`bne` per four K groups) after one alone when
                // their count is odd, then the odd last group of an odd
                // `kb` alone.
                run!(
                    $tail;
                    "lsr {n}, {n}, #1",
                    pair!("vpaddl.s16"),
                    "subs {n}, {n}, #1",
                    "beq 2f",
                    "tst {n}, #1",
                    "beq 1f",
                    pair!("vpadal.s16"),
                    "subs {n}, {n}, #1",
                    "beq 2f",
                    "1:",
                    pair!("vpadal.s16"),
                    pair!("vpadal.s16"),
                    "subs {n}, {n}, #2",
                    "bne 1b",
                    "2:",
                    "ldr {n}, [{prm}, #112]",
                    "tst {n}, #1",
                    "beq 3f",
                    group!("vpadal.s16"),
                );
            } else {
                run!(
                    $tail;
                    group!("vpaddl.s16"),
                    "subs {n}, {n}, #1",
                    "beq 3f",
                    "tst {n}, #1",
                    "beq 1f",
                    group!("vpadal.s16"),
                    "subs {n}, {n}, #1",
                    "beq 3f",
                    "1:",
                    group!("vpadal.s16"),
                    group!("vpadal.s16"),
                    "subs {n}, {n}, #2",
                    "bne 1b",
                );
            }
        };
    }
    if F32 {
        kloops!(tail_f32!());
    } else {
        kloops!(tail!());
    }
}

/// A K group of zeros, for `kb == 0` (the loop runs at least one group).
static ZEROS: [i8; 4 * PACK_NR] = [0; 4 * PACK_NR];

/// The whole call: channel groups of four, each in quarters of the panel.
/// Whole quarters of whole groups are stored in place; the rest (pixels
/// past `n`, rows past `m`) go through a buffer of which only the real
/// rows and pixels are copied out, in row order.
///
/// # Safety
/// NEON; the buffers satisfy [`check`] and `rs >= n` when `m > 1`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    m: usize,
    n: usize,
    kb: usize,
    a: *const i8,
    pairs: &[bool],
    b: *const i8,
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: *mut i8,
    rs: usize,
) {
    // With no K, one group of zeros adds nothing to the bias.
    let (kb_run, b) = if kb == 0 {
        (1, ZEROS.as_ptr())
    } else {
        (kb, b)
    };
    let mut prm = Params {
        bias: [0; 4],
        mult: [0; 4],
        left: [0; 4],
        right: [0; 4],
        zp: [q.out_zp; 4],
        lo: [q.act_min; PACK_NR],
        hi: [q.act_max; PACK_NR],
        kb: kb_run,
        a_back: 16 * kb_run,
        b_back: 64 * kb_run - 16,
        o_back: 0,
    };
    let quarters = n.div_ceil(4);
    let mut i0 = 0;
    while i0 < m {
        let mr = (m - i0).min(PACK_MR);
        if mr == PACK_MR {
            let (b4, r4) = (&bias[i0..i0 + PACK_MR], &rq[i0..i0 + PACK_MR]);
            prm.set(b4.try_into().unwrap(), r4.try_into().unwrap());
        } else {
            // Rows past `m` get zero parameters: computed, never stored.
            let (mut b4, mut r4) = ([0; PACK_MR], [Requant::default(); PACK_MR]);
            b4[..mr].copy_from_slice(&bias[i0..m]);
            r4[..mr].copy_from_slice(&rq[i0..m]);
            prm.set(&b4, &r4);
        }
        let ap = if kb == 0 {
            ZEROS.as_ptr()
        } else {
            a.add(i0 / PACK_MR * kb * 16)
        };
        // Pairing needs two real K groups (`kb == 0` runs one of zeros).
        let paired = kb >= 2 && pairs.get(i0 / PACK_MR).copied().unwrap_or(false);
        let full = if mr == PACK_MR { n / 4 } else { 0 };
        if full > 0 {
            prm.o_back = (4 * rs).wrapping_sub(4);
            let pp = (&prm as *const Params).cast();
            passes::<false>(full, ap, b, pp, out.add(i0 * rs).cast(), rs, paired);
        }
        if full < quarters {
            let mut tmp = [[0i8; PACK_NR]; PACK_MR];
            prm.o_back = 4 * PACK_NR - 4;
            let (bp, tp) = (b.add(16 * full), tmp.as_mut_ptr().cast::<i8>());
            let pp = (&prm as *const Params).cast();
            passes::<false>(quarters - full, ap, bp, pp, tp.cast(), PACK_NR, paired);
            let len = n - 4 * full;
            for (r, row) in tmp.iter().enumerate().take(mr) {
                let dst = out.add((i0 + r) * rs + 4 * full);
                core::ptr::copy_nonoverlapping(row.as_ptr(), dst, len);
            }
        }
        i0 += PACK_MR;
    }
}

/// The checks that keep the raw-pointer tile loops in bounds (`m, n >= 1`).
/// The sizes are computed without wrapping: a wrapped product could pass
/// for a huge `kb` (32-bit `usize`) and let the loops read past the slices.
#[allow(clippy::too_many_arguments)]
fn check(
    m: usize,
    n: usize,
    kb: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    rq: &[Requant],
    q: &QOut,
    out: &[i8],
    rs: usize,
) {
    let a_len = m
        .div_ceil(PACK_MR)
        .checked_mul(kb)
        .and_then(|x| x.checked_mul(16));
    let b_len = kb.checked_mul(4 * PACK_NR);
    let out_len = (m - 1).checked_mul(rs).and_then(|x| x.checked_add(n));
    assert!(
        n <= PACK_NR
            && a_len.is_some_and(|l| a.len() >= l)
            && b_len.is_some_and(|l| b.len() >= l)
            && bias.len() >= m
            && rq.len() >= m
            && out_len.is_some_and(|l| out.len() >= l),
        "qs8_gemm_4x16c4: buffers do not match m {m} n {n} kb {kb}"
    );
    assert!(q.act_min <= q.act_max, "clamp: act_min > act_max");
}

/// [`crate::reference::qs8_gemm_4x16c4`] on ARMv7 NEON: same contract,
/// bit-identical output. Install where [`crate::Isa::Armv7Neon`]`.available()`;
/// without NEON it runs the reference.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4__armv7neon(
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
    if !has_neon() {
        return reference::qs8_gemm_4x16c4(m, n, kb, a, pairs, b, bias, rq, q, out, rs);
    }
    if m == 0 || n == 0 {
        return;
    }
    if m > 1 && rs < n {
        // Overlapping rows: the reference's row-major store order decides
        // which row's bytes survive; the tile stores quarter by quarter.
        return reference::qs8_gemm_4x16c4(m, n, kb, a, pairs, b, bias, rq, q, out, rs);
    }
    check(m, n, kb, a, b, bias, rq, q, out, rs);
    // SAFETY: NEON checked above. `check` bounds every load: the weight
    // groups of rows 0..m (whole groups of four, as the packed layout
    // stores them), and per quarter below ceil(n / 4) the 16 bytes at
    // 16 * quarter of each 64-byte panel group; and every direct store
    // (rows i0..i0 + 4 <= m, pixels 4q..4q + 4 <= n); the others go
    // through a local buffer and copy rows < m, pixels < n.
    unsafe {
        gemm(
            m,
            n,
            kb,
            a.as_ptr(),
            pairs,
            b.as_ptr(),
            bias,
            rq,
            q,
            out.as_mut_ptr(),
            rs,
        )
    }
}

/// Whether the `kb` K groups at `a` (one channel group) may be paired:
/// [`reference::pairable_4c4`] of one group, by vector (`vceq` with -128 of
/// both groups of each pair, `vand`, `vorr` into one mask). The f32 entry
/// point has no prepare-time flags, so it checks per call: a few
/// instructions per K group, against 18 saved per K group and panel.
///
/// # Safety
/// NEON; `a` addresses `16 * kb` readable bytes.
unsafe fn pairable(a: *const i8, kb: usize) -> bool {
    let pairs = kb / 2;
    if pairs == 0 {
        return true;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: reads 32 * pairs <= 16 * kb bytes at `a`; d0-d5, d16-d19
    // declared clobbered.
    core::arch::asm!(
        ".fpu neon",
        "vmov.i8 q8, #0x80",
        "vmov.i8 q9, #0",
        "1:",
        "vld1.8 {{d0-d3}}, [{a}]!",
        "vceq.i8 q0, q0, q8",
        "vceq.i8 q1, q1, q8",
        "vand q0, q0, q1",
        "vorr q9, q9, q0",
        "subs {n}, {n}, #1",
        "bne 1b",
        "vorr d18, d18, d19",
        "vmov {lo}, {hi}, d18",
        a = inout(reg) a => _,
        n = inout(reg) pairs => _,
        lo = out(reg) lo,
        hi = out(reg) hi,
        out("d0") _, out("d1") _, out("d2") _, out("d3") _,
        out("d16") _, out("d17") _, out("d18") _, out("d19") _,
        options(nostack, readonly),
    );
    lo | hi == 0
}

/// [`gemm`] with the f32 output stage; `rs` in floats.
///
/// # Safety
/// NEON; the buffers pass the assertion of
/// [`qs8_gemm_4x16c4_f32out__armv7neon`] and `rs >= n` when `m > 1`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
    m: usize,
    n: usize,
    kb: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    scale: &[f32],
    lo: f32,
    hi: f32,
    out: *mut f32,
    rs: usize,
) {
    let (kb_run, b) = if kb == 0 {
        (1, ZEROS.as_ptr())
    } else {
        (kb, b)
    };
    let mut prm = F32Params {
        bias: [0; 4],
        scale: [0.0; 4],
        lo: [lo; 4],
        hi: [hi; 4],
        _unused: [0; 12],
        kb: kb_run,
        a_back: 16 * kb_run,
        b_back: 64 * kb_run - 16,
        o_back: 0,
    };
    let quarters = n.div_ceil(4);
    let mut i0 = 0;
    while i0 < m {
        let mr = (m - i0).min(PACK_MR);
        // Rows past `m` get zero parameters: computed, never stored.
        prm.bias = [0; 4];
        prm.scale = [0.0; 4];
        prm.bias[..mr].copy_from_slice(&bias[i0..i0 + mr]);
        prm.scale[..mr].copy_from_slice(&scale[i0..i0 + mr]);
        let ap = if kb == 0 {
            ZEROS.as_ptr()
        } else {
            a.add(i0 / PACK_MR * kb * 16)
        };
        let paired = kb >= 2 && pairable(ap, kb);
        let pp = (&prm as *const F32Params).cast();
        let full = if mr == PACK_MR { n / 4 } else { 0 };
        if full > 0 {
            prm.o_back = (16 * rs).wrapping_sub(16);
            passes::<true>(full, ap, b, pp, out.add(i0 * rs).cast(), 4 * rs, paired);
        }
        if full < quarters {
            let mut tmp = [[0f32; PACK_NR]; PACK_MR];
            prm.o_back = 16 * PACK_NR - 16;
            let (bp, tp) = (b.add(16 * full), tmp.as_mut_ptr().cast::<u8>());
            passes::<true>(quarters - full, ap, bp, pp, tp, 4 * PACK_NR, paired);
            let len = n - 4 * full;
            for (r, row) in tmp.iter().enumerate().take(mr) {
                let dst = out.add((i0 + r) * rs + 4 * full);
                core::ptr::copy_nonoverlapping(row.as_ptr(), dst, len);
            }
        }
        i0 += PACK_MR;
    }
}

/// Whether NEON's flush-to-zero could change a result of the f32 output
/// stage: a denormal scale (the product of a nonzero integer and a normal
/// scale is normal or infinite, never denormal) or a denormal bound.
fn flushes(scale: &[f32], lo: f32, hi: f32) -> bool {
    let denormal = |x: f32| x != 0.0 && x.abs() < f32::MIN_POSITIVE;
    denormal(lo) || denormal(hi) || scale.iter().any(|&s| denormal(s))
}

/// [`crate::reference::qs8_gemm_4x16c4_f32out`] on ARMv7 NEON: the
/// integer K loop of [`qs8_gemm_4x16c4__armv7neon`] (pairing checked per
/// call and channel group, as this entry has no prepare-time flags) and
/// the f32 output stage in NEON; same contract, bit-identical output.
/// Runs the reference without NEON, for overlapping rows, and where
/// flushing denormals to zero could change a result ([`flushes`]).
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_4x16c4_f32out__armv7neon(
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
    // Bounds that are not `lo <= hi` (NaN included): the reference's clamp
    // panics on them.
    let bad_bounds = lo.partial_cmp(&hi).is_none_or(|o| o.is_gt());
    if !has_neon() || (m > 1 && rs < n) || bad_bounds {
        return reference::qs8_gemm_4x16c4_f32out(m, n, kb, a, b, bias, scale, lo, hi, out, rs);
    }
    if m == 0 || n == 0 {
        return;
    }
    let a_len = m
        .div_ceil(PACK_MR)
        .checked_mul(kb)
        .and_then(|x| x.checked_mul(16));
    let b_len = kb.checked_mul(4 * PACK_NR);
    let out_len = (m - 1).checked_mul(rs).and_then(|x| x.checked_add(n));
    assert!(
        n <= PACK_NR
            && a_len.is_some_and(|l| a.len() >= l)
            && b_len.is_some_and(|l| b.len() >= l)
            && bias.len() >= m
            && scale.len() >= m
            && out_len.is_some_and(|l| out.len() >= l),
        "qs8_gemm_4x16c4_f32out: buffers do not match m {m} n {n} kb {kb}"
    );
    if flushes(&scale[..m], lo, hi) {
        return reference::qs8_gemm_4x16c4_f32out(m, n, kb, a, b, bias, scale, lo, hi, out, rs);
    }
    // SAFETY: NEON checked above; the assertion bounds every load and
    // direct store as in `qs8_gemm_4x16c4__armv7neon`.
    unsafe {
        gemm_f32(
            m,
            n,
            kb,
            a.as_ptr(),
            b.as_ptr(),
            bias,
            scale,
            lo,
            hi,
            out.as_mut_ptr(),
            rs,
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::arm_shared::gemm_check::{available_or_skip, fill_i8, Rng};
    use crate::reference::{pack_a_4c4, packed_a_len, pairable_4c4, panel_len};
    use crate::Isa;

    /// Every panel width and channel count up to two groups plus one, K from
    /// none to long, extreme operands (-128 * -128 sums), biases at +-2^30,
    /// left and right shifts, and guard bytes around the output rows.
    #[test]
    fn matches_reference() {
        if !available_or_skip("qs8_gemm_4x16c4__armv7neon", Isa::Armv7Neon) {
            return;
        }
        let mut rng = Rng::new(0x4a7c_16c4);
        let (mut cases, mut paired) = (0, 0);
        for &kb in &[0usize, 1, 2, 3, 4, 5, 16, 70] {
            for m in 1..=9 {
                for n in 1..=PACK_NR {
                    let mode = rng.next();
                    let k = 4 * kb;
                    let w = fill_i8(&mut rng, m * k, mode);
                    let mut pa = vec![0i8; packed_a_len(m, k)];
                    pack_a_4c4(m, k, &w, &mut pa);
                    let b = fill_i8(&mut rng, panel_len(k), mode / 5);
                    let bias: Vec<i32> = (0..m)
                        .map(|_| match rng.range(0, 2) {
                            0 => [1 << 30, -(1 << 30)][rng.range(0, 1) as usize],
                            _ => rng.range(-100_000, 100_000) as i32,
                        })
                        .collect();
                    // Right shifts, and left shifts that saturate the big
                    // accumulators; above 1 the mantissa stays below 0.75
                    // so that `requantize(..) + out_zp` fits in i32.
                    let rq: Vec<Requant> = (0..m)
                        .map(|_| {
                            let shift = if rng.range(0, 3) == 0 {
                                rng.range(1, 4) as i32
                            } else {
                                rng.range(-31, 0) as i32
                            };
                            let top = if shift > 0 { 0x5fff_ffff } else { i32::MAX };
                            Requant {
                                mult: rng.range(1 << 30, top as i64) as i32,
                                shift,
                            }
                        })
                        .collect();
                    let lo = rng.range(-128, 127) as i8;
                    let hi = rng.range(lo as i64, 127) as i8;
                    let q = QOut {
                        out_zp: rng.range(-128, 127) as i32,
                        act_min: lo,
                        act_max: hi,
                    };
                    let rs = n + rng.range(0, 3) as usize;
                    let mut want = vec![0x55i8; m * rs + 7];
                    reference::qs8_gemm_4x16c4(
                        m,
                        n,
                        kb,
                        &pa,
                        &[],
                        &b,
                        &bias,
                        &rq,
                        &q,
                        &mut want,
                        rs,
                    );
                    // Without and with the pairing flags (groups holding
                    // -128 in both K groups of a pair keep theirs false).
                    let mut flags = vec![false; m.div_ceil(PACK_MR)];
                    pairable_4c4(m, kb, &pa, &mut flags);
                    for pairs in [&[][..], &flags[..]] {
                        let mut got = vec![0x55i8; m * rs + 7];
                        qs8_gemm_4x16c4__armv7neon(
                            m, n, kb, &pa, pairs, &b, &bias, &rq, &q, &mut got, rs,
                        );
                        assert_eq!(
                            got, want,
                            "m {m} n {n} kb {kb} rs {rs} pairs {pairs:?} q {q:?} rq {rq:?}"
                        );
                    }
                    paired += flags.iter().filter(|&&f| f).count();
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 8 * 9 * 16);
        // The paired loop ran, and so did the unpaired one (the all -128 mode).
        assert!(paired > 500, "only {paired} paired groups");
    }

    /// A `kb` whose byte counts wrap `usize` (16 * 2^28 = 2^32 on 32-bit
    /// ARM) is refused, not read past the slices.
    #[test]
    #[should_panic]
    fn wrapping_sizes_are_refused() {
        let q = QOut {
            out_zp: 0,
            act_min: -128,
            act_max: 127,
        };
        let rq = [Requant {
            mult: 1 << 30,
            shift: 0,
        }];
        let mut out = [0i8; 1];
        qs8_gemm_4x16c4__armv7neon(
            1,
            1,
            1 << 28,
            &[0; 16],
            &[],
            &[0; 64],
            &[0],
            &rq,
            &q,
            &mut out,
            1,
        );
    }
}
