//! 32-bit ARM (ARMv7-A) NEON paths, and NEON detection: the int8 NT gemm
//! (here), the packed gemm `qs8_gemm_4x16c4` (`gemm_4x16c4`), depthwise convolution (`dwconv`, on the padded row ring of
//! [`crate::arm_shared::dwrows`], shared with aarch64), add / mul / requantize-copy (`elementwise`), the 256-entry table and f32 -> int8
//! quantization (`lut`) and max / average pooling (`pool`).
//!
//! 32-bit NEON intrinsics and `#[target_feature(enable = "neon")]` are unstable
//! on arm in stable Rust, so the inner loop is one `asm!` block that switches
//! the assembler to NEON with `.fpu neon` and names its registers explicitly
//! (every one declared clobbered). The `armv7-unknown-linux-gnueabihf` target
//! has VFPv3 with 32 d registers, so d0-d31 can be declared. Clobbers are
//! always declared as **d** registers: in a function built without the
//! `neon` feature the compiler does not treat a `q4`-`q7` clobber as
//! clobbering the callee-saved d8-d15 and does not save them (this broke the
//! callers of `qs8_vadd__armv7neon` and the first packed kernel; the grid's
//! `abi_call` check in `kernels/tests/kernels.rs` now catches it).
//!
//! **Features.** The `__armv7neon` wrappers are meant to be installed only
//! where [`crate::Isa::Armv7Neon`]`.available()` (i.e. [`has_neon`]); to stay
//! sound when called anyway (the kernel table's row contract), each re-checks
//! [`has_neon`] (one cached atomic load) and otherwise runs the reference.

mod dwconv;
mod elementwise;
mod gemm_4x16c4;
mod lut;
mod movement;
mod pool;
pub use dwconv::qs8_dwconv2d__armv7neon;
pub use elementwise::{qs8_requantize_copy__armv7neon, qs8_vadd__armv7neon, qs8_vmul__armv7neon};
pub use gemm_4x16c4::{qs8_gemm_4x16c4__armv7neon, qs8_gemm_4x16c4_f32out__armv7neon};
pub use lut::{qs8_lut__armv7neon, qs8_quantize__armv7neon};
pub(crate) use movement::{pack_groups, take_even};
pub use pool::{qs8_avgpool2d__armv7neon, qs8_maxpool2d__armv7neon};

use crate::arm_shared::sink::{check_inputs, F32Sink, I8Sink, Sink};
use crate::reference::QOut;
use crate::requant::Requant;

/// Whether the CPU has NEON (Advanced SIMD), from the kernel's `AT_HWCAP`
/// (read once, then cached).
#[cfg(target_os = "linux")]
pub fn has_neon() -> bool {
    use core::ffi::c_ulong; // u32 on 32-bit arm
    use core::sync::atomic::{AtomicU8, Ordering};
    const AT_HWCAP: c_ulong = 16;
    const HWCAP_NEON: c_ulong = 1 << 12;
    unsafe extern "C" {
        fn getauxval(kind: c_ulong) -> c_ulong;
    }
    // 0: not read yet, 1: no NEON, 2: NEON.
    static CACHE: AtomicU8 = AtomicU8::new(0);
    match CACHE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: glibc/musl `getauxval` has no preconditions; unknown kinds give 0.
            let neon = unsafe { getauxval(AT_HWCAP) } & HWCAP_NEON != 0;
            CACHE.store(1 + neon as u8, Ordering::Relaxed);
            neon
        }
        c => c == 2,
    }
}

/// Whether the CPU has NEON: unknown off Linux, so never claimed.
#[cfg(not(target_os = "linux"))]
pub fn has_neon() -> bool {
    false
}

/// Rows per tile (of `a`) and columns per tile (rows of `b`).
const MR: usize = 2;
const NR: usize = 4;

/// `acc[(r * NR + c) * 4 + lane] += partial dot products` of rows `a[r]`,
/// `b[c]` over `blocks` 16-byte blocks (the pointers' first `16 * blocks` bytes).
///
/// Per block: 6 loads, then for each of the 8 row/column pairs
/// `vmull.s8` x2 (one i16 lane per int8 product, no overflow at -128 * -128)
/// and `vpadal.s16` x2 into that pair's i32x4 accumulator.
///
/// # Safety
/// The CPU has NEON; `16 * blocks` bytes are readable at each pointer.
#[inline(always)]
unsafe fn accumulate(
    a: [*const i8; MR],
    b: [*const i8; NR],
    blocks: usize,
    acc: &mut [i32; MR * NR * 4],
) {
    // SAFETY: reads 16*blocks bytes from each pointer (caller contract) and
    // reads/writes the 128 bytes of `acc`; every NEON register used is declared
    // clobbered; NEON presence is the caller's contract.
    core::arch::asm!(
        ".fpu neon",
        "vld1.32 {{d16-d19}}, [{acc}]!",
        "vld1.32 {{d20-d23}}, [{acc}]!",
        "vld1.32 {{d24-d27}}, [{acc}]!",
        "vld1.32 {{d28-d31}}, [{acc}]",
        "sub {acc}, {acc}, #96",
        "cmp {n}, #0",
        "beq 2f",
        "1:",
        "vld1.8 {{d0, d1}}, [{a0}]!",
        "vld1.8 {{d2, d3}}, [{a1}]!",
        "vld1.8 {{d4, d5}}, [{b0}]!",
        "vld1.8 {{d6, d7}}, [{b1}]!",
        "vld1.8 {{d8, d9}}, [{b2}]!",
        "vld1.8 {{d10, d11}}, [{b3}]!",
        "vmull.s8 q6, d0, d4",
        "vmull.s8 q7, d1, d5",
        "vpadal.s16 q8, q6",
        "vpadal.s16 q8, q7",
        "vmull.s8 q6, d0, d6",
        "vmull.s8 q7, d1, d7",
        "vpadal.s16 q9, q6",
        "vpadal.s16 q9, q7",
        "vmull.s8 q6, d0, d8",
        "vmull.s8 q7, d1, d9",
        "vpadal.s16 q10, q6",
        "vpadal.s16 q10, q7",
        "vmull.s8 q6, d0, d10",
        "vmull.s8 q7, d1, d11",
        "vpadal.s16 q11, q6",
        "vpadal.s16 q11, q7",
        "vmull.s8 q6, d2, d4",
        "vmull.s8 q7, d3, d5",
        "vpadal.s16 q12, q6",
        "vpadal.s16 q12, q7",
        "vmull.s8 q6, d2, d6",
        "vmull.s8 q7, d3, d7",
        "vpadal.s16 q13, q6",
        "vpadal.s16 q13, q7",
        "vmull.s8 q6, d2, d8",
        "vmull.s8 q7, d3, d9",
        "vpadal.s16 q14, q6",
        "vpadal.s16 q14, q7",
        "vmull.s8 q6, d2, d10",
        "vmull.s8 q7, d3, d11",
        "vpadal.s16 q15, q6",
        "vpadal.s16 q15, q7",
        "subs {n}, {n}, #1",
        "bne 1b",
        "2:",
        "vst1.32 {{d16-d19}}, [{acc}]!",
        "vst1.32 {{d20-d23}}, [{acc}]!",
        "vst1.32 {{d24-d27}}, [{acc}]!",
        "vst1.32 {{d28-d31}}, [{acc}]",
        acc = inout(reg) acc.as_mut_ptr() => _,
        n = inout(reg) blocks => _,
        a0 = inout(reg) a[0] => _,
        a1 = inout(reg) a[1] => _,
        b0 = inout(reg) b[0] => _,
        b1 = inout(reg) b[1] => _,
        b2 = inout(reg) b[2] => _,
        b3 = inout(reg) b[3] => _,
        out("d0") _, out("d1") _, out("d2") _, out("d3") _,
        out("d4") _, out("d5") _, out("d6") _, out("d7") _,
        out("d8") _, out("d9") _, out("d10") _, out("d11") _,
        out("d12") _, out("d13") _, out("d14") _, out("d15") _,
        out("d16") _, out("d17") _, out("d18") _, out("d19") _,
        out("d20") _, out("d21") _, out("d22") _, out("d23") _,
        out("d24") _, out("d25") _, out("d26") _, out("d27") _,
        out("d28") _, out("d29") _, out("d30") _, out("d31") _,
        options(nostack),
    );
}

/// The whole `m x n` product in 2x4 tiles; rows/columns past the edge re-read
/// the last valid one and their results are dropped.
///
/// # Safety
/// The CPU has NEON; `a` holds `m*k` readable bytes, `b` holds `n*k`,
/// `bias.len() >= m`.
unsafe fn gemm<S: Sink>(
    m: usize,
    n: usize,
    k: usize,
    a: *const i8,
    b: *const i8,
    bias: &[i32],
    sink: &mut S,
) {
    let blocks = k / 16;
    let rem = k % 16;
    let mut i0 = 0;
    while i0 < m {
        // SAFETY: row indices are clamped below m, so each row's k bytes are readable.
        let ap: [*const i8; MR] = core::array::from_fn(|r| a.add((i0 + r).min(m - 1) * k));
        let mut j0 = 0;
        while j0 < n {
            // SAFETY: as above, clamped below n.
            let bp: [*const i8; NR] = core::array::from_fn(|c| b.add((j0 + c).min(n - 1) * k));
            let mut acc = [0i32; MR * NR * 4];
            // SAFETY: 16*blocks <= k bytes per row; NEON per the caller.
            accumulate(ap, bp, blocks, &mut acc);
            if rem != 0 {
                // Zero-padded tails: zeros add nothing.
                let mut abuf = [[0i8; 16]; MR];
                let mut bbuf = [[0i8; 16]; NR];
                for r in 0..MR {
                    // SAFETY: bytes 16*blocks..k of the row are in bounds.
                    core::ptr::copy_nonoverlapping(
                        ap[r].add(16 * blocks),
                        abuf[r].as_mut_ptr(),
                        rem,
                    );
                }
                for c in 0..NR {
                    // SAFETY: as above.
                    core::ptr::copy_nonoverlapping(
                        bp[c].add(16 * blocks),
                        bbuf[c].as_mut_ptr(),
                        rem,
                    );
                }
                // SAFETY: each buffer holds 16 bytes.
                let at: [*const i8; MR] = core::array::from_fn(|r| abuf[r].as_ptr());
                let bt: [*const i8; NR] = core::array::from_fn(|c| bbuf[c].as_ptr());
                accumulate(at, bt, 1, &mut acc);
            }
            for r in 0..MR.min(m - i0) {
                let bi = bias[i0 + r];
                for c in 0..NR.min(n - j0) {
                    let l = &acc[(r * NR + c) * 4..][..4];
                    let dot = l[0]
                        .wrapping_add(l[1])
                        .wrapping_add(l[2])
                        .wrapping_add(l[3]);
                    sink.put(i0 + r, j0 + c, bi.wrapping_add(dot));
                }
            }
            j0 += NR;
        }
        i0 += MR;
    }
}

/// [`crate::reference::qs8_gemm_nt`] on ARMv7 NEON (`vmull.s8` + `vpadal.s16`).
///
/// Same contract and bit-identical results as the reference. Install where
/// [`crate::Isa::Armv7Neon`]`.available()`; without NEON it runs the reference.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt__armv7neon(
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
    if !has_neon() {
        return crate::reference::qs8_gemm_nt(m, n, k, a, b, bias, rq, q, out, rs, cs);
    }
    check_inputs(m, n, k, a, b, bias, rq.len());
    let mut sink = I8Sink { rq, q, out, rs, cs };
    // SAFETY: `check_inputs` bounds the row reads; `has_neon()` checked above.
    unsafe { gemm(m, n, k, a.as_ptr(), b.as_ptr(), bias, &mut sink) }
}

/// [`crate::reference::qs8_gemm_nt_f32out`] on ARMv7 NEON; the reference
/// without NEON.
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn qs8_gemm_nt_f32out__armv7neon(
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
    if !has_neon() {
        return crate::reference::qs8_gemm_nt_f32out(
            m, n, k, a, b, bias, scale, act_min, act_max, out, rs, cs,
        );
    }
    check_inputs(m, n, k, a, b, bias, scale.len());
    let mut sink = F32Sink {
        scale,
        lo: act_min,
        hi: act_max,
        out,
        rs,
        cs,
    };
    // SAFETY: as in `qs8_gemm_nt__armv7neon`.
    unsafe { gemm(m, n, k, a.as_ptr(), b.as_ptr(), bias, &mut sink) }
}

#[cfg(test)]
mod tests;
