//! Test harness shared by the ARM paths (aarch64 and 32-bit arm): bit-exact
//! comparison of an NT gemm implementation with the reference on an edge-case
//! grid, visible skips, and the `STRIX_REQUIRE_ISA` detection check.

extern crate std;

use std::io::Write;
use std::vec;
use std::vec::Vec;

use crate::reference::{qs8_gemm_nt, qs8_gemm_nt_f32out, QOut};
use crate::requant::Requant;
use crate::Isa;

pub type GemmFn =
    fn(usize, usize, usize, &[i8], &[i8], &[i32], &[Requant], &QOut, &mut [i8], usize, usize);
pub type GemmF32Fn =
    fn(usize, usize, usize, &[i8], &[i8], &[i32], &[f32], f32, f32, &mut [f32], usize, usize);

/// xorshift64*: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
}

/// int8 data in one of several modes: uniform, saturated extremes, mixed.
pub fn fill_i8(rng: &mut Rng, len: usize, mode: u64) -> Vec<i8> {
    (0..len)
        .map(|_| match mode % 5 {
            0 | 1 => rng.next() as i8,
            2 => -128,
            3 => 127,
            _ => [-128i8, 127, -127, 0, rng.next() as i8][rng.range(0, 4) as usize],
        })
        .collect()
}

/// Compares `f`/`g` with the reference on `(m, n, k)` in three output layouts.
/// Requantization shifts stay <= 0 here (the `requantize` contract for any
/// |acc| < 2^31); left shifts are covered by the output-stage unit test.
#[allow(clippy::too_many_arguments)]
pub fn check_case(name: &str, f: GemmFn, g: GemmF32Fn, m: usize, n: usize, k: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = fill_i8(&mut rng, m * k + 5, seed);
    let b = fill_i8(&mut rng, n * k + 3, seed / 5);
    // Contract: k * 2^14 + |bias| < 2^31.
    // (128 less, so that `requantize(acc) + out_zp` cannot overflow either:
    // the reference would panic in debug builds.)
    let lim = ((1i64 << 30) + (1 << 29)).min((1i64 << 31) - 129 - (k as i64) * (1 << 14));
    // Typical |acc| of uniform data ~ 5461 * sqrt(k): scale it to ~ +-64 so the
    // int8 outputs spread over the range instead of saturating.
    let log_acc = (64 - ((5461.0 * libm::sqrt(k as f64) + 1.0) as u64).leading_zeros()) as i64;
    let mut bias = Vec::with_capacity(m);
    let mut rq = Vec::with_capacity(m);
    for _ in 0..m {
        let (bi, shift) = match rng.range(0, 3) {
            // Extremes: bias at the contract bound, any shift.
            0 => (
                if rng.range(0, 1) == 0 { lim } else { -lim },
                rng.range(-31, 1),
            ),
            1 => (rng.range(-lim, lim), rng.range(-31, 0)),
            // Realistic: outputs mostly inside int8.
            _ => (
                rng.range(-(1 << log_acc), 1 << log_acc),
                (6 - log_acc + rng.range(-2, 2)).clamp(-31, 1),
            ),
        };
        bias.push(bi as i32);
        let mult = if rng.range(0, 15) == 0 {
            0
        } else {
            rng.range(1 << 30, i32::MAX as i64) as i32
        };
        rq.push(Requant {
            mult,
            shift: shift as i32,
        });
    }
    let scale: Vec<f32> = (0..m)
        .map(|_| rng.range(1, 1 << 20) as f32 * 1e-9)
        .collect();
    let lo = rng.range(-128, 0) as i8;
    let hi = rng.range(lo as i64, 127) as i8;
    let q = QOut {
        out_zp: rng.range(-128, 127) as i32,
        act_min: lo,
        act_max: hi,
    };
    let (flo, fhi) = if rng.range(0, 1) == 0 {
        (f32::NEG_INFINITY, f32::INFINITY)
    } else {
        (-0.5, 3.0)
    };
    // Row-major, transposed (column-major), row-major with padded rows.
    for (rs, cs, len) in [(n, 1, m * n), (1, m, m * n), (n + 3, 1, m * (n + 3))] {
        let mut want = vec![0x55i8; len];
        let mut got = want.clone();
        qs8_gemm_nt(m, n, k, &a, &b, &bias, &rq, &q, &mut want, rs, cs);
        f(m, n, k, &a, &b, &bias, &rq, &q, &mut got, rs, cs);
        if want != got {
            let idx = want.iter().zip(&got).position(|(x, y)| x != y).unwrap();
            panic!(
                "{name}: m={m} n={n} k={k} rs={rs} cs={cs} seed={seed}: out[{idx}] = {} want {}",
                got[idx], want[idx]
            );
        }
        let mut wantf = vec![-7.25f32; len];
        let mut gotf = wantf.clone();
        qs8_gemm_nt_f32out(m, n, k, &a, &b, &bias, &scale, flo, fhi, &mut wantf, rs, cs);
        g(m, n, k, &a, &b, &bias, &scale, flo, fhi, &mut gotf, rs, cs);
        for (idx, (x, y)) in wantf.iter().zip(&gotf).enumerate() {
            assert!(
                x.to_bits() == y.to_bits(),
                "{name} (f32out): m={m} n={n} k={k} rs={rs} cs={cs} seed={seed}: out[{idx}] = {y} want {x}"
            );
        }
    }
}

/// The edge-case grid: every k tail class, odd and even m/n, saturated values,
/// bias near the contract's bound; plus two larger shapes.
pub fn check_gemm(name: &str, f: GemmFn, g: GemmF32Fn) {
    let ks = [0usize, 1, 7, 8, 9, 12, 15, 16, 17, 27, 31, 32, 33, 100, 257];
    let mns = [1usize, 2, 3, 4, 5, 7, 8, 9, 13];
    let mut seed = 1u64;
    for &k in &ks {
        for &m in &mns {
            for &n in &mns {
                check_case(name, f, g, m, n, k, seed);
                seed += 1;
            }
        }
    }
    check_case(name, f, g, 64, 256, 576, 12345);
    check_case(name, f, g, 17, 35, 1000, 777);
    check_case(name, f, g, 0, 5, 16, 1);
    check_case(name, f, g, 5, 0, 16, 2);
}

/// True if `isa` is available; else prints a visible `SKIP` line to stderr.
pub fn available_or_skip(kernel: &str, isa: Isa) -> bool {
    if isa.available() {
        return true;
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {kernel}: this CPU lacks the {} extension (runtime detection)",
        isa.name()
    );
    false
}

/// `STRIX_REQUIRE_ISA=a,b,...` (or `none`): for each path of this
/// architecture (`paths`), listed ones must be available and unlisted ones
/// must not be, so a wrong detection fails the test. Unset: no check.
pub fn check_required_isa(paths: &[Isa]) {
    let Ok(req) = std::env::var("STRIX_REQUIRE_ISA") else {
        let _ = writeln!(
            std::io::stderr(),
            "STRIX_REQUIRE_ISA unset: detection not checked"
        );
        return;
    };
    let listed: Vec<&str> = req
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .collect();
    for s in &listed {
        assert!(
            Isa::from_name(s).is_some(),
            "STRIX_REQUIRE_ISA: unknown path {s}"
        );
    }
    for &isa in paths {
        let want = listed.contains(&isa.name());
        assert_eq!(
            isa.available(),
            want,
            "STRIX_REQUIRE_ISA={req}: {}.available() = {}",
            isa.name(),
            isa.available()
        );
    }
}
