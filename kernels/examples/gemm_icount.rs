//! Instruction-count workload for the int8 NT gemm paths (single-threaded).
//!
//! Runs `qs8_gemm_nt` on a fixed problem (m = 64, n = 256, k = 576: a 3x3 conv
//! with 64 input and 64 output channels over a 16x16 tile) `ITERS` times with
//! the path chosen by `STRIX_ISA` (see [`Isa::forced`]; unset: [`Isa::detect`]), then prints the path
//! and a checksum of the output (identical for every path). Meant to run under
//! qemu with `/work/shared/tools/qemu-icount`; `scripts/icount.sh gemm` does
//! that for every path and subtracts the `ITERS = 0` run (setup and exit).
//!
//! Usage: `gemm_icount [ITERS]` (default 10).

use strix_kernels::reference::{self, QOut};
use strix_kernels::{Isa, Requant};

type GemmNtFn =
    fn(usize, usize, usize, &[i8], &[i8], &[i32], &[Requant], &QOut, &mut [i8], usize, usize);

fn path(isa: Isa) -> GemmNtFn {
    match isa {
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => strix_kernels::aarch64::qs8_gemm_nt__neon,
        #[cfg(target_arch = "aarch64")]
        Isa::Dotprod => strix_kernels::aarch64::qs8_gemm_nt__dotprod,
        #[cfg(target_arch = "aarch64")]
        Isa::I8mm => strix_kernels::aarch64::qs8_gemm_nt__i8mm,
        #[cfg(target_arch = "arm")]
        Isa::Armv7Neon => strix_kernels::arm::qs8_gemm_nt__armv7neon,
        Isa::Scalar => reference::qs8_gemm_nt,
        #[allow(unreachable_patterns)]
        other => {
            eprintln!(
                "gemm_icount: no {} gemm in this example on this target",
                other.name()
            );
            std::process::exit(2)
        }
    }
}

fn main() {
    let iters: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().expect("ITERS must be a number"),
        None => 10,
    };
    let isa = Isa::forced(std::env::var("STRIX_ISA").ok().as_deref())
        .unwrap_or_else(|e| {
            eprintln!("gemm_icount: STRIX_ISA: {e}");
            std::process::exit(2)
        })
        .unwrap_or_else(Isa::detect);
    let gemm = path(isa);

    let (m, n, k) = (64usize, 256usize, 576usize);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let a: Vec<i8> = (0..m * k).map(|_| next() as i8).collect();
    let b: Vec<i8> = (0..n * k).map(|_| next() as i8).collect();
    let bias: Vec<i32> = (0..m).map(|_| (next() % 20001) as i32 - 10000).collect();
    let rq: Vec<Requant> = (0..m)
        .map(|_| Requant {
            mult: (1 << 30) + (next() % (1 << 30)) as i32,
            shift: -10,
        })
        .collect();
    let q = QOut {
        out_zp: -3,
        act_min: -128,
        act_max: 127,
    };
    let mut out = vec![0i8; m * n];

    for _ in 0..iters {
        gemm(m, n, k, &a, &b, &bias, &rq, &q, &mut out, n, 1);
        std::hint::black_box(&mut out);
    }
    let checksum = out.iter().fold(0u32, |h, &v| {
        h.wrapping_mul(31).wrapping_add(v as u8 as u32)
    });
    println!(
        "gemm_icount isa={} m={m} n={n} k={k} iters={iters} checksum={checksum:08x}",
        isa.name()
    );
}
