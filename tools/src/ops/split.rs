//! Split: one `COp::Slice` per output (see [`super::slice`]).

use super::{norm_axis, OnnxOp};
use crate::ir::{CNode, COp};
use crate::onnx::{node_name, Attrs, Importer};
use anyhow::{bail, Result};
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("Split", Some(import), None)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let axis = norm_axis(a.int("axis", 0), s.len())?;
    let sizes = split_sizes(imp, n, a, s[axis])?;
    let x = imp.value(&n.input[0])?;
    let mut off = 0;
    for (k, (name, size)) in n.output.iter().zip(sizes).enumerate() {
        let mut starts = vec![0; s.len()];
        starts[axis] = off;
        let mut out = s.clone();
        out[axis] = size;
        let v = imp.g.add_value(name, out, None);
        imp.g.nodes.push(CNode {
            name: format!("{}#{k}", node_name(n)),
            op: COp::Slice {
                starts,
                steps: vec![1; s.len()],
            },
            inputs: vec![x],
            output: v,
        });
        imp.by_name.insert(name.clone(), v);
        off += size;
    }
    Ok(())
}

/// The size of each output along the split axis (of length `dim`).
fn split_sizes(imp: &Importer, n: &pb::NodeProto, a: &Attrs, dim: usize) -> Result<Vec<usize>> {
    let explicit = if imp.opset >= 13 {
        imp.opt_konst(n, 1)?.map(|t| t.as_i64())
    } else {
        a.ints("split")
    };
    let sizes: Vec<usize> = match explicit {
        Some(v) => v.iter().map(|&x| x.max(0) as usize).collect(),
        None => {
            let k = n.output.len();
            let chunk = dim.div_ceil(k);
            (0..k)
                .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != dim || sizes.len() != n.output.len() {
        bail!("Split sizes {sizes:?} do not cover {dim}");
    }
    Ok(sizes)
}
