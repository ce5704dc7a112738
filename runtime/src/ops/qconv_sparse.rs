//! `QConvSparse`: an ungrouped int8 conv with block-sparse weights (1x4
//! blocks along the reduction, block CSR), inputs `[x, values (i8), blocks
//! (i32), row_ptr (i32), bias (i32), requant]`. Bit-identical to `QConv` on
//! the dense weights: the folded bias is the dense one, and the threads
//! split the same pixel tiles or output-channel slices (row ranges of the
//! sparse weights).

use super::conv::{geometry_ok, sizes, tile_len};
use super::ctx::{macs_of, qact_ok, want, zp_ok, Ctx, Res, Run};
use super::Prep;
use crate::graph::{DType, Graph, Node};
use crate::par::{split_conv, Workers};
use crate::validate::MAX_QS8_REDUCTION;
use strix_kernels::driver::{self as drv, fold_bias_sparse, sparse_conv_scratch_len};
use strix_kernels::reference::{ConvGeometry, QConvParams, SparseWeights};
use strix_kernels::table::KernelSet;
use strix_kernels::Requant;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "QConvSparse";

/// Multiply-accumulates as executed over `batch` images: only the stored
/// blocks (`inputs[2]` holds one block column per stored block; 0 when the
/// node has no such input).
pub(crate) fn executed_macs(g: &Graph, n: &Node, geom: &ConvGeometry, batch: usize) -> u64 {
    let stored = n
        .inputs
        .get(2)
        .and_then(|&b| g.tensors.get(b))
        .map_or(0, |t| t.len());
    macs_of(&[
        stored,
        strix_kernels::reference::SPARSE_BLOCK,
        geom.out_h,
        geom.out_w,
        batch,
    ])
}

/// The sparse weights of a node (inputs 1-3), if they are constants
/// forming a valid block-CSR view; validation reports the view's error.
fn weights<'a>(cx: &Ctx<'a>, geom: &ConvGeometry) -> Result<SparseWeights<'a>, String> {
    SparseWeights::new(
        geom.out_c,
        geom.k(),
        cx.const_i32(3).unwrap_or(&[]),
        cx.const_i32(2).unwrap_or(&[]),
        cx.const_i8(1).unwrap_or(&[]),
    )
    .map_err(|e| format!("sparse weights: {e}"))
}

pub(super) fn validate(cx: &Ctx, geom: &ConvGeometry, q: &QConvParams) -> Res {
    cx.arity(6, 6)?;
    cx.dtype(0, DType::I8)?;
    cx.dtype(1, DType::I8)?;
    cx.dtype(2, DType::I32)?;
    cx.dtype(3, DType::I32)?;
    cx.dtype(4, DType::I32)?;
    cx.out_dtype(DType::I8)?;
    geometry_ok(geom, cx.input(0), cx.output())?;
    let (_, k) = sizes(geom)?;
    want(k <= MAX_QS8_REDUCTION, || {
        format!("reduction {k} exceeds the int8 bound")
    })?;
    want(geom.groups == 1, || {
        format!("sparse conv must be ungrouped, has {} groups", geom.groups)
    })?;
    want((1..=4).all(|k| cx.is_const(k)), || {
        "sparse weights, blocks, row_ptr and bias must be constants".into()
    })?;
    let sw = weights(cx, geom)?;
    want(cx.input(4).len() == geom.out_c, || "bias size".into())?;
    cx.requant(5, geom.out_c)?;
    want(zp_ok(q.in_zp) && zp_ok(q.out_zp), || {
        "bad zero point".into()
    })?;
    qact_ok(q.act_min, q.act_max)?;
    want(
        cx.const_i32(4)
            .and_then(|b| fold_bias_sparse(&sw, b, q.in_zp))
            .is_some(),
        || "bias with the folded input zero point exceeds the int8 bound".into(),
    )
}

/// The folded bias (always: validation refused weights it would not fold),
/// the scratch of the sparse driver and the worker tile.
pub(super) fn prepare(cx: &Ctx, geom: &ConvGeometry, q: &QConvParams) -> Prep {
    let folded = weights(cx, geom)
        .ok()
        .zip(cx.const_i32(4))
        .and_then(|(sw, b)| fold_bias_sparse(&sw, b, q.in_zp));
    Prep {
        packed: None,
        folded,
        scratch: sparse_conv_scratch_len(geom),
        // Threads split sparse convs into the dense convs' tiles.
        tile: tile_len(geom),
        scratch_f32: 0,
    }
}

pub(super) fn run(
    r: &Run,
    wk: &mut Workers,
    geom: &ConvGeometry,
    q: &QConvParams,
    o: &mut [i8],
) -> Res {
    let (x, vals, blocks, row_ptr, rq) = (r.i8(0)?, r.i8(1)?, r.i32(2)?, r.i32(3)?, r.requant(5)?);
    // O(out_c + blocks), no allocation: the view's invariants are what keep
    // the kernels in bounds.
    let w = SparseWeights::new(geom.out_c, geom.k(), row_ptr, blocks, vals)
        .map_err(|e| format!("sparse weights: {e}"))?;
    let fb = r.folded.ok_or("sparse conv: bias folding failed")?;
    let (il, ol) = (geom.input_len(), geom.output_len());
    for bi in 0..r.shape(0)[0] {
        let (xi, oi) = (&x[bi * il..(bi + 1) * il], &mut o[bi * ol..(bi + 1) * ol]);
        conv_sparse(wk, r.ks, geom, q, xi, &w, fb, rq, oi)?;
    }
    Ok(())
}

/// [`drv::qs8_conv2d_gemm_sparse`] on the session's threads: the dense
/// convs' pixel tiles or output-channel slices (row ranges of `w`). The
/// threshold counts the stored blocks' multiply-accumulates only.
#[allow(clippy::too_many_arguments)]
fn conv_sparse(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    x: &[i8],
    w: &SparseWeights,
    fb: &[i32],
    rq: &[Requant],
    out: &mut [i8],
) -> Res {
    let dense_blocks = (w.m() * w.k_blocks()).max(1);
    let macs = (g.macs() as u128 * w.nnz_blocks() as u128 / dense_blocks as u128) as usize;
    split_conv(wk, g, macs, out, &|c0, c1, p0, t, s, o, rs| {
        if t == g.out_h * g.out_w && rs == t && c0 == 0 && c1 == g.out_c {
            drv::qs8_conv2d_gemm_sparse(ks, g, q, x, w, fb, rq, s, o);
        } else {
            drv::qs8_conv2d_gemm_sparse_tile(
                ks,
                g,
                q,
                x,
                &w.rows(c0, c1),
                &fb[c0..c1],
                &rq[c0..c1],
                p0,
                t,
                s,
                o,
                rs,
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Op;
    use crate::graph::Storage;
    use crate::kernels::Prepared;
    use crate::ops::test_graph::{assert_varied, codes, conv_geom, noise_i8, q, run, TestGraph};
    use crate::par::PAR_MIN_MACS;
    use strix_kernels::driver::CONV_TILE;
    use strix_kernels::reference::{pack_sparse, qs8_conv2d, SPARSE_BLOCK};
    use strix_kernels::table::{kernels_for, SCALAR};
    use strix_kernels::{quantize_multiplier, Isa};

    /// Sparse convs split over 1-4 threads give the reference's bytes: pixel
    /// tiles (many pixels), channel slices (fewer than `2 * MIN_TILE` pixels,
    /// cut into row ranges of the sparse weights), and the serial fallback
    /// (too little stored work), on the reference and the detected path.
    #[test]
    fn sparse_convs_are_bit_identical_on_1_to_4_threads() {
        let mut s = 0x9e37_79b9u32;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        // (in_c, out_c, hw, kernel, zero fraction in %, splits?)
        let shapes = [
            (96, 24, 28, 1, 80, true), // 784 pixels: tiles
            (64, 40, 14, 3, 80, true), // 3x3, 196 pixels: tiles
            (256, 52, 5, 1, 70, true), // 25 pixels: channel slices
            (256, 19, 4, 3, 80, true), // 16 pixels, odd channels: slices
            (16, 8, 12, 1, 90, false), // under PAR_MIN_MACS: serial
        ];
        for (in_c, out_c, hw, kh, zero, splits) in shapes {
            let g = ConvGeometry {
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
            };
            let k = g.k();
            let x: Vec<i8> = (0..g.input_len()).map(|_| rnd() as i8).collect();
            let mut w: Vec<i8> = (0..out_c * k).map(|_| (rnd() % 255) as i8).collect();
            for blk in w.chunks_mut(SPARSE_BLOCK) {
                if rnd() % 100 < zero {
                    blk.fill(0);
                }
            }
            let b: Vec<i32> = (0..out_c).map(|_| (rnd() % 20001) as i32 - 10000).collect();
            let rq: Vec<_> = (0..out_c)
                .map(|i| quantize_multiplier(0.0003 * (i % 5 + 1) as f64))
                .collect();
            let q = QConvParams {
                in_zp: -7,
                out_zp: 2,
                act_min: -128,
                act_max: 110,
            };
            let mut want = vec![0i8; g.output_len()];
            qs8_conv2d(&g, &q, &x, &w, &b, &rq, &mut want);
            let sp = pack_sparse(out_c, k, &w).unwrap();
            let sv = sp.view();
            let fb = fold_bias_sparse(&sv, &b, q.in_zp).unwrap();
            let work = g.macs() * sv.nnz_blocks() / (out_c * sv.k_blocks());
            assert_eq!(work >= PAR_MIN_MACS, splits, "{g:?}: {work} stored MACs");
            for ks in [&SCALAR, kernels_for(Isa::detect())] {
                let prepared = Prepared {
                    isa: ks.isa,
                    ks,
                    folded: vec![],
                    packed: vec![],
                    repacked: vec![],
                    lean: false,
                    staged: 0,
                    scratch: sparse_conv_scratch_len(&g),
                    tile: g.out_c * CONV_TILE.min(g.out_h * g.out_w),
                    scratch_f32: 0,
                    f16_as_f32: vec![],
                };
                for threads in 1..=4 {
                    let mut wk = Workers::new(&prepared, threads).unwrap();
                    // Twice: dirty scratch and tiles must not matter.
                    for _ in 0..2 {
                        let mut got = vec![0x5a; g.output_len()];
                        conv_sparse(&mut wk, ks, &g, &q, &x, &sv, &fb, &rq, &mut got).unwrap();
                        assert!(
                            got == want,
                            "{} {g:?}: {threads} threads differ from the reference",
                            ks.gemm_nt_sparse.name
                        );
                    }
                }
            }
        }
    }

    /// `x -> Quantize -> QConvSparse` on weights with 60% zero blocks: the
    /// bytes of the dense reference conv, with the dense folded bias, on
    /// every path and thread count; validation refuses a broken block CSR.
    #[test]
    fn qconv_sparse_validates_prepares_and_runs() {
        let geom = conv_geom(32, 12, 32, 3, 1, 1);
        let qp = QConvParams {
            in_zp: 6,
            out_zp: 1,
            act_min: -128,
            act_max: 127,
        };
        let k = geom.k();
        let mut w = noise_i8(geom.weight_len(), 3, -127, 127);
        let keep = noise_i8(w.len() / SPARSE_BLOCK, 4, 0, 9);
        for (blk, &kb) in w.chunks_mut(SPARSE_BLOCK).zip(&keep) {
            if kb < 6 {
                blk.fill(0);
            }
        }
        let b: Vec<i32> = noise_i8(geom.out_c, 5, -128, 127)
            .iter()
            .map(|&v| v as i32 * 50)
            .collect();
        let rq: Vec<_> = (0..geom.out_c)
            .map(|o| quantize_multiplier(0.0002 * (o % 3 + 1) as f64))
            .collect();
        let sp = pack_sparse(geom.out_c, k, &w).unwrap();
        let mut t = TestGraph::new();
        let xi = t.input_i8(&[1, 32, 12, 12], q(6));
        let vi = t.const_i8(&[sp.values.len()], &sp.values);
        let bli = t.const_i32(&[sp.blocks.len()], &sp.blocks);
        let rpi = t.const_i32(&[sp.row_ptr.len()], &sp.row_ptr);
        let bi = t.const_i32(&[geom.out_c], &b);
        let ri = t.const_requant(&rq);
        let y = t.act_i8(&[1, 32, 12, 12], q(1));
        let op = Op::QConvSparse { geom, q: qp };
        t.node(op, &[xi, vi, bli, rpi, bi, ri], y);
        let model = t.load().unwrap();
        let dense_fold = strix_kernels::driver::fold_bias(&w, &b, k, qp.in_zp);
        assert_eq!(model.prepared.folded[1], dense_fold);
        assert_eq!(model.prepared.scratch, sparse_conv_scratch_len(&geom));
        let x = noise_i8(geom.input_len(), 6, -128, 127);
        let got = run(&model, &[&codes(&x, q(6))]).i8();
        let mut want = vec![0; geom.output_len()];
        qs8_conv2d(&geom, &qp, &x, &w, &b, &rq, &mut want);
        assert_eq!(got, want);
        assert_varied(&got, 50);

        // The last row pointer must be the number of blocks.
        let mut bad = t.clone();
        let Storage::Const { offset } = bad.g.tensors[rpi].storage else {
            unreachable!()
        };
        bad.c.i32[offset + geom.out_c] -= 1;
        let e = bad.load_err();
        assert!(e.contains("sparse weights"), "{e}");
    }
}
