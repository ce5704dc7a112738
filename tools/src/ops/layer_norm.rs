//! LayerNormalization (`COp::LayerNorm`, always f32; opset 17): each row of
//! the axes from `axis` on is normalized by its mean and variance, then
//! scaled and shifted per element by the constant `Scale` and `B`.

use super::{fields, norm_axis, IrOp, OnnxOp};
use crate::ir::{CNode, COp, HostTensor};
use crate::onnx::{Attrs, Importer};
use anyhow::{bail, Result};
use strix_runtime::graph::Op;
use tract_onnx::pb;

pub(crate) const ONNX: &[OnnxOp] =
    &[OnnxOp::new("LayerNormalization", Some(import), None).inputs(|_| 2)];

fn import(imp: &mut Importer, n: &pb::NodeProto, a: &Attrs) -> Result<()> {
    let s = imp.shape(&n.input[0])?;
    let axis = norm_axis(a.int("axis", -1), s.len())?;
    let epsilon = a.float("epsilon", 1e-5);
    if !(epsilon.is_finite() && epsilon > 0.0) {
        bail!("LayerNormalization epsilon {epsilon} is not a positive number");
    }
    // stash_type 1: mean and variance in f32 or wider, which the runtime's
    // f64 sums are.
    let stash = a.int("stash_type", 1);
    if stash != 1 {
        bail!("LayerNormalization stash_type {stash} is not supported (only 1, float)");
    }
    if n.output.iter().skip(1).any(|o| !o.is_empty()) {
        bail!("LayerNormalization outputs Mean and InvStdDev are not supported (only Y)");
    }
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis..].iter().product();
    let mut inputs = vec![imp.value(&n.input[0])?];
    for (i, what) in [(1, "scale"), (2, "bias")] {
        let Some(t) = imp.opt_konst(n, i)? else {
            continue; // B is optional (Scale is required: min_inputs)
        };
        // Broadcasting a smaller Scale/B over the normalized shape is legal
        // ONNX but not exported in practice: refused, not guessed.
        if t.len() != inner {
            bail!(
                "LayerNormalization {what} {:?} does not have the {inner} values of the normalized shape {:?}",
                t.shape,
                &s[axis..]
            );
        }
        let v = imp.g.add_value(
            &format!("{}#{what}", n.output[0]),
            vec![inner],
            Some(HostTensor::f32(vec![inner], t.as_f32())),
        );
        inputs.push(v);
    }
    imp.emit(
        n,
        COp::LayerNorm {
            outer,
            inner,
            epsilon,
        },
        inputs,
        s,
    )?;
    Ok(())
}

/// `COp::LayerNorm`.
pub(crate) struct LayerNorm;

impl IrOp for LayerNorm {
    fn name(&self) -> &'static str {
        "LayerNorm"
    }
    fn f32_op(&self, n: &CNode) -> Op {
        let (outer, inner, epsilon) =
            fields!(n, COp::LayerNorm { outer, inner, epsilon } => (*outer, *inner, *epsilon));
        Op::LayerNorm {
            outer,
            inner,
            epsilon,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use std::path::{Path, PathBuf};
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
    use tract_onnx::pb::{self, tensor_proto::DataType};

    fn value_info(name: &str, dims: &[usize]) -> pb::ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&d| Dimension {
                value: Some(Dim::DimValue(d as i64)),
                ..Default::default()
            })
            .collect();
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(TypeValue::TensorType(TensorType {
                    elem_type: DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn init(name: &str, v: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![v.len() as i64],
            data_type: DataType::Float as i32,
            float_data: v.to_vec(),
            ..Default::default()
        }
    }

    /// X `shape` -> LayerNormalization(X, Scale, B?; axis, epsilon) -> Y, at
    /// opset 17, written to a file of the temp dir.
    fn onnx(
        tag: &str,
        shape: &[usize],
        axis: i64,
        eps: f32,
        scale: &[f32],
        bias: Option<&[f32]>,
    ) -> PathBuf {
        let attr = |name: &str, i: i64, f: f32, ty: pb::attribute_proto::AttributeType| {
            pb::AttributeProto {
                name: name.into(),
                r#type: ty as i32,
                i,
                f,
                ..Default::default()
            }
        };
        use pb::attribute_proto::AttributeType as T;
        let mut inputs = vec!["X".to_string(), "S".to_string()];
        let mut inits = vec![init("S", scale)];
        if let Some(b) = bias {
            inputs.push("B".into());
            inits.push(init("B", b));
        }
        let node = pb::NodeProto {
            name: "ln".into(),
            op_type: "LayerNormalization".into(),
            input: inputs,
            output: vec!["Y".into()],
            attribute: vec![
                attr("axis", axis, 0.0, T::Int),
                attr("epsilon", 0, eps, T::Float),
            ],
            ..Default::default()
        };
        let m = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                node: vec![node],
                initializer: inits,
                input: vec![value_info("X", shape)],
                output: vec![value_info("Y", shape)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = std::env::temp_dir().join(format!("strix-ln-{}-{tag}.onnx", std::process::id()));
        std::fs::write(&p, m.encode_to_vec()).unwrap();
        p
    }

    /// ONNX's definition, in f64: rows of `inner` over the trailing axes.
    fn reference(
        x: &[f32],
        inner: usize,
        eps: f32,
        scale: &[f32],
        bias: Option<&[f32]>,
    ) -> Vec<f64> {
        let mut y = vec![];
        for row in x.chunks(inner) {
            let r: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            let mean = r.iter().sum::<f64>() / inner as f64;
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / inner as f64;
            for (i, v) in r.iter().enumerate() {
                let b = bias.map_or(0.0, |b| b[i] as f64);
                y.push((v - mean) / (var + eps as f64).sqrt() * scale[i] as f64 + b);
            }
        }
        y
    }

    /// Converts `onnx` (f32, and int8 calibrated on `x`: the op stays f32)
    /// and runs it on `x`.
    fn convert_and_run(onnx: &Path, shape: &[usize], x: &[f32]) -> Vec<Vec<f32>> {
        let dir = onnx.with_extension("d");
        std::fs::create_dir_all(&dir).unwrap();
        let npy = dir.join("x.npy");
        crate::media::write_npy(&npy, shape, x).unwrap();
        let mut outs = vec![];
        for fp32 in [true, false] {
            let out = dir.join(format!("m{fp32}.strix"));
            let calib = if fp32 { vec![] } else { vec![npy.clone()] };
            crate::convert(
                onnx,
                &calib,
                &out,
                None,
                crate::calib::Method::Minmax,
                fp32,
                false,
            )
            .unwrap();
            let model = strix_runtime::Model::load(&out).unwrap();
            let mut s = strix_runtime::Session::new(&model);
            s.input_mut(0).unwrap().copy_from_slice(x);
            s.run().unwrap();
            let mut y = vec![];
            s.output_f32(0, &mut y).unwrap();
            outs.push(y);
        }
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_file(onnx).ok();
        outs
    }

    fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn layer_normalization_converts_and_runs_as_onnx_defines_it() {
        let shape = [2, 3, 4];
        let x: Vec<f32> = (0..24)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.7 + (i / 12) as f32 * 30.0)
            .collect();
        // axis 1: rows of 3 x 4, with bias.
        let scale: Vec<f32> = (0..12).map(|i| 0.5 + i as f32 * 0.1).collect();
        let bias: Vec<f32> = (0..12).map(|i| i as f32 * -0.2).collect();
        let p = onnx("a1", &shape, 1, 1e-3, &scale, Some(&bias));
        let want = reference(&x, 12, 1e-3, &scale, Some(&bias));
        for y in convert_and_run(&p, &shape, &x) {
            close(&y, &want);
        }
        // The default axis -1 (rows of 4), no bias.
        let scale = [1.0, -1.0, 2.0, 0.5];
        let p = onnx("last", &shape, -1, 1e-5, &scale, None);
        let want = reference(&x, 4, 1e-5, &scale, None);
        for y in convert_and_run(&p, &shape, &x) {
            close(&y, &want);
        }
    }

    #[test]
    fn layer_normalization_import_errors_name_the_problem() {
        let p = onnx("bad", &[2, 3, 4], -1, 1e-5, &[1.0; 3], None);
        let e = format!("{:#}", crate::onnx::import(&p).unwrap_err());
        std::fs::remove_file(&p).ok();
        assert!(e.contains("scale [3] does not have the 4 values"), "{e}");
        let p = onnx("eps", &[2, 3, 4], -1, -1.0, &[1.0; 4], None);
        let e = format!("{:#}", crate::onnx::import(&p).unwrap_err());
        std::fs::remove_file(&p).ok();
        assert!(e.contains("epsilon -1 is not a positive number"), "{e}");
    }
}
