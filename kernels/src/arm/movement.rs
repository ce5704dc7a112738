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
