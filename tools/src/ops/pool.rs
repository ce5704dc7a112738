//! Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool
//! (`COp::MaxPool`, `COp::AvgPool`; 2-D). Int8: the same ops on int8 data.
//! Pruning: channels flow through.

use super::conv::{conv_out, pads_attr, window_attr};
use super::{fields, IrOp, OnnxOp};
use crate::ir::{CGraph, CNode, COp};
use crate::onnx::{Attrs, Importer};
use crate::prune::graph::{flow_nchw, Chan, Flow, Kept, Prune};
use anyhow::{bail, Result};
use strix_kernels::reference::PoolGeometry;
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[
    OnnxOp::new("MaxPool", Some(|i, n, a| pool(i, n, a, true, false)), None),
    OnnxOp::new(
        "AveragePool",
        Some(|i, n, a| pool(i, n, a, false, false)),
        None,
    ),
    OnnxOp::new(
        "GlobalAveragePool",
        Some(|i, n, a| pool(i, n, a, false, true)),
        None,
    ),
    OnnxOp::new(
        "GlobalMaxPool",
        Some(|i, n, a| pool(i, n, a, true, true)),
        None,
    ),
];

fn pool(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs, max: bool, global: bool) -> Result<()> {
    let xs = imp.shape(&n.input[0])?;
    if xs.len() != 4 {
        bail!(
            "pooling on a rank-{} input is not supported (2-D only)",
            xs.len()
        );
    }
    let (ih, iw) = (xs[2], xs[3]);
    let (geom, out) = if global {
        let g = PoolGeometry {
            channels: xs[0] * xs[1],
            in_h: ih,
            in_w: iw,
            out_h: 1,
            out_w: 1,
            kh: ih,
            kw: iw,
            stride_h: 1,
            stride_w: 1,
            pad_top: 0,
            pad_left: 0,
            count_include_pad: false,
        };
        (g, vec![xs[0], xs[1], 1, 1])
    } else {
        if a.get("kernel_shape").is_none() {
            bail!("kernel_shape missing");
        }
        let ks = window_attr(a, "kernel_shape", 2)?;
        let strides = window_attr(a, "strides", 2)?;
        let pads = pads_attr(a, 2)?;
        if a.ints("dilations")
            .is_some_and(|d| d.iter().any(|&x| x != 1))
        {
            bail!("dilated pooling is not supported");
        }
        let ceil = a.int("ceil_mode", 0) != 0;
        let auto = a.string("auto_pad", "NOTSET");
        let (pt, pl, mut oh, mut ow) =
            conv_out(&auto, ih, iw, ks[0], ks[1], &strides, &[1, 1], &pads)?;
        if ceil && auto == "NOTSET" {
            let f = |i: usize, p0: usize, p1: usize, k: usize, s: usize| {
                let o = (i + p0 + p1 - k).div_ceil(s) + 1;
                // The last window must start inside the input or left padding.
                if (o - 1) * s >= i + p0 {
                    o - 1
                } else {
                    o
                }
            };
            oh = f(ih, pads[0], pads[2], ks[0], strides[0]);
            ow = f(iw, pads[1], pads[3], ks[1], strides[1]);
        }
        let g = PoolGeometry {
            channels: xs[0] * xs[1],
            in_h: ih,
            in_w: iw,
            out_h: oh,
            out_w: ow,
            kh: ks[0],
            kw: ks[1],
            stride_h: strides[0],
            stride_w: strides[1],
            pad_top: pt,
            pad_left: pl,
            count_include_pad: a.int("count_include_pad", 0) != 0,
        };
        (g, vec![xs[0], xs[1], oh, ow])
    };
    let x = imp.value(&n.input[0])?;
    imp.emit(
        n,
        if max {
            COp::MaxPool { geom }
        } else {
            COp::AvgPool { geom }
        },
        vec![x],
        out,
    )?;
    Ok(())
}

/// `COp::MaxPool`.
pub(crate) struct MaxPool;
/// `COp::AvgPool`.
pub(crate) struct AvgPool;

impl IrOp for MaxPool {
    fn name(&self) -> &'static str {
        "MaxPool"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        Op::MaxPool {
            geom: *fields!(n, COp::MaxPool { geom } => geom),
        }
    }
    fn keeps_quant(&self) -> bool {
        true
    }
    fn flow(&self, cx: &mut Flow, _: usize, _: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        flow_nchw(cx, ins)
    }
    fn prune(&self, cx: &mut Prune, ni: usize, n: &CNode, k0: Kept) -> Kept {
        let mut geom = *fields!(n, COp::MaxPool { geom } => geom);
        if let Some((_, ks, _)) = &k0 {
            geom.channels = ks.len();
        }
        cx.g.nodes[ni].op = COp::MaxPool { geom };
        k0
    }
}

impl IrOp for AvgPool {
    fn name(&self) -> &'static str {
        "AvgPool"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        Op::AvgPool {
            geom: *fields!(n, COp::AvgPool { geom } => geom),
        }
    }
    fn keeps_quant(&self) -> bool {
        true
    }
    /// Not transparent: precision planning does not look through an
    /// average pool (unlike a max pool).
    fn transparent(&self, _: &CGraph, _: &CNode) -> bool {
        false
    }
    fn flow(&self, cx: &mut Flow, _: usize, _: &CNode, ins: &[Option<Chan>]) -> Option<Chan> {
        flow_nchw(cx, ins)
    }
    fn prune(&self, cx: &mut Prune, ni: usize, n: &CNode, k0: Kept) -> Kept {
        let mut geom = *fields!(n, COp::AvgPool { geom } => geom);
        if let Some((_, ks, _)) = &k0 {
            geom.channels = ks.len();
        }
        cx.g.nodes[ni].op = COp::AvgPool { geom };
        k0
    }
}
