//! Times `gemm_nt` of every runnable path on one conv-sized problem
//! (m=64 output channels, n=256 pixels, k=576 = 64 channels x 3x3) and prints
//! GMAC/s. `cargo run -p strix-kernels --release --example gemm_speed`.

use std::time::{Duration, Instant};

use strix_kernels::reference::QOut;
use strix_kernels::table::{self, TABLE};
use strix_kernels::{quantize_multiplier, Requant};

fn main() {
    let (m, n, k) = (64usize, 256usize, 576usize);
    // Deterministic pseudo-random operands (an LCG; the values do not matter).
    let mut s = 12345u32;
    let mut next = || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 24) as u8 as i8
    };
    let a: Vec<i8> = (0..m * k).map(|_| next().max(-127)).collect();
    let b: Vec<i8> = (0..n * k).map(|_| next()).collect();
    let bias: Vec<i32> = (0..m as i32).map(|i| i * 1000 - 30_000).collect();
    let rq: Vec<Requant> = (0..m)
        .map(|i| quantize_multiplier(1.0 / (20_000.0 + i as f64 * 100.0)))
        .collect();
    let q = QOut {
        out_zp: -3,
        act_min: -128,
        act_max: 127,
    };
    let mut reference_out = None;
    for row in TABLE {
        if table::kernels_for(row.isa).isa != row.isa {
            println!(
                "{:<24} skipped: not available on this CPU",
                row.gemm_nt.name
            );
            continue;
        }
        let mut out = vec![0i8; m * n];
        let run = |out: &mut [i8]| (row.gemm_nt.run)(m, n, k, &a, &b, &bias, &rq, &q, out, n, 1);
        run(&mut out); // warm-up
                       // Repeat for at least 0.5 s and keep the best of several batches.
        let mut best = Duration::MAX;
        let start = Instant::now();
        let mut reps = 0;
        while start.elapsed() < Duration::from_millis(500) || reps < 5 {
            let t = Instant::now();
            run(&mut out);
            best = best.min(t.elapsed());
            reps += 1;
        }
        let gmacs = (m * n * k) as f64 / best.as_secs_f64() / 1e9;
        println!(
            "{:<24} {:>8.1} us  {:>6.2} GMAC/s  ({reps} runs)",
            row.gemm_nt.name,
            best.as_secs_f64() * 1e6,
            gmacs
        );
        // Same output as the reference, as a sanity check of the timing setup.
        match &reference_out {
            None => reference_out = Some(out),
            Some(r) => assert_eq!(r, &out, "{} differs from the reference", row.gemm_nt.name),
        }
    }
}
