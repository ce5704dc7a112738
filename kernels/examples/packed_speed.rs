//! Wall time of the two ungrouped-conv paths of one kernel row on a few conv
//! layers: im2row tiles through `gemm_nt` (`driver::qs8_conv2d_gemm`, the
//! path of rows with `conv_packed: false`) against packed panels through
//! `gemm_4x16c4` (`driver::stage_input` + `driver::qs8_conv2d_packed_tile`
//! over all pixels, what the runtime runs on one thread). Runs alternate
//! between the paths; each line prints the medians and old / packed.
//!
//! `cargo run -p strix-kernels --release --example packed_speed [isa] [runs]
//! [layer]` (isa defaults to the detected one, runs to 31; `layer` keeps the
//! layers whose name contains it). The two outputs are
//! checked equal to the reference conv first.

use std::time::Instant;

use strix_kernels::driver::{self, PackPlan, PackedConv};
use strix_kernels::reference::{self, ConvGeometry, QConvParams};
use strix_kernels::{quantize_multiplier, table, Isa, Requant};

/// `(name, in_c, out_c, size, kernel, stride)`; padding keeps `size / stride`.
const LAYERS: [(&str, usize, usize, usize, usize, usize); 6] = [
    ("1x1 96->24 56x56", 96, 24, 56, 1, 1),
    ("1x1 24->144 56x56", 24, 144, 56, 1, 1),
    ("3x3 64->64 40x40", 64, 64, 40, 3, 1),
    ("3x3/2 32->64 80x80", 32, 64, 80, 3, 2),
    ("1x1 320->1280 7x7", 320, 1280, 7, 1, 1),
    ("3x3 128->128 20x20", 128, 128, 20, 3, 1),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let isa = match args.get(1) {
        Some(s) => Isa::from_name(s).unwrap_or_else(|| panic!("unknown isa {s}")),
        None => Isa::detect(),
    };
    let runs: usize = args.get(2).map_or(31, |s| s.parse().expect("runs"));
    let only = args.get(3).map_or("", String::as_str);
    let ks = table::kernels_for(isa);
    println!(
        "row {} (gemm_nt {}, gemm_4x16c4 {}), {runs} interleaved runs, medians",
        ks.isa.name(),
        ks.gemm_nt.name,
        ks.gemm_4x16c4.name
    );
    let mut seed = 0x1234_5678u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let (mut sum_old, mut sum_new) = (0.0, 0.0);
    for &(name, in_c, out_c, size, kern, stride) in &LAYERS {
        if !name.contains(only) {
            continue;
        }
        let pad = kern / 2;
        let out = size / stride;
        let g = ConvGeometry {
            in_c,
            in_h: size,
            in_w: size,
            out_c,
            out_h: out,
            out_w: out,
            kh: kern,
            kw: kern,
            stride_h: stride,
            stride_w: stride,
            dil_h: 1,
            dil_w: 1,
            pad_top: pad,
            pad_left: pad,
            groups: 1,
        };
        assert!(g.is_valid(), "{name}");
        let k = g.k();
        let x: Vec<i8> = (0..g.input_len()).map(|_| rnd() as i8).collect();
        let w: Vec<i8> = (0..out_c * k).map(|_| rnd() as i8).collect();
        let bias: Vec<i32> = (0..out_c)
            .map(|_| (rnd() % 20_000) as i32 - 10_000)
            .collect();
        // Outputs spread over the int8 range: sums of about 5500 sqrt(k).
        let rq: Vec<Requant> = (0..out_c)
            .map(|i| {
                quantize_multiplier(40.0 / (5500.0 * (k as f64).sqrt() * (1.0 + 0.01 * i as f64)))
            })
            .collect();
        let q = QConvParams {
            in_zp: -3,
            out_zp: 5,
            act_min: -128,
            act_max: 127,
        };
        let fb = driver::fold_bias(&w, &bias, k, q.in_zp).expect("bias in range");
        let pc = PackedConv::new(&g, &w).expect("plan");
        let plan: &PackPlan = &pc.plan;
        let pixels = g.out_h * g.out_w;

        let mut want = vec![0i8; g.output_len()];
        reference::qs8_conv2d(&g, &q, &x, &w, &bias, &rq, &mut want);

        let mut scratch_old = vec![0i8; driver::conv_scratch_len(&g)];
        let mut out_old = vec![0i8; g.output_len()];
        let mut old = |out: &mut [i8]| {
            driver::qs8_conv2d_gemm(ks, &g, &q, &x, &w, &fb, &rq, &mut scratch_old, out)
        };
        let mut staged = vec![0i8; plan.staged_len];
        let mut scratch_new = vec![0i8; driver::packed_conv_scratch_len(&g)];
        let mut out_new = vec![0i8; g.output_len()];
        let mut new = |out: &mut [i8]| {
            driver::stage_input(&g, plan, q.in_zp as i8, &x, &mut staged);
            let src: &[i8] = if plan.staged_len == 0 { &x } else { &staged };
            driver::qs8_conv2d_packed_tile(
                ks,
                &g,
                plan,
                &q,
                src,
                &pc.weights,
                &pc.pairs,
                &fb,
                &rq,
                0,
                pixels,
                &mut scratch_new,
                out,
                pixels,
            )
        };
        old(&mut out_old);
        new(&mut out_new);
        assert!(
            out_old == want,
            "{name}: im2row path differs from the reference"
        );
        assert!(
            out_new == want,
            "{name}: packed path differs from the reference"
        );

        let (mut t_old, mut t_new) = (Vec::new(), Vec::new());
        for r in 0..runs {
            // Alternate which path goes first, so neither always runs warm.
            for first in [r % 2 == 0, r % 2 != 0] {
                let t = Instant::now();
                if first {
                    old(&mut out_old);
                    t_old.push(t.elapsed().as_secs_f64());
                } else {
                    new(&mut out_new);
                    t_new.push(t.elapsed().as_secs_f64());
                }
            }
        }
        let (mo, mn) = (median(&mut t_old), median(&mut t_new));
        sum_old += mo;
        sum_new += mn;
        let gmac = g.macs() as f64 / 1e9;
        println!(
            "{name:<20} im2row+gemm_nt {:>8.1} us ({:>5.1} GMAC/s)  packed {:>8.1} us ({:>5.1} GMAC/s)  old/packed {:.2}",
            mo * 1e6,
            gmac / mo,
            mn * 1e6,
            gmac / mn,
            mo / mn
        );
    }
    println!(
        "{:<20} im2row+gemm_nt {:>8.1} us                 packed {:>8.1} us                 old/packed {:.2}",
        "sum",
        sum_old * 1e6,
        sum_new * 1e6,
        sum_old / sum_new
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
