//! Times `gemm_nt` (int8 out) of every runnable path on the gemm shapes real
//! models produce (m = output channels, n = pixels per conv tile, k = reduction)
//! and prints GMAC/s. `cargo run -p strix-kernels --release --example gemm_shapes`.

use std::time::{Duration, Instant};

use strix_kernels::reference::QOut;
use strix_kernels::table::{self, TABLE};
use strix_kernels::{quantize_multiplier, Requant};

const SHAPES: [(usize, usize, usize); 8] = [
    (32, 64, 16),
    (96, 64, 16),
    (144, 64, 24),
    (192, 64, 32),
    (64, 64, 576),
    (16, 64, 27),
    (384, 64, 64),
    (1000, 1, 1280),
];

fn main() {
    print!("{:<16}", "m,n,k");
    let rows: Vec<_> = TABLE
        .iter()
        .filter(|row| table::kernels_for(row.isa).isa == row.isa)
        .collect();
    for row in &rows {
        print!(" {:>22}", row.gemm_nt.name);
    }
    println!("   (GMAC/s)");
    for &(m, n, k) in &SHAPES {
        // Deterministic pseudo-random operands (an LCG; the values do not matter).
        let mut s = 12345u32;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8 as i8
        };
        let a: Vec<i8> = (0..m * k).map(|_| next().max(-127)).collect();
        let b: Vec<i8> = (0..n * k).map(|_| next()).collect();
        let bias: Vec<i32> = (0..m as i32).map(|i| i * 100 - 3_000).collect();
        let rq: Vec<Requant> = (0..m)
            .map(|i| quantize_multiplier(1.0 / (200.0 * k as f64 + i as f64)))
            .collect();
        let q = QOut {
            out_zp: -3,
            act_min: -128,
            act_max: 127,
        };
        print!("{:<16}", format!("{m},{n},{k}"));
        let mut reference_out: Option<Vec<i8>> = None;
        for row in &rows {
            let mut out = vec![0i8; m * n];
            // Conv layout: output row stride = pixels, column stride 1.
            let run =
                |out: &mut [i8]| (row.gemm_nt.run)(m, n, k, &a, &b, &bias, &rq, &q, out, n, 1);
            run(&mut out); // warm-up
                           // Batches of calls lasting ~1 ms; best batch over >= 0.3 s.
            let batch = (1_000_000 / (m * n * k).max(1)).max(1);
            let mut best = Duration::MAX;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(300) {
                let t = Instant::now();
                for _ in 0..batch {
                    run(std::hint::black_box(&mut out));
                }
                best = best.min(t.elapsed() / batch as u32);
            }
            let gmacs = (m * n * k) as f64 / best.as_secs_f64() / 1e9;
            print!(" {gmacs:>22.2}");
            match &reference_out {
                None => reference_out = Some(out),
                Some(r) => assert_eq!(r, &out, "{} differs from the reference", row.gemm_nt.name),
            }
        }
        println!();
    }
}
