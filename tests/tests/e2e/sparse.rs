//! Block sparsity end to end: a real model whose ONNX conv weights have 80% of
//! their 1x4 blocks (along the reduction) zeroed is converted; the compiler
//! must detect the zero blocks after quantization and emit `QConvSparse`, and
//! the outputs must equal, bit for bit, the same model compiled dense
//! (`Int8Options { sparse: false }`, the `--no-sparse` of `strix convert`).

use prost::Message;
use std::path::{Path, PathBuf};
use strix_runtime::graph::{Op, Storage};
use strix_runtime::{format, Model};
use strix_tests::{case, scratch};
use strix_tools::calib::Method;
use strix_tools::lower::Int8Options;
use tract_onnx::pb;

/// Zeroes 1x4 blocks (in `[out_c][in_c * kh * kw]` order, the kernels' `k`
/// order) of every ungrouped Conv's weights: block `b` of row `o` when
/// `(7b + 3o) % 10 < 8`, i.e. 80%. Returns the number of convs changed.
fn prune_convs(proto: &mut pb::ModelProto) -> usize {
    let g = proto.graph.as_mut().unwrap();
    let mut pruned = 0;
    let convs: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .filter(|n| n.attribute.iter().all(|a| a.name != "group" || a.i == 1))
        .map(|n| n.input[1].clone())
        .collect();
    for w in convs {
        let Some(t) = g.initializer.iter_mut().find(|t| t.name == w) else {
            continue;
        };
        let mut v: Vec<f32> = if t.float_data.is_empty() {
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            t.float_data.clone()
        };
        let out_c = t.dims[0] as usize;
        let k = v.len() / out_c;
        for o in 0..out_c {
            for (b, blk) in v[o * k..(o + 1) * k].chunks_mut(4).enumerate() {
                if (7 * b + 3 * o) % 10 < 8 {
                    blk.fill(0.0);
                }
            }
        }
        t.float_data.clear();
        t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        pruned += 1;
    }
    pruned
}

fn convert(onnx: &Path, config: &Path, calib: &[PathBuf], out: &Path, sparse: bool) -> Model {
    strix_tools::convert_with(
        onnx,
        calib,
        out,
        Some(config),
        Method::Mse,
        false,
        false,
        Int8Options {
            sparse,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("converting {}: {e:#}", onnx.display()))
}

fn count(m: &Model, f: impl Fn(&Op) -> bool) -> usize {
    m.graph.nodes.iter().filter(|n| f(&n.op)).count()
}

/// Every output of both models on every sample, as bits.
fn outputs(m: &Model, samples: &[PathBuf]) -> Vec<Vec<u32>> {
    samples
        .iter()
        .flat_map(|p| strix_tools::infer(m, p).unwrap())
        .map(|(v, _)| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn pruned_kws_runs_sparse_and_matches_dense_bit_for_bit() {
    let dir = scratch("sparse");
    let c = case("kws");
    let config = c.onnx.with_extension("toml");
    let mut proto = strix_tools::onnx::load_proto(&c.onnx).unwrap();
    let pruned = prune_convs(&mut proto);
    assert!(pruned >= 2, "kws has {pruned} ungrouped convs");
    let onnx = dir.join("kws_pruned.onnx");
    std::fs::write(&onnx, proto.encode_to_vec()).unwrap();

    let sparse = convert(&onnx, &config, &c.calib, &dir.join("sparse.strix"), true);
    let dense = convert(&onnx, &config, &c.calib, &dir.join("dense.strix"), false);
    let n_sparse = count(&sparse, |o| matches!(o, Op::QConvSparse { .. }));
    let n_int8_convs = count(
        &dense,
        |o| matches!(o, Op::QConv { geom, .. } if geom.groups == 1),
    );
    eprintln!("kws pruned: {pruned} convs pruned, {n_sparse} QConvSparse, {n_int8_convs} dense int8 ungrouped convs");
    // Every ungrouped int8 conv of the dense build became sparse; nothing else changed.
    assert!(n_sparse >= 1);
    assert_eq!(n_sparse, n_int8_convs);
    assert_eq!(count(&dense, |o| matches!(o, Op::QConvSparse { .. })), 0);
    assert_eq!(sparse.graph.nodes.len(), dense.graph.nodes.len());
    for n in &sparse.graph.nodes {
        if let Some((stored, total)) = n.sparse_blocks(&sparse.graph) {
            let zero = 1.0 - stored as f64 / total as f64;
            eprintln!(
                "  {}: {:.1}% zero blocks ({stored}/{total})",
                n.name,
                100.0 * zero
            );
            assert!(zero >= 0.78, "{}: {zero}", n.name);
        }
    }
    // `strix inspect` reports it (both forms run without error).
    strix_tools::inspect(&dir.join("sparse.strix"), false, &Default::default()).unwrap();
    strix_tools::inspect(&dir.join("sparse.strix"), true, &Default::default()).unwrap();
    // The sparse file is smaller: 80% of the conv weights are gone.
    assert!(
        sparse.consts.bytes() < dense.consts.bytes(),
        "{} vs {}",
        sparse.consts.bytes(),
        dense.consts.bytes()
    );

    // Bit for bit, on every kernel path this machine has (the detected one
    // and the reference).
    let want = outputs(&dense, &c.samples);
    assert_eq!(outputs(&sparse, &c.samples), want);
    let reloaded = Model::load(dir.join("sparse.strix")).unwrap();
    assert_eq!(outputs(&reloaded, &c.samples), want);
    let scalar = Model::load(dir.join("sparse.strix"))
        .unwrap()
        .with_isa(strix_kernels::Isa::Scalar)
        .unwrap();
    assert_eq!(outputs(&scalar, &c.samples), want);

    // Threads split the sparse convs (pixel tiles or channel slices of the
    // block rows): every tensor is the same on 1-4 threads, on both paths.
    // The split needs enough stored work (`PAR_MIN_MACS` = 100k in
    // runtime/src/par.rs on the scalar path; the x86 paths split from 0.5M
    // or 1M), which at least one of these convs has on the scalar path.
    let stored_macs = |n: &strix_runtime::graph::Node| match (&n.op, n.sparse_blocks(&sparse.graph))
    {
        (Op::QConvSparse { geom, .. }, Some((stored, total))) => geom.macs() * stored / total,
        _ => 0,
    };
    let most = sparse.graph.nodes.iter().map(stored_macs).max().unwrap();
    assert!(
        most >= 100_000,
        "no sparse conv is big enough to split: {most}"
    );
    for isa in [strix_kernels::Isa::Scalar, strix_kernels::Isa::detect()] {
        let m = sparse.clone().with_isa(isa).unwrap();
        let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
        let x = strix_tools::media::load_input(&c.samples[0], &m.meta.input, &shape).unwrap();
        let mut first: Option<Vec<Vec<u32>>> = None;
        for threads in 1..=4 {
            let mut s = strix_runtime::Session::with_threads(&m, threads).unwrap();
            assert_eq!(s.threads(), threads);
            s.input_mut(0).unwrap().copy_from_slice(&x);
            s.run().unwrap();
            let got: Vec<Vec<u32>> = (0..m.graph.tensors.len())
                .map(|id| match s.tensor(id) {
                    Some(strix_runtime::TensorData::F32(d)) => {
                        d.iter().map(|v| v.to_bits()).collect()
                    }
                    Some(strix_runtime::TensorData::I8(d)) => {
                        d.iter().map(|&v| v as u8 as u32).collect()
                    }
                    Some(strix_runtime::TensorData::I32(d)) => {
                        d.iter().map(|&v| v as u32).collect()
                    }
                    None => vec![],
                })
                .collect();
            match &first {
                None => first = Some(got),
                Some(w) => {
                    for (id, (a, b)) in w.iter().zip(&got).enumerate() {
                        assert!(
                            a == b,
                            "sparse kws ({}): tensor '{}' differs on {threads} threads",
                            isa.name(),
                            m.graph.tensors[id].name
                        );
                    }
                }
            }
        }
        eprintln!("sparse kws ({}): 1 == 2 == 3 == 4 threads", isa.name());
    }

    // Malformed sparse constants are rejected at load with a clear error.
    let node = sparse
        .graph
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::QConvSparse { .. }))
        .unwrap()
        .clone();
    let off = |m: &Model, i: usize| match m.graph.tensors[node.inputs[i]].storage {
        Storage::Const { offset } => offset,
        Storage::Arena { .. } | Storage::ConstF16 { .. } => unreachable!("int8/int32 constant"),
    };
    type Mutation<'a> = Box<dyn Fn(&mut Model) + 'a>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "block index",
            Box::new(|m| {
                let o = off(m, 2);
                m.consts.i32[o] = 1 << 20;
            }),
        ),
        (
            "block index",
            Box::new(|m| {
                let o = off(m, 2);
                m.consts.i32[o] = -1;
            }),
        ),
        (
            "not strictly increasing",
            Box::new(|m| {
                let o = off(m, 2);
                let (s, e) = (m.consts.i32[off(m, 3)], m.consts.i32[off(m, 3) + 1]);
                assert!(e - s >= 2, "row 0 stores two blocks");
                m.consts.i32[o + 1] = m.consts.i32[o];
            }),
        ),
        (
            "row_ptr",
            Box::new(|m| {
                let o = off(m, 3);
                m.consts.i32[o + 1] = m.consts.i32[o + 2] + 1;
            }),
        ),
        (
            "row_ptr",
            Box::new(|m| {
                let o = off(m, 3);
                m.consts.i32[o] = 1;
            }),
        ),
    ];
    for (what, f) in mutations {
        let mut bad = sparse.clone();
        f(&mut bad);
        let bytes = format::write(&bad.meta, &bad.graph, &bad.consts);
        let e = std::panic::catch_unwind(|| Model::from_bytes(&bytes))
            .expect("the loader panicked")
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = e.to_string();
        eprintln!("{what}: {msg}");
        assert!(
            msg.contains(what) && msg.contains("QConvSparse") && msg.contains(&node.name),
            "{msg}"
        );
    }
}

/// The unpruned model has no zero blocks to speak of: detection stays off.
#[test]
fn dense_kws_stays_dense() {
    let dir = scratch("sparse-dense");
    let c = case("kws");
    let config = c.onnx.with_extension("toml");
    let m = convert(&c.onnx, &config, &c.calib, &dir.join("kws.strix"), true);
    assert_eq!(count(&m, |o| matches!(o, Op::QConvSparse { .. })), 0);
}
