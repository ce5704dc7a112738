//! Max and average pooling, NCHW, batch 1.

/// Pooling window geometry; `channels` planes of `in_h x in_w`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PoolGeometry {
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    /// Average pooling divides by the full window (ONNX `count_include_pad=1`)
    /// instead of the number of in-image taps.
    pub count_include_pad: bool,
}

impl PoolGeometry {
    pub fn is_valid(&self) -> bool {
        self.kh > 0 && self.kw > 0 && self.stride_h > 0 && self.stride_w > 0
    }
    pub fn input_len(&self) -> usize {
        self.channels * self.in_h * self.in_w
    }
    pub fn output_len(&self) -> usize {
        self.channels * self.out_h * self.out_w
    }
    /// [`Self::input_len`], or `None` if it overflows `usize` (for
    /// validating untrusted geometries: the unchecked forms wrap in release).
    pub fn checked_input_len(&self) -> Option<usize> {
        self.channels.checked_mul(self.in_h)?.checked_mul(self.in_w)
    }
    /// [`Self::output_len`], or `None` if it overflows `usize`.
    pub fn checked_output_len(&self) -> Option<usize> {
        self.channels
            .checked_mul(self.out_h)?
            .checked_mul(self.out_w)
    }
    /// In-image window rows/cols `[y0, y1) x [x0, x1)` of output (oy, ox) and
    /// the divisor for average pooling.
    #[inline]
    fn window(&self, oy: usize, ox: usize) -> (usize, usize, usize, usize, usize) {
        let y = (oy * self.stride_h) as isize - self.pad_top as isize;
        let x = (ox * self.stride_w) as isize - self.pad_left as isize;
        let y0 = y.max(0) as usize;
        let x0 = x.max(0) as usize;
        let y1 = ((y + self.kh as isize).max(0) as usize).min(self.in_h);
        let x1 = ((x + self.kw as isize).max(0) as usize).min(self.in_w);
        let count = if self.count_include_pad {
            // ONNX counts padded taps but not taps beyond the padding.
            let ye = ((y + self.kh as isize) as usize).min(self.in_h + self.pad_top);
            let xe = ((x + self.kw as isize) as usize).min(self.in_w + self.pad_left);
            (ye as isize - y).max(1) as usize * (xe as isize - x).max(1) as usize
        } else {
            (y1.saturating_sub(y0) * x1.saturating_sub(x0)).max(1)
        };
        (y0, y1, x0, x1, count)
    }
}

/// int8 max pooling; input and output share quantization. A window with no
/// in-image tap yields -128.
pub fn qs8_maxpool2d(g: &PoolGeometry, input: &[i8], output: &mut [i8]) {
    pool(g, input, output, i8::MIN, |a, b| a.max(b), |m, _| m);
}

/// Most taps a [`qs8_avgpool2d`] window may have: its sums of
/// `|x - zp| <= 255` stay exact in `i32` (and in the f32 division) up to 2^23.
pub const QS8_AVGPOOL_MAX_TAPS: usize = 1 << 23;

/// int8 average pooling with input and output sharing quantization:
/// `out = zp + round_half_away(sum(x - zp) / count)`.
///
/// Overflow bound: `|x - zp| <= 255`, so windows up to
/// [`QS8_AVGPOOL_MAX_TAPS`] (2^23) taps are exact.
pub fn qs8_avgpool2d(g: &PoolGeometry, zp: i32, input: &[i8], output: &mut [i8]) {
    let plane = g.in_h * g.in_w;
    for c in 0..g.channels {
        let inp = &input[c * plane..(c + 1) * plane];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let (y0, y1, x0, x1, count) = g.window(oy, ox);
                let mut sum: i32 = 0;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        sum += inp[yy * g.in_w + xx] as i32 - zp;
                    }
                }
                let n = count as i32;
                let q = if sum >= 0 {
                    (sum + n / 2) / n
                } else {
                    (sum - n / 2) / n
                };
                output[(c * g.out_h + oy) * g.out_w + ox] = (q + zp).clamp(-128, 127) as i8;
            }
        }
    }
}

/// f32 max (`max = true`) or average pooling.
pub fn f32_pool2d(g: &PoolGeometry, max: bool, input: &[f32], output: &mut [f32]) {
    if max {
        pool(g, input, output, f32::NEG_INFINITY, f32::max, |m, _| m);
    } else {
        pool(g, input, output, 0.0, |a, b| a + b, |s, n| s / n as f32);
    }
}

fn pool<T: Copy>(
    g: &PoolGeometry,
    input: &[T],
    output: &mut [T],
    init: T,
    reduce: impl Fn(T, T) -> T,
    finish: impl Fn(T, usize) -> T,
) {
    let plane = g.in_h * g.in_w;
    for c in 0..g.channels {
        let inp = &input[c * plane..(c + 1) * plane];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let (y0, y1, x0, x1, count) = g.window(oy, ox);
                let mut acc = init;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        acc = reduce(acc, inp[yy * g.in_w + xx]);
                    }
                }
                output[(c * g.out_h + oy) * g.out_w + ox] = finish(acc, count);
            }
        }
    }
}
