//! `qs8_vadd`, `qs8_vmul` and `qs8_requantize_copy` on 32-bit ARMv7 NEON:
//! the aarch64 algorithms (sixteen elements per step, `x - zp` exact in i16,
//! the bit-exact vector output stage), each loop one `asm!` block.
//!
//! As on aarch64: binary ops vectorise three equal shapes and run the
//! reference for any broadcast, zero points must be int8 values, a length
//! that is not a multiple of 16 ends with one overlapping block, and arrays
//! shorter than 16 go through zero-padded stack copies. CPUs without NEON
//! run the reference.

use super::has_neon;
use crate::reference::{self, QAddParams, QMulParams, QADD_LEFT_SHIFT};
use crate::requant::Requant;
use crate::shape::Dims;

/// One [`Requant`] in four lanes, as the `asm!` loads it (48 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct RqLanes {
    mult: [i32; 4],
    /// `max(shift, 0)`.
    left: [i32; 4],
    /// `-max(-shift, 0)`.
    right: [i32; 4],
}

impl RqLanes {
    fn new(r: Requant) -> RqLanes {
        RqLanes {
            mult: [r.mult; 4],
            left: [r.shift.max(0); 4],
            right: [-(-r.shift).max(0); 4],
        }
    }
}

/// Parameters at the offsets the `asm!` blocks use.
#[repr(C)]
struct Params {
    /// 0, 48: input requantizations (`vadd` only).
    a: RqLanes,
    b: RqLanes,
    /// 96: output requantization.
    o: RqLanes,
    /// 144: output zero point; 160, 176: activation bounds.
    out_zp: [i16; 8],
    lo: [i8; 16],
    hi: [i8; 16],
    /// 192, 200: input zero points.
    za: [i8; 8],
    zb: [i8; 8],
}

impl Params {
    fn new(a: Requant, b: Requant, o: Requant, zps: [i32; 3], lo: i8, hi: i8) -> Params {
        Params {
            a: RqLanes::new(a),
            b: RqLanes::new(b),
            o: RqLanes::new(o),
            out_zp: [zps[2] as i16; 8],
            lo: [lo; 16],
            hi: [hi; 16],
            za: [zps[0] as i8; 8],
            zb: [zps[1] as i8; 8],
        }
    }
}

/// `vqshl`, `vqrdmulh`, sign fixup and `vrshl` of four i32x4 registers by
/// the requantization in q12 (mult), q13 (left), q14 (right), with two
/// scratch registers: lane for lane `crate::requant::requantize`.
macro_rules! requant4 {
    ($a:literal, $b:literal, $c:literal, $d:literal, $t:literal, $u:literal) => {
        concat!(
            "vqshl.s32 ",
            $a,
            ", ",
            $a,
            ", q13\n",
            "vqshl.s32 ",
            $b,
            ", ",
            $b,
            ", q13\n",
            "vqshl.s32 ",
            $c,
            ", ",
            $c,
            ", q13\n",
            "vqshl.s32 ",
            $d,
            ", ",
            $d,
            ", q13\n",
            "vqrdmulh.s32 ",
            $a,
            ", ",
            $a,
            ", q12\n",
            "vqrdmulh.s32 ",
            $b,
            ", ",
            $b,
            ", q12\n",
            "vqrdmulh.s32 ",
            $c,
            ", ",
            $c,
            ", q12\n",
            "vqrdmulh.s32 ",
            $d,
            ", ",
            $d,
            ", q12\n",
            "vand ",
            $t,
            ", ",
            $a,
            ", q14\n",
            "vand ",
            $u,
            ", ",
            $b,
            ", q14\n",
            "vshr.s32 ",
            $t,
            ", ",
            $t,
            ", #31\n",
            "vshr.s32 ",
            $u,
            ", ",
            $u,
            ", #31\n",
            "vqadd.s32 ",
            $a,
            ", ",
            $a,
            ", ",
            $t,
            "\n",
            "vqadd.s32 ",
            $b,
            ", ",
            $b,
            ", ",
            $u,
            "\n",
            "vand ",
            $t,
            ", ",
            $c,
            ", q14\n",
            "vand ",
            $u,
            ", ",
            $d,
            ", q14\n",
            "vshr.s32 ",
            $t,
            ", ",
            $t,
            ", #31\n",
            "vshr.s32 ",
            $u,
            ", ",
            $u,
            ", #31\n",
            "vqadd.s32 ",
            $c,
            ", ",
            $c,
            ", ",
            $t,
            "\n",
            "vqadd.s32 ",
            $d,
            ", ",
            $d,
            ", ",
            $u,
            "\n",
            "vrshl.s32 ",
            $a,
            ", ",
            $a,
            ", q14\n",
            "vrshl.s32 ",
            $b,
            ", ",
            $b,
            ", q14\n",
            "vrshl.s32 ",
            $c,
            ", ",
            $c,
            ", q14\n",
            "vrshl.s32 ",
            $d,
            ", ",
            $d,
            ", q14\n",
        )
    };
}

/// Loads the requantization at `{t}` (post-incremented by 48) into q12-q14.
macro_rules! load_rq {
    () => {
        "vld1.32 {{d24-d27}}, [{t}]!\nvld1.32 {{d28, d29}}, [{t}]!\n"
    };
}

/// The output stage of q8-q11 (output requantization and the rest of
/// `Params` from `{t}` at offset 96) and a 16-byte store at `{o}`.
macro_rules! output16 {
    () => {
        concat!(
            load_rq!(),
            requant4!("q8", "q9", "q10", "q11", "q2", "q3"),
            "vld1.16 {{d0, d1}}, [{t}]!\n",
            "vld1.8 {{d2-d5}}, [{t}]\n",
            "vqmovn.s32 d6, q8\n",
            "vqmovn.s32 d7, q9\n",
            "vqmovn.s32 d8, q10\n",
            "vqmovn.s32 d9, q11\n",
            "vqadd.s16 q3, q3, q0\n",
            "vqadd.s16 q4, q4, q0\n",
            "vqmovn.s16 d6, q3\n",
            "vqmovn.s16 d7, q4\n",
            "vmax.s8 q3, q3, q1\n",
            "vmin.s8 q3, q3, q2\n",
            "vst1.8 {{d6, d7}}, [{o}]!\n",
        )
    };
}

/// The three kernels' block loops: `blocks` groups of 16 elements of `a`,
/// `b` into `out`.
#[derive(Clone, Copy)]
enum Op {
    Add,
    Mul,
    Requant,
}

/// # Safety
/// NEON; `16 * blocks` bytes readable at `a` and `b`, writable at `out`;
/// `blocks >= 1`.
unsafe fn run_blocks(
    op: Op,
    a: *const i8,
    b: *const i8,
    out: *mut i8,
    blocks: usize,
    prm: &Params,
) {
    const _: () = assert!(QADD_LEFT_SHIFT == 20);
    let prm = prm as *const Params;
    // SAFETY (all three): reads 16*blocks bytes at a and b and the `Params`
    // struct, writes 16*blocks bytes at out; every NEON register used is
    // declared clobbered as d registers, so the compiler saves d8-d15
    // (see the module notes in `arm/mod.rs` on why not as q registers).
    match op {
        Op::Add => core::arch::asm!(
            ".fpu neon",
            "add {t}, {prm}, #192",
            "vld1.8 {{d30, d31}}, [{t}]",
            "1:",
            "mov {t}, {prm}",
            "vld1.8 {{d0, d1}}, [{a}]!",
            "vld1.8 {{d2, d3}}, [{b}]!",
            // (a - za) << 20 as ((a - za) << 5) in i16, then vshll #15.
            "vsubl.s8 q2, d0, d30",
            "vsubl.s8 q3, d1, d30",
            "vshl.i16 q2, q2, #5",
            "vshl.i16 q3, q3, #5",
            "vshll.s16 q8, d4, #15",
            "vshll.s16 q9, d5, #15",
            "vshll.s16 q10, d6, #15",
            "vshll.s16 q11, d7, #15",
            load_rq!(),
            requant4!("q8", "q9", "q10", "q11", "q2", "q3"),
            "vsubl.s8 q2, d2, d31",
            "vsubl.s8 q3, d3, d31",
            "vshl.i16 q2, q2, #5",
            "vshl.i16 q3, q3, #5",
            "vshll.s16 q4, d4, #15",
            "vshll.s16 q5, d5, #15",
            "vshll.s16 q6, d6, #15",
            "vshll.s16 q7, d7, #15",
            load_rq!(),
            requant4!("q4", "q5", "q6", "q7", "q0", "q1"),
            "vadd.i32 q8, q8, q4",
            "vadd.i32 q9, q9, q5",
            "vadd.i32 q10, q10, q6",
            "vadd.i32 q11, q11, q7",
            output16!(),
            "subs {n}, {n}, #1",
            "bne 1b",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            o = inout(reg) out => _,
            n = inout(reg) blocks => _,
            prm = in(reg) prm,
            t = out(reg) _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            out("d16") _, out("d17") _, out("d18") _, out("d19") _, out("d20") _, out("d21") _, out("d22") _, out("d23") _,
            out("d24") _, out("d25") _, out("d26") _, out("d27") _, out("d28") _, out("d29") _, out("d30") _, out("d31") _,
            options(nostack),
        ),
        Op::Mul => core::arch::asm!(
            ".fpu neon",
            "add {t}, {prm}, #192",
            "vld1.8 {{d30, d31}}, [{t}]",
            "1:",
            "add {t}, {prm}, #96",
            "vld1.8 {{d0, d1}}, [{a}]!",
            "vld1.8 {{d2, d3}}, [{b}]!",
            "vsubl.s8 q2, d0, d30",
            "vsubl.s8 q3, d1, d30",
            "vsubl.s8 q4, d2, d31",
            "vsubl.s8 q5, d3, d31",
            // Exact i16 x i16 -> i32 products.
            "vmull.s16 q8, d4, d8",
            "vmull.s16 q9, d5, d9",
            "vmull.s16 q10, d6, d10",
            "vmull.s16 q11, d7, d11",
            output16!(),
            "subs {n}, {n}, #1",
            "bne 1b",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            o = inout(reg) out => _,
            n = inout(reg) blocks => _,
            prm = in(reg) prm,
            t = out(reg) _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            out("d16") _, out("d17") _, out("d18") _, out("d19") _, out("d20") _, out("d21") _, out("d22") _, out("d23") _,
            out("d24") _, out("d25") _, out("d26") _, out("d27") _, out("d28") _, out("d29") _, out("d30") _, out("d31") _,
            options(nostack),
        ),
        Op::Requant => {
            let _ = b;
            core::arch::asm!(
                ".fpu neon",
                "add {t}, {prm}, #192",
                "vld1.8 {{d30, d31}}, [{t}]",
                "1:",
                "add {t}, {prm}, #96",
                "vld1.8 {{d0, d1}}, [{a}]!",
                "vsubl.s8 q2, d0, d30",
                "vsubl.s8 q3, d1, d30",
                "vmovl.s16 q8, d4",
                "vmovl.s16 q9, d5",
                "vmovl.s16 q10, d6",
                "vmovl.s16 q11, d7",
                output16!(),
                "subs {n}, {n}, #1",
                "bne 1b",
                a = inout(reg) a => _,
                o = inout(reg) out => _,
                n = inout(reg) blocks => _,
                prm = in(reg) prm,
                t = out(reg) _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                out("d16") _, out("d17") _, out("d18") _, out("d19") _, out("d20") _, out("d21") _, out("d22") _, out("d23") _,
                out("d24") _, out("d25") _, out("d26") _, out("d27") _, out("d28") _, out("d29") _, out("d30") _, out("d31") _,
                options(nostack),
            )
        }
    }
}

/// `op` over `len` elements: whole blocks, then one block ending at `len`;
/// below 16 elements, one block on zero-padded copies.
///
/// # Safety
/// NEON; `a`, `b` hold `len` readable bytes, `out` `len` writable ones.
unsafe fn run(op: Op, len: usize, a: *const i8, b: *const i8, out: *mut i8, prm: &Params) {
    if len < 16 {
        let (mut ta, mut tb, mut to) = ([0i8; 16], [0i8; 16], [0i8; 16]);
        core::ptr::copy_nonoverlapping(a, ta.as_mut_ptr(), len);
        core::ptr::copy_nonoverlapping(b, tb.as_mut_ptr(), len);
        run_blocks(op, ta.as_ptr(), tb.as_ptr(), to.as_mut_ptr(), 1, prm);
        core::ptr::copy_nonoverlapping(to.as_ptr(), out, len);
        return;
    }
    run_blocks(op, a, b, out, len / 16, prm);
    if !len.is_multiple_of(16) {
        let i = len - 16;
        run_blocks(op, a.add(i), b.add(i), out.add(i), 1, prm);
    }
}

fn int8_zps(zps: &[i32]) -> bool {
    zps.iter().all(|z| (-128..=127).contains(z))
}

fn same_shape(ad: &Dims, bd: &Dims, od: &Dims) -> Option<usize> {
    (ad == od && bd == od).then(|| od.count())
}

/// ARMv7 NEON [`reference::qs8_vadd`]; same contract, same output.
#[allow(non_snake_case)]
pub fn qs8_vadd__armv7neon(
    p: &QAddParams,
    a: &[i8],
    ad: &Dims,
    b: &[i8],
    bd: &Dims,
    out: &mut [i8],
    od: &Dims,
) {
    let len = match same_shape(ad, bd, od) {
        Some(len) if has_neon() && int8_zps(&[p.a_zp, p.b_zp, p.out_zp]) => len,
        _ => return reference::qs8_vadd(p, a, ad, b, bd, out, od),
    };
    let (a, b, out) = (&a[..len], &b[..len], &mut out[..len]);
    if len == 0 {
        return;
    }
    assert!(p.act_min <= p.act_max, "qs8_vadd: act_min > act_max");
    let zps = [p.a_zp, p.b_zp, p.out_zp];
    let prm = Params::new(p.a_rq, p.b_rq, p.out_rq, zps, p.act_min, p.act_max);
    // SAFETY: NEON is present; the three slices hold `len` bytes.
    unsafe { run(Op::Add, len, a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), &prm) }
}

/// ARMv7 NEON [`reference::qs8_vmul`]; same contract, same output.
#[allow(non_snake_case)]
pub fn qs8_vmul__armv7neon(
    p: &QMulParams,
    a: &[i8],
    ad: &Dims,
    b: &[i8],
    bd: &Dims,
    out: &mut [i8],
    od: &Dims,
) {
    let len = match same_shape(ad, bd, od) {
        Some(len) if has_neon() && int8_zps(&[p.a_zp, p.b_zp, p.out_zp]) => len,
        _ => return reference::qs8_vmul(p, a, ad, b, bd, out, od),
    };
    let (a, b, out) = (&a[..len], &b[..len], &mut out[..len]);
    if len == 0 {
        return;
    }
    assert!(p.act_min <= p.act_max, "qs8_vmul: act_min > act_max");
    let zps = [p.a_zp, p.b_zp, p.out_zp];
    let prm = Params::new(p.rq, p.rq, p.rq, zps, p.act_min, p.act_max);
    // SAFETY: NEON is present; the three slices hold `len` bytes.
    unsafe { run(Op::Mul, len, a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), &prm) }
}

/// ARMv7 NEON [`reference::qs8_requantize_copy`]; same contract, same output
/// (`min(input.len(), output.len())` elements).
#[allow(non_snake_case)]
pub fn qs8_requantize_copy__armv7neon(
    input: &[i8],
    in_zp: i32,
    rq: Requant,
    out_zp: i32,
    output: &mut [i8],
) {
    if !has_neon() || !int8_zps(&[in_zp, out_zp]) {
        return reference::qs8_requantize_copy(input, in_zp, rq, out_zp, output);
    }
    let len = input.len().min(output.len());
    if len == 0 {
        return;
    }
    let prm = Params::new(rq, rq, rq, [in_zp, in_zp, out_zp], -128, 127);
    let p = input.as_ptr();
    // SAFETY: NEON is present; both slices hold at least `len` bytes (the
    // second input is `input` again, unused).
    unsafe { run(Op::Requant, len, p, p, output.as_mut_ptr(), &prm) }
}
