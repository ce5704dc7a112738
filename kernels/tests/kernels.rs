//! Every row of the kernel table against the reference row, bit for bit.
//!
//! For each [`Isa`] in [`Isa::ALL`], the row compiled for this target (if any)
//! runs one shared, seeded edge-case grid per op, and every output is compared
//! with [`table::SCALAR`]'s. A path that is not compiled or not runnable on
//! this CPU is a visible skip (`SKIP <kernel>: <reason>` on stderr, counted in
//! the final `kernels: N paths tested, M skipped` line), never a silent pass.
//!
//! `STRIX_REQUIRE_ISA=avx2,neon` (comma list of `Isa::name`s) turns a skip of
//! one of those paths into a failure, so CI can assert the path really ran.
//!
//! Cases stay inside the reference contracts (overflow bounds, shifts in
//! [-31, 30], `act_min <= act_max`) so that the reference never panics in debug
//! builds; requantization multipliers above 1 keep their mantissa below 0.75 so
//! that `requantize(..) + out_zp` cannot overflow i32.

use strix_kernels::reference::{
    pack_a_4c4, pack_sparse, packed_a_len, pairable_4c4, panel_len, sparse_scratch_len,
    ConvGeometry, PoolGeometry, QAddParams, QConvParams, QMulParams, QOut, SPARSE_BLOCK,
};
use strix_kernels::shape::Dims;
use strix_kernels::table::{self, KernelSet, SCALAR};
use strix_kernels::{quantize_multiplier, Isa, Requant};

/// xorshift64*: a seeded, dependency-free generator (same cases on every run).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn usize(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as i64, hi as i64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.usize(0, xs.len() - 1)]
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// int8 data in one of the edge modes: uniform, all extremes, or one constant.
    fn i8s(&mut self, len: usize) -> Vec<i8> {
        match self.usize(0, 5) {
            0 => vec![self.pick(&[-128, 127, 0, -1]); len],
            1 => (0..len).map(|_| self.pick(&[-128i8, 127])).collect(),
            _ => (0..len).map(|_| self.range(-128, 127) as i8).collect(),
        }
    }
    /// Weights: symmetric int8 in [-127, 127], often at the extremes.
    fn weights(&mut self, len: usize) -> Vec<i8> {
        match self.usize(0, 4) {
            0 => (0..len).map(|_| self.pick(&[-127i8, 127])).collect(),
            1 => vec![self.pick(&[-127, 127]); len],
            _ => (0..len).map(|_| self.range(-127, 127) as i8).collect(),
        }
    }
    /// A zero point: the int8 extremes, zero, or uniform.
    fn zp(&mut self) -> i32 {
        match self.usize(0, 3) {
            0 => -128,
            1 => 127,
            2 => 0,
            _ => self.range(-128, 127) as i32,
        }
    }
    /// Biases, sometimes near the +-2^30 contract limit.
    fn biases(&mut self, len: usize) -> Vec<i32> {
        let big = self.usize(0, 3) == 0;
        (0..len)
            .map(|_| {
                if big {
                    self.pick(&[1 << 30, -(1 << 30), (1 << 30) - 7, -(1 << 30) + 3])
                } else {
                    self.range(-100_000, 100_000) as i32
                }
            })
            .collect()
    }
    /// A multiplier scaled for accumulators of magnitude ~`typical`: from
    /// "everything rounds to zero" through normal to "saturates both ways".
    fn requant(&mut self, typical: f64) -> Requant {
        let base = 100.0 / typical.max(1.0);
        let real = match self.usize(0, 6) {
            // Exact powers of two: `mult = 2^30`, so exact halves (the
            // rounding ties) are common.
            6 => 2f64.powi(-(self.range(0, 12) as i32 + (typical.log2() as i32).clamp(0, 18))),
            0 => base * 2f64.powf(self.range(-30, -8) as f64),
            1 => base * 2f64.powf(self.range(6, 20) as f64),
            2 => 2f64.powf(self.range(1, 20) as f64) * (0.5 + 0.24 * self.unit()),
            _ => base * (0.25 + 4.0 * self.unit()),
        };
        cap(quantize_multiplier(real))
    }
    fn act_bounds(&mut self) -> (i8, i8) {
        match self.usize(0, 3) {
            0 => (-128, 127),
            1 => (0, 127),
            2 => (-128, -128 + self.range(0, 20) as i8),
            _ => {
                let a = self.range(-128, 127) as i8;
                let b = self.range(-128, 127) as i8;
                (a.min(b), a.max(b))
            }
        }
    }
}

/// Keeps `requantize(x) + zp` in i32 for every x: multipliers above 1 get a
/// mantissa below 0.75.
fn cap(r: Requant) -> Requant {
    if r.shift > 0 {
        Requant {
            mult: r.mult.min(0x5fff_ffff),
            shift: r.shift,
        }
    } else {
        r
    }
}

/// Reductions straddling the 8/16/32-byte SIMD blocks.
const KS: [usize; 11] = [1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 257];
/// Row / column counts around 2/4/8-wide tiles.
const MNS: [usize; 7] = [1, 2, 3, 4, 5, 8, 17];
/// Vector lengths around 8/16/32-element steps.
const LENS: [usize; 13] = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 257, 1000];
/// Image widths / heights around 8- and 16-output blocks.
const SIZES: [usize; 10] = [1, 2, 5, 9, 16, 17, 24, 33, 40, 71];

/// Runs one kernel call of `row` and, on ARM, checks that it kept the
/// registers the procedure-call standard makes callee-saved (`d8`-`d15` on
/// both AAPCS and AAPCS64). An `asm!` block that clobbers them without the
/// compiler knowing (on 32-bit ARM, `q4`-`q7` clobbers in a function built
/// without the `neon` feature were not saved) corrupts whatever float the
/// caller keeps there, far from the kernel; the grid's other checks only see
/// that by luck.
fn abi_call(name: &str, f: impl FnOnce()) {
    #[cfg(any(target_arch = "arm", target_arch = "aarch64"))]
    abi::call(name, f);
    #[cfg(not(any(target_arch = "arm", target_arch = "aarch64")))]
    {
        let _ = name;
        f();
    }
}

#[cfg(any(target_arch = "arm", target_arch = "aarch64"))]
mod abi {
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

    type Outcome = Option<std::thread::Result<()>>;

    /// The call itself, entered from `asm!` with the C ABI: the closure runs
    /// under `catch_unwind` (no unwinding through the `asm!`), its outcome
    /// is left in the context.
    extern "C" fn thunk<F: FnOnce()>(ctx: *mut (Option<F>, Outcome)) {
        // SAFETY: `call` passes a pointer to its own live context.
        let ctx = unsafe { &mut *ctx };
        let f = ctx.0.take().expect("called once");
        ctx.1 = Some(catch_unwind(AssertUnwindSafe(f)));
    }

    pub fn call<F: FnOnce()>(name: &str, f: F) {
        let before: [u64; 8] =
            core::array::from_fn(|i| 0x7ff4_5a5a_0000_0001u64.wrapping_mul(i as u64 + 3));
        let mut after = [0u64; 8];
        let mut ctx: (Option<F>, Outcome) = (Some(f), None);
        let t: extern "C" fn(*mut (Option<F>, Outcome)) = thunk::<F>;
        // SAFETY: loads the pattern into d8-d15 (declared clobbered, so the
        // compiler saves its own values around this block), calls the thunk
        // with the C ABI (`clobber_abi("C")`), stores d8-d15. The pointers sit
        // in callee-saved general registers, which the thunk keeps.
        #[cfg(target_arch = "arm")]
        unsafe {
            core::arch::asm!(
                "vldmia r4, {{d8-d15}}",
                "blx {t}",
                "vstmia r5, {{d8-d15}}",
                t = in(reg) t,
                in("r4") before.as_ptr(),
                in("r5") after.as_mut_ptr(),
                in("r0") &mut ctx as *mut (Option<F>, Outcome),
                out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                clobber_abi("C"),
            );
        }
        #[cfg(target_arch = "aarch64")]
        unsafe {
            core::arch::asm!(
                "ldp d8, d9, [x20]",
                "ldp d10, d11, [x20, #16]",
                "ldp d12, d13, [x20, #32]",
                "ldp d14, d15, [x20, #48]",
                "blr {t}",
                "stp d8, d9, [x21]",
                "stp d10, d11, [x21, #16]",
                "stp d12, d13, [x21, #32]",
                "stp d14, d15, [x21, #48]",
                t = in(reg) t,
                in("x20") before.as_ptr(),
                in("x21") after.as_mut_ptr(),
                in("x0") &mut ctx as *mut (Option<F>, Outcome),
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                clobber_abi("C"),
            );
        }
        if let Some(Err(panic)) = ctx.1 {
            resume_unwind(panic);
        }
        assert_eq!(
            after, before,
            "{name}: callee-saved registers d8-d15 were not preserved across the call"
        );
    }
}

/// Mismatch report: the first differing index and the case.
fn assert_same<T: PartialEq + std::fmt::Debug>(name: &str, case: &str, got: &[T], want: &[T]) {
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{name} differs from the reference at index {i}: got {:?}, want {:?}\n  case: {case}",
            got[i], want[i]
        );
    }
}

fn check_gemm_nt(row: &KernelSet, rng: &mut Rng) -> usize {
    let mut cases = 0;
    for &k in &KS {
        for &m in &MNS {
            for &n in &MNS {
                let a = rng.weights(m * k);
                let b = rng.i8s(n * k);
                let bias = rng.biases(m);
                let typical = 128.0 * 64.0 * (k as f64).sqrt();
                let rq: Vec<Requant> = (0..m).map(|_| rng.requant(typical)).collect();
                let (act_min, act_max) = rng.act_bounds();
                let q = QOut {
                    out_zp: rng.zp(),
                    act_min,
                    act_max,
                };
                // Row-major, column-major (transposed output) and padded rows.
                let (rs, cs, len) = match rng.usize(0, 2) {
                    0 => (n, 1, m * n),
                    1 => (1, m, m * n),
                    _ => (n + 3, 1, m * (n + 3)),
                };
                let mut want = vec![0x55i8; len];
                let mut got = want.clone();
                (SCALAR.gemm_nt.run)(m, n, k, &a, &b, &bias, &rq, &q, &mut want, rs, cs);
                abi_call(row.gemm_nt.name, || {
                    (row.gemm_nt.run)(m, n, k, &a, &b, &bias, &rq, &q, &mut got, rs, cs)
                });
                let case =
                    format!("m={m} n={n} k={k} rs={rs} cs={cs} q={q:?} rq={rq:?} bias={bias:?}");
                assert_same(row.gemm_nt.name, &case, &got, &want);

                let scale: Vec<f32> = (0..m)
                    .map(|_| match rng.usize(0, 3) {
                        0 => 0.0,
                        1 => -(rng.unit() as f32) * 1e-3,
                        _ => (rng.unit() as f32) * 1e-4,
                    })
                    .collect();
                let (lo, hi) = match rng.usize(0, 2) {
                    0 => (f32::NEG_INFINITY, f32::INFINITY),
                    1 => (0.0, 6.0),
                    _ => (-1.0, 1.0),
                };
                let mut want = vec![f32::NAN; len];
                let mut got = want.clone();
                (SCALAR.gemm_nt_f32out.run)(
                    m, n, k, &a, &b, &bias, &scale, lo, hi, &mut want, rs, cs,
                );
                abi_call(row.gemm_nt_f32out.name, || {
                    (row.gemm_nt_f32out.run)(
                        m, n, k, &a, &b, &bias, &scale, lo, hi, &mut got, rs, cs,
                    )
                });
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let case =
                    format!("m={m} n={n} k={k} rs={rs} cs={cs} scale={scale:?} lo={lo} hi={hi}");
                assert_same(row.gemm_nt_f32out.name, &case, &bits(&got), &bits(&want));
                cases += 2;
            }
        }
    }
    cases
}

/// Panel widths around the 4-pixel quads, the 8-pixel halves and the whole
/// 16-pixel panel.
const PANEL_NS: [usize; 7] = [1, 3, 4, 8, 9, 15, 16];

/// `row.gemm_4x16c4` on packed operands: weights over the whole int8 range
/// (-128 included), every K padding and channel-group edge, a padded output
/// row stride whose guard bytes must stay untouched.
fn check_gemm_4x16c4(row: &KernelSet, rng: &mut Rng) -> usize {
    let mut cases = 0;
    for &k in &KS {
        for &m in &MNS {
            let n = rng.pick(&PANEL_NS);
            let mut a = rng.i8s(m * k);
            // Bytes past k and past n are arbitrary: the packed weights'
            // zeros cancel the first, the second are never stored.
            let mut b = rng.i8s(panel_len(k));
            if rng.usize(0, 3) == 0 {
                // A channel of -128 weights against -128 inputs: kernels
                // that sum two products in i16 must notice (-128 * -128
                // twice overflows).
                let ch = rng.usize(0, m - 1);
                a[ch * k..(ch + 1) * k].fill(i8::MIN);
                b.fill(i8::MIN);
            }
            let mut pa = vec![0i8; packed_a_len(m, k)];
            pack_a_4c4(m, k, &a, &mut pa);
            let bias = rng.biases(m);
            let typical = 128.0 * 64.0 * (k as f64).sqrt();
            let rq: Vec<Requant> = (0..m).map(|_| rng.requant(typical)).collect();
            let (act_min, act_max) = rng.act_bounds();
            let q = QOut {
                out_zp: rng.zp(),
                act_min,
                act_max,
            };
            let rs = n + rng.usize(0, 3);
            let mut want = vec![0x55i8; m * rs];
            let mut got = want.clone();
            let kb = k.div_ceil(4);
            (SCALAR.gemm_4x16c4.run)(m, n, kb, &pa, &[], &b, &bias, &rq, &q, &mut want, rs);
            // With the prepare-time flags, and without any (the kernels must
            // then assume every group may overflow i16).
            let mut pairs = vec![false; m.div_ceil(4)];
            pairable_4c4(m, kb, &pa, &mut pairs);
            for flags in [&pairs[..], &[]] {
                got.fill(0x55);
                abi_call(row.gemm_4x16c4.name, || {
                    (row.gemm_4x16c4.run)(m, n, kb, &pa, flags, &b, &bias, &rq, &q, &mut got, rs)
                });
                let case = format!(
                    "m={m} n={n} k={k} rs={rs} pairs={flags:?} q={q:?} rq={rq:?} bias={bias:?}"
                );
                assert_same(row.gemm_4x16c4.name, &case, &got, &want);
            }
            // The f32 output stage on the same operands (bits compared: the
            // sign of a zero must match too).
            // A denormal scale or bound now and then: paths that flush
            // denormals to zero (ARMv7 NEON) must not run those.
            let denormal = rng.usize(0, 9) == 0;
            let scale: Vec<f32> = (0..m)
                .map(|_| match rng.usize(0, 3) {
                    0 => 0.0,
                    1 => -(rng.unit() as f32) * 1e-3,
                    _ if denormal => 1e-40,
                    _ => (rng.unit() as f32) * 1e-4,
                })
                .collect();
            let (lo, hi) = match rng.usize(0, 2) {
                0 => (f32::NEG_INFINITY, f32::INFINITY),
                1 if denormal => (1e-40, 6.0),
                1 => (0.0, 6.0),
                _ => (-1.0, 1.0),
            };
            let mut want = vec![f32::NAN; m * rs];
            let mut got = want.clone();
            (SCALAR.gemm_4x16c4_f32out.run)(
                m, n, kb, &pa, &b, &bias, &scale, lo, hi, &mut want, rs,
            );
            abi_call(row.gemm_4x16c4_f32out.name, || {
                (row.gemm_4x16c4_f32out.run)(m, n, kb, &pa, &b, &bias, &scale, lo, hi, &mut got, rs)
            });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let case = format!("f32out m={m} n={n} k={k} rs={rs} scale={scale:?} lo={lo} hi={hi}");
            assert_same(
                row.gemm_4x16c4_f32out.name,
                &case,
                &bits(&got),
                &bits(&want),
            );
            cases += 1;
        }
    }
    cases
}

/// Reductions for the sparse gemm: around whole 4-blocks and the 8/16-wide
/// packing steps (27 = 16 + 8 + 3 takes all three of the NEON packer's),
/// plus realistic conv depths.
const SPARSE_KS: [usize; 13] = [1, 2, 3, 4, 5, 7, 8, 13, 16, 27, 33, 96, 291];
/// Column counts around the 8-column groups and the 8/4/2/1-group tiles:
/// 60 is an 8-group tile whose last group is partial (so its second 32-byte
/// quad store falls back to per-group stores), 72 an 8-group tile plus one,
/// 117 every tile size (8 + 4 + 2 + 1 groups, the last partial).
const SPARSE_NS: [usize; 12] = [1, 3, 7, 8, 9, 16, 24, 33, 60, 64, 72, 117];

/// `row.gemm_nt_sparse` on block-pruned weights against the dense reference
/// gemm on the same (dense) weights, at 0%, 50%, 80% and 100% zero blocks
/// (100%: every row empty, the output is `requantize(bias)`).
fn check_gemm_nt_sparse(row: &KernelSet, rng: &mut Rng) -> usize {
    let mut cases = 0;
    for &k in &SPARSE_KS {
        for &m in &[1usize, 3, 4, 5, 17] {
            let n = rng.pick(&SPARSE_NS);
            let sparsity = rng.pick(&[0.0, 0.5, 0.8, 1.0]);
            let mut a = rng.weights(m * k);
            for i in 0..m {
                for blk in a[i * k..(i + 1) * k].chunks_mut(SPARSE_BLOCK) {
                    if rng.unit() < sparsity {
                        blk.fill(0);
                    } else if rng.usize(0, 3) == 0 {
                        // Zeros inside a stored block.
                        let l = rng.usize(0, blk.len() - 1);
                        blk[l] = 0;
                    }
                }
            }
            let sp = pack_sparse(m, k, &a).unwrap();
            let b = rng.i8s(n * k);
            let bias = rng.biases(m);
            let typical = 128.0 * 64.0 * (k as f64).sqrt();
            let rq: Vec<Requant> = (0..m).map(|_| rng.requant(typical)).collect();
            let (act_min, act_max) = rng.act_bounds();
            let q = QOut {
                out_zp: rng.zp(),
                act_min,
                act_max,
            };
            let (rs, cs, len) = match rng.usize(0, 2) {
                0 => (n, 1, m * n),
                1 => (1, m, m * n),
                _ => (n + 3, 1, m * (n + 3)),
            };
            let mut want = vec![0x55i8; len];
            let mut got = want.clone();
            (SCALAR.gemm_nt.run)(m, n, k, &a, &b, &bias, &rq, &q, &mut want, rs, cs);
            // An odd offset: kernels must align their panel themselves.
            let mut scratch = vec![0x7fi8; sparse_scratch_len(n, k) + 1];
            abi_call(row.gemm_nt_sparse.name, || {
                (row.gemm_nt_sparse.run)(
                    n,
                    &sp.view(),
                    &b,
                    &bias,
                    &rq,
                    &q,
                    &mut got,
                    rs,
                    cs,
                    &mut scratch[1..],
                )
            });
            let case = format!(
                "m={m} n={n} k={k} sparsity={sparsity} blocks={} rs={rs} cs={cs} q={q:?} rq={rq:?} bias={bias:?}",
                sp.blocks.len()
            );
            assert_same(row.gemm_nt_sparse.name, &case, &got, &want);
            cases += 1;
        }
    }
    cases
}

fn check_dwconv(row: &KernelSet, rng: &mut Rng) -> usize {
    let mut cases = 0;
    // 112: the AVX2 padded path's largest whole plane; 140 and 330: strips.
    for &in_w in SIZES.iter().chain(&[112, 140, 330]) {
        for &stride in &[1usize, 2, 3] {
            for &kw in &[1usize, 2, 3, 5, 7] {
                for _ in 0..4 {
                    // 16 and more: the AVX2 HWC path's blocks (19 and 33:
                    // a last block overlapping the previous one).
                    let c = rng.pick(&[1usize, 3, 8, 16, 19, 33]);
                    let in_h = if in_w >= 112 {
                        in_w.min(150)
                    } else {
                        rng.pick(&SIZES[..6])
                    };
                    let kh = rng.pick(&[1usize, 3, 5]).min(kw.max(1) + 2);
                    let dil = if rng.usize(0, 4) == 0 { 2 } else { 1 };
                    let (pl, pr) = (rng.usize(0, kw - 1), rng.usize(0, kw - 1));
                    let (pt, pb) = (rng.usize(0, kh - 1), rng.usize(0, kh - 1));
                    let span_w = dil * (kw - 1) + 1;
                    let span_h = dil * (kh - 1) + 1;
                    if in_w + pl + pr < span_w || in_h + pt + pb < span_h {
                        continue;
                    }
                    let g = ConvGeometry {
                        in_c: c,
                        in_h,
                        in_w,
                        out_c: c,
                        out_h: (in_h + pt + pb - span_h) / stride + 1,
                        out_w: (in_w + pl + pr - span_w) / stride + 1,
                        kh,
                        kw,
                        stride_h: stride,
                        stride_w: stride,
                        dil_h: dil,
                        dil_w: dil,
                        pad_top: pt,
                        pad_left: pl,
                        groups: c,
                    };
                    dwconv_case(row, rng, &g, false);
                    cases += 1;
                }
            }
        }
    }
    cases
}

/// One depthwise case on `g` with random data, quantization and bounds;
/// `right_only`: every channel's shift negative (multipliers below 1/2, the
/// usual trained model and the short output stage of the aarch64 HWC path,
/// which random multipliers over 16 channels rarely reach).
fn dwconv_case(row: &KernelSet, rng: &mut Rng, g: &ConvGeometry, right_only: bool) {
    let c = g.out_c;
    let input = rng.i8s(g.input_len());
    let mut w = rng.weights(g.weight_len());
    if rng.usize(0, 2) == 0 {
        // A channel of -128 weights: kernels that sum two products in i16
        // must notice (-128 * -128 twice overflows i16).
        let taps = g.kh * g.kw;
        let ch = rng.usize(0, c - 1);
        w[ch * taps..(ch + 1) * taps].fill(i8::MIN);
    }
    let bias = rng.biases(c);
    let rq: Vec<Requant> = (0..c)
        .map(|_| {
            let r = rng.requant(128.0 * 64.0 * (g.kh * g.kw) as f64);
            if right_only && r.shift >= 0 {
                Requant {
                    mult: r.mult,
                    shift: -1 - rng.range(0, 12) as i32,
                }
            } else {
                r
            }
        })
        .collect();
    let (act_min, act_max) = rng.act_bounds();
    let q = QConvParams {
        in_zp: rng.zp(),
        out_zp: rng.zp(),
        act_min,
        act_max,
    };
    let mut want = vec![0x55i8; g.output_len()];
    let mut got = Guarded::new(g.output_len());
    (SCALAR.dwconv2d.run)(g, &q, &input, &w, &bias, &rq, &mut want);
    abi_call(row.dwconv2d.name, || {
        (row.dwconv2d.run)(g, &q, &input, &w, &bias, &rq, got.inner())
    });
    let case = format!("{g:?} {q:?} rq={rq:?}");
    got.check_guards(row.dwconv2d.name, &case);
    assert_same(row.dwconv2d.name, &case, got.inner(), &want);
}

/// An output buffer with guard bytes on both sides, so that a kernel writing
/// outside its output (which could otherwise corrupt the heap silently)
/// fails the test.
struct Guarded {
    buf: Vec<i8>,
    len: usize,
}

impl Guarded {
    const GUARD: usize = 64;
    fn new(len: usize) -> Guarded {
        let mut buf = vec![0x5ai8; len + 2 * Self::GUARD];
        buf[Self::GUARD..Self::GUARD + len].fill(0x55);
        Guarded { buf, len }
    }
    fn inner(&mut self) -> &mut [i8] {
        &mut self.buf[Self::GUARD..Self::GUARD + self.len]
    }
    fn check_guards(&self, name: &str, case: &str) {
        let (head, rest) = self.buf.split_at(Self::GUARD);
        let tail = &rest[self.len..];
        assert!(
            head.iter().chain(tail).all(|&b| b == 0x5a),
            "{name} wrote outside its output\n  case: {case}"
        );
    }
}

/// Depthwise geometries the random grid above does not reach: mobilenet-like
/// layers (3x3 and 5x5, stride 1 and 2, symmetric and TF-"SAME" padding),
/// planes too large for a stack-padded copy (one or several rows of 112 and
/// more), rows so wide that the ARM kernels cut them into strips (with a
/// tall dilated kernel), and kernels too tall for the fast paths.
fn check_dwconv_shapes(row: &KernelSet, rng: &mut Rng) -> usize {
    // (c, in_h, in_w, kh, kw, stride, dil, pad_top, pad_left, pad_bottom, pad_right)
    let shapes = [
        (16usize, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1),
        (8, 56, 56, 3, 3, 2, 1, 0, 0, 1, 1),
        (8, 56, 56, 3, 3, 2, 1, 1, 1, 1, 1),
        (16, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1),
        (16, 14, 14, 3, 3, 2, 1, 0, 0, 1, 1),
        (8, 14, 14, 5, 5, 1, 1, 2, 2, 2, 2),
        (8, 28, 28, 5, 5, 2, 1, 1, 1, 2, 2),
        (2, 100, 112, 3, 3, 1, 1, 1, 1, 1, 1),
        (2, 5, 112, 3, 3, 2, 1, 1, 1, 1, 1),
        (1, 3, 130, 3, 3, 1, 1, 0, 0, 0, 0),
        (1, 12, 1500, 5, 5, 1, 2, 4, 4, 4, 4),
        (1, 12, 1500, 5, 5, 2, 2, 3, 4, 4, 1),
        (1, 3, 9000, 1, 5, 1, 1, 0, 2, 0, 2),
        (1, 3, 5000, 1, 3, 2, 3, 0, 2, 0, 2),
        (2, 40, 9, 33, 3, 1, 1, 16, 1, 16, 1),
        (3, 9, 33, 3, 1, 1, 1, 1, 0, 1, 0),
        // Whole 16-channel blocks and a remainder on narrow planes (the
        // aarch64 HWC path): KWS-like 25x5, 7x7 at stride 1 and 2, 5x5
        // windows, dilation, one-channel and many-channel remainders.
        (64, 25, 5, 3, 3, 1, 1, 1, 1, 1, 1),
        (35, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1),
        (17, 14, 14, 3, 3, 2, 1, 0, 0, 1, 1),
        (32, 9, 11, 5, 5, 1, 1, 2, 2, 2, 2),
        (48, 12, 10, 3, 3, 2, 2, 2, 1, 2, 2),
        (16, 3, 3, 3, 3, 1, 1, 0, 0, 0, 0),
        (19, 30, 31, 3, 3, 1, 1, 1, 1, 1, 1),
        // The AVX2 HWC path's edges: 1-wide and 1-high planes, a 7x7
        // window at stride 2 with dilation, stride 3, the widest row its ring
        // holds (211 + 2 padded: 3 rows of 213 pair entries) and one past it.
        (33, 40, 1, 3, 3, 1, 1, 1, 1, 1, 1),
        (16, 1, 40, 3, 3, 1, 1, 1, 1, 1, 1),
        (17, 1, 1, 3, 3, 2, 1, 1, 1, 1, 1),
        (20, 23, 29, 7, 7, 2, 2, 6, 5, 6, 6),
        (24, 17, 19, 5, 5, 3, 1, 2, 2, 2, 2),
        (17, 6, 211, 3, 3, 1, 1, 1, 1, 1, 1),
        (17, 6, 212, 3, 3, 1, 1, 1, 1, 1, 1),
        // Wide planes in bands of output rows.
        (32, 40, 112, 3, 3, 1, 1, 1, 1, 1, 1),
        (17, 37, 113, 3, 3, 2, 1, 1, 1, 1, 1),
        (16, 30, 100, 5, 5, 1, 1, 2, 2, 2, 2),
    ];
    for (c, in_h, in_w, kh, kw, s, dil, pt, pl, pb, pr) in shapes {
        let (span_h, span_w) = (dil * (kh - 1) + 1, dil * (kw - 1) + 1);
        let g = ConvGeometry {
            in_c: c,
            in_h,
            in_w,
            out_c: c,
            out_h: (in_h + pt + pb - span_h) / s + 1,
            out_w: (in_w + pl + pr - span_w) / s + 1,
            kh,
            kw,
            stride_h: s,
            stride_w: s,
            dil_h: dil,
            dil_w: dil,
            pad_top: pt,
            pad_left: pl,
            groups: c,
        };
        dwconv_case(row, rng, &g, false);
        dwconv_case(row, rng, &g, true);
    }
    2 * shapes.len()
}

/// Equal shapes (the fast case) and a few broadcasts (the fallback).
fn binary_shapes(rng: &mut Rng) -> Vec<(Dims, Dims, Dims)> {
    let mut v: Vec<_> = LENS
        .iter()
        .map(|&l| {
            let d = if rng.usize(0, 1) == 0 {
                Dims::new(&[l])
            } else {
                Dims::new(&[1, 1, l])
            };
            (d, d, d)
        })
        .collect();
    v.push((
        Dims::new(&[3, 2, 17]),
        Dims::new(&[3, 2, 17]),
        Dims::new(&[3, 2, 17]),
    ));
    v.push((Dims::new(&[4, 1]), Dims::new(&[1, 33]), Dims::new(&[4, 33])));
    v.push((
        Dims::new(&[2, 3, 40]),
        Dims::new(&[40]),
        Dims::new(&[2, 3, 40]),
    ));
    v.push((Dims::new(&[1]), Dims::new(&[5, 9]), Dims::new(&[5, 9])));
    v
}

fn check_binary(row: &KernelSet, rng: &mut Rng) -> usize {
    let mut cases = 0;
    for _ in 0..12 {
        for (ad, bd, od) in binary_shapes(rng) {
            let a = rng.i8s(ad.count());
            let b = rng.i8s(bd.count());
            let (act_min, act_max) = rng.act_bounds();
            // TFLite's add scheme: common scale 2 * max(sa, sb), then to the output.
            let (sa, sb) = (
                2f64.powf(rng.range(-8, 2) as f64) * (0.5 + rng.unit()),
                2f64.powf(rng.range(-8, 2) as f64) * (0.5 + rng.unit()),
            );
            let so = 2f64.powf(rng.range(-14, 4) as f64) * (0.5 + rng.unit());
            let twice_max = 2.0 * sa.max(sb);
            let p = QAddParams {
                a_zp: rng.zp(),
                b_zp: rng.zp(),
                out_zp: rng.zp(),
                a_rq: quantize_multiplier(sa / twice_max),
                b_rq: quantize_multiplier(sb / twice_max),
                out_rq: cap(quantize_multiplier(twice_max / ((1u64 << 20) as f64 * so))),
                act_min,
                act_max,
            };
            let mut want = vec![0x55i8; od.count()];
            let mut got = Guarded::new(od.count());
            (SCALAR.vadd.run)(&p, &a, &ad, &b, &bd, &mut want, &od);
            abi_call(row.vadd.name, || {
                (row.vadd.run)(&p, &a, &ad, &b, &bd, got.inner(), &od)
            });
            let case = format!("{ad:?} {bd:?} {p:?}");
            got.check_guards(row.vadd.name, &case);
            assert_same(row.vadd.name, &case, got.inner(), &want);

            let p = QMulParams {
                a_zp: rng.zp(),
                b_zp: rng.zp(),
                out_zp: rng.zp(),
                rq: rng.requant(128.0 * 64.0),
                act_min,
                act_max,
            };
            (SCALAR.vmul.run)(&p, &a, &ad, &b, &bd, &mut want, &od);
            abi_call(row.vmul.name, || {
                (row.vmul.run)(&p, &a, &ad, &b, &bd, got.inner(), &od)
            });
            let case = format!("{ad:?} {bd:?} {p:?}");
            got.check_guards(row.vmul.name, &case);
            assert_same(row.vmul.name, &case, got.inner(), &want);

            let (in_zp, out_zp, rq) = (rng.zp(), rng.zp(), rng.requant(128.0));
            (SCALAR.requantize_copy.run)(&a, in_zp, rq, out_zp, &mut want);
            abi_call(row.requantize_copy.name, || {
                (row.requantize_copy.run)(&a, in_zp, rq, out_zp, got.inner())
            });
            let case = format!("len={} in_zp={in_zp} out_zp={out_zp} {rq:?}", a.len());
            got.check_guards(row.requantize_copy.name, &case);
            assert_same(row.requantize_copy.name, &case, got.inner(), &want);
            cases += 3;
        }
    }
    cases
}

fn check_pools(row: &KernelSet, rng: &mut Rng) -> usize {
    let mut cases = 0;
    for &in_w in &SIZES {
        for &stride in &[1usize, 2, 3] {
            for &kw in &[1usize, 2, 3, 5, 12] {
                for _ in 0..4 {
                    let kh = if kw == 12 {
                        12
                    } else {
                        rng.pick(&[1usize, 2, 3])
                    };
                    let in_h = if kw == 12 {
                        rng.usize(12, 14)
                    } else {
                        rng.pick(&SIZES[..6])
                    };
                    let (pl, pr) = (rng.usize(0, kw - 1), rng.usize(0, kw - 1));
                    let (pt, pb) = (rng.usize(0, kh - 1), rng.usize(0, kh - 1));
                    if in_w + pl + pr < kw || in_h + pt + pb < kh {
                        continue;
                    }
                    let g = PoolGeometry {
                        channels: rng.pick(&[1usize, 3]),
                        in_h,
                        in_w,
                        out_h: (in_h + pt + pb - kh) / stride + 1,
                        out_w: (in_w + pl + pr - kw) / stride + 1,
                        kh,
                        kw,
                        stride_h: stride,
                        stride_w: stride,
                        pad_top: pt,
                        pad_left: pl,
                        count_include_pad: rng.usize(0, 1) == 1,
                    };
                    pool_case(row, rng, &g);
                    cases += 2;
                }
            }
        }
    }
    cases
}

/// Max and average pooling on `g` with random data and zero point, with
/// guard bytes around the output.
fn pool_case(row: &KernelSet, rng: &mut Rng, g: &PoolGeometry) {
    let input = rng.i8s(g.input_len());
    let mut want = vec![0x55i8; g.output_len()];
    let mut got = Guarded::new(g.output_len());
    (SCALAR.maxpool2d.run)(g, &input, &mut want);
    abi_call(row.maxpool2d.name, || {
        (row.maxpool2d.run)(g, &input, got.inner())
    });
    let case = format!("{g:?}");
    got.check_guards(row.maxpool2d.name, &case);
    assert_same(row.maxpool2d.name, &case, got.inner(), &want);
    let zp = rng.zp();
    (SCALAR.avgpool2d.run)(g, zp, &input, &mut want);
    abi_call(row.avgpool2d.name, || {
        (row.avgpool2d.run)(g, zp, &input, got.inner())
    });
    let case = format!("{g:?} zp={zp}");
    got.check_guards(row.avgpool2d.name, &case);
    assert_same(row.avgpool2d.name, &case, got.inner(), &want);
}

/// Pooling geometries the random grid does not reach: the usual 3x3 stride-2
/// stem pool on large planes, "ceil mode" outputs whose last window runs past
/// the padding, windows at the 128-tap limit of the i16 sums and past it,
/// and rows so wide that the ARM kernels cut them into strips.
fn check_pool_shapes(row: &KernelSet, rng: &mut Rng) -> usize {
    // (channels, in_h, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w)
    let shapes = [
        (8usize, 56, 56, 3, 3, 2, 1, 1, 28, 28),
        (2, 112, 112, 3, 3, 2, 1, 1, 56, 56),
        (4, 28, 28, 3, 3, 1, 1, 1, 28, 28),
        (3, 7, 7, 2, 2, 2, 0, 0, 4, 4),
        (2, 33, 33, 3, 3, 2, 0, 0, 17, 17),
        (2, 40, 40, 2, 2, 1, 0, 0, 40, 40),
        (2, 16, 40, 8, 16, 1, 3, 7, 16, 40),
        (2, 14, 40, 12, 12, 1, 5, 5, 14, 40),
        (1, 3, 9000, 3, 3, 1, 1, 1, 3, 9000),
        (1, 5, 9001, 3, 3, 2, 1, 0, 3, 4501),
        // SPPF's 5x5 max pools on narrow planes (yolov8n at 320: 10x10).
        (4, 10, 10, 5, 5, 1, 2, 2, 10, 10),
        (3, 20, 20, 5, 5, 1, 2, 2, 20, 20),
        (2, 40, 40, 5, 5, 1, 2, 2, 40, 40),
        // Global average pools (KWS's 25x5, a 7x7 backbone end, a plane
        // whose size is not a multiple of 16, a wide one).
        (64, 25, 5, 25, 5, 1, 0, 0, 1, 1),
        (19, 7, 7, 7, 7, 1, 0, 0, 1, 1),
        (3, 1, 1, 1, 1, 1, 0, 0, 1, 1),
        (2, 60, 80, 60, 80, 1, 0, 0, 1, 1),
    ];
    for (channels, in_h, in_w, kh, kw, s, pt, pl, out_h, out_w) in shapes {
        for count_include_pad in [false, true] {
            let g = PoolGeometry {
                channels,
                in_h,
                in_w,
                out_h,
                out_w,
                kh,
                kw,
                stride_h: s,
                stride_w: s,
                pad_top: pt,
                pad_left: pl,
                count_include_pad,
            };
            pool_case(row, rng, &g);
        }
    }
    2 * shapes.len()
}

/// `row.lut` on random tables over every length around the 16- and
/// 64-byte blocks (and 0), with inputs covering all 256 codes (every table
/// chunk: 256 in order, and 300 and 1000 as the codes rotated, so every
/// code meets every lane position).
fn check_lut(row: &KernelSet, rng: &mut Rng) -> usize {
    let mut cases = 0;
    for &len in LENS.iter().chain(&[0, 63, 64, 65, 127, 128, 129, 256, 300]) {
        let table: [i8; 256] = std::array::from_fn(|_| rng.range(-128, 127) as i8);
        let input: Vec<i8> = if len == 256 || len == 300 || len == 1000 {
            let shift = if len == 256 { 0 } else { rng.usize(1, 255) };
            (0..len).map(|i| ((i + shift) % 256) as u8 as i8).collect()
        } else {
            rng.i8s(len)
        };
        let mut want = vec![0x55i8; len + 3];
        let mut got = want.clone();
        (SCALAR.lut.run)(&table, &input, &mut want[..len]);
        abi_call(row.lut.name, || {
            (row.lut.run)(&table, &input, &mut got[..len])
        });
        assert_same(row.lut.name, &format!("len={len}"), &got, &want);
        cases += 1;
    }
    cases
}

/// `row.quantize` on values around every rounding tie and beyond the int8
/// range, the special floats, scales small and large, zero points at the
/// int8 limits.
///
/// Scales 1e-38 and 1e38 have an inverse past 2^124 / a denormal inverse
/// (where a path that flushes denormals to zero must not be used), and
/// inputs include denormals, the largest finite floats and values past the
/// i32 range of `x / scale`.
fn check_quantize(row: &KernelSet, rng: &mut Rng) -> usize {
    let mut cases = 0;
    for &len in LENS.iter().chain(&[0, 2, 48, 63, 64, 65]) {
        let scale = rng.pick(&[
            1.0f32,
            0.5,
            0.1,
            1.0 / 255.0,
            3.7e-3,
            17.0,
            1e-30,
            1e-38,
            1e38,
        ]);
        let zp = rng.zp();
        let input: Vec<f32> = (0..len)
            .map(|_| match rng.usize(0, 6) {
                // Exact ties of x / scale, both signs.
                0 => (rng.range(-300, 300) as f32 + 0.5) * scale,
                1 => rng.pick(&[
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    0.0,
                    -0.0,
                    3e38,
                    -3e38,
                    f32::MAX,
                    f32::MIN,
                    1e-40,
                    -1e-40,
                    f32::MIN_POSITIVE,
                    3e9 * scale,
                    -3e9 * scale,
                    2147483520.0 * scale,
                    (1u32 << 31) as f32 * scale,
                ]),
                2 => (rng.unit() as f32 - 0.5) * 1e7 * scale,
                _ => (rng.unit() as f32 - 0.5) * 600.0 * scale,
            })
            .collect();
        let mut want = vec![0x55i8; len + 3];
        let mut got = want.clone();
        (SCALAR.quantize.run)(&input, scale, zp, &mut want[..len]);
        abi_call(row.quantize.name, || {
            (row.quantize.run)(&input, scale, zp, &mut got[..len])
        });
        assert_same(
            row.quantize.name,
            &format!("len={len} scale={scale} zp={zp} input={input:?}"),
            &got,
            &want,
        );
        cases += 1;
    }
    cases
}

/// Runs the whole grid on one row: the same seeds, so the same cases, for
/// every row.
fn check_row(row: &KernelSet) -> usize {
    (0..4u64)
        .map(|seed| {
            let mut rng = Rng::new(0x5752_4958 + seed);
            check_gemm_nt(row, &mut rng)
                + check_gemm_nt_sparse(row, &mut rng)
                + check_gemm_4x16c4(row, &mut rng)
                + check_dwconv(row, &mut rng)
                + check_dwconv_shapes(row, &mut rng)
                + check_binary(row, &mut rng)
                + check_pools(row, &mut rng)
                + check_pool_shapes(row, &mut rng)
                + check_lut(row, &mut rng)
                + check_quantize(row, &mut rng)
        })
        .sum()
}

#[test]
fn every_path_matches_the_reference() {
    let required: Vec<String> = std::env::var("STRIX_REQUIRE_ISA")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for r in &required {
        assert!(
            Isa::from_name(r).is_some(),
            "STRIX_REQUIRE_ISA: unknown path {r:?}"
        );
    }
    let (mut tested, mut skipped) = (0, 0);
    let mut missing = Vec::new();
    for isa in Isa::ALL {
        if isa == Isa::Scalar {
            continue; // the reference itself
        }
        let reason = match table::entry(isa) {
            None => Some("not compiled for this target".to_string()),
            Some(_) if !isa.available() => Some(format!("this CPU lacks {}", isa.name())),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            let names = table::entry(isa)
                .map(|r| r.names().join(", "))
                .unwrap_or_else(|| format!("qs8_*__{}", isa.name()));
            eprintln!("SKIP {names}: {reason}");
            skipped += 1;
            if required.iter().any(|r| r == isa.name()) {
                missing.push(format!("{}: {reason}", isa.name()));
            }
            continue;
        }
        let row = table::kernels_for(isa);
        assert_eq!(
            row.isa, isa,
            "kernels_for({isa:?}) returned another row although available"
        );
        let cases = check_row(row);
        eprintln!(
            "ok {}: {cases} cases ({})",
            isa.name(),
            row.names().join(", ")
        );
        tested += 1;
    }
    eprintln!("kernels: {tested} paths tested, {skipped} skipped");
    assert!(
        missing.is_empty(),
        "STRIX_REQUIRE_ISA paths not exercised: {missing:?}"
    );
}

/// The sparse reference itself against the dense reference (the grid above
/// skips the reference row).
#[test]
fn sparse_reference_matches_dense_reference() {
    let cases: usize = (0..4u64)
        .map(|seed| check_gemm_nt_sparse(&SCALAR, &mut Rng::new(0x5350_4152 + seed)))
        .sum();
    assert!(cases > 0);
}

#[test]
fn kernels_for_falls_back_to_the_reference() {
    for isa in Isa::ALL {
        let row = table::kernels_for(isa);
        if isa.available() && table::entry(isa).is_some() {
            assert_eq!(row.isa, isa);
        } else {
            assert_eq!(row.isa, Isa::Scalar);
        }
    }
    assert_eq!(table::TABLE[0].isa, Isa::Scalar);
    // Row names follow the grammar: the reference's name, or the reference's
    // name plus `__<path>` where `<path>` is compiled for this target (a row
    // may install another path's function, e.g. the dot-product row's NEON
    // pooling, and then reports that function's name).
    for row in table::TABLE {
        for (name, reference) in row.names().iter().zip(SCALAR.names()) {
            let ok = *name == reference
                || Isa::ALL.into_iter().any(|p| {
                    table::entry(p).is_some() && *name == format!("{reference}__{}", p.name())
                });
            assert!(ok, "bad kernel name {name} in the {:?} row", row.isa);
        }
    }
}

/// The addresses of a row's functions, in [`table::KernelSet::names`] order.
fn runs(r: &table::KernelSet) -> [usize; 13] {
    [
        r.gemm_nt.run as usize,
        r.gemm_nt_f32out.run as usize,
        r.gemm_nt_sparse.run as usize,
        r.gemm_4x16c4.run as usize,
        r.dwconv2d.run as usize,
        r.vadd.run as usize,
        r.vmul.run as usize,
        r.maxpool2d.run as usize,
        r.avgpool2d.run as usize,
        r.requantize_copy.run as usize,
        r.lut.run as usize,
        r.quantize.run as usize,
        r.gemm_4x16c4_f32out.run as usize,
    ]
}

/// A name belongs to its function: wherever two rows install the same
/// function, they report the same name (so a row reusing the NEON pooling
/// cannot call it `qs8_maxpool2d__dotprod`), and a `__<path>` name is the one
/// that path's own row reports for that op.
#[test]
fn kernel_names_come_from_the_function() {
    for a in table::TABLE {
        for b in table::TABLE {
            for (i, (fa, fb)) in runs(a).iter().zip(runs(b)).enumerate() {
                if *fa == fb {
                    assert_eq!(
                        a.names()[i],
                        b.names()[i],
                        "the {:?} and {:?} rows run one function under two names",
                        a.isa,
                        b.isa
                    );
                }
            }
        }
        for (i, name) in a.names().iter().enumerate() {
            if let Some((_, path)) = name.split_once("__") {
                let owner = Isa::from_name(path).and_then(table::entry);
                assert_eq!(
                    owner.map(|o| o.names()[i]),
                    Some(*name),
                    "{name} in the {:?} row is not the {path} row's own kernel",
                    a.isa
                );
            }
        }
    }
}
