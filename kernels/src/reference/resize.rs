//! Resize of the two innermost axes (ONNX `Resize` / `Upsample` on NCHW).

/// How output coordinates map to input coordinates (ONNX
/// `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CoordMode {
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
}

/// Interpolation (ONNX `mode`, and `nearest_mode` for nearest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ResizeKind {
    NearestRoundPreferFloor,
    NearestRoundPreferCeil,
    NearestFloor,
    NearestCeil,
    Linear,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ResizeGeometry {
    /// Product of the outer axes (N * C).
    pub planes: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kind: ResizeKind,
    pub coord: CoordMode,
}

/// Fixed-point precision of int8 bilinear weights (per axis).
pub const RESIZE_WEIGHT_BITS: u32 = 11;

impl ResizeGeometry {
    fn src(&self, o: usize, in_len: usize, out_len: usize) -> f32 {
        let scale = out_len as f32 / in_len as f32;
        let o = o as f32;
        match self.coord {
            CoordMode::HalfPixel => (o + 0.5) / scale - 0.5,
            CoordMode::PytorchHalfPixel => {
                if out_len > 1 {
                    (o + 0.5) / scale - 0.5
                } else {
                    0.0
                }
            }
            CoordMode::AlignCorners => {
                if out_len > 1 {
                    o * (in_len as f32 - 1.0) / (out_len as f32 - 1.0)
                } else {
                    0.0
                }
            }
            CoordMode::Asymmetric => o / scale,
        }
    }

    fn nearest(&self, o: usize, in_len: usize, out_len: usize) -> usize {
        let x = self.src(o, in_len, out_len);
        let i = match self.kind {
            ResizeKind::NearestRoundPreferFloor => {
                if x - libm::floorf(x) == 0.5 {
                    libm::floorf(x)
                } else {
                    libm::roundf(x)
                }
            }
            ResizeKind::NearestRoundPreferCeil => libm::roundf(x),
            ResizeKind::NearestFloor => libm::floorf(x),
            ResizeKind::NearestCeil => libm::ceilf(x),
            ResizeKind::Linear => libm::floorf(x),
        };
        (i.max(0.0) as usize).min(in_len - 1)
    }

    /// Two taps and the weight of the second in Q`RESIZE_WEIGHT_BITS`.
    fn linear(&self, o: usize, in_len: usize, out_len: usize) -> (usize, usize, i32, f32) {
        let x = self.src(o, in_len, out_len).max(0.0);
        let i0 = (libm::floorf(x) as usize).min(in_len - 1);
        let i1 = (i0 + 1).min(in_len - 1);
        let frac = if i0 == in_len - 1 { 0.0 } else { x - i0 as f32 };
        let q = libm::roundf(frac * (1 << RESIZE_WEIGHT_BITS) as f32) as i32;
        (i0, i1, q, frac)
    }

    pub fn input_len(&self) -> usize {
        self.planes * self.in_h * self.in_w
    }
    pub fn output_len(&self) -> usize {
        self.planes * self.out_h * self.out_w
    }
    /// [`Self::input_len`], or `None` if it overflows `usize` (for
    /// validating untrusted geometries: the unchecked forms wrap in release).
    pub fn checked_input_len(&self) -> Option<usize> {
        self.planes.checked_mul(self.in_h)?.checked_mul(self.in_w)
    }
    /// [`Self::output_len`], or `None` if it overflows `usize`.
    pub fn checked_output_len(&self) -> Option<usize> {
        self.planes.checked_mul(self.out_h)?.checked_mul(self.out_w)
    }
}

/// int8 resize with input and output sharing quantization. Bilinear uses
/// Q11 weights per axis and rounds half up:
/// `out = (sum w_y w_x x + 2^21) >> 22` (products < 2^30: no overflow).
pub fn qs8_resize(g: &ResizeGeometry, input: &[i8], output: &mut [i8]) {
    if g.kind != ResizeKind::Linear {
        return resize_nearest(g, input, output);
    }
    let one = 1i32 << RESIZE_WEIGHT_BITS;
    for p in 0..g.planes {
        let inp = &input[p * g.in_h * g.in_w..(p + 1) * g.in_h * g.in_w];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let v = if g.kind == ResizeKind::Linear {
                    let (y0, y1, wy, _) = g.linear(oy, g.in_h, g.out_h);
                    let (x0, x1, wx, _) = g.linear(ox, g.in_w, g.out_w);
                    let at = |y: usize, x: usize| inp[y * g.in_w + x] as i32;
                    let top = at(y0, x0) * (one - wx) + at(y0, x1) * wx;
                    let bot = at(y1, x0) * (one - wx) + at(y1, x1) * wx;
                    let s = top * (one - wy) + bot * wy;
                    ((s + (1 << (2 * RESIZE_WEIGHT_BITS - 1))) >> (2 * RESIZE_WEIGHT_BITS)) as i8
                } else {
                    let y = g.nearest(oy, g.in_h, g.out_h);
                    let x = g.nearest(ox, g.in_w, g.out_w);
                    inp[y * g.in_w + x]
                };
                output[(p * g.out_h + oy) * g.out_w + ox] = v;
            }
        }
    }
}

/// Nearest-neighbour resize: each output row gathers one input row at the
/// columns [`ResizeGeometry::nearest`] picks. The column map is computed once
/// per chunk of columns (not per element) on the stack.
fn resize_nearest<T: Copy>(g: &ResizeGeometry, input: &[T], output: &mut [T]) {
    const CHUNK: usize = 256;
    let mut xs = [0u32; CHUNK];
    let (ip, op) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let mut x0 = 0;
    while x0 < g.out_w {
        let n = CHUNK.min(g.out_w - x0);
        for (i, x) in xs[..n].iter_mut().enumerate() {
            *x = g.nearest(x0 + i, g.in_w, g.out_w) as u32;
        }
        for oy in 0..g.out_h {
            let y = g.nearest(oy, g.in_h, g.out_h);
            for p in 0..g.planes {
                let src = &input[p * ip + y * g.in_w..p * ip + (y + 1) * g.in_w];
                let dst = &mut output[p * op + oy * g.out_w + x0..][..n];
                for (d, &x) in dst.iter_mut().zip(&xs[..n]) {
                    *d = src[x as usize];
                }
            }
        }
        x0 += n;
    }
}

/// f32 resize.
pub fn f32_resize(g: &ResizeGeometry, input: &[f32], output: &mut [f32]) {
    if g.kind != ResizeKind::Linear {
        return resize_nearest(g, input, output);
    }
    for p in 0..g.planes {
        let inp = &input[p * g.in_h * g.in_w..(p + 1) * g.in_h * g.in_w];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let v = if g.kind == ResizeKind::Linear {
                    let (y0, y1, _, fy) = g.linear(oy, g.in_h, g.out_h);
                    let (x0, x1, _, fx) = g.linear(ox, g.in_w, g.out_w);
                    let at = |y: usize, x: usize| inp[y * g.in_w + x];
                    let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                    let bot = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                    top * (1.0 - fy) + bot * fy
                } else {
                    inp[g.nearest(oy, g.in_h, g.out_h) * g.in_w + g.nearest(ox, g.in_w, g.out_w)]
                };
                output[(p * g.out_h + oy) * g.out_w + ox] = v;
            }
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    /// The row-gather nearest path against the per-element definition, for
    /// every nearest mode and coordinate mode, up- and down-scaling, and
    /// widths past one column chunk.
    #[test]
    fn nearest_matches_definition() {
        let kinds = [
            ResizeKind::NearestRoundPreferFloor,
            ResizeKind::NearestRoundPreferCeil,
            ResizeKind::NearestFloor,
            ResizeKind::NearestCeil,
        ];
        let coords = [
            CoordMode::HalfPixel,
            CoordMode::PytorchHalfPixel,
            CoordMode::AlignCorners,
            CoordMode::Asymmetric,
        ];
        for &(in_h, in_w, out_h, out_w) in
            &[(3, 5, 6, 10), (7, 9, 3, 4), (1, 300, 2, 600), (4, 4, 4, 4)]
        {
            for kind in kinds {
                for coord in coords {
                    let g = ResizeGeometry {
                        planes: 3,
                        in_h,
                        in_w,
                        out_h,
                        out_w,
                        kind,
                        coord,
                    };
                    let x: Vec<i8> = (0..g.input_len()).map(|i| (i * 37 % 251) as i8).collect();
                    let mut got = vec![0i8; g.output_len()];
                    qs8_resize(&g, &x, &mut got);
                    let mut gotf = vec![0f32; g.output_len()];
                    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                    f32_resize(&g, &xf, &mut gotf);
                    for p in 0..3 {
                        for oy in 0..out_h {
                            for ox in 0..out_w {
                                let (y, xx) =
                                    (g.nearest(oy, in_h, out_h), g.nearest(ox, in_w, out_w));
                                let want = x[(p * in_h + y) * in_w + xx];
                                let o = (p * out_h + oy) * out_w + ox;
                                assert_eq!(got[o], want, "{g:?} at {p},{oy},{ox}");
                                assert_eq!(gotf[o], want as f32, "{g:?} f32 at {p},{oy},{ox}");
                            }
                        }
                    }
                }
            }
        }
    }
}
