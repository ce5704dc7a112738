//! Instruction-count workload for the non-gemm int8 kernels (single-threaded).
//!
//! Runs one op of the kernel-table row chosen by `STRIX_ISA` (see
//! [`Isa::forced`]; unset: [`Isa::detect`]) `ITERS` times on a fixed mobilenet-like shape, then
//! prints the kernel name and a checksum of the output (identical for every
//! path). Meant to run under qemu with `/work/shared/tools/qemu-icount`;
//! `scripts/icount.sh ops` does that for every path and subtracts the
//! `ITERS = 0` run (setup and exit).
//!
//! Usage: `ops_icount OP [ITERS]` (default 10), OP one of
//! `dw_s2` (3x3 depthwise, 96 channels, 56x56 -> 28x28, stride 2, TF-SAME pad),
//! `dw_s1` (3x3 depthwise, 144 channels, 28x28, stride 1, pad 1),
//! `dw_14` (3x3 depthwise, 576 channels, 14x14, stride 1, pad 1),
//! `dw_7` (3x3 depthwise, 960 channels, 7x7, stride 1, pad 1),
//! `vadd`, `vmul`, `requant` (32x56x56 = 100352 elements),
//! `maxpool` (3x3 stride 2 pad 1, 64 channels 56x56 -> 28x28),
//! `avgpool` (3x3 stride 1 pad 1, 32 channels 28x28).

use strix_kernels::reference::{ConvGeometry, PoolGeometry, QAddParams, QConvParams, QMulParams};
use strix_kernels::shape::Dims;
use strix_kernels::table::kernels_for;
use strix_kernels::{quantize_multiplier, Isa, Requant};

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_default();
    let iters: usize = match args.next() {
        Some(s) => s.parse().expect("ITERS must be a number"),
        None => 10,
    };
    let isa = Isa::forced(std::env::var("STRIX_ISA").ok().as_deref())
        .unwrap_or_else(|e| {
            eprintln!("ops_icount: STRIX_ISA: {e}");
            std::process::exit(2)
        })
        .unwrap_or_else(Isa::detect);
    let row = kernels_for(isa);

    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut bytes = |n: usize| (0..n).map(|_| next() as i8).collect::<Vec<i8>>();

    let (name, out): (&str, Vec<i8>) = match op.as_str() {
        "dw_s2" | "dw_s1" | "dw_14" | "dw_7" => {
            let (c, hw, s, pt) = match op.as_str() {
                "dw_s2" => (96, 56, 2, 0),
                "dw_s1" => (144, 28, 1, 1),
                "dw_14" => (576, 14, 1, 1),
                _ => (960, 7, 1, 1),
            };
            let out_hw = if s == 2 { hw / 2 } else { hw };
            let g = ConvGeometry {
                in_c: c,
                in_h: hw,
                in_w: hw,
                out_c: c,
                out_h: out_hw,
                out_w: out_hw,
                kh: 3,
                kw: 3,
                stride_h: s,
                stride_w: s,
                dil_h: 1,
                dil_w: 1,
                pad_top: pt,
                pad_left: pt,
                groups: c,
            };
            let input = bytes(g.input_len());
            let w: Vec<i8> = bytes(g.weight_len())
                .into_iter()
                .map(|x| x.max(-127))
                .collect();
            let bias: Vec<i32> = (0..c).map(|i| (i as i32 * 977) % 20001 - 10000).collect();
            let rq: Vec<Requant> = (0..c)
                .map(|i| quantize_multiplier(0.002 + 0.0001 * i as f64))
                .collect();
            let q = QConvParams {
                in_zp: -5,
                out_zp: 3,
                act_min: -128,
                act_max: 127,
            };
            let mut out = vec![0i8; g.output_len()];
            for _ in 0..iters {
                (row.dwconv2d.run)(&g, &q, &input, &w, &bias, &rq, &mut out);
                std::hint::black_box(&mut out);
            }
            (row.dwconv2d.name, out)
        }
        "vadd" | "vmul" | "requant" => {
            let n = 32 * 56 * 56;
            let d = Dims::new(&[1, 32, 56, 56]);
            let (a, b) = (bytes(n), bytes(n));
            let mut out = vec![0i8; n];
            let name = match op.as_str() {
                "vadd" => {
                    let p = QAddParams {
                        a_zp: 3,
                        b_zp: -7,
                        out_zp: 1,
                        a_rq: quantize_multiplier(0.5),
                        b_rq: quantize_multiplier(0.37),
                        out_rq: quantize_multiplier(1.3 / (1u64 << 20) as f64),
                        act_min: -128,
                        act_max: 127,
                    };
                    for _ in 0..iters {
                        (row.vadd.run)(&p, &a, &d, &b, &d, &mut out, &d);
                        std::hint::black_box(&mut out);
                    }
                    row.vadd.name
                }
                "vmul" => {
                    let p = QMulParams {
                        a_zp: 3,
                        b_zp: -7,
                        out_zp: 1,
                        rq: quantize_multiplier(0.004),
                        act_min: -128,
                        act_max: 127,
                    };
                    for _ in 0..iters {
                        (row.vmul.run)(&p, &a, &d, &b, &d, &mut out, &d);
                        std::hint::black_box(&mut out);
                    }
                    row.vmul.name
                }
                _ => {
                    let rq = quantize_multiplier(0.71);
                    for _ in 0..iters {
                        (row.requantize_copy.run)(&a, 4, rq, -2, &mut out);
                        std::hint::black_box(&mut out);
                    }
                    row.requantize_copy.name
                }
            };
            (name, out)
        }
        "maxpool" | "avgpool" => {
            let max = op == "maxpool";
            let (c, hw, s) = if max { (64, 56, 2) } else { (32, 28, 1) };
            let g = PoolGeometry {
                channels: c,
                in_h: hw,
                in_w: hw,
                out_h: (hw + 2 - 3) / s + 1,
                out_w: (hw + 2 - 3) / s + 1,
                kh: 3,
                kw: 3,
                stride_h: s,
                stride_w: s,
                pad_top: 1,
                pad_left: 1,
                count_include_pad: false,
            };
            let input = bytes(g.input_len());
            let mut out = vec![0i8; g.output_len()];
            for _ in 0..iters {
                if max {
                    (row.maxpool2d.run)(&g, &input, &mut out);
                } else {
                    (row.avgpool2d.run)(&g, -3, &input, &mut out);
                }
                std::hint::black_box(&mut out);
            }
            let name = if max {
                row.maxpool2d.name
            } else {
                row.avgpool2d.name
            };
            (name, out)
        }
        _ => {
            eprintln!(
                "ops_icount: OP must be dw_s2, dw_s1, dw_14, dw_7, vadd, vmul, requant, maxpool or avgpool"
            );
            std::process::exit(2)
        }
    };
    let checksum = out.iter().fold(0u32, |h, &v| {
        h.wrapping_mul(31).wrapping_add(v as u8 as u32)
    });
    println!(
        "ops_icount op={op} kernel={name} isa={} iters={iters} checksum={checksum:08x}",
        isa.name()
    );
}
