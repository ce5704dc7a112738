//! Dense vs block-sparse int8 convolution on the detected kernel path
//! (`STRIX_ISA` overrides), at 0/30/50/80/90% zero 1x4 blocks, on MobileNet-like
//! pointwise shapes (8 to 160 output channels) and a 3x3 conv. Two timings per case:
//!
//! * `gemm`: the kernels alone (`gemm_nt` vs `gemm_nt_sparse`) over the
//!   driver's 64-pixel tiles of precomputed im2row rows;
//! * `conv`: the whole driver (`qs8_conv2d_gemm` vs `qs8_conv2d_gemm_sparse`),
//!   im2row included (the same cost in both).
//!
//! Every sparse output is checked against the dense one (bit for bit).
//! `cargo run -p strix-kernels --release --example sparse_speed`.

use std::time::{Duration, Instant};

use strix_kernels::driver::{
    conv_scratch_len, fold_bias, fold_bias_sparse, qs8_conv2d_gemm, qs8_conv2d_gemm_sparse,
    sparse_conv_scratch_len, CONV_TILE,
};
use strix_kernels::reference::{
    pack_sparse, sparse_scratch_len, ConvGeometry, QConvParams, QOut, SPARSE_BLOCK,
};
use strix_kernels::table::kernels_for;
use strix_kernels::{quantize_multiplier, Isa, Requant};

/// Best wall time of `f` over at least 0.3 s and 5 runs.
fn time(mut f: impl FnMut()) -> Duration {
    f();
    let mut best = Duration::MAX;
    let start = Instant::now();
    let mut reps = 0;
    while start.elapsed() < Duration::from_millis(300) || reps < 5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        reps += 1;
    }
    best
}

fn geom(in_c: usize, out_c: usize, hw: usize, kh: usize) -> ConvGeometry {
    ConvGeometry {
        in_c,
        in_h: hw,
        in_w: hw,
        out_c,
        out_h: hw,
        out_w: hw,
        kh,
        kw: kh,
        stride_h: 1,
        stride_w: 1,
        dil_h: 1,
        dil_w: 1,
        pad_top: kh / 2,
        pad_left: kh / 2,
        groups: 1,
    }
}

fn main() {
    let isa = Isa::forced(std::env::var("STRIX_ISA").ok().as_deref())
        .unwrap_or_else(|e| panic!("STRIX_ISA: {e}"))
        .unwrap_or_else(Isa::detect);
    let ks = kernels_for(isa);
    println!("path: {} / {}", ks.gemm_nt.name, ks.gemm_nt_sparse.name);
    let shapes = [
        ("pw 32->16 112x112", geom(32, 16, 112, 1)),
        ("pw 64->8 56x56", geom(64, 8, 56, 1)),
        ("pw 96->24 56x56", geom(96, 24, 56, 1)),
        ("pw 144->24 56x56", geom(144, 24, 56, 1)),
        ("pw 192->32 28x28", geom(192, 32, 28, 1)),
        ("pw 384->64 14x14", geom(384, 64, 14, 1)),
        ("pw 576->160 14x14", geom(576, 160, 14, 1)),
        ("3x3 32->64 28x28", geom(32, 64, 28, 3)),
    ];
    let mut s = 0x2545_f491u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    println!(
        "{:<18} {:>5} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7}",
        "shape", "zero", "gemm us", "sparse us", "x", "conv us", "sparse us", "x"
    );
    for (name, g) in shapes {
        let (k, m, p) = (g.k(), g.out_c, g.out_h * g.out_w);
        let x: Vec<i8> = (0..g.input_len()).map(|_| next() as i8).collect();
        let dense_w: Vec<i8> = (0..m * k).map(|_| (next() % 255) as i8).collect();
        let bias: Vec<i32> = (0..m as i32).map(|i| i * 100 - 3000).collect();
        let rq: Vec<Requant> = (0..m)
            .map(|i| quantize_multiplier(1.0 / (4000.0 + i as f64 * 10.0)))
            .collect();
        let q = QConvParams {
            in_zp: -5,
            out_zp: 3,
            act_min: -128,
            act_max: 127,
        };
        let qo = QOut {
            out_zp: 3,
            act_min: -128,
            act_max: 127,
        };
        // im2row rows of every pixel, for the kernel-only timing: a 1x1
        // stride-1 conv's rows are the transposed input.
        let rows: Vec<i8> = if g.kh == 1 {
            (0..p)
                .flat_map(|j| (0..k).map(move |c| (j, c)))
                .map(|(j, c)| x[c * p + j])
                .collect()
        } else {
            (0..p * k).map(|_| next() as i8).collect()
        };
        for zero in [0.0, 0.3, 0.5, 0.8, 0.9] {
            let mut w = dense_w.clone();
            for blk in w.chunks_mut(SPARSE_BLOCK) {
                if (next() % 1000) as f64 / 1000.0 < zero {
                    blk.fill(0);
                }
            }
            let sp = pack_sparse(m, k, &w).unwrap();
            let sv = sp.view();
            let fb = fold_bias(&w, &bias, k, q.in_zp).unwrap();
            let fbs = fold_bias_sparse(&sv, &bias, q.in_zp).unwrap();

            // Kernels only, over the driver's tiles.
            let mut od = vec![0i8; m * p];
            let mut os = vec![0i8; m * p];
            let mut pack = vec![0i8; sparse_scratch_len(CONV_TILE, k)];
            let td = time(|| {
                for p0 in (0..p).step_by(CONV_TILE) {
                    let t = CONV_TILE.min(p - p0);
                    let b = &rows[p0 * k..(p0 + t) * k];
                    (ks.gemm_nt.run)(m, t, k, &w, b, &fb, &rq, &qo, &mut od[p0..], p, 1);
                }
            });
            let ts = time(|| {
                for p0 in (0..p).step_by(CONV_TILE) {
                    let t = CONV_TILE.min(p - p0);
                    let b = &rows[p0 * k..(p0 + t) * k];
                    (ks.gemm_nt_sparse.run)(
                        t,
                        &sv,
                        b,
                        &fbs,
                        &rq,
                        &qo,
                        &mut os[p0..],
                        p,
                        1,
                        &mut pack,
                    );
                }
            });
            assert_eq!(od, os, "{name}: sparse gemm differs from dense");

            // The whole conv driver.
            let mut cd = vec![0i8; g.output_len()];
            let mut cs = vec![0i8; g.output_len()];
            let mut scr = vec![0i8; conv_scratch_len(&g)];
            let mut scr_s = vec![0i8; sparse_conv_scratch_len(&g)];
            let cdt = time(|| qs8_conv2d_gemm(ks, &g, &q, &x, &w, &fb, &rq, &mut scr, &mut cd));
            let cst = time(|| {
                qs8_conv2d_gemm_sparse(ks, &g, &q, &x, &sv, &fbs, &rq, &mut scr_s, &mut cs)
            });
            assert_eq!(cd, cs, "{name}: sparse conv differs from dense");
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "{:<18} {:>4.0}% {:>10.1} {:>10.1} {:>6.2}x {:>10.1} {:>10.1} {:>6.2}x",
                name,
                zero * 100.0,
                us(td),
                us(ts),
                td.as_secs_f64() / ts.as_secs_f64(),
                us(cdt),
                us(cst),
                cdt.as_secs_f64() / cst.as_secs_f64(),
            );
        }
    }
}
