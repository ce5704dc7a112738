//! Zero-point-padded input rows for the ARM depthwise and pooling kernels
//! (aarch64 and 32-bit arm): the architecture-independent half.
//!
//! For every channel the output width is cut into strips (one strip for any
//! realistic layer) and, for each output row, the input rows its taps need
//! are copied into a small stack ring, padded left and right with `in_zp`
//! and widened to whole 8-output vector blocks. A padding tap then reads
//! `in_zp` and contributes `(in_zp - in_zp) * w = 0`, as the reference (which
//! skips it) does, so every output, borders included, takes the vector path
//! with no bounds checks. Rows above or below the image are skipped, like the
//! reference. Each ring slot is tagged with its input row, so with stride 1 a
//! row is copied once per strip, not once per tap row.

use crate::reference::{ConvGeometry, PoolGeometry};

/// Bytes of the stack ring (`slots` rows of one strip's padded width).
pub(crate) const RING_BYTES: usize = 8192;
/// Most input rows one output row may span (`(kh - 1) * dil_h + 1`).
pub(crate) const MAX_SPAN: usize = 32;

/// How a geometry is cut; `None` from [`Plan::new`] means "run the reference".
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Ring slots: the input rows spanned by one output row, rounded up to a
    /// power of two so that a row's slot is `iy & (slots - 1)` (no division,
    /// which 32-bit ARM does in a library call). The rows of one output row
    /// are consecutive modulo `slots`, hence in distinct slots.
    slots: usize,
    /// Vector outputs per full strip (a multiple of `block`).
    strip: usize,
    /// Outputs are computed in blocks of this many (8 or 16).
    block: usize,
    /// Padded bytes beyond `(outputs - 1) * stride`: `(kw - 1) * dil_w + stride`.
    extra: usize,
}

impl Plan {
    /// Strides 1 and 2 only; `dil_w` arbitrary. A row of `n` outputs is
    /// padded for `n` rounded up to `block` (8 or 16) outputs, which is
    /// `(n - 1) * stride + (kw - 1) * dil + stride` bytes (stride 2 loads
    /// read one byte past the last even tap).
    pub fn new(g: &ConvGeometry, block: usize) -> Option<Plan> {
        if g.stride_w > 2 || g.out_w == 0 {
            return None;
        }
        let span = (g.kh - 1).checked_mul(g.dil_h)? + 1;
        let extra = (g.kw - 1).checked_mul(g.dil_w)? + g.stride_w;
        if span > MAX_SPAN {
            return None;
        }
        let slots = span.next_power_of_two();
        let per_slot = RING_BYTES / slots;
        let need16 = 15 * g.stride_w + extra;
        let full = g.out_w.div_ceil(block) * block;
        let strip = if (full - 1) * g.stride_w + extra <= per_slot {
            full
        } else if per_slot >= need16 {
            ((per_slot - extra) / g.stride_w + 1) / 16 * 16
        } else {
            return None;
        };
        Some(Plan {
            slots,
            strip,
            block,
            extra,
        })
    }

    /// Padded bytes of a row of `n` outputs (`n` rounded up to `block`).
    fn width(&self, stride: usize, n: usize) -> usize {
        (n.div_ceil(self.block) * self.block - 1) * stride + self.extra
    }
}

/// One output row of one strip, ready for a vector kernel.
pub(crate) struct RowJob<'a> {
    /// For each tap row inside the image: its padded input row, positioned at
    /// the strip's first output (`row[ox * stride + kx * dil_w]` is the tap
    /// `kx` of output `ox` of the strip), and its `ky`.
    pub taps: &'a [(*const i8, usize)],
    /// Outputs to write (`out[0..n]`); the padded rows hold the inputs of
    /// `n` rounded up to the plan's `block` outputs.
    pub n: usize,
    pub out: *mut i8,
    /// The output row, and the strip's first output column.
    pub oy: usize,
    pub ox0: usize,
}

/// Runs `row(channel, job)` for every output row of every strip of every
/// channel, with padding bytes `in_zp` (pooling passes its own pad value).
///
/// # Safety
/// `g` is a valid depthwise geometry (`groups == in_c == out_c`), `plan`
/// comes from `Plan::new(g, _)`, and `input` / `output` hold
/// `g.input_len()` / `g.output_len()` bytes (the caller checked). `row` may
/// read the bytes the job describes and write `out[0..n]`.
pub(crate) unsafe fn for_each_row(
    g: &ConvGeometry,
    plan: &Plan,
    in_zp: i8,
    input: &[i8],
    output: &mut [i8],
    mut row: impl FnMut(usize, &RowJob),
) {
    let mut ring = [0i8; RING_BYTES];
    let mut tags = [usize::MAX; MAX_SPAN];
    let mut taps = [(core::ptr::null::<i8>(), 0usize); MAX_SPAN];
    let slot_len = plan.width(g.stride_w, plan.strip);
    let plane = g.in_h * g.in_w;
    for c in 0..g.out_c {
        let inp = &input[c * plane..(c + 1) * plane];
        let mut ox0 = 0;
        while ox0 < g.out_w {
            let n = (g.out_w - ox0).min(plan.strip);
            let width = plan.width(g.stride_w, n);
            // First input column of the strip (may be left of the image).
            let col0 = (ox0 * g.stride_w) as isize - g.pad_left as isize;
            tags.fill(usize::MAX);
            // The padding columns are the same in every row of the strip:
            // written once here, so a row fill copies only in-image bytes.
            ring[..plan.slots * slot_len].fill(in_zp);
            let (lo, hi) = in_image(width, g.in_w, col0);
            for oy in 0..g.out_h {
                let mut nt = 0;
                for ky in 0..g.kh {
                    let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        continue;
                    }
                    let iy = iy as usize;
                    let s = iy & (plan.slots - 1);
                    let slot = &mut ring[s * slot_len..s * slot_len + width];
                    if tags[s] != iy && hi > lo {
                        let s0 = iy * g.in_w + (col0 + lo as isize) as usize;
                        slot[lo..hi].copy_from_slice(&inp[s0..s0 + (hi - lo)]);
                        tags[s] = iy;
                    }
                    taps[nt] = (slot.as_ptr(), ky);
                    nt += 1;
                }
                let at = (c * g.out_h + oy) * g.out_w + ox0;
                let job = RowJob {
                    taps: &taps[..nt],
                    n,
                    out: output[at..at + n].as_mut_ptr(),
                    oy,
                    ox0,
                };
                row(c, &job);
            }
            ox0 += n;
        }
    }
}

/// Bytes of the stack buffer of the flat path (padded plane + outputs): up
/// to about 160x160 planes at 3x3 (measured under qemu, mobilenet_v2 at
/// dotprod: 8 KiB 91.9M instructions, 64 KiB 91.0M).
pub(crate) const FLAT_BYTES: usize = 65536;

/// Stride-1 planes small enough to pad whole: the channel's plane is copied
/// once into a zero-point-padded `ph x pw` buffer (`pw = out_w + (kw - 1) *
/// dil_w`), and the outputs are computed as one flat sequence over `oy * pw +
/// ox`, the padded row length being the output row pitch: output `f` reads
/// `plane[f + ky * dil_h * pw + kx * dil_w]`, so vector blocks run across row
/// ends (the `kw - 1` columns past each row's end are computed and dropped).
/// This removes the per-row costs of the row ring, which dominate planes of
/// 28 and fewer columns; the blocks are the row kernels' own.
pub(crate) struct Flat {
    ph: usize,
    pw: usize,
    /// Flat outputs up to the last real one: `(out_h - 1) * pw + out_w`.
    n: usize,
}

impl Flat {
    /// `None` unless stride 1, at least 16 flat outputs, and the padded plane
    /// plus the flat outputs fit [`FLAT_BYTES`].
    pub fn new(g: &ConvGeometry) -> Option<Flat> {
        if g.stride_w != 1 || g.stride_h != 1 || g.kh > MAX_SPAN || g.out_w == 0 {
            return None;
        }
        let pw = g.out_w + (g.kw - 1) * g.dil_w;
        let ph = g.out_h + (g.kh - 1) * g.dil_h;
        let n = (g.out_h.max(1) - 1) * pw + g.out_w;
        // A block of 16 from `f <= n - 16` reads up to
        // `n - 1 + (kh - 1) * dil_h * pw + (kw - 1) * dil_w = ph * pw - 1`:
        // inside the plane.
        (n >= 16 && ph * pw + g.out_h * pw <= FLAT_BYTES).then_some(Flat { ph, pw, n })
    }

    /// One channel: pads `plane` (its input) into `buf`, runs `compute` on
    /// the job of all `n` flat outputs (written to `buf` after the plane; all
    /// `kh` tap rows, padding rows included), then copies the real outputs to
    /// `out` (its outputs). `copy` is `copy_from_slice`, possibly faster.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn channel(
        &self,
        g: &ConvGeometry,
        in_zp: i8,
        plane: &[i8],
        out: &mut [i8],
        buf: &mut [i8; FLAT_BYTES],
        copy: impl Fn(&mut [i8], &[i8]),
        compute: impl FnOnce(&RowJob),
    ) {
        let (ph, pw) = (self.ph, self.pw);
        let (pad, obuf) = buf.split_at_mut(ph * pw);
        pad.fill(in_zp);
        // Input columns `[0, cols)` land at `pad_left..`; later ones are never read.
        let cols = g.in_w.min(pw.saturating_sub(g.pad_left));
        for y in 0..g.in_h.min(ph.saturating_sub(g.pad_top)) {
            let at = (y + g.pad_top) * pw + g.pad_left;
            copy(
                &mut pad[at..at + cols],
                &plane[y * g.in_w..y * g.in_w + cols],
            );
        }
        let mut taps = [(core::ptr::null::<i8>(), 0usize); MAX_SPAN];
        for (ky, t) in taps.iter_mut().enumerate().take(g.kh) {
            *t = (pad[ky * g.dil_h * pw..].as_ptr(), ky);
        }
        compute(&RowJob {
            taps: &taps[..g.kh],
            n: self.n,
            out: obuf[..self.n].as_mut_ptr(),
            oy: 0,
            ox0: 0,
        });
        for oy in 0..g.out_h {
            copy(
                &mut out[oy * g.out_w..(oy + 1) * g.out_w],
                &obuf[oy * pw..oy * pw + g.out_w],
            );
        }
    }
}

/// The slot bytes `[lo, hi)` of a `width`-byte padded row starting at input
/// column `col0` that lie inside a row of `in_w` columns (`lo == hi`: none).
fn in_image(width: usize, in_w: usize, col0: isize) -> (usize, usize) {
    let w = width as isize;
    let lo = (-col0).clamp(0, w);
    let hi = (in_w as isize - col0).clamp(lo, w);
    (lo as usize, hi as usize)
}

/// The pooling window as a depthwise convolution geometry (for the row ring).
pub(crate) fn conv_geometry(g: &PoolGeometry) -> ConvGeometry {
    ConvGeometry {
        in_c: g.channels,
        in_h: g.in_h,
        in_w: g.in_w,
        out_c: g.channels,
        out_h: g.out_h,
        out_w: g.out_w,
        kh: g.kh,
        kw: g.kw,
        stride_h: g.stride_h,
        stride_w: g.stride_w,
        dil_h: 1,
        dil_w: 1,
        pad_top: g.pad_top,
        pad_left: g.pad_left,
        groups: g.channels,
    }
}

/// The reference's average divisor of output `(oy, ox)` (the count of
/// `PoolGeometry::window`, copied expression for expression).
#[inline]
pub(crate) fn count(g: &PoolGeometry, oy: usize, ox: usize) -> i32 {
    let y = (oy * g.stride_h) as isize - g.pad_top as isize;
    let x = (ox * g.stride_w) as isize - g.pad_left as isize;
    let n = if g.count_include_pad {
        let ye = ((y + g.kh as isize) as usize).min(g.in_h + g.pad_top);
        let xe = ((x + g.kw as isize) as usize).min(g.in_w + g.pad_left);
        (ye as isize - y).max(1) as usize * (xe as isize - x).max(1) as usize
    } else {
        let y0 = y.max(0) as usize;
        let x0 = x.max(0) as usize;
        let y1 = ((y + g.kh as isize).max(0) as usize).min(g.in_h);
        let x1 = ((x + g.kw as isize).max(0) as usize).min(g.in_w);
        (y1.saturating_sub(y0) * x1.saturating_sub(x0)).max(1)
    };
    n as i32
}

/// The length checks of the pooling kernels (the reference's indexing would
/// panic the same way).
pub(crate) fn check_pool(g: &PoolGeometry, input: &[i8], output: &[i8]) {
    assert!(
        input.len() >= g.input_len() && output.len() >= g.output_len(),
        "qs8 pool: buffers do not match the geometry"
    );
}
