//! Hostile input: truncated, bit-flipped, oversized and inconsistent `.strix`
//! files and ONNX files with an unsupported op all give a clear error, never a
//! panic.

use prost::Message;
use strix_runtime::graph::{Op, Storage};
use strix_runtime::{format, Error, Model};
use strix_tests::{case, convert, scratch};

fn kws_bytes() -> (Model, Vec<u8>) {
    let dir = scratch("hostile");
    let (m, path) = convert(&case("kws"), &dir);
    (m, std::fs::read(path).unwrap())
}

fn load(bytes: &[u8]) -> Result<Model, Error> {
    std::panic::catch_unwind(|| Model::from_bytes(bytes)).expect("the loader panicked")
}

#[test]
fn truncated_files_are_rejected() {
    let (_, bytes) = kws_bytes();
    assert!(load(&bytes).is_ok());
    let mut lens: Vec<usize> = (0..200).collect();
    lens.extend((200..bytes.len()).step_by(97));
    lens.push(bytes.len() - 1);
    for len in lens {
        let e = load(&bytes[..len]).expect_err("truncated file accepted");
        let msg = e.to_string();
        assert!(
            msg.contains("shorter than") || msg.contains("truncated") || msg.contains("magic"),
            "{len}: {msg}"
        );
    }
}

#[test]
fn bit_flips_are_rejected() {
    let (_, bytes) = kws_bytes();
    // Bytes that carry information: the header (but its 8 reserved bytes), the
    // section table and every section body. Only the rest (padding) may flip
    // unnoticed.
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut meaningful = vec![false; bytes.len()];
    meaningful[..56].iter_mut().for_each(|m| *m = true);
    meaningful[64..64 + count * 64]
        .iter_mut()
        .for_each(|m| *m = true);
    for e in 0..count {
        let (off, len) = (u64_at(64 + e * 64 + 8), u64_at(64 + e * 64 + 16));
        meaningful[off..off + len]
            .iter_mut()
            .for_each(|m| *m = true);
    }
    let mut positions: Vec<usize> = (0..64 + count * 64).collect();
    positions.extend((64 + count * 64..bytes.len()).step_by(13));
    let mut accepted = 0;
    for pos in positions {
        for bit in [0, 3, 7] {
            let mut b = bytes.clone();
            b[pos] ^= 1 << bit;
            match load(&b) {
                Err(e) => assert!(!e.to_string().is_empty()),
                Ok(_) => {
                    assert!(
                        !meaningful[pos],
                        "a flip of bit {bit} at byte {pos} was accepted"
                    );
                    accepted += 1;
                }
            }
        }
    }
    eprintln!("{accepted} flips in padding or reserved bytes accepted");
}

#[test]
fn oversized_and_padded_files_are_rejected() {
    let (_, mut bytes) = kws_bytes();
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0u8; 4096]);
    assert!(matches!(load(&padded), Err(Error::Corrupt(_))));
    // A header claiming a huge file.
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = load(&bytes).unwrap_err().to_string();
    assert!(e.contains("declares"), "{e}");
    // A table claiming a section far beyond the file, with a valid table checksum.
    let (_, mut b) = kws_bytes();
    b[64 + 16..64 + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    use sha2_shim::digest;
    let table_len = 5 * 64;
    let d = digest(&b[64..64 + table_len]);
    b[24..56].copy_from_slice(&d);
    let e = load(&b).unwrap_err().to_string();
    assert!(e.contains("past the end"), "{e}");
}

/// Graphs with valid checksums but inconsistent contents are caught by validation.
#[test]
fn inconsistent_graphs_are_rejected() {
    let (m, _) = kws_bytes();
    type Mutation = Box<dyn Fn(&mut Model)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "tensor outside arena",
            Box::new(|m| {
                let i = m.graph.nodes[3].output;
                m.graph.tensors[i].storage = Storage::Arena {
                    offset: m.graph.arena_i8 + 100,
                };
            }),
        ),
        (
            "node reads a later tensor",
            Box::new(|m| {
                let later = m.graph.nodes.last().unwrap().output;
                m.graph.nodes[1].inputs[0] = later;
            }),
        ),
        (
            "bad tensor index",
            Box::new(|m| m.graph.nodes[2].inputs[0] = 1_000_000),
        ),
        (
            "conv geometry mismatch",
            Box::new(|m| {
                for n in &mut m.graph.nodes {
                    if let Op::QConv { geom, .. } = &mut n.op {
                        geom.in_h += 1;
                        break;
                    }
                }
            }),
        ),
        (
            "weights outside constants",
            Box::new(|m| {
                for t in &mut m.graph.tensors {
                    if let Storage::Const { offset } = &mut t.storage {
                        *offset += 10_000_000;
                        break;
                    }
                }
            }),
        ),
        (
            "huge shape",
            Box::new(|m| {
                let i = m.graph.nodes[0].output;
                m.graph.tensors[i].shape = vec![1 << 20, 1 << 20, 1 << 20];
            }),
        ),
        (
            "input overlaps output",
            Box::new(|m| {
                let n = &m.graph.nodes[2];
                let (i, o) = (n.inputs[0], n.output);
                m.graph.tensors[o].storage = m.graph.tensors[i].storage;
            }),
        ),
        (
            "requant shift out of range",
            Box::new(|m| {
                let n = m
                    .graph
                    .nodes
                    .iter()
                    .find(|n| matches!(n.op, Op::QConv { .. }))
                    .unwrap();
                let rq = n.inputs[3];
                if let Storage::Const { offset } = m.graph.tensors[rq].storage {
                    m.consts.i32[offset + 1] = 99;
                }
            }),
        ),
    ];
    for (what, f) in mutations {
        let mut bad = m.clone();
        f(&mut bad);
        let bytes = format::write(&bad.meta, &bad.graph, &bad.consts);
        let e = load(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        eprintln!("{what}: {e}");
    }
}

#[test]
fn unsupported_onnx_op_names_node_op_and_opset() {
    let dir = scratch("onnx");
    let c = case("kws");
    let mut proto = strix_tools::onnx::load_proto(&c.onnx).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let idx = g.node.iter().position(|n| n.op_type == "Relu").unwrap();
    g.node[idx].op_type = "FancyOp".into();
    g.node[idx].name = "fancy_node".into();
    let path = dir.join("bad.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let e = strix_tools::convert(
        &path,
        &c.calib,
        &dir.join("bad.strix"),
        None,
        strix_tools::calib::Method::Minmax,
        false,
        false,
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("fancy_node") && msg.contains("FancyOp") && msg.contains("opset 11"),
        "{msg}"
    );
    // Not an ONNX file at all.
    std::fs::write(&path, b"definitely not protobuf \xff\xff").unwrap();
    let e = strix_tools::convert(
        &path,
        &c.calib,
        &dir.join("bad.strix"),
        None,
        strix_tools::calib::Method::Minmax,
        false,
        false,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("bad.onnx"), "{e:#}");
}

mod sha2_shim {
    pub fn digest(b: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(b).into()
    }
}
