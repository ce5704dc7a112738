//! `qs8_lut` (256-entry table) and `qs8_quantize` (f32 -> int8) on 32-bit
//! ARMv7 NEON, each loop one `asm!` block. CPUs without NEON run the
//! reference.
//!
//! **Table.** ARMv7 `vtbl.8`/`vtbx.8` look up at most 32 bytes (four d
//! registers) per instruction, eight bytes at a time, so a 256-entry table
//! is eight 32-byte chunks: `vtbl` of chunk 0 (zero for an index past 31),
//! then per chunk `c` the index minus 32 (wrapping, so an index below the
//! chunk becomes large) and `vtbx` (a lane whose index is past 31 keeps its
//! value). The raw input byte is the index into the table rotated by 128
//! (entry `q + 128` is the output of code `q`, i.e. of byte `q as u8 ^
//! 0x80`), so no add of 128 is needed: chunk `c` is the table's bytes at
//! `(32 c) ^ 128`. 64 input bytes per step; chunks 0 and 1 stay in registers,
//! the other six are reloaded per step (no registers left): 106 instructions
//! per 64 bytes against six per byte for the reference's loop.
//!
//! **Quantize.** ARMv7 NEON has no round-to-nearest conversion (`vcvta` is
//! ARMv8), so the reference's own rounding is vectorised: `v = x * inv`,
//! `t = vcvt.s32(v)` (truncation; NaN gives 0, out-of-range values
//! saturate), `frac = v - t`, `t + (frac >= 0.5) - (frac <= -0.5)` by
//! saturating adds of the compare masks, the zero point by a saturating
//! add, and saturating narrows to int8. Within +-1e6 this is the
//! reference's arithmetic exactly; beyond, both clamp to the same int8 end
//! (the saturations keep the sign). NEON arithmetic flushes denormals to
//! zero, which matters only when a denormal `x` times `inv` could reach
//! 0.5, or `inv` itself is denormal, infinite or NaN: scales whose `1 /
//! scale` lies outside `[f32::MIN_POSITIVE, 2^124]` run the reference (a
//! denormal times at most `2^124` is below 0.25 and rounds to 0 either way,
//! and a product that underflows is below 0.5 too).

use super::has_neon;
use crate::reference;

/// Input bytes per `asm!` loop step of [`qs8_lut__armv7neon`].
const LUT_STEP: usize = 64;

/// One further chunk of [`lut_steps`]: indices in q0-q3 minus 32, then
/// `vtbx` from the chunk in d16-d19 into the results in d8-d15.
macro_rules! chunk {
    () => {
        concat!(
            "vsub.i8 q0, q0, q14\n",
            "vsub.i8 q1, q1, q14\n",
            "vsub.i8 q2, q2, q14\n",
            "vsub.i8 q3, q3, q14\n",
            "vtbx.8 d8, {{d16-d19}}, d0\n",
            "vtbx.8 d9, {{d16-d19}}, d1\n",
            "vtbx.8 d10, {{d16-d19}}, d2\n",
            "vtbx.8 d11, {{d16-d19}}, d3\n",
            "vtbx.8 d12, {{d16-d19}}, d4\n",
            "vtbx.8 d13, {{d16-d19}}, d5\n",
            "vtbx.8 d14, {{d16-d19}}, d6\n",
            "vtbx.8 d15, {{d16-d19}}, d7\n",
        )
    };
}

/// Looks up `steps` blocks of 64 bytes.
///
/// # Safety
/// NEON; `table` addresses 256 readable bytes, `input` `64 * steps`
/// readable bytes and `output` as many writable ones.
unsafe fn lut_steps(table: *const i8, input: *const i8, output: *mut i8, steps: usize) {
    // SAFETY: reads 256 bytes of `table` and 64 * steps of `input`, writes
    // 64 * steps of `output` (caller contract); every NEON register used is
    // declared clobbered as d registers (see `arm/mod.rs`).
    core::arch::asm!(
        ".fpu neon",
        // Chunks 0 and 1 (table bytes 128..192) stay in d20-d27; 32 per lane
        // in q14.
        "vld1.8 {{d20-d23}}, [{hi}]!",
        "vld1.8 {{d24-d27}}, [{hi}]!",
        "vmov.i8 q14, #32",
        "1:",
        "vld1.8 {{d0-d3}}, [{inp}]!",
        "vld1.8 {{d4-d7}}, [{inp}]!",
        // Chunk 0.
        "vtbl.8 d8, {{d20-d23}}, d0",
        "vtbl.8 d9, {{d20-d23}}, d1",
        "vtbl.8 d10, {{d20-d23}}, d2",
        "vtbl.8 d11, {{d20-d23}}, d3",
        "vtbl.8 d12, {{d20-d23}}, d4",
        "vtbl.8 d13, {{d20-d23}}, d5",
        "vtbl.8 d14, {{d20-d23}}, d6",
        "vtbl.8 d15, {{d20-d23}}, d7",
        // Chunk 1.
        "vsub.i8 q0, q0, q14",
        "vsub.i8 q1, q1, q14",
        "vsub.i8 q2, q2, q14",
        "vsub.i8 q3, q3, q14",
        "vtbx.8 d8, {{d24-d27}}, d0",
        "vtbx.8 d9, {{d24-d27}}, d1",
        "vtbx.8 d10, {{d24-d27}}, d2",
        "vtbx.8 d11, {{d24-d27}}, d3",
        "vtbx.8 d12, {{d24-d27}}, d4",
        "vtbx.8 d13, {{d24-d27}}, d5",
        "vtbx.8 d14, {{d24-d27}}, d6",
        "vtbx.8 d15, {{d24-d27}}, d7",
        // Chunks 2 and 3 (table bytes 192..256), then 4-7 (bytes 0..128).
        "vld1.8 {{d16-d19}}, [{hi}]!",
        chunk!(),
        "vld1.8 {{d16-d19}}, [{hi}]",
        "sub {hi}, {hi}, #32",
        chunk!(),
        "vld1.8 {{d16-d19}}, [{lo}]!",
        chunk!(),
        "vld1.8 {{d16-d19}}, [{lo}]!",
        chunk!(),
        "vld1.8 {{d16-d19}}, [{lo}]!",
        chunk!(),
        "vld1.8 {{d16-d19}}, [{lo}]",
        "sub {lo}, {lo}, #96",
        chunk!(),
        "vst1.8 {{d8-d11}}, [{out}]!",
        "vst1.8 {{d12-d15}}, [{out}]!",
        "subs {n}, {n}, #1",
        "bne 1b",
        hi = inout(reg) table.add(128) => _,
        lo = inout(reg) table => _,
        inp = inout(reg) input => _,
        out = inout(reg) output => _,
        n = inout(reg) steps => _,
        out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
        out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
        out("d16") _, out("d17") _, out("d18") _, out("d19") _, out("d20") _, out("d21") _, out("d22") _, out("d23") _,
        out("d24") _, out("d25") _, out("d26") _, out("d27") _, out("d28") _, out("d29") _,
        options(nostack),
    );
}

/// [`reference::qs8_lut`] on ARMv7 NEON (`vtbl.8`/`vtbx.8` over eight
/// 32-byte chunks, module docs); same contract, same output
/// (`min(input.len(), output.len())` elements). A length that is not a
/// multiple of 64 ends with one step on a stack copy.
#[allow(non_snake_case)]
pub fn qs8_lut__armv7neon(table: &[i8; 256], input: &[i8], output: &mut [i8]) {
    if !has_neon() {
        return reference::qs8_lut(table, input, output);
    }
    let n = input.len().min(output.len());
    let steps = n / LUT_STEP;
    if steps > 0 {
        // SAFETY: NEON is present; both slices hold at least 64 * steps <= n
        // bytes; the table is 256 bytes.
        unsafe { lut_steps(table.as_ptr(), input.as_ptr(), output.as_mut_ptr(), steps) }
    }
    let done = steps * LUT_STEP;
    if done < n {
        let mut buf = [0i8; LUT_STEP];
        buf[..n - done].copy_from_slice(&input[done..n]);
        let p = buf.as_mut_ptr();
        // SAFETY: as above, on the 64-byte buffer (read fully, then
        // overwritten in place: every load of the step precedes its stores).
        unsafe { lut_steps(table.as_ptr(), p, p, 1) }
        output[done..n].copy_from_slice(&buf[..n - done]);
    }
}

/// Floats per `asm!` loop step of [`qs8_quantize__armv7neon`].
const Q_STEP: usize = 16;

/// The constants of [`quantize_steps`], in the order it loads them.
#[repr(C)]
struct QuantConsts {
    inv: [f32; 4],
    half: [f32; 4],
    neg_half: [f32; 4],
    zp: [i32; 4],
}

/// Quantizes `steps` blocks of 16 floats.
///
/// # Safety
/// NEON; `input` addresses `16 * steps` readable floats, `output` `16 *
/// steps` writable bytes; `steps >= 1`.
unsafe fn quantize_steps(k: &QuantConsts, input: *const f32, output: *mut i8, steps: usize) {
    // SAFETY: reads 64 bytes of `k` and 64 * steps of `input`, writes 16 *
    // steps bytes of `output` (caller contract); NEON registers declared
    // clobbered as d registers.
    core::arch::asm!(
        ".fpu neon",
        "vld1.32 {{d24-d27}}, [{k}]!",
        "vld1.32 {{d28-d31}}, [{k}]",
        "1:",
        "vld1.32 {{d0-d3}}, [{inp}]!",
        "vld1.32 {{d4-d7}}, [{inp}]!",
        "vmul.f32 q0, q0, q12",
        "vmul.f32 q1, q1, q12",
        "vmul.f32 q2, q2, q12",
        "vmul.f32 q3, q3, q12",
        // t = trunc(v) (NaN -> 0, saturating), frac = v - t.
        "vcvt.s32.f32 q4, q0",
        "vcvt.s32.f32 q5, q1",
        "vcvt.s32.f32 q6, q2",
        "vcvt.s32.f32 q7, q3",
        "vcvt.f32.s32 q8, q4",
        "vcvt.f32.s32 q9, q5",
        "vcvt.f32.s32 q10, q6",
        "vcvt.f32.s32 q11, q7",
        "vsub.f32 q8, q0, q8",
        "vsub.f32 q9, q1, q9",
        "vsub.f32 q10, q2, q10",
        "vsub.f32 q11, q3, q11",
        // t += (frac >= 0.5): the mask is -1.
        "vcge.f32 q0, q8, q13",
        "vcge.f32 q1, q9, q13",
        "vcge.f32 q2, q10, q13",
        "vcge.f32 q3, q11, q13",
        "vqsub.s32 q4, q4, q0",
        "vqsub.s32 q5, q5, q1",
        "vqsub.s32 q6, q6, q2",
        "vqsub.s32 q7, q7, q3",
        // t -= (frac <= -0.5).
        "vcge.f32 q0, q14, q8",
        "vcge.f32 q1, q14, q9",
        "vcge.f32 q2, q14, q10",
        "vcge.f32 q3, q14, q11",
        "vqadd.s32 q4, q4, q0",
        "vqadd.s32 q5, q5, q1",
        "vqadd.s32 q6, q6, q2",
        "vqadd.s32 q7, q7, q3",
        "vqadd.s32 q4, q4, q15",
        "vqadd.s32 q5, q5, q15",
        "vqadd.s32 q6, q6, q15",
        "vqadd.s32 q7, q7, q15",
        "vqmovn.s32 d0, q4",
        "vqmovn.s32 d1, q5",
        "vqmovn.s32 d2, q6",
        "vqmovn.s32 d3, q7",
        "vqmovn.s16 d4, q0",
        "vqmovn.s16 d5, q1",
        "vst1.8 {{d4-d5}}, [{out}]!",
        "subs {n}, {n}, #1",
        "bne 1b",
        k = inout(reg) k as *const QuantConsts => _,
        inp = inout(reg) input => _,
        out = inout(reg) output => _,
        n = inout(reg) steps => _,
        out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
        out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
        out("d16") _, out("d17") _, out("d18") _, out("d19") _, out("d20") _, out("d21") _, out("d22") _, out("d23") _,
        out("d24") _, out("d25") _, out("d26") _, out("d27") _, out("d28") _, out("d29") _, out("d30") _, out("d31") _,
        options(nostack),
    );
}

/// [`reference::qs8_quantize`] on ARMv7 NEON (module docs); same contract,
/// same output (`min(input.len(), output.len())` elements). Zero points
/// outside the int8 range and scales whose inverse is outside
/// `[f32::MIN_POSITIVE, 2^124]` (where flushing denormals to zero could
/// change a result) run the reference; a length that is not a multiple of
/// 16 ends with one step on a stack copy.
#[allow(non_snake_case)]
pub fn qs8_quantize__armv7neon(input: &[f32], scale: f32, zp: i32, output: &mut [i8]) {
    let inv = 1.0 / scale;
    // False for a NaN `inv` too.
    let inv_ok = inv >= f32::MIN_POSITIVE && inv <= (1u128 << 124) as f32;
    if !has_neon() || !inv_ok || !(-128..=127).contains(&zp) {
        return reference::qs8_quantize(input, scale, zp, output);
    }
    let k = QuantConsts {
        inv: [inv; 4],
        half: [0.5; 4],
        neg_half: [-0.5; 4],
        zp: [zp; 4],
    };
    let n = input.len().min(output.len());
    let steps = n / Q_STEP;
    if steps > 0 {
        // SAFETY: NEON is present; 16 * steps <= n elements of each slice.
        unsafe { quantize_steps(&k, input.as_ptr(), output.as_mut_ptr(), steps) }
    }
    let done = steps * Q_STEP;
    if done < n {
        let mut buf = [0f32; Q_STEP];
        buf[..n - done].copy_from_slice(&input[done..n]);
        let mut out = [0i8; Q_STEP];
        // SAFETY: as above, on the 16-element buffers.
        unsafe { quantize_steps(&k, buf.as_ptr(), out.as_mut_ptr(), 1) }
        output[done..n].copy_from_slice(&out[..n - done]);
    }
}
