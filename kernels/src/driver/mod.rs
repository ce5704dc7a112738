//! Convolution drivers: lower a conv to tiles of the NT gemm of the chosen
//! kernel path (im2row into caller scratch, then `gemm_nt`), so every path's
//! fast gemm serves 1x1, kxk, strided, dilated and padded convolutions alike.

use crate::reference::{sparse_scratch_len, ConvGeometry, QConvParams, QOut, SparseWeights};
use crate::table::KernelSet;

mod packed;
use crate::Requant;
pub use packed::{
    packed_conv_scratch_len, packed_conv_scratch_len_f32out, packs_well,
    qs8_conv2d_packed_f32out_tile, qs8_conv2d_packed_tile, stage_input, PackPlan, PackedConv,
};

/// Output pixels per im2row tile: bounds the scratch to `k * CONV_TILE` bytes.
pub const CONV_TILE: usize = 64;

/// Scratch bytes [`qs8_conv2d_gemm`] needs for `g`: the im2row tile, and
/// for all but pointwise convs an im2col tile of the same size before it is
/// transposed.
pub fn conv_scratch_len(g: &ConvGeometry) -> usize {
    let tile = g.k() * CONV_TILE.min(g.out_h * g.out_w);
    if is_pointwise(g) {
        tile
    } else {
        2 * tile
    }
}

/// 1x1, stride 1, unpadded: the im2row tile is a transpose of the input.
fn is_pointwise(g: &ConvGeometry) -> bool {
    g.kh == 1
        && g.kw == 1
        && g.stride_h == 1
        && g.stride_w == 1
        && g.pad_top == 0
        && g.pad_left == 0
}

/// True when `g` goes through the gemm driver (ungrouped convolutions).
pub fn uses_gemm(g: &ConvGeometry) -> bool {
    g.groups == 1
}

/// True for depthwise geometries (the table's `dwconv2d`).
pub fn is_depthwise(g: &ConvGeometry) -> bool {
    g.groups == g.in_c && g.groups == g.out_c && g.groups > 1
}

/// `bias[o] - in_zp * sum(w[o])`: moves the input zero point out of the inner
/// loop (padding taps hold `in_zp`, so they still contribute zero). `None` if a
/// folded value leaves the range the kernels' overflow bound allows.
#[cfg(feature = "std")]
pub fn fold_bias(weights: &[i8], bias: &[i32], k: usize, in_zp: i32) -> Option<Vec<i32>> {
    bias.iter()
        .enumerate()
        .map(|(o, &b)| {
            let s: i64 = weights[o * k..(o + 1) * k].iter().map(|&w| w as i64).sum();
            let v = b as i64 - in_zp as i64 * s;
            (v.abs() <= (1i64 << 30) + (1i64 << 29)).then_some(v as i32)
        })
        .collect()
}

/// [`fold_bias`] for block-sparse weights: the row sums of the stored blocks
/// are the dense row sums (skipped blocks are zeros), so the folded bias, and
/// therefore the output, is the dense driver's.
#[cfg(feature = "std")]
pub fn fold_bias_sparse(w: &SparseWeights, bias: &[i32], in_zp: i32) -> Option<Vec<i32>> {
    if bias.len() != w.m() {
        return None;
    }
    bias.iter()
        .enumerate()
        .map(|(o, &b)| {
            let v = b as i64 - in_zp as i64 * w.row_sum(o);
            (v.abs() <= (1i64 << 30) + (1i64 << 29)).then_some(v as i32)
        })
        .collect()
}

/// Scratch bytes [`qs8_conv2d_gemm_sparse`] needs for `g`: the im2row tile
/// plus the sparse kernels' packed panel.
pub fn sparse_conv_scratch_len(g: &ConvGeometry) -> usize {
    conv_scratch_len(g) + sparse_scratch_len(CONV_TILE.min(g.out_h * g.out_w), g.k())
}

/// Copies output pixels `p0..p0+t` of `g`'s receptive fields into
/// `scratch[..t * k()]` (`t` rows of `k()` values, in weight order `ic, ky,
/// kx`); padding taps get `pad`. Non-pointwise convs first build the im2col
/// tile (`k()` rows of `t` pixels: for stride 1 each is a few contiguous runs
/// of an input row) in `scratch[t * k()..2 * t * k()]`, then transpose it.
fn im2row(g: &ConvGeometry, input: &[i8], pad: i8, p0: usize, t: usize, scratch: &mut [i8]) {
    let k = g.k();
    let plane = g.in_h * g.in_w;
    if is_pointwise(g) {
        return transpose(&input[p0..], plane, g.in_c, t, scratch, k);
    }
    let (rows, col) = scratch.split_at_mut(t * k);
    let col = &mut col[..t * k];
    let mut idx = 0;
    for ic in 0..g.in_c {
        let chan = &input[ic * plane..(ic + 1) * plane];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let dst = &mut col[idx * t..(idx + 1) * t];
                im2col_row(g, chan, pad, p0, ky, kx, dst);
                idx += 1;
            }
        }
    }
    transpose(col, t, k, t, rows, k);
}

/// Tap `(ky, kx)` of output pixels `p0..p0 + dst.len()` of one channel.
fn im2col_row(
    g: &ConvGeometry,
    chan: &[i8],
    pad: i8,
    p0: usize,
    ky: usize,
    kx: usize,
    dst: &mut [i8],
) {
    let t = dst.len();
    let mut j = 0;
    while j < t {
        let p = p0 + j;
        let (oy, ox0) = (p / g.out_w, p % g.out_w);
        // This output row's part of the tile: columns ox0..ox1.
        let n = (g.out_w - ox0).min(t - j);
        let seg = &mut dst[j..j + n];
        j += n;
        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
        if iy < 0 || iy >= g.in_h as isize {
            seg.fill(pad);
            continue;
        }
        let row = &chan[iy as usize * g.in_w..(iy as usize + 1) * g.in_w];
        // Input column of output column `ox`: ox * s + off (may be negative).
        let (s, off) = (
            g.stride_w as isize,
            (kx * g.dil_w) as isize - g.pad_left as isize,
        );
        // Outputs whose column lies inside the row: lo <= ox < hi.
        let lo = ((-off).max(0) as usize).div_ceil(g.stride_w);
        let hi = if g.in_w as isize - off <= 0 {
            0
        } else {
            ((g.in_w as isize - off) as usize).div_ceil(g.stride_w)
        };
        // Pads, one run of the input row (contiguous at stride 1, every
        // `s`-th byte otherwise), pads.
        let a = lo.clamp(ox0, ox0 + n);
        let b = hi.clamp(a, ox0 + n);
        seg[..a - ox0].fill(pad);
        if b > a {
            let start = (a as isize * s + off) as usize;
            let run = &mut seg[a - ox0..b - ox0];
            if s == 1 {
                run.copy_from_slice(&row[start..start + (b - a)]);
            } else {
                let src = &row[start..start + (b - a - 1) * s as usize + 1];
                for (d, &v) in run.iter_mut().zip(src.iter().step_by(s as usize)) {
                    *d = v;
                }
            }
        }
        seg[b - ox0..].fill(pad);
    }
}

/// `dst[j * ds + i] = src[i * ss + j]` for `i < rows`, `j < cols`.
fn transpose(src: &[i8], ss: usize, rows: usize, cols: usize, dst: &mut [i8], ds: usize) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let (i0, j0) = transpose_blocks(src, ss, rows, cols, dst, ds);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let (i0, j0) = (0, 0);
    // The edges the 16x16 blocks do not cover (everything on 32-bit ARM,
    // whose NEON intrinsics are not stable).
    for i in 0..rows {
        let first = if i < i0 { j0 } else { 0 };
        for (j, &v) in src[i * ss..i * ss + cols].iter().enumerate().skip(first) {
            dst[j * ds + i] = v;
        }
    }
}

/// The whole 16x16 blocks of [`transpose`]; returns how many rows and
/// columns they covered.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn transpose_blocks(
    src: &[i8],
    ss: usize,
    rows: usize,
    cols: usize,
    dst: &mut [i8],
    ds: usize,
) -> (usize, usize) {
    let (i0, j0) = (rows / 16 * 16, cols / 16 * 16);
    if i0 == 0 || j0 == 0 {
        return (0, 0);
    }
    assert!(
        cols <= ss
            && rows <= ds
            && src.len() >= (rows - 1) * ss + cols
            && dst.len() >= (cols - 1) * ds + rows,
        "transpose: buffers do not match the shape"
    );
    for i in (0..i0).step_by(16) {
        for j in (0..j0).step_by(16) {
            // SAFETY: SSE2 is part of x86_64 and NEON of aarch64; 16 rows of
            // 16 bytes at (i, j) in `src` and at (j, i) in `dst`, in bounds by
            // the assertion above.
            unsafe {
                transpose16(
                    src.as_ptr().add(i * ss + j),
                    ss,
                    dst.as_mut_ptr().add(j * ds + i),
                    ds,
                )
            };
        }
    }
    (i0, j0)
}

/// Transposes a 16x16 byte block: row `i` of `dst` (stride `ds`) gets column
/// `i` of `src` (stride `ss`). Four rounds of byte interleaving of registers
/// `i` and `i + 8`: each round rotates the 8-bit (register, byte) address of
/// every element left by one, so four rounds swap register and byte.
///
/// Safety: 16 readable rows of 16 bytes at `src`, 16 writable at `dst`.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn transpose16(src: *const i8, ss: usize, dst: *mut i8, ds: usize) {
    use core::arch::x86_64::*;
    let mut a = [_mm_setzero_si128(); 16];
    for (i, r) in a.iter_mut().enumerate() {
        *r = _mm_loadu_si128(src.add(i * ss) as *const __m128i);
    }
    for _ in 0..4 {
        let mut n = [_mm_setzero_si128(); 16];
        for i in 0..8 {
            n[2 * i] = _mm_unpacklo_epi8(a[i], a[i + 8]);
            n[2 * i + 1] = _mm_unpackhi_epi8(a[i], a[i + 8]);
        }
        a = n;
    }
    for (i, r) in a.iter().enumerate() {
        _mm_storeu_si128(dst.add(i * ds) as *mut __m128i, *r);
    }
}

/// [`transpose16`] for aarch64: `zip1`/`zip2` are SSE2's byte unpacks.
///
/// Safety: 16 readable rows of 16 bytes at `src`, 16 writable at `dst`.
#[cfg(target_arch = "aarch64")]
#[inline]
pub(crate) unsafe fn transpose16(src: *const i8, ss: usize, dst: *mut i8, ds: usize) {
    use core::arch::aarch64::*;
    let mut a = [vdupq_n_s8(0); 16];
    for (i, r) in a.iter_mut().enumerate() {
        *r = vld1q_s8(src.add(i * ss));
    }
    for _ in 0..4 {
        let mut n = [vdupq_n_s8(0); 16];
        for i in 0..8 {
            n[2 * i] = vzip1q_s8(a[i], a[i + 8]);
            n[2 * i + 1] = vzip2q_s8(a[i], a[i + 8]);
        }
        a = n;
    }
    for (i, r) in a.iter().enumerate() {
        vst1q_s8(dst.add(i * ds), *r);
    }
}

/// Ungrouped int8 convolution through `ks.gemm_nt`; bit-identical to
/// [`crate::reference::qs8_conv2d`]. `folded_bias` comes from [`fold_bias`];
/// `scratch.len() >= conv_scratch_len(g)`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_gemm(
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    folded_bias: &[i32],
    rq: &[Requant],
    scratch: &mut [i8],
    output: &mut [i8],
) {
    let p = g.out_h * g.out_w;
    let mut p0 = 0;
    while p0 < p {
        let t = CONV_TILE.min(p - p0);
        qs8_conv2d_gemm_tile(
            ks,
            g,
            q,
            input,
            weights,
            folded_bias,
            rq,
            p0,
            t,
            scratch,
            &mut output[p0..],
            p,
        );
        p0 += t;
    }
}

/// Ungrouped int8 convolution with block-sparse weights (`w.m() == g.out_c`,
/// `w.k() == g.k()`): im2row tiles as [`qs8_conv2d_gemm`], then
/// `ks.gemm_nt_sparse`. Bit-identical to [`crate::reference::qs8_conv2d`] on
/// the dense weights. `folded_bias` comes from [`fold_bias_sparse`];
/// `scratch.len() >= sparse_conv_scratch_len(g)`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_gemm_sparse(
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    w: &SparseWeights,
    folded_bias: &[i32],
    rq: &[Requant],
    scratch: &mut [i8],
    output: &mut [i8],
) {
    assert!(
        w.m() == g.out_c && w.k() == g.k(),
        "qs8_conv2d_gemm_sparse: weights are {}x{}, geometry wants {}x{}",
        w.m(),
        w.k(),
        g.out_c,
        g.k()
    );
    let p = g.out_h * g.out_w;
    let mut p0 = 0;
    while p0 < p {
        let t = CONV_TILE.min(p - p0);
        qs8_conv2d_gemm_sparse_tile(
            ks,
            g,
            q,
            input,
            w,
            folded_bias,
            rq,
            p0,
            t,
            scratch,
            &mut output[p0..],
            p,
        );
        p0 += t;
    }
}

/// Output pixels `p0..p0 + t` of [`qs8_conv2d_gemm_sparse`] for the output
/// channels of `w` (all of them, or a [`SparseWeights::rows`] range), written
/// to `tile[c * tile_rs + j]`: like [`qs8_conv2d_gemm_tile`], any split of
/// pixels and channels yields the same bytes as the whole call. `w.k()` is
/// `g.k()`; `folded_bias` and `rq` are the slices for `w`'s channels;
/// `scratch.len() >= sparse_conv_scratch_len(g)` and `t <= CONV_TILE`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_gemm_sparse_tile(
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    w: &SparseWeights,
    folded_bias: &[i32],
    rq: &[Requant],
    p0: usize,
    t: usize,
    scratch: &mut [i8],
    tile: &mut [i8],
    tile_rs: usize,
) {
    let k = g.k();
    assert!(
        w.k() == k && t <= CONV_TILE,
        "qs8_conv2d_gemm_sparse_tile: k {} (want {k}) or tile {t} > {CONV_TILE}",
        w.k()
    );
    let out = QOut {
        out_zp: q.out_zp,
        act_min: q.act_min,
        act_max: q.act_max,
    };
    let (rows, pack) = scratch.split_at_mut(conv_scratch_len(g));
    im2row(g, input, q.in_zp as i8, p0, t, rows);
    (ks.gemm_nt_sparse.run)(
        t,
        w,
        &rows[..t * k],
        folded_bias,
        rq,
        &out,
        tile,
        tile_rs,
        1,
        pack,
    );
}

/// [`qs8_conv2d_gemm`] with f32 output (see [`crate::reference::qs8_conv2d_f32out`]).
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_gemm_f32out(
    ks: &KernelSet,
    g: &ConvGeometry,
    in_zp: i32,
    act_min: f32,
    act_max: f32,
    input: &[i8],
    weights: &[i8],
    folded_bias: &[i32],
    scale: &[f32],
    scratch: &mut [i8],
    output: &mut [f32],
) {
    let p = g.out_h * g.out_w;
    let mut p0 = 0;
    while p0 < p {
        let t = CONV_TILE.min(p - p0);
        qs8_conv2d_gemm_f32out_tile(
            ks,
            g,
            in_zp,
            act_min,
            act_max,
            input,
            weights,
            folded_bias,
            scale,
            p0,
            t,
            scratch,
            &mut output[p0..],
            p,
        );
        p0 += t;
    }
}

/// Output pixels `p0..p0 + t` of [`qs8_conv2d_gemm`] for output channels
/// `c0..c0 + weights.len() / k()`, written to `tile[c * t + j]` (channel-major,
/// row stride `t`). The pieces of a multi-threaded conv: any split of pixels
/// and channels yields the same bytes as the whole call. `bias` and `rq` are
/// the slices for those channels; `scratch.len() >= t * k()`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_gemm_tile(
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    folded_bias: &[i32],
    rq: &[Requant],
    p0: usize,
    t: usize,
    scratch: &mut [i8],
    tile: &mut [i8],
    tile_rs: usize,
) {
    let k = g.k();
    let out = QOut {
        out_zp: q.out_zp,
        act_min: q.act_min,
        act_max: q.act_max,
    };
    im2row(g, input, q.in_zp as i8, p0, t, scratch);
    (ks.gemm_nt.run)(
        folded_bias.len(),
        t,
        k,
        weights,
        &scratch[..t * k],
        folded_bias,
        rq,
        &out,
        tile,
        tile_rs,
        1,
    );
}

/// [`qs8_conv2d_gemm_tile`] with f32 output.
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_gemm_f32out_tile(
    ks: &KernelSet,
    g: &ConvGeometry,
    in_zp: i32,
    act_min: f32,
    act_max: f32,
    input: &[i8],
    weights: &[i8],
    folded_bias: &[i32],
    scale: &[f32],
    p0: usize,
    t: usize,
    scratch: &mut [i8],
    tile: &mut [f32],
    tile_rs: usize,
) {
    let k = g.k();
    im2row(g, input, in_zp as i8, p0, t, scratch);
    (ks.gemm_nt_f32out.run)(
        folded_bias.len(),
        t,
        k,
        weights,
        &scratch[..t * k],
        folded_bias,
        scale,
        act_min,
        act_max,
        tile,
        tile_rs,
        1,
    );
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::table::{kernels_for, SCALAR};
    use crate::Isa;

    /// `im2row` (runs, pads, strides, transposes) against the definition, on
    /// random geometries and every tile of each.
    #[test]
    fn im2row_matches_definition() {
        let mut seed = 0x9e37_79b9u32;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize % n
        };
        for case in 0..400 {
            let (kh, kw) = (1 + rnd(5), 1 + rnd(5));
            let (sh, sw, dh, dw) = (1 + rnd(3), 1 + rnd(3), 1 + rnd(2), 1 + rnd(2));
            let (in_h, in_w, in_c) = (1 + rnd(20), 1 + rnd(40), 1 + rnd(40));
            let (pt, pl, pb, pr) = (rnd(kh + 1), rnd(kw + 1), rnd(kh + 1), rnd(kw + 1));
            let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
            if in_h + pt + pb < eh || in_w + pl + pr < ew {
                continue;
            }
            let g = ConvGeometry {
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
            let x: Vec<i8> = (0..g.input_len()).map(|_| rnd(256) as u8 as i8).collect();
            let (k, p) = (g.k(), g.out_h * g.out_w);
            let mut scratch = vec![0x55i8; conv_scratch_len(&g)];
            let mut p0 = 0;
            while p0 < p {
                let t = CONV_TILE.min(p - p0);
                im2row(&g, &x, -7, p0, t, &mut scratch);
                for j in 0..t {
                    let (oy, ox) = ((p0 + j) / g.out_w, (p0 + j) % g.out_w);
                    let mut idx = 0;
                    for ic in 0..in_c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky * dh) as isize - pt as isize;
                                let ix = (ox * sw + kx * dw) as isize - pl as isize;
                                let inside = (0..in_h as isize).contains(&iy)
                                    && (0..in_w as isize).contains(&ix);
                                let want = if inside {
                                    x[ic * in_h * in_w + iy as usize * in_w + ix as usize]
                                } else {
                                    -7
                                };
                                assert_eq!(
                                    scratch[j * k + idx],
                                    want,
                                    "case {case} {g:?} p {} idx {idx}",
                                    p0 + j
                                );
                                idx += 1;
                            }
                        }
                    }
                }
                p0 += t;
            }
        }
    }

    #[test]
    fn gemm_driver_matches_reference_conv() {
        let mut seed = 0x1234_5678u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for &(ic, oc, ih, iw, kh, s, d, pad) in &[
            (3, 8, 9, 11, 3, 2, 1, 1),
            (16, 5, 7, 7, 1, 1, 1, 0),
            (35, 9, 11, 13, 1, 1, 1, 0),
            (48, 16, 9, 9, 1, 1, 1, 0),
            (4, 6, 13, 5, 3, 1, 2, 2),
            (1, 1, 1, 1, 1, 1, 1, 0),
            (8, 17, 12, 12, 5, 2, 1, 2),
        ] {
            let eff = (kh - 1) * d + 1;
            let g = ConvGeometry {
                in_c: ic,
                in_h: ih,
                in_w: iw,
                out_c: oc,
                out_h: (ih + 2 * pad - eff) / s + 1,
                out_w: (iw + 2 * pad - eff) / s + 1,
                kh,
                kw: kh,
                stride_h: s,
                stride_w: s,
                dil_h: d,
                dil_w: d,
                pad_top: pad,
                pad_left: pad,
                groups: 1,
            };
            for in_zp in [-128, 0, 127] {
                let x: Vec<i8> = (0..g.input_len()).map(|_| rnd() as i8).collect();
                let w: Vec<i8> = (0..g.weight_len()).map(|_| (rnd() % 255) as i8).collect();
                let b: Vec<i32> = (0..oc).map(|_| (rnd() % 20000) as i32 - 10000).collect();
                let rq: Vec<Requant> = (0..oc)
                    .map(|i| crate::quantize_multiplier(0.0005 * (i + 1) as f64))
                    .collect();
                let q = QConvParams {
                    in_zp,
                    out_zp: 3,
                    act_min: -100,
                    act_max: 120,
                };
                let mut want = vec![0i8; g.output_len()];
                crate::reference::qs8_conv2d(&g, &q, &x, &w, &b, &rq, &mut want);
                let fb = fold_bias(&w, &b, g.k(), in_zp).unwrap();
                for isa in Isa::ALL {
                    let ks = if isa == Isa::Scalar {
                        &SCALAR
                    } else {
                        kernels_for(isa)
                    };
                    let mut got = vec![0i8; g.output_len()];
                    let mut scratch = vec![0i8; conv_scratch_len(&g)];
                    qs8_conv2d_gemm(ks, &g, &q, &x, &w, &fb, &rq, &mut scratch, &mut got);
                    assert_eq!(got, want, "{isa:?} {g:?} zp {in_zp}");
                    // The packed path, whole and in pieces (channel cuts at
                    // multiples of 4, odd pixel tiles), into a strided tile.
                    let (k, p) = (g.k(), g.out_h * g.out_w);
                    let pc = PackedConv::new(&g, &w).unwrap();
                    let mut staged = vec![0x22i8; pc.plan.staged_len];
                    stage_input(&g, &pc.plan, in_zp as i8, &x, &mut staged);
                    let src: &[i8] = if pc.plan.staged_len == 0 { &x } else { &staged };
                    let pw = &pc.weights;
                    let mut scratch = vec![0x11i8; packed_conv_scratch_len(&g)];
                    let mut got = vec![0i8; g.output_len()];
                    qs8_conv2d_packed_tile(
                        ks,
                        &g,
                        &pc.plan,
                        &q,
                        src,
                        pw,
                        &pc.pairs,
                        &fb,
                        &rq,
                        0,
                        p,
                        &mut scratch,
                        &mut got,
                        p,
                    );
                    assert_eq!(got, want, "packed {isa:?} {g:?} zp {in_zp}");
                    // The f32-output packed conv against its reference.
                    let sc: Vec<f32> = (0..oc).map(|i| 1e-4 * (i % 3) as f32 - 5e-5).collect();
                    let mut want32 = vec![0f32; g.output_len()];
                    crate::reference::qs8_conv2d_f32out(
                        &g,
                        in_zp,
                        -2.0,
                        3.0,
                        &x,
                        &w,
                        &b,
                        &sc,
                        &mut want32,
                    );
                    let mut got32 = vec![0f32; g.output_len()];
                    let mut scratch32 = vec![0i8; packed_conv_scratch_len_f32out(&g)];
                    qs8_conv2d_packed_f32out_tile(
                        ks,
                        &g,
                        &pc.plan,
                        (-2.0, 3.0),
                        src,
                        pw,
                        &fb,
                        &sc,
                        0,
                        p,
                        &mut scratch32[1..],
                        &mut got32,
                        p,
                    );
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got32),
                        bits(&want32),
                        "packed f32out {isa:?} {g:?} zp {in_zp}"
                    );
                    let kb = k.div_ceil(4);
                    let mut pieces = vec![0i8; g.output_len()];
                    let c4 = oc.div_ceil(4) * 4;
                    for (c0, c1) in [(0, 4.min(oc)), (4.min(oc), c4.min(oc))] {
                        let mut p0 = 0;
                        while p0 < p && c0 < c1 {
                            let t = (p - p0).min(3 + oc % 5 * 7);
                            let rs = t + 2;
                            let mut tile = vec![0i8; (c1 - c0) * rs];
                            qs8_conv2d_packed_tile(
                                ks,
                                &g,
                                &pc.plan,
                                &q,
                                src,
                                &pw[c0 / 4 * kb * 16..],
                                &pc.pairs[c0 / 4..],
                                &fb[c0..c1],
                                &rq[c0..c1],
                                p0,
                                t,
                                &mut scratch,
                                &mut tile,
                                rs,
                            );
                            for cc in c0..c1 {
                                pieces[cc * p + p0..cc * p + p0 + t]
                                    .copy_from_slice(&tile[(cc - c0) * rs..(cc - c0) * rs + t]);
                            }
                            p0 += t;
                        }
                    }
                    assert_eq!(pieces, want, "packed pieces {isa:?} {g:?} zp {in_zp}");
                }
                // The same weights with blocks zeroed, through the sparse driver.
                let mut ws = w.clone();
                for (bi, blk) in ws.chunks_mut(crate::reference::SPARSE_BLOCK).enumerate() {
                    if (bi * 7 + oc) % 10 < 8 {
                        blk.fill(0);
                    }
                }
                let mut want = vec![0i8; g.output_len()];
                crate::reference::qs8_conv2d(&g, &q, &x, &ws, &b, &rq, &mut want);
                let sp = crate::reference::pack_sparse(oc, g.k(), &ws).unwrap();
                let fb = fold_bias_sparse(&sp.view(), &b, in_zp).unwrap();
                assert_eq!(fb, fold_bias(&ws, &b, g.k(), in_zp).unwrap());
                for isa in Isa::ALL {
                    let ks = if isa == Isa::Scalar {
                        &SCALAR
                    } else {
                        kernels_for(isa)
                    };
                    let mut got = vec![0i8; g.output_len()];
                    let mut scratch = vec![0i8; sparse_conv_scratch_len(&g)];
                    qs8_conv2d_gemm_sparse(
                        ks,
                        &g,
                        &q,
                        &x,
                        &sp.view(),
                        &fb,
                        &rq,
                        &mut scratch,
                        &mut got,
                    );
                    assert_eq!(got, want, "sparse {isa:?} {g:?} zp {in_zp}");
                    // Pieces, as the runtime's threads cut them: channel
                    // ranges (row views) times pixel tiles, through a tile
                    // buffer of row stride t.
                    let p = g.out_h * g.out_w;
                    let (sv, mut pieces) = (sp.view(), vec![0i8; g.output_len()]);
                    let cuts = [0, oc / 3, oc / 3 + 1, oc];
                    for c in cuts.windows(2) {
                        let (c0, c1) = (c[0], c[1]);
                        let mut p0 = 0;
                        while p0 < p {
                            let t = (p - p0).min(5 + oc % 7);
                            let mut tile = vec![0i8; (c1 - c0) * t];
                            qs8_conv2d_gemm_sparse_tile(
                                ks,
                                &g,
                                &q,
                                &x,
                                &sv.rows(c0, c1),
                                &fb[c0..c1],
                                &rq[c0..c1],
                                p0,
                                t,
                                &mut scratch,
                                &mut tile,
                                t,
                            );
                            for cc in c0..c1 {
                                pieces[cc * p + p0..cc * p + p0 + t]
                                    .copy_from_slice(&tile[(cc - c0) * t..(cc - c0 + 1) * t]);
                            }
                            p0 += t;
                        }
                    }
                    assert_eq!(pieces, want, "sparse pieces {isa:?} {g:?} zp {in_zp}");
                }
            }
        }
    }
}
