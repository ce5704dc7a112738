//! The packed conv driver: ungrouped int8 convs through `ks.gemm_4x16c4`
//! ([`crate::reference::qs8_gemm_4x16c4`]) without im2row.
//!
//! **Virtual pixels.** A panel is 16 consecutive *virtual* output pixels:
//! output rows laid out `wv` wide instead of `out_w`, where `wv` is the row
//! width of the input as the taps see it (padded, and split into stride
//! phases). Then tap `k` of virtual pixel `q` is the byte at `q + offsets[k]`
//! of the staged input for *every* pixel: a panel's K group is four 16-byte
//! loads and one interleaving store, whatever the kernel size, stride,
//! dilation or padding. Columns `out_w..wv` of each virtual row are computed
//! and discarded ((kw - 1) * dil / stride of them per row).
//!
//! **Staging.** Pointwise convs (1x1, stride 1, no padding) read their input
//! in place (`wv == out_w`, nothing discarded). Every other conv first copies
//! its input once per call into the session's shared staging buffer:
//! per input channel and stride phase `(py, px)`, a plane of `hv x wv` bytes
//! holding the padded input's rows `py, py + sh, ...` and columns `px, px +
//! sw, ...` (padding as the input zero point). That is XNNPACK's indirection
//! idea with offsets instead of pointers: [`PackPlan::offsets`] is built at
//! prepare, one `usize` per K index.

use super::{uses_gemm, KernelSet};
use crate::reference::{panel_len, ConvGeometry, QConvParams, QOut, PACK_NR};
use crate::Requant;

/// Whether the runtime packs `g` on rows whose `conv_packed` is set: every
/// ungrouped conv (the virtual-pixel panels cost the same per K group for
/// any geometry).
pub fn packs_well(g: &ConvGeometry) -> bool {
    uses_gemm(g)
}

/// How the packed path reads one conv's input; built at prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackPlan {
    /// Virtual output row width (>= `out_w`).
    pub wv: usize,
    /// Rows per staged plane.
    hv: usize,
    /// Bytes of staged input the conv needs (0: it reads its input in place).
    pub staged_len: usize,
    /// Per K index (weight order `ic, ky, kx`): the offset of that tap of
    /// virtual pixel 0 in the staged input (or in the input, when in place).
    pub offsets: Vec<usize>,
}

impl PackPlan {
    /// The plan for valid ungrouped geometry `g`; `None` when its staged
    /// input would not fit in `usize` (validation bounds every axis, so this
    /// only guards against misuse).
    pub fn new(g: &ConvGeometry) -> Option<PackPlan> {
        let (sh, sw, dh, dw) = (g.stride_h, g.stride_w, g.dil_h, g.dil_w);
        if g.out_h == 0 || g.out_w == 0 || sh == 0 || sw == 0 {
            return None;
        }
        let pointwise = g.kh == 1
            && g.kw == 1
            && sh == 1
            && sw == 1
            && g.pad_top == 0
            && g.pad_left == 0
            && g.out_w == g.in_w;
        if pointwise {
            let plane = g.in_h.checked_mul(g.in_w)?;
            let offsets = (0..g.in_c).map(|c| c * plane).collect();
            return Some(PackPlan {
                wv: g.in_w,
                hv: g.in_h,
                staged_len: 0,
                offsets,
            });
        }
        // The padded extent the taps reach, and its stride phases.
        let hp = (g.out_h - 1)
            .checked_mul(sh)?
            .checked_add((g.kh - 1).checked_mul(dh)?)?
            + 1;
        let wp = (g.out_w - 1)
            .checked_mul(sw)?
            .checked_add((g.kw - 1).checked_mul(dw)?)?
            + 1;
        let (hv, wv) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let plane = hv.checked_mul(wv)?;
        let planes = g.in_c.checked_mul(sh)?.checked_mul(sw)?;
        // Slack after the last plane: the discarded columns of the last
        // virtual row and the last panel's 16 bytes read past it.
        let staged_len = planes.checked_mul(plane)?.checked_add(wv + PACK_NR)?;
        let mut offsets = Vec::with_capacity(g.k());
        for ic in 0..g.in_c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let (py, ty) = ((ky * dh) % sh, (ky * dh) / sh);
                    let (px, tx) = ((kx * dw) % sw, (kx * dw) / sw);
                    offsets.push(((ic * sh + py) * sw + px) * plane + ty * wv + tx);
                }
            }
        }
        Some(PackPlan {
            wv,
            hv,
            staged_len,
            offsets,
        })
    }
}

/// A conv prepared for the packed path: its weights packed by
/// [`crate::reference::pack_a_4c4`], their per-channel-group `pairs` flags
/// ([`crate::reference::pairable_4c4`], passed to `gemm_4x16c4` so that no
/// call rescans constant weights) and its [`PackPlan`].
#[derive(Clone, Debug)]
pub struct PackedConv {
    pub weights: Vec<i8>,
    pub pairs: Vec<bool>,
    pub plan: PackPlan,
}

impl PackedConv {
    /// Packs `weights` (`g.out_c` rows of `g.k()`) for `g`.
    pub fn new(g: &ConvGeometry, weights: &[i8]) -> Option<PackedConv> {
        let plan = PackPlan::new(g)?;
        let mut w = vec![0i8; crate::reference::packed_a_len(g.out_c, g.k())];
        crate::reference::pack_a_4c4(g.out_c, g.k(), weights, &mut w);
        let mut pairs = vec![false; g.out_c.div_ceil(crate::reference::PACK_MR)];
        crate::reference::pairable_4c4(g.out_c, g.k().div_ceil(4), &w, &mut pairs);
        Some(PackedConv {
            weights: w,
            pairs,
            plan,
        })
    }

    /// Bytes this conv keeps beyond its weights' own copy: the packed
    /// weights, their flags and the offsets.
    pub fn bytes(&self) -> usize {
        self.weights.len()
            + self.pairs.len()
            + self.plan.offsets.len() * core::mem::size_of::<usize>()
    }
}

/// Per-thread scratch bytes of [`qs8_conv2d_packed_tile`]: one panel and
/// one 16-pixel output tile of every channel (for the discarded columns).
pub fn packed_conv_scratch_len(g: &ConvGeometry) -> usize {
    panel_len(g.k()) + g.out_c * PACK_NR
}

/// Copies `input` into `staged` in the plan's layout (module docs); a no-op
/// for in-place plans. `staged.len() >= plan.staged_len`.
pub fn stage_input(g: &ConvGeometry, plan: &PackPlan, in_zp: i8, input: &[i8], staged: &mut [i8]) {
    if plan.staged_len == 0 {
        return;
    }
    let (sh, sw, wv, hv) = (g.stride_h, g.stride_w, plan.wv, plan.hv);
    let staged = &mut staged[..plan.staged_len];
    let plane_in = g.in_h * g.in_w;
    let mut dst = 0;
    for ic in 0..g.in_c {
        let chan = &input[ic * plane_in..(ic + 1) * plane_in];
        for py in 0..sh {
            for px in 0..sw {
                // Column c reads input column c * sw + px - pad_left;
                // inside the row for lo <= c < hi (the same for every row
                // of the phase, so the divisions stay out of the row loop).
                let off = px as isize - g.pad_left as isize;
                let lo = (((-off).max(0) as usize).div_ceil(sw)).min(wv);
                let hi = if g.in_w as isize - off <= 0 {
                    lo
                } else {
                    ((g.in_w as isize - off) as usize)
                        .div_ceil(sw)
                        .clamp(lo, wv)
                };
                for r in 0..hv {
                    let row = &mut staged[dst..dst + wv];
                    dst += wv;
                    let iy = (r * sh + py) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        row.fill(in_zp);
                        continue;
                    }
                    let src = &chan[iy as usize * g.in_w..(iy as usize + 1) * g.in_w];
                    // (Guarded: most rows pad little or nothing, and a fill
                    // is a `memset` call even when empty.)
                    if lo > 0 {
                        row[..lo].fill(in_zp);
                    }
                    if hi < wv {
                        row[hi..].fill(in_zp);
                    }
                    if hi == lo {
                        continue;
                    }
                    let start = (lo as isize * sw as isize + off) as usize;
                    if sw == 1 {
                        row[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else if sw == 2 {
                        // Pairs, so the compiler can deinterleave by vector
                        // (`ld2` on aarch64) instead of byte by byte; the
                        // last byte alone (its pair may end past the row).
                        let m = hi - lo - 1;
                        // ARMv7: whole blocks by `vld2.8` (the compiler does
                        // not vectorise this loop there).
                        #[cfg(target_arch = "arm")]
                        let done =
                            crate::arm::take_even(&src[start..start + 2 * m], &mut row[lo..lo + m]);
                        #[cfg(not(target_arch = "arm"))]
                        let done = 0;
                        let pairs = src[start + 2 * done..start + 2 * m].chunks_exact(2);
                        for (d, pair) in row[lo + done..hi - 1].iter_mut().zip(pairs) {
                            *d = pair[0];
                        }
                        row[hi - 1] = src[start + 2 * m];
                    } else {
                        for (d, &v) in row[lo..hi].iter_mut().zip(src[start..].iter().step_by(sw)) {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
    staged[dst..].fill(in_zp);
}

/// Packs virtual pixels `q0..q0 + 16` into `panel` (layout of
/// [`crate::reference::qs8_gemm_4x16c4`]): K group `kb` is the 16 bytes at
/// `src[q0 + offsets[4 kb + r]..]` for `r < 4`, interleaved; K past the end
/// gets zeros, and so do bytes past the end of `src` (lanes of pixels that
/// do not exist: in-place plans have no slack).
///
/// `max_off` is the largest of `offsets` (or any larger value): when the
/// panel's last load ends inside `src`, whole K groups skip the per-load
/// bounds checks (those cost three times the loads and the store).
fn pack_panel(src: &[i8], offsets: &[usize], max_off: usize, q0: usize, panel: &mut [i8]) {
    let k = offsets.len();
    let inside = q0
        .checked_add(max_off)
        .and_then(|x| x.checked_add(PACK_NR))
        .is_some_and(|end| end <= src.len());
    let mut done = 0;
    #[cfg(target_arch = "arm")]
    if inside && k >= 4 && panel.len() >= 16 * k && crate::arm::has_neon() {
        // SAFETY: as below (each row 16 bytes inside `src`); `panel` holds
        // `16 k >= 64 * (k / 4)` bytes (checked); NEON checked.
        unsafe {
            crate::arm::pack_groups(
                src.as_ptr().add(q0),
                offsets.as_ptr(),
                k / 4,
                panel.as_mut_ptr(),
            )
        }
        done = k / 4;
    }
    if inside && done == 0 {
        let base = src.as_ptr().wrapping_add(q0);
        for (o, dst) in offsets
            .chunks_exact(4)
            .zip(panel.chunks_exact_mut(4 * PACK_NR))
        {
            // SAFETY: q0 + o[r] + 16 <= q0 + max_off + 16 <= src.len()
            // (checked above), so each row is 16 bytes inside `src`.
            let rows: [&[i8; PACK_NR]; 4] =
                core::array::from_fn(|r| unsafe { &*(base.add(o[r]) as *const [i8; PACK_NR]) });
            interleave4(rows, dst);
        }
        done = k / 4;
    }
    let zero = [0i8; PACK_NR];
    let mut partial = [[0i8; PACK_NR]; 4];
    for (kb, dst) in panel[..panel_len(k)]
        .chunks_exact_mut(4 * PACK_NR)
        .enumerate()
        .skip(done)
    {
        let mut rows: [&[i8; PACK_NR]; 4] = [&zero; 4];
        for (r, (row, part)) in rows.iter_mut().zip(partial.iter_mut()).enumerate() {
            let Some(&off) = offsets.get(4 * kb + r) else {
                continue;
            };
            let at = off + q0;
            match src.get(at..at + PACK_NR) {
                Some(s) => *row = s.try_into().expect("16 bytes"),
                None => {
                    let avail = src.len().saturating_sub(at).min(PACK_NR);
                    *part = [0; PACK_NR];
                    part[..avail].copy_from_slice(&src[at..at + avail]);
                    *row = part;
                }
            }
        }
        interleave4(rows, dst);
    }
}

/// `dst[4 * j + r] = rows[r][j]` (the `st4` store of NEON).
#[inline(always)]
fn interleave4(rows: [&[i8; PACK_NR]; 4], dst: &mut [i8]) {
    let dst = &mut dst[..4 * PACK_NR];
    #[cfg(target_arch = "aarch64")]
    {
        use core::arch::aarch64::*;
        // SAFETY: NEON is baseline on aarch64; four 16-byte rows are read and
        // 64 bytes written, all inside the references and `dst`.
        unsafe {
            let v = int8x16x4_t(
                vld1q_s8(rows[0].as_ptr()),
                vld1q_s8(rows[1].as_ptr()),
                vld1q_s8(rows[2].as_ptr()),
                vld1q_s8(rows[3].as_ptr()),
            );
            vst4q_s8(dst.as_mut_ptr(), v);
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is baseline on x86_64; four 16-byte rows are read and
    // 64 bytes written, all inside the references and `dst`.
    unsafe {
        use core::arch::x86_64::*;
        let r = rows.map(|row| _mm_loadu_si128(row.as_ptr() as *const __m128i));
        let a = _mm_unpacklo_epi8(r[0], r[1]);
        let b = _mm_unpackhi_epi8(r[0], r[1]);
        let c = _mm_unpacklo_epi8(r[2], r[3]);
        let d = _mm_unpackhi_epi8(r[2], r[3]);
        let p = dst.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(p, _mm_unpacklo_epi16(a, c));
        _mm_storeu_si128(p.add(1), _mm_unpackhi_epi16(a, c));
        _mm_storeu_si128(p.add(2), _mm_unpacklo_epi16(b, d));
        _mm_storeu_si128(p.add(3), _mm_unpackhi_epi16(b, d));
    }
    #[cfg(target_arch = "arm")]
    if crate::arm::has_neon() {
        // SAFETY: NEON checked (32-bit ARM NEON intrinsics are unstable, so
        // asm, as in `crate::arm`); four 16-byte rows are read and 64 bytes
        // written, all inside the references and `dst`. `vst4.8` of the
        // double-spaced d registers stores pixels 0-7, then 8-15, as `st4`.
        // Unaligned `vld1`/`vst4` without an alignment qualifier are
        // architectural on ARMv7 user space.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                "vld1.8 {{d0, d1}}, [{r0}]",
                "vld1.8 {{d2, d3}}, [{r1}]",
                "vld1.8 {{d4, d5}}, [{r2}]",
                "vld1.8 {{d6, d7}}, [{r3}]",
                "vst4.8 {{d0, d2, d4, d6}}, [{d}]!",
                "vst4.8 {{d1, d3, d5, d7}}, [{d}]",
                r0 = in(reg) rows[0].as_ptr(),
                r1 = in(reg) rows[1].as_ptr(),
                r2 = in(reg) rows[2].as_ptr(),
                r3 = in(reg) rows[3].as_ptr(),
                d = inout(reg) dst.as_mut_ptr() => _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                options(nostack, preserves_flags),
            );
        }
        return;
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    for (j, d) in dst.chunks_exact_mut(4).enumerate() {
        for (r, x) in d.iter_mut().enumerate() {
            *x = rows[r][j];
        }
    }
}

/// Output pixels `p0..p0 + t` of an ungrouped int8 conv for the output
/// channels of `packed` (from [`crate::reference::pack_a_4c4`] of the
/// weights, starting at a channel that is a multiple of 4; `pairs` their
/// flags from [`crate::reference::pairable_4c4`], same start), written to
/// `tile[c * tile_rs + j]`. `src` is the input for in-place plans, else the
/// staged input ([`stage_input`]). Each panel of 16 virtual pixels is packed
/// into `scratch` and multiplied by every channel group with the output stage
/// fused; panels that hold discarded columns go through the scratch tile
/// and only their real pixels are copied out. Any split of pixels and
/// channels (at multiples of 4) yields the bytes of
/// [`crate::reference::qs8_conv2d`]. `folded_bias` and `rq` hold one value
/// per channel of the piece; `scratch.len() >= packed_conv_scratch_len(g)`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_packed_tile(
    ks: &KernelSet,
    g: &ConvGeometry,
    plan: &PackPlan,
    q: &QConvParams,
    src: &[i8],
    packed: &[i8],
    pairs: &[bool],
    folded_bias: &[i32],
    rq: &[Requant],
    p0: usize,
    t: usize,
    scratch: &mut [i8],
    tile: &mut [i8],
    tile_rs: usize,
) {
    let (m, kb) = (folded_bias.len(), g.k().div_ceil(4));
    let out = QOut {
        out_zp: q.out_zp,
        act_min: q.act_min,
        act_max: q.act_max,
    };
    let (panel, buf) = scratch.split_at_mut(panel_len(g.k()));
    let run = |n: usize, panel: &[i8], o: &mut [i8], rs: usize| {
        (ks.gemm_4x16c4.run)(m, n, kb, packed, pairs, panel, folded_bias, rq, &out, o, rs)
    };
    tiles(
        g,
        plan,
        src,
        m,
        p0,
        t,
        panel,
        &mut buf[..m * PACK_NR],
        tile,
        tile_rs,
        run,
    );
}

/// Per-thread scratch bytes of [`qs8_conv2d_packed_f32out_tile`]: one panel
/// and one 16-pixel f32 tile of every channel (4-byte aligned inside).
pub fn packed_conv_scratch_len_f32out(g: &ConvGeometry) -> usize {
    panel_len(g.k()) + g.out_c * PACK_NR * 4 + 4
}

/// [`qs8_conv2d_packed_tile`] with f32 output (the output stage of
/// [`crate::reference::qs8_conv2d_f32out`]: `clamp(acc * scale, act_min,
/// act_max)`) through `ks.gemm_4x16c4_f32out`;
/// `scratch.len() >= packed_conv_scratch_len_f32out(g)`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_packed_f32out_tile(
    ks: &KernelSet,
    g: &ConvGeometry,
    plan: &PackPlan,
    (act_min, act_max): (f32, f32),
    src: &[i8],
    packed: &[i8],
    folded_bias: &[i32],
    scale: &[f32],
    p0: usize,
    t: usize,
    scratch: &mut [i8],
    tile: &mut [f32],
    tile_rs: usize,
) {
    let (m, kb) = (folded_bias.len(), g.k().div_ceil(4));
    let (panel, rest) = scratch.split_at_mut(panel_len(g.k()));
    // SAFETY: any bytes are valid f32 bit patterns; `align_to_mut` only
    // returns the aligned middle.
    let (_, buf, _) = unsafe { rest.align_to_mut::<f32>() };
    let run = |n: usize, panel: &[i8], o: &mut [f32], rs: usize| {
        (ks.gemm_4x16c4_f32out.run)(
            m,
            n,
            kb,
            packed,
            panel,
            folded_bias,
            scale,
            act_min,
            act_max,
            o,
            rs,
        )
    };
    tiles(
        g,
        plan,
        src,
        m,
        p0,
        t,
        panel,
        &mut buf[..m * PACK_NR],
        tile,
        tile_rs,
        run,
    );
}

/// The panel walk shared by both output types: pack each panel of 16
/// virtual pixels, run the kernel into `tile` directly when the panel's
/// lanes are consecutive real pixels, else into `buf` (`m` rows of 16) and
/// copy the real pixels' runs out.
#[allow(clippy::too_many_arguments)]
fn tiles<T: Copy>(
    g: &ConvGeometry,
    plan: &PackPlan,
    src: &[i8],
    m: usize,
    p0: usize,
    t: usize,
    panel: &mut [i8],
    buf: &mut [T],
    tile: &mut [T],
    tile_rs: usize,
    run: impl Fn(usize, &[i8], &mut [T], usize),
) {
    let (ow, wv) = (g.out_w, plan.wv);
    let max_off = plan.offsets.iter().copied().max().unwrap_or(0);
    let mut p = p0;
    while p < p0 + t {
        let (oy, ox) = (p / ow, p % ow);
        pack_panel(src, &plan.offsets, max_off, oy * wv + ox, panel);
        // Real pixels of this panel: the rest of row `oy`, then whole rows
        // after `wv - ow` discarded lanes each.
        let first = (ow - ox).min(PACK_NR).min(p0 + t - p);
        if first == PACK_NR || first == p0 + t - p || wv == ow {
            let n = if wv == ow {
                PACK_NR.min(p0 + t - p)
            } else {
                first
            };
            run(n, panel, &mut tile[p - p0..], tile_rs);
            p += n;
            continue;
        }
        run(PACK_NR, panel, buf, PACK_NR);
        // Segments: (lane, len) runs of real pixels, in pixel order.
        let (mut lane, mut len, mut done) = (0, first, 0);
        while lane < PACK_NR && p + done < p0 + t {
            let len_now = len.min(PACK_NR - lane).min(p0 + t - p - done);
            let at = p - p0 + done;
            for c in 0..m {
                copy_short(
                    &mut tile[c * tile_rs + at..c * tile_rs + at + len_now],
                    &buf[c * PACK_NR + lane..c * PACK_NR + lane + len_now],
                );
            }
            done += len_now;
            lane += len_now + (wv - ow);
            len = ow;
        }
        p += done;
    }
}

/// `dst.copy_from_slice(src)` for the few elements of one tile segment
/// without a `memcpy` call (which cost more than the copy: one per channel
/// and segment of every panel with discarded columns).
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "copy_short: lengths differ");
    let bytes = core::mem::size_of_val(src);
    let (d, s) = (dst.as_mut_ptr() as *mut u8, src.as_ptr() as *const u8);
    // SAFETY: both slices hold `bytes` bytes (equal lengths, same T) and
    // do not overlap (`&mut` and `&`); every access below is inside them,
    // unaligned accesses are explicit, and T: Copy has no drop.
    unsafe {
        let mut i = 0;
        while i + 8 <= bytes {
            (d.add(i) as *mut u64).write_unaligned((s.add(i) as *const u64).read_unaligned());
            i += 8;
        }
        if i + 4 <= bytes {
            (d.add(i) as *mut u32).write_unaligned((s.add(i) as *const u32).read_unaligned());
            i += 4;
        }
        if i + 2 <= bytes {
            (d.add(i) as *mut u16).write_unaligned((s.add(i) as *const u16).read_unaligned());
            i += 2;
        }
        if i < bytes {
            *d.add(i) = *s.add(i);
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    /// Every panel of random geometries against the im2col definition:
    /// virtual pixel `q` of a real output pixel holds its receptive field.
    #[test]
    fn panels_match_the_definition() {
        let mut seed = 0x51ed_270bu32;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize % n
        };
        let mut checked = 0;
        for case in 0..300 {
            let (kh, kw) = (1 + rnd(5), 1 + rnd(5));
            let (sh, sw, dh, dw) = (1 + rnd(3), 1 + rnd(3), 1 + rnd(2), 1 + rnd(2));
            let (in_h, in_w, in_c) = (1 + rnd(20), 1 + rnd(40), 1 + rnd(9));
            let (pt, pl, pb, pr) = (rnd(kh + 1), rnd(kw + 1), rnd(kh + 1), rnd(kw + 1));
            let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
            if in_h + pt + pb < eh || in_w + pl + pr < ew {
                continue;
            }
            let mut g = ConvGeometry {
                in_c,
                in_h,
                in_w,
                out_c: 1,
                out_h: (in_h + pt + pb - eh) / sh + 1,
                out_w: (in_w + pl + pr - ew) / sw + 1,
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                dil_h: dh,
                dil_w: dw,
                pad_top: pt,
                pad_left: pl,
                groups: 1,
            };
            if case % 5 == 0 {
                // Pointwise: read in place.
                g = ConvGeometry {
                    kh: 1,
                    kw: 1,
                    stride_h: 1,
                    stride_w: 1,
                    dil_h: 1,
                    dil_w: 1,
                    pad_top: 0,
                    pad_left: 0,
                    out_h: in_h,
                    out_w: in_w,
                    ..g
                };
            }
            let x: Vec<i8> = (0..g.input_len()).map(|_| rnd(256) as u8 as i8).collect();
            let plan = PackPlan::new(&g).unwrap();
            let mut staged = vec![0x33i8; plan.staged_len];
            stage_input(&g, &plan, -7, &x, &mut staged);
            let src: &[i8] = if plan.staged_len == 0 { &x } else { &staged };
            let k = g.k();
            let mut panel = vec![0x55i8; panel_len(k)];
            for p in 0..g.out_h * g.out_w {
                let (oy, ox) = (p / g.out_w, p % g.out_w);
                let q = oy * plan.wv + ox;
                // The panel starting at this pixel: lane 0 is this pixel.
                let max_off = plan.offsets.iter().copied().max().unwrap_or(0);
                pack_panel(src, &plan.offsets, max_off, q, &mut panel);
                for kk in 0..k.div_ceil(4) * 4 {
                    let want = if kk >= k {
                        0
                    } else {
                        let (ic, ky, kx) = (kk / (g.kh * g.kw), kk / g.kw % g.kh, kk % g.kw);
                        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                        let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                        if (0..in_h as isize).contains(&iy) && (0..in_w as isize).contains(&ix) {
                            x[ic * in_h * in_w + iy as usize * in_w + ix as usize]
                        } else {
                            -7
                        }
                    };
                    assert_eq!(
                        panel[kk / 4 * 64 + kk % 4],
                        want,
                        "case {case} {g:?} p {p} k {kk}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }
}
