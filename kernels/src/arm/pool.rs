//! `qs8_maxpool2d` and `qs8_avgpool2d` on 32-bit ARMv7 NEON: the aarch64
//! algorithms (padded rows from the shared [`crate::arm_shared::dwrows`] ring, sixteen
//! outputs per block, strides 1 and 2), the window reduction of a block one
//! `asm!` block.
//!
//! Max pooling pads with -128 and takes `vmax.s8` over the taps. Average
//! pooling pads with the zero point and sums with `vaddw.s8` in i16 lanes
//! from `-taps * zp` (wrapping; exact at the end for windows of at most 128
//! taps, as on aarch64); ARMv7 NEON has no vector division, so the rounded
//! division of the sixteen sums runs in scalar VFP f32, exact for the same
//! reason as the aarch64 vector one.

use super::has_neon;
use crate::arm_shared::dwrows::{
    check_pool, conv_geometry, count, for_each_row, Plan, RowJob, MAX_SPAN,
};
use crate::reference::{self, PoolGeometry};

/// The block reduction: max (`vmax.s8`) or wrapping i16 sum (`vaddw.s8`).
#[derive(Clone, Copy, PartialEq)]
enum Reduce {
    Max,
    Sum,
}

/// Reduces the taps of outputs `off / stride ..+ 16` of the rows `rows`
/// (`kw` taps each, at `off + kx` and, for stride 2, the even bytes): max
/// into 16 bytes at `out`, or sums from `init` into 16 i16 at `out`.
///
/// # Safety
/// NEON; each row holds `off + 15 * stride + kw - 1 + stride` readable bytes;
/// `out` has 16 (max) or 32 (sum) writable bytes; `kw >= 1`.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    reduce: Reduce,
    rows: &[*const i8],
    off: usize,
    kw: usize,
    stride: usize,
    init: i16,
    out: *mut u8,
) {
    macro_rules! block_asm {
        ($load:literal, $init:literal, $op0:literal, $op1:literal, $store:literal) => {
            // SAFETY: reads the row bytes the caller guarantees, writes the
            // output bytes; every NEON register used is declared clobbered.
            core::arch::asm!(
                ".fpu neon",
                $init,
                "vmov q9, q8",
                "cmp {nt}, #0",
                "beq 3f",
                "1:",
                "ldr {p}, [{rows}], #4",
                "add {p}, {p}, {off}",
                "mov {k}, {kw}",
                "2:",
                $load,
                $op0,
                $op1,
                "subs {k}, {k}, #1",
                "bne 2b",
                "subs {nt}, {nt}, #1",
                "bne 1b",
                "3:",
                $store,
                rows = inout(reg) rows.as_ptr() => _,
                nt = inout(reg) rows.len() => _,
                off = in(reg) off,
                kw = in(reg) kw,
                init = in(reg) init as i32,
                one = in(reg) 1usize,
                o = in(reg) out,
                p = out(reg) _,
                k = out(reg) _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d16") _, out("d17") _, out("d18") _, out("d19") _,
                options(nostack),
            )
        };
    }
    match (reduce, stride) {
        (Reduce::Max, 1) => block_asm!(
            "vld1.8 {{d0, d1}}, [{p}], {one}",
            "vdup.8 q8, {init}",
            "vmax.s8 q8, q8, q0",
            "",
            "vst1.8 {{d16, d17}}, [{o}]"
        ),
        (Reduce::Max, _) => block_asm!(
            "vld2.8 {{d0-d3}}, [{p}], {one}",
            "vdup.8 q8, {init}",
            "vmax.s8 q8, q8, q0",
            "",
            "vst1.8 {{d16, d17}}, [{o}]"
        ),
        (Reduce::Sum, 1) => block_asm!(
            "vld1.8 {{d0, d1}}, [{p}], {one}",
            "vdup.16 q8, {init}",
            "vaddw.s8 q8, q8, d0",
            "vaddw.s8 q9, q9, d1",
            "vst1.16 {{d16-d19}}, [{o}]"
        ),
        (Reduce::Sum, _) => block_asm!(
            "vld2.8 {{d0-d3}}, [{p}], {one}",
            "vdup.16 q8, {init}",
            "vaddw.s8 q8, q8, d0",
            "vaddw.s8 q9, q9, d1",
            "vst1.16 {{d16-d19}}, [{o}]"
        ),
    }
}

/// The job's tap rows as plain pointers (for the `asm!`).
fn rows_of(job: &RowJob, buf: &mut [*const i8; MAX_SPAN]) -> usize {
    for (r, &(p, _)) in buf.iter_mut().zip(job.taps) {
        *r = p;
    }
    job.taps.len()
}

/// Calls `f(ox)` for 16-output blocks covering `n` outputs (the last one
/// overlapping when `n >= 16`, one block at 0 otherwise).
fn block_starts(n: usize, mut f: impl FnMut(usize)) {
    if n < 16 {
        return f(0);
    }
    let mut ox = 0;
    while ox < n {
        f(ox.min(n - 16));
        ox += 16;
    }
}

/// ARMv7 NEON [`reference::qs8_maxpool2d`]; same contract, same output.
/// Strides above 2 and CPUs without NEON run the reference.
#[allow(non_snake_case)]
pub fn qs8_maxpool2d__armv7neon(g: &PoolGeometry, input: &[i8], output: &mut [i8]) {
    let cg = conv_geometry(g);
    let plan = if has_neon() && g.is_valid() {
        Plan::new(&cg, 16)
    } else {
        None
    };
    let Some(plan) = plan else {
        return reference::qs8_maxpool2d(g, input, output);
    };
    check_pool(g, input, output);
    // SAFETY: NEON is present; the geometry is valid, the plan (blocks of
    // 16) is its own and the lengths were checked: every block reads inside
    // the padded rows and writes inside the job's outputs (or `tmp`).
    unsafe {
        for_each_row(&cg, &plan, i8::MIN, input, output, |_, job| {
            let mut rows = [core::ptr::null(); MAX_SPAN];
            let nt = rows_of(job, &mut rows);
            let mut tmp = [0u8; 16];
            block_starts(job.n, |ox| {
                let dst = if job.n < 16 {
                    tmp.as_mut_ptr()
                } else {
                    job.out.add(ox) as *mut u8
                };
                block(
                    Reduce::Max,
                    &rows[..nt],
                    ox * g.stride_w,
                    g.kw,
                    g.stride_w,
                    i8::MIN as i16,
                    dst,
                );
            });
            if job.n < 16 {
                core::ptr::copy_nonoverlapping(tmp.as_ptr() as *const i8, job.out, job.n);
            }
        });
    }
}

/// ARMv7 NEON [`reference::qs8_avgpool2d`]; same contract, same output.
/// Strides above 2, windows of more than 128 taps, zero points outside the
/// int8 range and CPUs without NEON run the reference.
#[allow(non_snake_case)]
pub fn qs8_avgpool2d__armv7neon(g: &PoolGeometry, zp: i32, input: &[i8], output: &mut [i8]) {
    let cg = conv_geometry(g);
    let ok = has_neon() && g.is_valid() && g.kh * g.kw <= 128 && (-128..=127).contains(&zp);
    let plan = if ok { Plan::new(&cg, 16) } else { None };
    let Some(plan) = plan else {
        return reference::qs8_avgpool2d(g, zp, input, output);
    };
    check_pool(g, input, output);
    // SAFETY: as in `qs8_maxpool2d__armv7neon`; sums go to a local buffer.
    unsafe {
        for_each_row(&cg, &plan, zp as i8, input, output, |_, job| {
            let mut rows = [core::ptr::null(); MAX_SPAN];
            let nt = rows_of(job, &mut rows);
            // Every summed tap (in-image or padding) adds `x`; starting at
            // `-taps * zp` leaves `sum(x - zp)` (mod 2^16, exact at the end).
            let init = ((nt * g.kw) as i16).wrapping_mul(-(zp as i16));
            block_starts(job.n, |ox| {
                let mut sums = [0i16; 16];
                block(
                    Reduce::Sum,
                    &rows[..nt],
                    ox * g.stride_w,
                    g.kw,
                    g.stride_w,
                    init,
                    sums.as_mut_ptr() as *mut u8,
                );
                // Windows of the block inside the row: one divisor.
                let first = (job.ox0 + ox) * g.stride_w;
                let interior =
                    first >= g.pad_left && first + 15 * g.stride_w + g.kw <= g.in_w + g.pad_left;
                let n0 = count(g, job.oy, job.ox0 + ox);
                for (l, &s) in sums.iter().enumerate().take(job.n - ox) {
                    let n = if interior {
                        n0
                    } else {
                        count(g, job.oy, job.ox0 + ox + l)
                    };
                    *job.out.add(ox + l) = average(s as i32, n, zp);
                }
            });
        });
    }
}

/// `clamp(zp + round_half_away(sum / n), -128, 127)`: the reference's
/// truncating `(sum +- n/2) / n` in f32, which is exact here (integers below
/// 2^22: a non-integer quotient is at least `1/n` from the next integer,
/// more than the f32 rounding error), avoiding a library integer division.
#[inline(always)]
fn average(sum: i32, n: i32, zp: i32) -> i8 {
    // `n >> 1` is `n / 2` for the positive divisor; written as a shift because
    // LLVM otherwise folds the two branches into a library division by +-2.
    let half = n >> 1;
    let num = if sum >= 0 { sum + half } else { sum - half };
    let q = (num as f32 / n as f32) as i32;
    (q + zp).clamp(-128, 127) as i8
}
