//! Output stages and input checks shared by the ARM gemm paths (aarch64 and
//! 32-bit arm).

use crate::reference::QOut;
use crate::requant::{clamp_i8, requantize, Requant};

/// Where a finished i32 accumulator (bias included) goes.
pub(crate) trait Sink {
    /// Output `(i, j)` from its accumulator.
    fn put(&mut self, i: usize, j: usize, acc: i32);

    /// Outputs `(i, j0..j0 + 4)`; same results as four [`Sink::put`]s.
    #[inline(always)]
    #[cfg_attr(target_arch = "arm", allow(dead_code))] // aarch64 tiles only
    fn put_row4(&mut self, i: usize, j0: usize, acc: [i32; 4]) {
        for (c, v) in acc.into_iter().enumerate() {
            self.put(i, j0 + c, v);
        }
    }
}

/// The int8 output stage of [`crate::reference::qs8_gemm_nt`].
pub(crate) struct I8Sink<'a> {
    pub rq: &'a [Requant],
    pub q: &'a QOut,
    pub out: &'a mut [i8],
    pub rs: usize,
    pub cs: usize,
}

impl Sink for I8Sink<'_> {
    #[inline(always)]
    fn put(&mut self, i: usize, j: usize, acc: i32) {
        self.out[i * self.rs + j * self.cs] = clamp_i8(
            requantize(acc, self.rq[i]) + self.q.out_zp,
            self.q.act_min,
            self.q.act_max,
        );
    }

    /// Vector requantization, bit-exact with [`requantize`]:
    /// `sqshl` is the saturating left shift, `sqrdmulh` is
    /// `saturating_rounding_doubling_high_mul` (both round `floor(x + 1/2)` and
    /// saturate only `MIN * MIN`), and `sqadd` of the sign fixup then `srshl`
    /// is `rounding_divide_by_pot` (gemmlowp's NEON formulation).
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn put_row4(&mut self, i: usize, j0: usize, acc: [i32; 4]) {
        use core::arch::aarch64::*;
        let r = self.rq[i];
        let q = self.q;
        assert!(q.act_min <= q.act_max, "clamp: act_min > act_max");
        let mut v = [0i32; 4];
        // SAFETY: NEON is baseline on aarch64; loads/stores are of local arrays.
        unsafe {
            let x = vld1q_s32(acc.as_ptr());
            let x = vqshlq_s32(x, vdupq_n_s32(r.shift.max(0)));
            let x = vqrdmulhq_s32(x, vdupq_n_s32(r.mult));
            let sh = vdupq_n_s32(-(-r.shift).max(0));
            let fixup = vshrq_n_s32::<31>(vandq_s32(x, sh));
            let x = vrshlq_s32(vqaddq_s32(x, fixup), sh);
            let x = vaddq_s32(x, vdupq_n_s32(q.out_zp));
            let x = vminq_s32(
                vmaxq_s32(x, vdupq_n_s32(q.act_min as i32)),
                vdupq_n_s32(q.act_max as i32),
            );
            vst1q_s32(v.as_mut_ptr(), x);
        }
        let base = i * self.rs + j0 * self.cs;
        if self.cs == 1 {
            for (o, x) in self.out[base..base + 4].iter_mut().zip(v) {
                *o = x as i8;
            }
        } else {
            for (c, x) in v.into_iter().enumerate() {
                self.out[base + c * self.cs] = x as i8;
            }
        }
    }
}

/// The f32 output stage of [`crate::reference::qs8_gemm_nt_f32out`].
pub(crate) struct F32Sink<'a> {
    pub scale: &'a [f32],
    pub lo: f32,
    pub hi: f32,
    pub out: &'a mut [f32],
    pub rs: usize,
    pub cs: usize,
}

impl Sink for F32Sink<'_> {
    #[inline(always)]
    fn put(&mut self, i: usize, j: usize, acc: i32) {
        self.out[i * self.rs + j * self.cs] = (acc as f32 * self.scale[i]).clamp(self.lo, self.hi);
    }
}

/// The O(1) part of the reference contract that keeps raw-pointer reads of
/// `a`/`b` in bounds (the output side is bounds-checked per store).
#[inline(always)]
pub(crate) fn check_inputs(
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[i8],
    bias: &[i32],
    per_row: usize,
) {
    assert!(a.len() >= m * k, "qs8_gemm_nt: a.len() < m*k");
    assert!(b.len() >= n * k, "qs8_gemm_nt: b.len() < n*k");
    assert!(
        bias.len() >= m && per_row >= m,
        "qs8_gemm_nt: bias/rq shorter than m"
    );
}
