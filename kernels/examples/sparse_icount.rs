//! Instruction-count workload for dense vs block-sparse int8 convolution
//! kernels (single-threaded), the ARM counterpart of `sparse_speed` (whose
//! wall times mean nothing under qemu).
//!
//! Runs one layer of `sparse_speed`'s shape list through the kernels only
//! (`gemm_nt` or `gemm_nt_sparse` of the `STRIX_ISA` row of the kernel table,
//! over the conv driver's `CONV_TILE`-pixel tiles of precomputed im2row rows)
//! `ITERS` times, then prints the kernel name and a checksum of the output.
//! The weights are the same random matrix with `ZERO` percent of its 1x4
//! blocks zeroed for both kernels, so the dense and sparse checksums must
//! agree (the example also checks the sparse output against the dense one,
//! once, at every `ITERS`). `scripts/icount.sh sparse` runs it under qemu with
//! `/work/shared/tools/qemu-icount` and subtracts the `ITERS = 0` run.
//!
//! Usage: `sparse_icount SHAPE dense|sparse ZERO ITERS`, SHAPE one of the
//! names printed by `sparse_icount list`.

use strix_kernels::driver::{fold_bias, fold_bias_sparse, CONV_TILE};
use strix_kernels::reference::{pack_sparse, sparse_scratch_len, QOut, SPARSE_BLOCK};
use strix_kernels::table::kernels_for;
use strix_kernels::{quantize_multiplier, Isa, Requant};

/// `(name, in_c, out_c, h = w, kernel size)`: `sparse_speed`'s layers.
const SHAPES: [(&str, usize, usize, usize, usize); 8] = [
    ("pw32-16-112", 32, 16, 112, 1),
    ("pw64-8-56", 64, 8, 56, 1),
    ("pw96-24-56", 96, 24, 56, 1),
    ("pw144-24-56", 144, 24, 56, 1),
    ("pw192-32-28", 192, 32, 28, 1),
    ("pw384-64-14", 384, 64, 14, 1),
    ("pw576-160-14", 576, 160, 14, 1),
    ("3x3-32-64-28", 32, 64, 28, 3),
];

fn usage() -> ! {
    eprintln!(
        "usage: sparse_icount SHAPE dense|sparse ZERO_PERCENT ITERS  (or: sparse_icount list)"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("list") {
        for s in SHAPES {
            println!("{}", s.0);
        }
        return;
    }
    if args.len() != 4 {
        usage();
    }
    let Some(&(name, in_c, m, hw, kh)) = SHAPES.iter().find(|s| s.0 == args[0]) else {
        usage()
    };
    let sparse = match args[1].as_str() {
        "dense" => false,
        "sparse" => true,
        _ => usage(),
    };
    let zero: u32 = args[2].parse().unwrap_or_else(|_| usage());
    let iters: usize = args[3].parse().unwrap_or_else(|_| usage());
    let isa = Isa::forced(std::env::var("STRIX_ISA").ok().as_deref())
        .unwrap_or_else(|e| {
            eprintln!("sparse_icount: STRIX_ISA: {e}");
            std::process::exit(2)
        })
        .unwrap_or_else(Isa::detect);
    let ks = kernels_for(isa);

    let (k, p) = (in_c * kh * kh, hw * hw);
    let mut s = 0x2545_f491u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    let rows: Vec<i8> = (0..p * k).map(|_| next() as i8).collect();
    let mut w: Vec<i8> = (0..m * k).map(|_| (next() % 255) as i8).collect();
    for blk in w.chunks_mut(SPARSE_BLOCK) {
        if next() % 100 < zero {
            blk.fill(0);
        }
    }
    let bias: Vec<i32> = (0..m as i32).map(|i| i * 100 - 3000).collect();
    let rq: Vec<Requant> = (0..m)
        .map(|i| quantize_multiplier(1.0 / (4000.0 + i as f64 * 10.0)))
        .collect();
    let qo = QOut {
        out_zp: 3,
        act_min: -128,
        act_max: 127,
    };
    // The driver folds the input zero point into the bias the same way for
    // both; -5 as in sparse_speed.
    let fb = fold_bias(&w, &bias, k, -5).unwrap();
    let sp = pack_sparse(m, k, &w).unwrap();
    let sv = sp.view();
    let fbs = fold_bias_sparse(&sv, &bias, -5).unwrap();
    let mut pack = vec![0i8; sparse_scratch_len(CONV_TILE, k)];
    let mut out = vec![0i8; m * p];

    let run = |out: &mut [i8], pack: &mut [i8], sparse: bool| {
        for p0 in (0..p).step_by(CONV_TILE) {
            let t = CONV_TILE.min(p - p0);
            let b = &rows[p0 * k..(p0 + t) * k];
            if sparse {
                (ks.gemm_nt_sparse.run)(t, &sv, b, &fbs, &rq, &qo, &mut out[p0..], p, 1, pack);
            } else {
                (ks.gemm_nt.run)(m, t, k, &w, b, &fb, &rq, &qo, &mut out[p0..], p, 1);
            }
        }
    };
    // The check runs at every ITERS (also 0), so it cancels out of the
    // per-call difference the script takes.
    let mut dense_out = vec![0i8; m * p];
    run(&mut dense_out, &mut pack, false);
    run(&mut out, &mut pack, true);
    assert_eq!(out, dense_out, "{name}: sparse output differs from dense");
    for _ in 0..iters {
        run(&mut out, &mut pack, sparse);
        std::hint::black_box(&mut out);
    }
    let checksum = out.iter().fold(0u32, |h, &v| {
        h.wrapping_mul(31).wrapping_add(v as u8 as u32)
    });
    let kernel = if sparse {
        ks.gemm_nt_sparse.name
    } else {
        ks.gemm_nt.name
    };
    println!(
        "sparse_icount shape={name} zero={zero}% kernel={kernel} iters={iters} blocks={} checksum={checksum:08x}",
        sv.nnz_blocks()
    );
}
