//! BatchNormalization: folded into the preceding Conv's weights and bias when
//! it is the conv's only reader; otherwise `x * scale + shift` per channel
//! (two `COp::Binary`, lowered by [`super::elementwise`]).

use super::OnnxOp;
use crate::ir::{CNode, COp, HostTensor};
use crate::onnx::{node_name, Attrs, Importer};
use anyhow::{bail, Result};
use strix_kernels::reference::BinaryOp;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] =
    &[OnnxOp::new("BatchNormalization", Some(import), None).inputs(|_| 5)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let eps = a.float("epsilon", 1e-5);
    let get = |i: usize| -> Result<Vec<f32>> { Ok(imp.konst(&n.input[i])?.as_f32()) };
    let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
    let c = gamma.len();
    if [&beta, &mean, &var].iter().any(|v| v.len() != c) {
        bail!(
            "BatchNormalization scale, bias, mean and var have {c}, {}, {} and {} values",
            beta.len(),
            mean.len(),
            var.len()
        );
    }
    let scale: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
    let x = imp.value(&n.input[0])?;
    if let Some(p) = imp.fusible_producer(x, &n.input[0]) {
        if let COp::Conv { geom, act } = imp.g.nodes[p].op.clone() {
            if act.is_none() && geom.out_c == c {
                let (wv, bv) = (imp.g.nodes[p].inputs[1], imp.g.nodes[p].inputs[2]);
                let per = geom.weight_len() / c;
                let mut w = imp.g.values[wv].konst.as_ref().unwrap().as_f32();
                let mut b = imp.g.values[bv].konst.as_ref().unwrap().as_f32();
                for o in 0..c {
                    w[o * per..(o + 1) * per]
                        .iter_mut()
                        .for_each(|v| *v *= scale[o]);
                    b[o] = b[o] * scale[o] + shift[o];
                }
                let ws = imp.g.values[wv].shape.clone();
                imp.g.values[wv].konst = Some(HostTensor::f32(ws, w));
                imp.g.values[bv].konst = Some(HostTensor::f32(vec![c], b));
                imp.alias(n, x);
                return Ok(());
            }
        }
    }
    // Standalone BatchNorm: x * scale + shift per channel (axis 1).
    let s = imp.g.values[x].shape.clone();
    let mut cs = vec![1; s.len().saturating_sub(1)];
    if !cs.is_empty() {
        cs[0] = c;
    }
    let sv = imp.g.add_value(
        &format!("{}#scale", n.output[0]),
        cs.clone(),
        Some(HostTensor::f32(cs.clone(), scale)),
    );
    let hv = imp.g.add_value(
        &format!("{}#shift", n.output[0]),
        cs.clone(),
        Some(HostTensor::f32(cs, shift)),
    );
    let mid = imp
        .g
        .add_value(&format!("{}#scaled", n.output[0]), s.clone(), None);
    imp.g.nodes.push(CNode {
        name: node_name(n),
        op: COp::Binary(BinaryOp::Mul),
        inputs: vec![x, sv],
        output: mid,
    });
    imp.emit(n, COp::Binary(BinaryOp::Add), vec![mid, hv], s)?;
    Ok(())
}
