//! LSTM, forward direction with the default activations (`COp::Lstm`, always
//! f32): one op whose packed output `[seq + 2, batch, hidden]` is sliced
//! into `Y`, `Y_h` and `Y_c`.

use super::{fields, IrOp, OnnxOp};
use crate::ir::{CGraph, CNode, COp, HostTensor};
use crate::onnx::{elements, node_name, Attrs, Importer, MAX_TENSOR_ELEMENTS};
use anyhow::{bail, Context, Result};
use strix_kernels::reference::LstmGeometry;
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] = &[OnnxOp::new("LSTM", Some(import), None).inputs(|_| 3)];

/// ONNX LSTM, forward direction with the default activations: one
/// [`COp::Lstm`] whose packed output is sliced into `Y`, `Y_h` and `Y_c`.
fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let direction = a.string("direction", "forward");
    if direction != "forward" {
        bail!("LSTM attribute direction='{direction}' is not supported (only forward)");
    }
    if let Some(acts) = a.get("activations") {
        let names: Vec<String> = acts
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
            .collect();
        if names != ["sigmoid", "tanh", "tanh"] {
            bail!(
                "LSTM attribute activations={names:?} is not supported (only the default Sigmoid, Tanh, Tanh)"
            );
        }
    }
    for attr in ["activation_alpha", "activation_beta", "clip"] {
        if a.get(attr).is_some() {
            bail!("LSTM attribute '{attr}' is not supported");
        }
    }
    if a.int("input_forget", 0) != 0 {
        bail!("LSTM attribute input_forget=1 is not supported");
    }
    if a.int("layout", 0) != 0 {
        bail!("LSTM attribute layout=1 is not supported (only [seq, batch, input])");
    }
    let present = |i: usize| n.input.get(i).is_some_and(|s| !s.is_empty());
    if present(4) {
        bail!("LSTM input 'sequence_lens' is not supported (every sequence is full length)");
    }
    if present(7) {
        bail!("LSTM input 'P' (peepholes) is not supported");
    }
    let xs = imp.shape(&n.input[0])?;
    if xs.len() != 3 {
        bail!("LSTM input X must be [seq, batch, input], got {xs:?}");
    }
    let (seq, batch, input) = (xs[0], xs[1], xs[2]);
    let w = imp
        .konst(&n.input[1])
        .context("LSTM with non-constant W is not supported")?
        .clone();
    let r = imp
        .konst(&n.input[2])
        .context("LSTM with non-constant R is not supported")?
        .clone();
    let hidden = match a.get("hidden_size") {
        Some(h) if h.i > 0 && h.i as u64 <= MAX_TENSOR_ELEMENTS as u64 => h.i as usize,
        Some(h) => bail!("LSTM attribute hidden_size={} is invalid", h.i),
        None => r.shape.last().copied().unwrap_or(0),
    };
    // W and R hold 4 * hidden rows, so with a bounded hidden size every
    // product below is bounded by the tensors themselves.
    if hidden == 0
        || hidden > MAX_TENSOR_ELEMENTS
        || w.shape != [1, 4 * hidden, input]
        || r.shape != [1, 4 * hidden, hidden]
    {
        bail!(
            "LSTM W {:?} / R {:?} do not match input {input}, hidden_size {hidden} (one direction)",
            w.shape,
            r.shape
        );
    }
    // The two ONNX biases (Wb, Rb) are always added together: fold them.
    let bias: Vec<f32> = match imp.opt_konst(n, 3).context("LSTM B must be constant")? {
        Some(b) if b.shape == [1, 8 * hidden] => {
            let v = b.as_f32();
            (0..4 * hidden).map(|i| v[i] + v[4 * hidden + i]).collect()
        }
        Some(b) => bail!("LSTM B {:?} must be [1, {}]", b.shape, 8 * hidden),
        None => vec![0.0; 4 * hidden],
    };
    let base = n.output.first().cloned().unwrap_or_else(|| node_name(n));
    let mut state = |k: usize, what: &str| -> Result<usize> {
        if present(k) {
            let v = imp.value(&n.input[k])?;
            let s = &imp.g.values[v].shape;
            if *s != [1, batch, hidden] {
                bail!("LSTM {what} {s:?} must be [1, {batch}, {hidden}]");
            }
            if let Some(kt) = &imp.g.values[v].konst {
                let f = HostTensor::f32(kt.shape.clone(), kt.as_f32());
                imp.g.values[v].konst = Some(f);
            }
            Ok(v)
        } else {
            let z = HostTensor::f32(vec![1, batch, hidden], vec![0.0; batch * hidden]);
            Ok(imp
                .g
                .add_value(&format!("{base}#{what}"), z.shape.clone(), Some(z)))
        }
    };
    elements(&[seq + 2, batch, hidden]).context("LSTM state")?;
    let h0 = state(5, "initial_h")?;
    let c0 = state(6, "initial_c")?;
    let cst = |imp: &mut Importer, what: &str, shape: Vec<usize>, v: Vec<f32>| {
        imp.g.add_value(
            &format!("{base}#{what}"),
            shape.clone(),
            Some(HostTensor::f32(shape, v)),
        )
    };
    let wv = cst(imp, "w", vec![4 * hidden, input], w.as_f32());
    let rv = cst(imp, "r", vec![4 * hidden, hidden], r.as_f32());
    let bv = cst(imp, "b", vec![4 * hidden], bias);
    let x = imp.value(&n.input[0])?;
    let packed = imp.g.add_value(
        &format!("{base}#packed"),
        vec![seq + 2, batch, hidden],
        None,
    );
    imp.g.nodes.push(CNode {
        name: node_name(n),
        op: COp::Lstm {
            geom: LstmGeometry {
                seq,
                batch,
                input,
                hidden,
            },
        },
        inputs: vec![x, wv, rv, bv, h0, c0],
        output: packed,
    });
    // Y = rows 0..seq (as [seq, 1, batch, hidden]), Y_h = row seq, Y_c = row seq + 1.
    for (k, name) in n.output.iter().enumerate().take(3) {
        if name.is_empty() {
            continue;
        }
        let (start, rows) = if k == 0 { (0, seq) } else { (seq + k - 1, 1) };
        let shape = vec![rows, batch, hidden];
        let sliced = imp.g.add_value(
            &if k == 0 {
                format!("{name}#rows")
            } else {
                name.clone()
            },
            shape,
            None,
        );
        imp.g.nodes.push(CNode {
            name: format!("{}#{}", node_name(n), ["Y", "Y_h", "Y_c"][k]),
            op: COp::Slice {
                starts: vec![start, 0, 0],
                steps: vec![1, 1, 1],
            },
            inputs: vec![packed],
            output: sliced,
        });
        let v = if k == 0 {
            let y = imp.g.add_value(name, vec![seq, 1, batch, hidden], None);
            imp.g.nodes.push(CNode {
                name: format!("{}#Y_reshape", node_name(n)),
                op: COp::Reshape,
                inputs: vec![sliced],
                output: y,
            });
            y
        } else {
            sliced
        };
        imp.by_name.insert(name.clone(), v);
    }
    Ok(())
}

/// `COp::Lstm`.
pub(crate) struct Lstm;

impl IrOp for Lstm {
    fn name(&self) -> &'static str {
        "Lstm"
    }
    /// The runtime's count (`Op::macs`).
    fn macs(&self, _: &CGraph, n: &CNode) -> u64 {
        self.f32_op(n).macs(1)
    }
    fn f32_op(&self, n: &CNode) -> Op {
        Op::Lstm {
            geom: *fields!(n, COp::Lstm { geom } => geom),
        }
    }
    /// W and R (the bias stays f32).
    fn f16_weight_slots(&self) -> &'static [usize] {
        &[1, 2]
    }
}
