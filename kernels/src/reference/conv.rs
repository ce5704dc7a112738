//! 2-D convolution, NCHW, batch 1 (callers loop over the batch).

use crate::requant::{clamp_i8, requantize, Requant};

/// Geometry shared by the int8 and f32 convolutions.
///
/// Weights are `[out_c][in_c / groups][kh][kw]`. Padding is explicit per side;
/// out-of-image taps contribute the real value zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvGeometry {
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub groups: usize,
}

impl ConvGeometry {
    /// True when the geometry is self-consistent (what `prepare` checks).
    pub fn is_valid(&self) -> bool {
        let g = self.groups;
        g > 0
            && self.in_c.is_multiple_of(g)
            && self.out_c.is_multiple_of(g)
            && self.kh > 0
            && self.kw > 0
            && self.stride_h > 0
            && self.stride_w > 0
            && self.dil_h > 0
            && self.dil_w > 0
            && self.in_c > 0
            && self.out_c > 0
    }
    pub fn input_len(&self) -> usize {
        self.in_c * self.in_h * self.in_w
    }
    pub fn output_len(&self) -> usize {
        self.out_c * self.out_h * self.out_w
    }
    pub fn weight_len(&self) -> usize {
        self.out_c * (self.in_c / self.groups) * self.kh * self.kw
    }
    /// Reduction length of one output value.
    pub fn k(&self) -> usize {
        (self.in_c / self.groups) * self.kh * self.kw
    }
    pub fn macs(&self) -> usize {
        self.output_len() * self.k()
    }
    /// [`Self::input_len`], or `None` if it overflows `usize` (for
    /// validating untrusted geometries: the unchecked forms wrap in release).
    pub fn checked_input_len(&self) -> Option<usize> {
        self.in_c.checked_mul(self.in_h)?.checked_mul(self.in_w)
    }
    /// [`Self::output_len`], or `None` if it overflows `usize`.
    pub fn checked_output_len(&self) -> Option<usize> {
        self.out_c.checked_mul(self.out_h)?.checked_mul(self.out_w)
    }
    /// [`Self::k`], or `None` if it overflows `usize` or `groups` is 0.
    pub fn checked_k(&self) -> Option<usize> {
        self.in_c
            .checked_div(self.groups)?
            .checked_mul(self.kh)?
            .checked_mul(self.kw)
    }
    /// [`Self::weight_len`], or `None` if it overflows `usize` or `groups` is 0.
    pub fn checked_weight_len(&self) -> Option<usize> {
        self.out_c.checked_mul(self.checked_k()?)
    }
}

/// Quantization of an int8 convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QConvParams {
    pub in_zp: i32,
    pub out_zp: i32,
    /// Fused activation bounds (ReLU, ReLU6, ...) in the output's int8 domain.
    pub act_min: i8,
    pub act_max: i8,
}

/// int8 convolution:
/// `out[o] = clamp(out_zp + requantize(bias[o] + sum w * (x - in_zp), rq[o]))`.
///
/// Overflow bound: `|w| <= 127` and `|x - in_zp| <= 255` so every product is at
/// most 32385 in magnitude; with `|bias| <= 2^30` the accumulator cannot
/// overflow while `k() <= 33_000` (the compiler rejects larger reductions).
///
/// Contract: `g.is_valid()`, `input.len() == g.input_len()`,
/// `weights.len() == g.weight_len()`, `bias.len() == rq.len() == g.out_c`,
/// `output.len() == g.output_len()`.
pub fn qs8_conv2d(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    for oc in 0..g.out_c {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let acc = conv_acc(g, q.in_zp, input, weights, bias[oc], oc, oy, ox);
                let v = requantize(acc, rq[oc]) + q.out_zp;
                output[(oc * g.out_h + oy) * g.out_w + ox] = clamp_i8(v, q.act_min, q.act_max);
            }
        }
    }
}

/// Depthwise int8 convolution: [`qs8_conv2d`] (the specification) under the
/// depthwise kernels' name. Fast paths may assume `g.groups == g.in_c ==
/// g.out_c`; this one computes any geometry [`qs8_conv2d`] accepts.
#[inline]
pub fn qs8_dwconv2d(
    g: &ConvGeometry,
    q: &QConvParams,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    rq: &[Requant],
    output: &mut [i8],
) {
    qs8_conv2d(g, q, input, weights, bias, rq, output)
}

/// int8 convolution with real-valued output (for layers feeding f32 ops):
/// `out[o] = clamp(acc * scale[o], act_min, act_max)` where `acc` is the same
/// int32 accumulator as [`qs8_conv2d`] and `scale[o] = s_in * s_w[o]`.
#[allow(clippy::too_many_arguments)]
pub fn qs8_conv2d_f32out(
    g: &ConvGeometry,
    in_zp: i32,
    act_min: f32,
    act_max: f32,
    input: &[i8],
    weights: &[i8],
    bias: &[i32],
    scale: &[f32],
    output: &mut [f32],
) {
    for oc in 0..g.out_c {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let acc = conv_acc(g, in_zp, input, weights, bias[oc], oc, oy, ox);
                output[(oc * g.out_h + oy) * g.out_w + ox] =
                    (acc as f32 * scale[oc]).clamp(act_min, act_max);
            }
        }
    }
}

/// The int32 accumulator of output `(oc, oy, ox)`: `bias + sum w * (x - in_zp)`
/// over in-image taps.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn conv_acc(
    g: &ConvGeometry,
    in_zp: i32,
    input: &[i8],
    weights: &[i8],
    bias: i32,
    oc: usize,
    oy: usize,
    ox: usize,
) -> i32 {
    let cin_g = g.in_c / g.groups;
    let cout_g = g.out_c / g.groups;
    let plane = g.in_h * g.in_w;
    let grp = oc / cout_g;
    let wbase = oc * cin_g * g.kh * g.kw;
    let mut acc = bias;
    for icg in 0..cin_g {
        let ic = grp * cin_g + icg;
        for ky in 0..g.kh {
            let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
            if iy < 0 || iy >= g.in_h as isize {
                continue;
            }
            for kx in 0..g.kw {
                let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                if ix < 0 || ix >= g.in_w as isize {
                    continue;
                }
                let x = input[ic * plane + iy as usize * g.in_w + ix as usize] as i32;
                let w = weights[wbase + (icg * g.kh + ky) * g.kw + kx] as i32;
                acc += w * (x - in_zp);
            }
        }
    }
    acc
}

/// Largest column buffer (in f32 elements) [`f32_conv2d_im2col`] is used with:
/// 256 KiB, so small convs (few output positions, long reductions, as in the
/// Silero VAD's STFT and encoder) take it and large ones keep the direct loop.
pub const F32_IM2COL_MAX: usize = 1 << 16;

/// Column buffer length [`f32_conv2d_im2col`] needs for `g`, or `None` when the
/// direct [`f32_conv2d`] should be used (grouped convs, or a buffer above
/// [`F32_IM2COL_MAX`]).
pub fn f32_im2col_len(g: &ConvGeometry) -> Option<usize> {
    let len = (g.out_h * g.out_w).checked_mul(g.k())?;
    (g.groups == 1 && len <= F32_IM2COL_MAX).then_some(len)
}

/// The same convolution as [`f32_conv2d`] (ungrouped), computed as one
/// contiguous dot product of length `k` per output value over an im2col
/// buffer `col` of [`f32_im2col_len`] elements (padding reads as zero). The
/// result equals `f32_conv2d`'s up to the order of the f32 additions.
#[allow(clippy::too_many_arguments)]
pub fn f32_conv2d_im2col(
    g: &ConvGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    act_min: f32,
    act_max: f32,
    col: &mut [f32],
    output: &mut [f32],
) {
    let k = g.k();
    let positions = g.out_h * g.out_w;
    let plane = g.in_h * g.in_w;
    let col = &mut col[..positions * k];
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let row = &mut col[(oy * g.out_w + ox) * k..][..k];
            let mut i = 0;
            for ic in 0..g.in_c {
                for ky in 0..g.kh {
                    let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                    for kx in 0..g.kw {
                        let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                        row[i] =
                            if iy < 0 || iy >= g.in_h as isize || ix < 0 || ix >= g.in_w as isize {
                                0.0
                            } else {
                                input[ic * plane + iy as usize * g.in_w + ix as usize]
                            };
                        i += 1;
                    }
                }
            }
        }
    }
    for oc in 0..g.out_c {
        let w = &weights[oc * k..][..k];
        let out = &mut output[oc * positions..][..positions];
        for (o, c) in out.iter_mut().zip(col.chunks_exact(k)) {
            *o = (bias[oc] + super::dot_f32(w, c)).max(act_min).min(act_max);
        }
    }
}

/// f32 convolution with the same geometry; `act` bounds are applied after the
/// bias (use `-inf..inf` for none).
pub fn f32_conv2d(
    g: &ConvGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    act_min: f32,
    act_max: f32,
    output: &mut [f32],
) {
    let cin_g = g.in_c / g.groups;
    let cout_g = g.out_c / g.groups;
    let plane = g.in_h * g.in_w;
    let out_plane = g.out_h * g.out_w;
    for oc in 0..g.out_c {
        let grp = oc / cout_g;
        let out = &mut output[oc * out_plane..(oc + 1) * out_plane];
        out.fill(bias[oc]);
        for icg in 0..cin_g {
            let ic = grp * cin_g + icg;
            let inp = &input[ic * plane..(ic + 1) * plane];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let w = weights[((oc * cin_g + icg) * g.kh + ky) * g.kw + kx];
                    if w == 0.0 {
                        continue;
                    }
                    for oy in 0..g.out_h {
                        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                        if iy < 0 || iy >= g.in_h as isize {
                            continue;
                        }
                        let row = &inp[iy as usize * g.in_w..(iy as usize + 1) * g.in_w];
                        let orow = &mut out[oy * g.out_w..(oy + 1) * g.out_w];
                        // Valid ox range: 0 <= ox*s + kx*d - pl < in_w.
                        let off = kx * g.dil_w;
                        let lo = if g.pad_left > off {
                            (g.pad_left - off).div_ceil(g.stride_w)
                        } else {
                            0
                        };
                        let hi_num = g.in_w + g.pad_left;
                        let hi = if hi_num > off {
                            (hi_num - off).div_ceil(g.stride_w).min(g.out_w)
                        } else {
                            0
                        };
                        // A tap wholly in the padding (a wide dilation or pad)
                        // reads nothing: lo >= hi, and `base` below would pass
                        // the row's end.
                        if lo >= hi {
                            continue;
                        }
                        if g.stride_w == 1 {
                            let base = lo + off - g.pad_left;
                            for (o, x) in orow[lo..hi.max(lo)].iter_mut().zip(&row[base..]) {
                                *o += w * x;
                            }
                        } else {
                            for ox in lo..hi {
                                orow[ox] += w * row[ox * g.stride_w + off - g.pad_left];
                            }
                        }
                    }
                }
            }
        }
        for v in out.iter_mut() {
            *v = v.clamp(act_min, act_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The im2col form agrees with the direct loop (padding, stride,
    /// dilation, 1-D as height 1, activation bounds).
    #[test]
    fn f32_im2col_matches_direct() {
        let geoms = [
            // Silero VAD STFT: 1 -> 258 channels, kernel 256, stride 128.
            (1, 1, 640, 258, 1, 256, 1, 128, 1, 0, 0),
            // Silero VAD encoder: kernel 3, pad 1, stride 2.
            (129, 1, 4, 16, 1, 3, 1, 2, 1, 0, 1),
            (3, 7, 9, 5, 3, 3, 2, 1, 2, 1, 1),
            (4, 5, 5, 6, 1, 1, 1, 1, 1, 0, 0),
        ];
        for (ic, ih, iw, oc, kh, kw, sh, sw, d, pt, pl) in geoms {
            let out =
                |i: usize, k: usize, s: usize, p: usize| (i + 2 * p - (k - 1) * d - 1) / s + 1;
            let g = ConvGeometry {
                in_c: ic,
                in_h: ih,
                in_w: iw,
                out_c: oc,
                out_h: out(ih, kh, sh, pt),
                out_w: out(iw, kw, sw, pl),
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                dil_h: d,
                dil_w: d,
                pad_top: pt,
                pad_left: pl,
                groups: 1,
            };
            assert!(g.is_valid(), "{g:?}");
            let v = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<_>>();
            let (x, w, b) = (v(g.input_len(), 0.37), v(g.weight_len(), 1.1), v(oc, 0.5));
            let (mut a, mut c) = (vec![0f32; g.output_len()], vec![0f32; g.output_len()]);
            f32_conv2d(&g, &x, &w, &b, -0.5, f32::MAX, &mut a);
            let mut col = vec![0f32; f32_im2col_len(&g).unwrap()];
            f32_conv2d_im2col(&g, &x, &w, &b, -0.5, f32::MAX, &mut col, &mut c);
            for (p, q) in a.iter().zip(&c) {
                assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{g:?}: {p} vs {q}");
            }
        }
    }

    /// A tap that falls wholly in the right padding (dilation 6 over a row
    /// of 5, right pad 2) reads nothing. Found by fuzzing: the direct loop
    /// sliced the row past its end and panicked.
    #[test]
    fn f32_tap_wholly_in_padding_reads_nothing() {
        let g = ConvGeometry {
            in_c: 1,
            in_h: 1,
            in_w: 5,
            out_c: 1,
            out_h: 1,
            out_w: 1,
            kh: 1,
            kw: 2,
            stride_h: 1,
            stride_w: 1,
            dil_h: 1,
            dil_w: 6,
            pad_top: 0,
            pad_left: 0,
            groups: 1,
        };
        assert!(g.is_valid(), "{g:?}");
        let x = [2.0, 3.0, 5.0, 7.0, 11.0];
        let mut y = [0f32; 1];
        f32_conv2d(&g, &x, &[0.5, 100.0], &[1.0], f32::MIN, f32::MAX, &mut y);
        assert_eq!(y, [1.0 + 0.5 * 2.0]);
        let mut col = vec![0f32; f32_im2col_len(&g).unwrap()];
        let mut z = [0f32; 1];
        f32_conv2d_im2col(
            &g,
            &x,
            &[0.5, 100.0],
            &[1.0],
            f32::MIN,
            f32::MAX,
            &mut col,
            &mut z,
        );
        assert_eq!(z, y);
    }
}
