//! Resize and Upsample of NCHW tensors (`COp::Resize`: nearest or linear;
//! half_pixel, pytorch_half_pixel, align_corners or asymmetric coordinates).
//! Int8: the same op on int8 data. Pruning: channels flow through.

use super::{fields, IrOp, OnnxOp};
use crate::ir::{CNode, COp};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{flow_nchw, Chan, Flow, Kept, Prune};
use anyhow::{anyhow, bail, Result};
use strix_kernels::reference::{CoordMode, ResizeGeometry, ResizeKind};
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new("Resize", Some(import), None),
    OnnxOp::new("Upsample", Some(import), None),
];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let xs = imp.shape(&n.input[0])?;
    if xs.len() != 4 {
        bail!(
            "Resize of a rank-{} tensor is not supported (NCHW only)",
            xs.len()
        );
    }
    let (scales, sizes) = if n.op_type == "Upsample" || imp.opset < 11 {
        let sc = if imp.opset < 9 {
            a.get("scales").map(|x| x.floats.clone())
        } else {
            imp.opt_konst(n, 1)?.map(|t| t.as_f32())
        };
        (sc, None)
    } else {
        let sc = imp
            .opt_konst(n, 2)?
            .map(|t| t.as_f32())
            .filter(|v| !v.is_empty());
        let sz = imp
            .opt_konst(n, 3)?
            .map(|t| t.as_i64())
            .filter(|v| !v.is_empty());
        (sc, sz)
    };
    let out: Vec<usize> = match (sizes, scales) {
        (Some(sz), _) if sz.len() == 4 => sz
            .iter()
            .map(|&v| usize::try_from(v).ok().filter(|&v| v >= 1))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow!("Resize sizes {sz:?} must be >= 1"))?,
        (None, Some(sc)) if sc.len() == 4 => {
            if sc.iter().any(|s| !s.is_finite() || *s <= 0.0) {
                bail!("Resize scales {sc:?} must be finite and > 0");
            }
            // Saturating float-to-int casts; `emit` bounds the shape.
            xs.iter()
                .zip(&sc)
                .map(|(&d, &s)| (d as f64 * f64::from(s)).floor() as usize)
                .collect()
        }
        _ => bail!("Resize needs 4 scales or sizes"),
    };
    if out.contains(&0) {
        bail!("Resize of {xs:?} to {out:?} gives an empty tensor");
    }
    if out[0] != xs[0] || out[1] != xs[1] {
        bail!("Resize of the batch or channel axis is not supported");
    }
    let mode = a.string("mode", "nearest");
    let default_ct = if imp.opset < 11 {
        "asymmetric"
    } else {
        "half_pixel"
    };
    let coord = match a
        .string("coordinate_transformation_mode", default_ct)
        .as_str()
    {
        "half_pixel" => CoordMode::HalfPixel,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        other => bail!("Resize coordinate_transformation_mode '{other}' is not supported"),
    };
    let kind = match mode.as_str() {
        "nearest" => match a
            .string(
                "nearest_mode",
                if imp.opset < 11 {
                    "floor"
                } else {
                    "round_prefer_floor"
                },
            )
            .as_str()
        {
            "round_prefer_floor" => ResizeKind::NearestRoundPreferFloor,
            "round_prefer_ceil" => ResizeKind::NearestRoundPreferCeil,
            "floor" => ResizeKind::NearestFloor,
            "ceil" => ResizeKind::NearestCeil,
            other => bail!("Resize nearest_mode '{other}' is not supported"),
        },
        "linear" | "bilinear" => ResizeKind::Linear,
        other => bail!("Resize mode '{other}' is not supported"),
    };
    let geom = ResizeGeometry {
        planes: xs[0] * xs[1],
        in_h: xs[2],
        in_w: xs[3],
        out_h: out[2],
        out_w: out[3],
        kind,
        coord,
    };
    let x = imp.value(&n.input[0])?;
    imp.emit(n, COp::Resize { geom }, vec![x], out)?;
    Ok(())
}

/// `COp::Resize`.
pub(crate) struct Resize;

impl IrOp for Resize {
    fn name(&self) -> &'static str {
        "Resize"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        Op::Resize {
            geom: *fields!(n, COp::Resize { geom } => geom),
        }
    }
    fn keeps_quant(&self) -> bool {
        true
    }
    fn flow(&self, cx: &mut Flow, _: usize, _: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        flow_nchw(cx, ins)
    }
    fn prune(&self, cx: &mut Prune, ni: usize, n: &CNode, k0: Kept) -> Kept {
        let mut geom = *fields!(n, COp::Resize { geom } => geom);
        if let Some((_, ks, orig)) = &k0 {
            geom.planes = geom.planes / orig * ks.len();
        }
        cx.g.nodes[ni].op = COp::Resize { geom };
        k0
    }
}
