//! Depthwise `qs8_conv2d` on 32-bit ARMv7 NEON: the algorithm of the aarch64
//! `qs8_dwconv2d__neon` (zero-point-padded rows from the shared
//! [`crate::arm_shared::dwrows`] ring, sixteen outputs per block along the width), with
//! each block one `asm!` block (32-bit NEON intrinsics are unstable).
//!
//! Per tap: one load (`vld1.8` of 16 bytes, or `vld2.8` of 32 for stride 2,
//! whose first register pair holds exactly the even bytes), `vsubl.s8` of
//! the input zero point (exact in i16), and four `vmlal.s16` by the weight
//! into i32 accumulators (exact products). Output stage: `vqshl` (saturating
//! left shift), `vqrdmulh` (the reference's rounding doubling high multiply,
//! saturating only MIN * MIN), sign fixup + `vrshl` (rounding right shift,
//! half away from zero), saturating narrowings with the i16 zero-point add,
//! then the activation clamp: lane for lane the aarch64 `requant::pack16`,
//! which is bit-exact with the reference.

use super::has_neon;
use crate::arm_shared::dwrows::{for_each_row, Flat, Plan, RowJob, FLAT_BYTES, MAX_SPAN};
use crate::reference::{self, ConvGeometry, QConvParams};
use crate::requant::Requant;

/// Per-block parameters, read by the `asm!` at fixed offsets.
#[repr(C)]
struct Params {
    /// Offset 0: `mult` in four lanes.
    mult: [i32; 4],
    /// 16: `max(shift, 0)`.
    left: [i32; 4],
    /// 32: `-max(-shift, 0)`.
    right: [i32; 4],
    /// 48: output zero point, eight i16 lanes.
    out_zp: [i16; 8],
    /// 64, 80: activation bounds, sixteen lanes each.
    lo: [i8; 16],
    hi: [i8; 16],
    /// 96: the channel's bias.
    bias: i32,
    /// 100: taps per kernel row.
    kw: u32,
    /// 104: where the sixteen outputs go.
    out: *mut i8,
    /// 108: input zero point, eight lanes.
    in_zp: [i8; 8],
}

/// Depthwise [`reference::qs8_conv2d`] on ARMv7 NEON: the reference contract
/// plus `groups == in_c == out_c`; bit-identical output. Other geometries,
/// `stride_w > 2`, zero points outside the int8 range, kernels spanning more
/// than 32 input rows, and CPUs without NEON run the reference.
#[allow(non_snake_case)]
pub fn qs8_dwconv2d__armv7neon(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    let depthwise = g.is_valid() && g.groups == g.in_c && g.groups == g.out_c;
    let zps = (-128..=127).contains(&q.in_zp) && (-128..=127).contains(&q.out_zp);
    let plan = if has_neon() && depthwise && zps && g.kw <= u32::MAX as usize {
        Plan::new(g, 16)
    } else {
        None
    };
    let Some(plan) = plan else {
        return reference::qs8_conv2d(g, q, input, weights, bias, rq, output);
    };
    assert!(
        input.len() >= g.input_len()
            && weights.len() >= g.weight_len()
            && bias.len() >= g.out_c
            && rq.len() >= g.out_c
            && output.len() >= g.output_len(),
        "qs8_dwconv2d: buffers do not match the geometry"
    );
    if g.output_len() == 0 {
        return;
    }
    assert!(q.act_min <= q.act_max, "qs8_dwconv2d: act_min > act_max");
    let taps = g.kh * g.kw;
    let mut prm = Params {
        mult: [0; 4],
        left: [0; 4],
        right: [0; 4],
        out_zp: [q.out_zp as i16; 8],
        lo: [q.act_min; 16],
        hi: [q.act_max; 16],
        bias: 0,
        kw: g.kw as u32,
        out: core::ptr::null_mut(),
        in_zp: [q.in_zp as i8; 8],
    };
    let set = |prm: &mut Params, c: usize| {
        let r = rq[c];
        prm.mult = [r.mult; 4];
        prm.left = [r.shift.max(0); 4];
        prm.right = [-(-r.shift).max(0); 4];
        prm.bias = bias[c];
    };
    if let Some(flat) = Flat::new(g) {
        let mut buf = [0i8; FLAT_BYTES];
        for c in 0..g.out_c {
            set(&mut prm, c);
            let plane = &input[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w];
            let out = &mut output[c * g.out_h * g.out_w..(c + 1) * g.out_h * g.out_w];
            let w = weights[c * taps..(c + 1) * taps].as_ptr();
            let copy = |d: &mut [i8], s: &[i8]| d.copy_from_slice(s);
            flat.channel(g, q.in_zp as i8, plane, out, &mut buf, copy, |job| {
                // SAFETY: NEON is present; the job describes the padded
                // plane and `n >= 16` flat outputs (see `Flat`).
                unsafe { row(job, w, g.kw, 1, g.dil_w, &mut prm) }
            });
        }
        return;
    }
    let mut last = usize::MAX;
    // SAFETY: NEON is present (checked); the geometry is a valid depthwise
    // one, the plan (blocks of 16) is its own and the buffer lengths were
    // checked above; `row` reads only what the job describes.
    unsafe {
        for_each_row(g, &plan, q.in_zp as i8, input, output, |c, job| {
            if c != last {
                set(&mut prm, c);
                last = c;
            }
            let w = weights[c * taps..(c + 1) * taps].as_ptr();
            row(job, w, g.kw, g.stride_w, g.dil_w, &mut prm);
        })
    }
}

/// One tap row as the `asm!` reads it: the padded input row and its weights.
#[repr(C)]
#[derive(Clone, Copy)]
struct TapRow {
    row: *const i8,
    w: *const i8,
}

/// All outputs of one job in blocks of 16 (the last one overlapping; fewer
/// than 16 outputs go through a buffer).
///
/// # Safety
/// NEON; as [`RowJob`] describes with the plan's blocks of 16; `w` holds the
/// channel's `kh * kw` weights.
unsafe fn row(job: &RowJob, w: *const i8, kw: usize, stride: usize, dil: usize, prm: &mut Params) {
    let mut pairs = [TapRow {
        row: core::ptr::null(),
        w: core::ptr::null(),
    }; MAX_SPAN];
    for (pair, &(p, ky)) in pairs.iter_mut().zip(job.taps) {
        *pair = TapRow {
            row: p,
            w: w.add(ky * kw),
        };
    }
    let pairs = &pairs[..job.taps.len()];
    let n = job.n;
    if n < 16 {
        let mut tmp = [0i8; 16];
        prm.out = tmp.as_mut_ptr();
        block(pairs, 0, stride, dil, prm);
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), job.out, n);
        return;
    }
    let mut ox = 0;
    while ox < n {
        let at = ox.min(n - 16);
        prm.out = job.out.add(at);
        block(pairs, at * stride, stride, dil, prm);
        ox += 16;
    }
}

/// Sixteen outputs: taps from `pairs` (padded row, that row's `kw`
/// weights) read at `off` bytes into each row, written to `prm.out`.
///
/// # Safety
/// NEON; each row holds `off + 15 * stride + (kw - 1) * dil + stride` bytes,
/// each weight pointer `kw` bytes, `prm.out` 16 writable bytes; `kw >= 1`.
#[inline(always)]
unsafe fn block(pairs: &[TapRow], off: usize, stride: usize, dil: usize, prm: &mut Params) {
    macro_rules! block_asm {
        ($load:literal) => {
            // SAFETY: reads the rows and weights the caller guarantees and
            // the `Params` struct (offsets as documented there), writes 16
            // bytes at `prm.out`; every NEON register used is declared
            // clobbered.
            core::arch::asm!(
                ".fpu neon",
                "add {p}, {prm}, #96",
                "vld1.32 {{d16[], d17[]}}, [{p}]",
                "vmov q9, q8",
                "vmov q10, q8",
                "vmov q11, q8",
                "add {p}, {prm}, #108",
                "vld1.8 {{d30}}, [{p}]",
                "cmp {nt}, #0",
                "beq 3f",
                "1:",
                "ldr {p}, [{taps}], #4",
                "ldr {w}, [{taps}], #4",
                "add {p}, {p}, {off}",
                "ldr {k}, [{prm}, #100]",
                "2:",
                $load,
                "vsubl.s8 q2, d0, d30",
                "vsubl.s8 q3, d1, d30",
                "vld1.8 {{d0[]}}, [{w}]!",
                "vmovl.s8 q0, d0",
                "vmlal.s16 q8, d4, d0[0]",
                "vmlal.s16 q9, d5, d0[0]",
                "vmlal.s16 q10, d6, d0[0]",
                "vmlal.s16 q11, d7, d0[0]",
                "subs {k}, {k}, #1",
                "bne 2b",
                "subs {nt}, {nt}, #1",
                "bne 1b",
                "3:",
                // q12 mult, q13 left, q14 right, q15 out_zp, q0 lo, q1 hi.
                "vld1.32 {{d24-d27}}, [{prm}]!",
                "vld1.32 {{d28-d31}}, [{prm}]!",
                "vld1.8 {{d0-d3}}, [{prm}]!",
                "vqshl.s32 q8, q8, q13",
                "vqshl.s32 q9, q9, q13",
                "vqshl.s32 q10, q10, q13",
                "vqshl.s32 q11, q11, q13",
                "vqrdmulh.s32 q8, q8, q12",
                "vqrdmulh.s32 q9, q9, q12",
                "vqrdmulh.s32 q10, q10, q12",
                "vqrdmulh.s32 q11, q11, q12",
                "vand q2, q8, q14",
                "vand q3, q9, q14",
                "vshr.s32 q2, q2, #31",
                "vshr.s32 q3, q3, #31",
                "vqadd.s32 q8, q8, q2",
                "vqadd.s32 q9, q9, q3",
                "vand q2, q10, q14",
                "vand q3, q11, q14",
                "vshr.s32 q2, q2, #31",
                "vshr.s32 q3, q3, #31",
                "vqadd.s32 q10, q10, q2",
                "vqadd.s32 q11, q11, q3",
                "vrshl.s32 q8, q8, q14",
                "vrshl.s32 q9, q9, q14",
                "vrshl.s32 q10, q10, q14",
                "vrshl.s32 q11, q11, q14",
                "vqmovn.s32 d4, q8",
                "vqmovn.s32 d5, q9",
                "vqmovn.s32 d6, q10",
                "vqmovn.s32 d7, q11",
                "vqadd.s16 q2, q2, q15",
                "vqadd.s16 q3, q3, q15",
                "vqmovn.s16 d4, q2",
                "vqmovn.s16 d5, q3",
                "vmax.s8 q2, q2, q0",
                "vmin.s8 q2, q2, q1",
                // prm now points at offset 96; `out` is at 104.
                "ldr {p}, [{prm}, #8]",
                "vst1.8 {{d4, d5}}, [{p}]",
                prm = inout(reg) prm as *mut Params => _,
                taps = inout(reg) pairs.as_ptr() => _,
                nt = inout(reg) pairs.len() => _,
                off = in(reg) off,
                dil = in(reg) dil,
                p = out(reg) _,
                w = out(reg) _,
                k = out(reg) _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d16") _, out("d17") _, out("d18") _, out("d19") _,
                out("d20") _, out("d21") _, out("d22") _, out("d23") _,
                out("d24") _, out("d25") _, out("d26") _, out("d27") _,
                out("d28") _, out("d29") _, out("d30") _, out("d31") _,
                options(nostack),
            )
        };
    }
    if stride == 1 {
        block_asm!("vld1.8 {{d0, d1}}, [{p}], {dil}")
    } else {
        block_asm!("vld2.8 {{d0-d3}}, [{p}], {dil}")
    }
}
