//! Data movement for the conv driver on ARMv7 NEON (hooks called from
//! [`crate::driver::packed`], which is otherwise architecture-neutral).

use super::has_neon;

/// `dst[i] = src[2 i]` for the first `16 * b` bytes of `dst`, `b = min(dst.len(),
/// src.len() / 2) / 16` (one `vld2.8` of 32 bytes and one 16-byte store per
/// block: the stride-2 phase split of the packed driver's staging, which the
/// compiler leaves byte by byte on ARMv7). Returns `16 * b`, the count done;
/// 0 without NEON. The caller does the rest.
pub(crate) fn take_even(src: &[i8], dst: &mut [i8]) -> usize {
    let blocks = dst.len().min(src.len() / 2) / 16;
    if blocks == 0 || !has_neon() {
        return 0;
    }
    // SAFETY: NEON is present; `32 * blocks <= src.len()` bytes are read
    // and `16 * blocks <= dst.len()` written; d0-d3 are declared clobbered.
    unsafe {
        core::arch::asm!(
            ".fpu neon",
            "1:",
            "vld2.8 {{d0-d3}}, [{s}]!",
            "subs {n}, {n}, #1",
            "vst1.8 {{d0-d1}}, [{d}]!",
            "bne 1b",
            s = inout(reg) src.as_ptr() => _,
            d = inout(reg) dst.as_mut_ptr() => _,
            n = inout(reg) blocks => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            options(nostack),
        );
    }
    16 * blocks
}

/// The in-bounds K groups of the packed driver's panel packing: for `kb <
/// groups`, the 16 bytes at `base + offsets[4 kb + r]` for `r < 4`,
/// interleaved (`dst[64 kb + 4 j + r]`, the `vst4.8` of
/// `driver::packed::interleave4`) in one loop: `ldm` of the four offsets,
/// four loads, two `vst4.8` (the generic loop re-checks NEON and reloads
/// its state per group, twice the instructions).
///
/// # Safety
/// NEON; `offsets` has `4 * groups` readable entries, each `base + offset`
/// 16 readable bytes, `dst` `64 * groups` writable bytes; `groups >= 1`.
pub(crate) unsafe fn pack_groups(
    base: *const i8,
    offsets: *const usize,
    groups: usize,
    dst: *mut i8,
) {
    // SAFETY: per the caller's contract; r0-r3 and d0-d7 declared
    // clobbered.
    core::arch::asm!(
        ".fpu neon",
        "1:",
        "ldm {off}!, {{r0, r1, r2, r3}}",
        "add r0, r0, {base}",
        "add r1, r1, {base}",
        "add r2, r2, {base}",
        "add r3, r3, {base}",
        "vld1.8 {{d0, d1}}, [r0]",
        "vld1.8 {{d2, d3}}, [r1]",
        "vld1.8 {{d4, d5}}, [r2]",
        "vld1.8 {{d6, d7}}, [r3]",
        "subs {n}, {n}, #1",
        "vst4.8 {{d0, d2, d4, d6}}, [{d}]!",
        "vst4.8 {{d1, d3, d5, d7}}, [{d}]!",
        "bne 1b",
        base = in(reg) base,
        off = inout(reg) offsets => _,
        n = inout(reg) groups => _,
        d = inout(reg) dst => _,
        out("r0") _, out("r1") _, out("r2") _, out("r3") _,
        out("d0") _, out("d1") _, out("d2") _, out("d3") _,
        out("d4") _, out("d5") _, out("d6") _, out("d7") _,
        options(nostack),
    );
}
