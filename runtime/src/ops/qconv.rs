//! `QConv` (int8 conv, inputs `[x, w (i8), bias (i32), requant]`) and
//! `QConvF32` (int8 conv with f32 output, inputs `[x, w (i8), bias (i32),
//! scale (f32 per output channel)]`).
//!
//! Ungrouped convs run through the gemm driver of the kernel path (im2row
//! tiles into per-thread scratch, then the NT gemm), with the input zero
//! point folded into the bias at prepare; their threads split pixel tiles
//! or output channels (`par::split_conv`). Depthwise convs run the path's
//! depthwise kernel, split by channel; other grouped convs, and convs whose
//! folded bias would leave the kernels' bound, run the reference kernel.

use super::conv::{geometry_ok, sizes, tile_len};
use super::ctx::{act_ok, bias_ok, qact_ok, want, zp_ok, Ctx, Packed, Res, Run};
use super::Prep;
use crate::graph::DType;
use crate::par::{split_channels, split_conv, Workers};
use crate::pool::SharedOut;
use crate::validate::MAX_QS8_REDUCTION;
use strix_kernels::driver::{
    self as drv, conv_scratch_len, fold_bias, packed_conv_scratch_len, uses_gemm, PackedConv,
};
use strix_kernels::reference::{self as k, ConvGeometry, QConvParams};
use strix_kernels::table::KernelSet;
use strix_kernels::Requant;

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "QConv";
/// The f32-output form's name in `inspect` and errors.
pub(crate) const F32OUT_NAME: &str = "QConvF32";

pub(super) fn validate(cx: &Ctx, geom: &ConvGeometry, q: &QConvParams) -> Res {
    cx.arity(4, 4)?;
    cx.dtype(0, DType::I8)?;
    cx.dtype(1, DType::I8)?;
    cx.dtype(2, DType::I32)?;
    cx.out_dtype(DType::I8)?;
    geometry_ok(geom, cx.input(0), cx.output())?;
    let (wl, k) = sizes(geom)?;
    want(cx.is_const(1) && cx.input(1).len() == wl, || {
        "weights size".into()
    })?;
    want(cx.is_const(2) && cx.input(2).len() == geom.out_c, || {
        "bias size".into()
    })?;
    cx.requant(3, geom.out_c)?;
    want(k <= MAX_QS8_REDUCTION, || {
        format!("reduction {k} exceeds the int8 bound")
    })?;
    want(zp_ok(q.in_zp) && zp_ok(q.out_zp), || {
        "bad zero point".into()
    })?;
    qact_ok(q.act_min, q.act_max)
}

pub(super) fn validate_f32out(
    cx: &Ctx,
    geom: &ConvGeometry,
    in_zp: i32,
    act_min: f32,
    act_max: f32,
) -> Res {
    cx.arity(4, 4)?;
    cx.dtype(0, DType::I8)?;
    cx.dtype(1, DType::I8)?;
    cx.dtype(2, DType::I32)?;
    cx.dtype(3, DType::F32)?;
    cx.out_dtype(DType::F32)?;
    geometry_ok(geom, cx.input(0), cx.output())?;
    let (wl, k) = sizes(geom)?;
    want(cx.is_const(1) && cx.input(1).len() == wl, || {
        "weights size".into()
    })?;
    want(
        cx.is_const(2) && cx.input(2).len() == geom.out_c && cx.input(3).len() == geom.out_c,
        || "bias/scale size".into(),
    )?;
    want(k <= MAX_QS8_REDUCTION, || {
        format!("reduction {k} exceeds the int8 bound")
    })?;
    want(zp_ok(in_zp), || "bad zero point".into())?;
    act_ok(act_min, act_max)?;
    bias_ok(cx.c, cx.input(2))
}

/// Ungrouped convs get the folded bias (`None` if a folded value leaves the
/// kernels' bound: `run` then takes the reference kernel), and on paths
/// whose `conv_packed` is set, for the geometries `drv::packs_well` names,
/// the weights packed for `gemm_4x16c4` and one activation panel of
/// scratch; elsewhere the im2row scratch. The worker
/// tile is for the threads' pixel pieces either way.
pub(super) fn prepare(cx: &Ctx, ks: &KernelSet, geom: &ConvGeometry, in_zp: i32) -> Prep {
    let mut p = prepare_common(cx, geom, in_zp);
    if ks.conv_packed && drv::packs_well(geom) && p.folded.is_some() {
        if let Some(pc) = cx.const_i8(1).and_then(|w| PackedConv::new(geom, w)) {
            p.scratch = packed_conv_scratch_len(geom);
            p.packed = Some(pc);
        }
    }
    p
}

/// `QConvF32`: as `QConv`, on paths whose `conv_packed_f32out` is set.
pub(super) fn prepare_f32out(cx: &Ctx, ks: &KernelSet, geom: &ConvGeometry, in_zp: i32) -> Prep {
    let mut p = prepare_common(cx, geom, in_zp);
    if ks.conv_packed_f32out && drv::packs_well(geom) && p.folded.is_some() {
        if let Some(pc) = cx.const_i8(1).and_then(|w| PackedConv::new(geom, w)) {
            p.scratch = drv::packed_conv_scratch_len_f32out(geom);
            p.packed = Some(pc);
        }
    }
    p
}

/// The common part: the folded bias, im2row scratch and worker tile of
/// ungrouped convs.
fn prepare_common(cx: &Ctx, geom: &ConvGeometry, in_zp: i32) -> Prep {
    if !uses_gemm(geom) {
        return Prep::default();
    }
    let folded = cx
        .const_i8(1)
        .zip(cx.const_i32(2))
        .and_then(|(w, b)| fold_bias(w, b, geom.k(), in_zp));
    Prep {
        folded,
        packed: None,
        scratch: conv_scratch_len(geom),
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
    let (x, w, b, rq) = (r.i8(0)?, r.i8(1)?, r.i32(2)?, r.requant(3)?);
    let (il, ol) = (geom.input_len(), geom.output_len());
    for bi in 0..r.shape(0)[0] {
        let (xi, oi) = (&x[bi * il..(bi + 1) * il], &mut o[bi * ol..(bi + 1) * ol]);
        match (r.folded, r.packed) {
            (Some(fb), Some(pk)) => conv_packed(wk, r.ks, geom, q, xi, pk, fb, rq, oi)?,
            (Some(fb), None) => conv_i8(wk, r.ks, geom, q, xi, w, fb, rq, oi)?,
            (None, _) if drv::is_depthwise(geom) => dwconv(wk, r.ks, geom, q, xi, w, b, rq, oi)?,
            (None, _) => k::qs8_conv2d(geom, q, xi, w, b, rq, oi),
        }
    }
    Ok(())
}

pub(super) fn run_f32out(
    r: &Run,
    wk: &mut Workers,
    geom: &ConvGeometry,
    in_zp: i32,
    (act_min, act_max): (f32, f32),
    o: &mut [f32],
) -> Res {
    let (x, w, b, sc) = (r.i8(0)?, r.i8(1)?, r.i32(2)?, r.f32(3)?);
    let (il, ol) = (geom.input_len(), geom.output_len());
    for bi in 0..r.shape(0)[0] {
        let (xi, oi) = (&x[bi * il..(bi + 1) * il], &mut o[bi * ol..(bi + 1) * ol]);
        match (r.folded, r.packed) {
            (Some(fb), Some(pk)) => conv_packed_f32(
                wk,
                r.ks,
                geom,
                in_zp,
                (act_min, act_max),
                xi,
                pk,
                fb,
                sc,
                oi,
            )?,
            (Some(fb), None) => {
                conv_f32(wk, r.ks, geom, in_zp, (act_min, act_max), xi, w, fb, sc, oi)?
            }
            (None, _) => k::qs8_conv2d_f32out(geom, in_zp, act_min, act_max, xi, w, b, sc, oi),
        }
    }
    Ok(())
}

/// [`drv::qs8_conv2d_gemm`] on the session's threads.
#[allow(clippy::too_many_arguments)]
fn conv_i8(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    x: &[i8],
    w: &[i8],
    fb: &[i32],
    rq: &[Requant],
    out: &mut [i8],
) -> Res {
    let k = g.k();
    split_conv(wk, g, g.macs(), out, &|c0, c1, p0, t, s, o, rs| {
        if t == g.out_h * g.out_w && rs == t && c0 == 0 && c1 == g.out_c {
            drv::qs8_conv2d_gemm(ks, g, q, x, w, fb, rq, s, o);
        } else {
            drv::qs8_conv2d_gemm_tile(
                ks,
                g,
                q,
                x,
                &w[c0 * k..c1 * k],
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

/// [`drv::qs8_conv2d_packed_tile`] on the session's threads: the input is
/// staged once into the session's shared buffer (when the plan needs it),
/// then the pieces read it (channel pieces start at multiples of 4, as
/// `split_conv` cuts them, so each begins at a packed weight group).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_packed(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    x: &[i8],
    pk: Packed,
    fb: &[i32],
    rq: &[Requant],
    out: &mut [i8],
) -> Res {
    let group = g.k().div_ceil(4) * 16;
    let plan = &pk.conv.plan;
    let mut staged = wk.take_staged();
    let res = (|| {
        let staged = staged
            .get_mut(..plan.staged_len)
            .ok_or("staging buffer too small")?;
        drv::stage_input(g, plan, q.in_zp as i8, x, staged);
        let src: &[i8] = if plan.staged_len == 0 { x } else { staged };
        split_conv(wk, g, g.macs(), out, &|c0, c1, p0, t, s, o, rs| {
            debug_assert!(c0 % 4 == 0, "channel piece at {c0}");
            drv::qs8_conv2d_packed_tile(
                ks,
                g,
                plan,
                q,
                src,
                &pk.weights[c0 / 4 * group..],
                &pk.conv.pairs[c0 / 4..],
                &fb[c0..c1],
                &rq[c0..c1],
                p0,
                t,
                s,
                o,
                rs,
            );
        })
    })();
    wk.put_staged(staged);
    res
}

/// [`drv::qs8_conv2d_packed_f32out_tile`] on the session's threads, staged
/// as [`conv_packed`].
#[allow(clippy::too_many_arguments)]
fn conv_packed_f32(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    in_zp: i32,
    act: (f32, f32),
    x: &[i8],
    pk: Packed,
    fb: &[i32],
    scale: &[f32],
    out: &mut [f32],
) -> Res {
    let group = g.k().div_ceil(4) * 16;
    let plan = &pk.conv.plan;
    let mut staged = wk.take_staged();
    let res = (|| {
        let staged = staged
            .get_mut(..plan.staged_len)
            .ok_or("staging buffer too small")?;
        drv::stage_input(g, plan, in_zp as i8, x, staged);
        let src: &[i8] = if plan.staged_len == 0 { x } else { staged };
        split_conv(wk, g, g.macs(), out, &|c0, c1, p0, t, s, o, rs| {
            debug_assert!(c0 % 4 == 0, "channel piece at {c0}");
            drv::qs8_conv2d_packed_f32out_tile(
                ks,
                g,
                plan,
                act,
                src,
                &pk.weights[c0 / 4 * group..],
                &fb[c0..c1],
                &scale[c0..c1],
                p0,
                t,
                s,
                o,
                rs,
            );
        })
    })();
    wk.put_staged(staged);
    res
}

/// [`drv::qs8_conv2d_gemm_f32out`] on the session's threads.
#[allow(clippy::too_many_arguments)]
fn conv_f32(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    in_zp: i32,
    act: (f32, f32),
    x: &[i8],
    w: &[i8],
    fb: &[i32],
    scale: &[f32],
    out: &mut [f32],
) -> Res {
    let k = g.k();
    split_conv(wk, g, g.macs(), out, &|c0, c1, p0, t, s, o, rs| {
        if t == g.out_h * g.out_w && rs == t && c0 == 0 && c1 == g.out_c {
            drv::qs8_conv2d_gemm_f32out(ks, g, in_zp, act.0, act.1, x, w, fb, scale, s, o);
        } else {
            drv::qs8_conv2d_gemm_f32out_tile(
                ks,
                g,
                in_zp,
                act.0,
                act.1,
                x,
                &w[c0 * k..c1 * k],
                &fb[c0..c1],
                &scale[c0..c1],
                p0,
                t,
                s,
                o,
                rs,
            );
        }
    })
}

/// The depthwise kernel on the session's threads, split by channel (each
/// channel is an independent plane, so a channel slice is a smaller depthwise
/// conv of the same kind).
#[allow(clippy::too_many_arguments)]
fn dwconv(
    wk: &mut Workers,
    ks: &KernelSet,
    g: &ConvGeometry,
    q: &QConvParams,
    x: &[i8],
    w: &[i8],
    b: &[i32],
    rq: &[Requant],
    out: &mut [i8],
) -> Res {
    let Some(pool) = wk.pool_for(g.macs()) else {
        (ks.dwconv2d.run)(g, q, x, w, b, rq, out);
        return Ok(());
    };
    let (pi, po, kk) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let dst = SharedOut(out.as_mut_ptr());
    // 16: the channel block of the depthwise kernels that vectorise across
    // channels (x86 and AArch64 HWC blocks).
    split_channels(pool, g.out_c, 16, &|c0, c1| {
        let sub = ConvGeometry {
            in_c: c1 - c0,
            out_c: c1 - c0,
            groups: c1 - c0,
            ..*g
        };
        // SAFETY: output planes c0..c1 are this piece's alone.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(c0 * po), (c1 - c0) * po) };
        let (xs, ws) = (&x[c0 * pi..c1 * pi], &w[c0 * kk..c1 * kk]);
        if c1 - c0 > 1 {
            (ks.dwconv2d.run)(&sub, q, xs, ws, &b[c0..c1], &rq[c0..c1], o);
        } else {
            // One channel is an ungrouped conv, not a depthwise geometry.
            k::qs8_conv2d(&sub, q, xs, ws, &b[c0..c1], &rq[c0..c1], o);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Packed;
    use crate::graph::{DType, Op};
    use crate::ops::test_graph::{assert_varied, codes, conv_geom, noise_i8, q, run, TestGraph};
    use strix_kernels::driver::{conv_scratch_len, packed_conv_scratch_len};
    use strix_kernels::reference::{self as k, ConvGeometry, QConvParams};
    use strix_kernels::{quantize_multiplier, Requant};

    /// `x -> Quantize -> QConv or QConvF32` with random weights; the
    /// input codes to feed and the node's constants.
    struct Case {
        t: TestGraph,
        x: Vec<i8>,
        w: Vec<i8>,
        b: Vec<i32>,
        rq: Vec<Requant>,
        scale: Vec<f32>,
    }

    fn case(geom: ConvGeometry, in_zp: i32, f32_out: bool) -> Case {
        let mut t = TestGraph::new();
        let xi = t.input_i8(&[1, geom.in_c, geom.in_h, geom.in_w], q(in_zp));
        let w = noise_i8(geom.weight_len(), 7, -127, 127);
        let b: Vec<i32> = noise_i8(geom.out_c, 8, -128, 127)
            .iter()
            .map(|&v| v as i32 * 40)
            .collect();
        let wi = t.const_i8(&[geom.out_c, geom.in_c / geom.groups, geom.kh, geom.kw], &w);
        let bi = t.const_i32(&[geom.out_c], &b);
        let oshape = [1, geom.out_c, geom.out_h, geom.out_w];
        let scale: Vec<f32> = (0..geom.out_c).map(|o| 1e-5 * (o % 3 + 1) as f32).collect();
        let rq: Vec<_> = (0..geom.out_c)
            .map(|o| quantize_multiplier(0.0004 * (o % 4 + 1) as f64))
            .collect();
        if f32_out {
            let si = t.const_f32(&[geom.out_c], &scale);
            let y = t.act_f32(&oshape);
            let op = Op::QConvF32 {
                geom,
                in_zp,
                act_min: -3.0,
                act_max: 5.0,
            };
            t.node(op, &[xi, wi, bi, si], y);
        } else {
            let ri = t.const_requant(&rq);
            let y = t.act_i8(&oshape, q(-5));
            t.node(
                Op::QConv {
                    geom,
                    q: params(in_zp),
                },
                &[xi, wi, bi, ri],
                y,
            );
        }
        let x = noise_i8(geom.input_len(), 9, -128, 127);
        Case {
            t,
            x,
            w,
            b,
            rq,
            scale,
        }
    }

    fn params(in_zp: i32) -> QConvParams {
        QConvParams {
            in_zp,
            out_zp: -5,
            act_min: -120,
            act_max: 127,
        }
    }

    /// Ungrouped (the gemm driver, with a folded bias, its scratch, and a
    /// split over threads), depthwise (the depthwise kernel, split by
    /// channel) and grouped (the reference) convs give the reference's bytes.
    #[test]
    fn qconv_validates_prepares_and_runs() {
        for (geom, gemm) in [
            (conv_geom(16, 12, 32, 3, 1, 1), true),
            (conv_geom(8, 9, 12, 1, 2, 1), true),
            (conv_geom(24, 10, 36, 1, 1, 1), true),
            (conv_geom(16, 32, 16, 3, 1, 16), false),
            (conv_geom(8, 6, 4, 3, 1, 2), false),
        ] {
            let c = case(geom, 3, false);
            let model = c.t.load().unwrap();
            let p = &model.prepared;
            assert_eq!(p.folded[1].is_some(), gemm, "{geom:?}");
            let packed = gemm && p.ks.conv_packed && strix_kernels::driver::packs_well(&geom);
            assert_eq!(p.packed[1].is_some(), packed);
            let scratch = match (gemm, packed) {
                (false, _) => 0,
                (true, true) => packed_conv_scratch_len(&geom),
                (true, false) => conv_scratch_len(&geom),
            };
            assert_eq!(p.scratch, scratch);
            let got = run(&model, &[&codes(&c.x, q(3))]).i8();
            let mut want = vec![0; geom.output_len()];
            k::qs8_conv2d(&geom, &params(3), &c.x, &c.w, &c.b, &c.rq, &mut want);
            assert_eq!(got, want, "{geom:?}");
            assert_varied(&got, 20);
        }
    }

    #[test]
    fn qconv_f32out_validates_prepares_and_runs() {
        for geom in [conv_geom(16, 12, 32, 3, 1, 1), conv_geom(6, 5, 6, 3, 1, 3)] {
            let c = case(geom, -4, true);
            let model = c.t.load().unwrap();
            assert_eq!(model.prepared.folded[1].is_some(), geom.groups == 1);
            let got = run(&model, &[&codes(&c.x, q(-4))]).f32();
            let mut want = vec![0.0; geom.output_len()];
            let (x, w, b, sc) = (&c.x, &c.w, &c.b, &c.scale);
            k::qs8_conv2d_f32out(&geom, -4, -3.0, 5.0, x, w, b, sc, &mut want);
            assert_eq!(got, want, "{geom:?}");
            assert_varied(&got, 20);
        }
    }

    /// The packed driver on 1-4 threads (pixel tiles and channel slices, as
    /// `split_conv` cuts them) gives the reference's bytes, on the reference
    /// row and on this CPU's row, whichever conv path that row takes.
    #[test]
    fn packed_conv_is_identical_on_every_thread_count() {
        use crate::kernels::Prepared;
        use crate::par::Workers;
        use strix_kernels::driver::fold_bias;

        use strix_kernels::table::{kernels_for, SCALAR};
        use strix_kernels::Isa;
        for (in_c, out_c, hw, kh) in [
            (96, 24, 28, 1),
            (64, 40, 14, 3),
            (256, 52, 5, 1),
            (64, 19, 4, 3),
        ] {
            let g = conv_geom(in_c, hw, out_c, kh, 1, 1);
            let c = case(g, -7, false);
            let mut want = vec![0i8; g.output_len()];
            k::qs8_conv2d(&g, &params(-7), &c.x, &c.w, &c.b, &c.rq, &mut want);
            let fb = fold_bias(&c.w, &c.b, g.k(), -7).unwrap();
            let pc = strix_kernels::driver::PackedConv::new(&g, &c.w).unwrap();
            for ks in [&SCALAR, kernels_for(Isa::detect())] {
                let prepared = Prepared {
                    isa: ks.isa,
                    ks,
                    folded: vec![],
                    packed: vec![],
                    repacked: vec![],
                    lean: false,
                    staged: pc.plan.staged_len,
                    scratch: packed_conv_scratch_len(&g),
                    tile: super::tile_len(&g),
                    scratch_f32: 0,
                    f16_as_f32: vec![],
                };
                for threads in 1..=4 {
                    let mut wk = Workers::new(&prepared, threads).unwrap();
                    for _ in 0..2 {
                        let mut got = vec![0x5a; g.output_len()];
                        super::conv_packed(
                            &mut wk,
                            ks,
                            &g,
                            &params(-7),
                            &c.x,
                            Packed {
                                conv: &pc,
                                weights: &pc.weights,
                            },
                            &fb,
                            &c.rq,
                            &mut got,
                        )
                        .unwrap();
                        assert!(
                            got == want,
                            "{} {g:?}: {threads} threads",
                            ks.gemm_4x16c4.name
                        );
                    }
                }
            }
        }
    }

    /// What validation refuses: a bias beyond the accumulation bound, a
    /// reduction beyond the int8 bound, a float output for QConv.
    #[test]
    fn qconv_validation_refuses_what_run_could_not_do() {
        let c = case(conv_geom(4, 5, 4, 3, 1, 1), 0, false);
        let mut t = c.t.clone();
        t.c.i32[0] = 1 << 30 | 1;
        assert!(t.load_err().contains("bias exceeds 2^30"));
        let mut t = c.t.clone();
        let y = t.last().output;
        t.g.tensors[y].dtype = DType::F32;
        t.g.tensors[y].quant = None;
        assert!(t.load_err().contains("output must be I8"));
        // 1x1 conv over 33,024 channels: one more than the bound allows.
        let geom = conv_geom(33_024, 1, 1, 1, 1, 1);
        let e = case(geom, 0, false).t.load_err();
        assert!(e.contains("reduction 33024 exceeds the int8 bound"), "{e}");
    }
}
