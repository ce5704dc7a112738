//! Hostile `.strix` files made from real models (the KWS DS-CNN, and
//! FastestDet, on which a wrapped size gave silently wrong detections): size
//! products that wrap around, disordered activation bounds and lying arena
//! sizes. Each mutated model is re-sealed (written with correct checksums),
//! so validation alone stands between it and the kernels: each must be a
//! load error naming the problem, never a panic or a model that loads.

use std::sync::OnceLock;
use strix_runtime::graph::Op;
use strix_runtime::{format, Error, Model};
use strix_tests::{case, convert, scratch};

fn kws() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| convert(&case("kws"), &scratch("hostile-model")).0)
}

fn fastestdet() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| convert(&case("fastestdet"), &scratch("hostile-model")).0)
}

fn load_mutated(m: &Model, f: impl FnOnce(&mut Model)) -> Result<Model, Error> {
    let mut m = m.clone();
    f(&mut m);
    let bytes = format::write(&m.meta, &m.graph, &m.consts);
    std::panic::catch_unwind(|| Model::from_bytes(&bytes)).expect("the loader panicked")
}

/// The smallest power of two `b` with `b * other == 0 (mod 2^64)`: adding
/// it to one factor of a product with the others' product `other` leaves
/// the wrapped product unchanged. `None` when `other` is odd.
fn wrap_bump(other: usize) -> Option<usize> {
    let tz = other.trailing_zeros();
    (other != 0 && tz > 0).then(|| 1usize << (usize::BITS - tz))
}

#[test]
fn size_products_that_wrap_are_refused_kws() {
    let tried = wrap_every_node(kws());
    for op in ["QConv", "AvgPool", "Softmax", "QGemmF32"] {
        assert!(tried.contains_key(op), "no {op} tried: {tried:?}");
    }
}

#[test]
fn size_products_that_wrap_are_refused_fastestdet() {
    let tried = wrap_every_node(fastestdet());
    for op in ["QConv", "MaxPool"] {
        assert!(tried.contains_key(op), "no {op} tried: {tried:?}");
    }
}

/// Every node's wrap-around variant: one dimension of a size product bumped
/// so that the product, computed in wrapping `usize` arithmetic as the
/// loader did, is what it was. Returns how many nodes of each op were tried.
fn wrap_every_node(m: &Model) -> std::collections::BTreeMap<&'static str, usize> {
    let mut tried = std::collections::BTreeMap::<&str, usize>::new();
    for (i, n) in m.graph.nodes.iter().enumerate() {
        let mut op = n.op.clone();
        let ok = match &mut op {
            Op::QConv { geom, .. } | Op::QConvF32 { geom, .. } | Op::Conv { geom, .. } => {
                // The input plane through its height, else the kernel.
                if let Some(b) = wrap_bump(geom.in_c * geom.in_w) {
                    let before = geom.input_len();
                    geom.in_h += b;
                    assert_eq!(
                        geom.in_c.wrapping_mul(geom.in_h).wrapping_mul(geom.in_w),
                        before
                    );
                    true
                } else if let Some(b) = wrap_bump(geom.out_c * (geom.in_c / geom.groups) * geom.kw)
                {
                    geom.kh += b;
                    true
                } else {
                    false
                }
            }
            Op::QGemm { m, n, k, .. } | Op::QGemmF32 { m, n, k, .. } => {
                // m * k and m * n both wrap back.
                match (wrap_bump(*k), wrap_bump(*n)) {
                    (Some(a), Some(b)) => {
                        let before = (*m * *k, *m * *n);
                        *m += a.max(b);
                        assert_eq!((m.wrapping_mul(*k), m.wrapping_mul(*n)), before);
                        true
                    }
                    _ => false,
                }
            }
            Op::MaxPool { geom } | Op::AvgPool { geom } => {
                match wrap_bump(geom.channels * geom.in_w) {
                    Some(b) => {
                        let before = geom.input_len();
                        geom.in_h += b;
                        assert_eq!(
                            geom.channels
                                .wrapping_mul(geom.in_h)
                                .wrapping_mul(geom.in_w),
                            before
                        );
                        true
                    }
                    None => false,
                }
            }
            Op::Softmax { outer, axis, inner } => match wrap_bump(*axis * *inner) {
                Some(b) => {
                    *outer += b;
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !ok {
            continue;
        }
        let e = load_mutated(m, |m| m.graph.nodes[i].op = op)
            .err()
            .unwrap_or_else(|| panic!("node {i} ({}) with a wrapped size loaded", n.op.name()))
            .to_string();
        assert!(
            e.contains(&format!("node {} ({})", n.name, n.op.name())),
            "{e}"
        );
        *tried.entry(n.op.name()).or_default() += 1;
    }
    eprintln!("{}: wrapped sizes refused: {tried:?}", m.meta.name);
    tried
}

/// `act_min > act_max` on every node that has activation bounds: the f32
/// kernels' `clamp` and the int8 kernels' asserts panicked on it.
#[test]
fn disordered_activation_bounds_are_refused() {
    let m = kws();
    let mut tried = 0;
    for (i, n) in m.graph.nodes.iter().enumerate() {
        let mut op = n.op.clone();
        match &mut op {
            Op::Conv {
                act_min, act_max, ..
            }
            | Op::QConvF32 {
                act_min, act_max, ..
            }
            | Op::QGemmF32 {
                act_min, act_max, ..
            }
            | Op::Gemm {
                act_min, act_max, ..
            } => (*act_min, *act_max) = (1.0, -1.0),
            Op::QConv { q, .. } | Op::QConvSparse { q, .. } => (q.act_min, q.act_max) = (10, -10),
            Op::QGemm { q, .. } => (q.act_min, q.act_max) = (10, -10),
            Op::QAdd { p } => (p.act_min, p.act_max) = (10, -10),
            Op::QMul { p } => (p.act_min, p.act_max) = (10, -10),
            _ => continue,
        }
        let e = load_mutated(m, |m| m.graph.nodes[i].op = op)
            .err()
            .unwrap_or_else(|| panic!("node {i} ({}) with act_min > act_max loaded", n.op.name()))
            .to_string();
        assert!(
            e.contains(&format!("node {} ({})", n.name, n.op.name()))
                && e.contains("activation bounds")
                && e.contains("out of order"),
            "{e}"
        );
        tried += 1;
    }
    assert!(tried >= 2, "only {tried} nodes have activation bounds");
}

/// Arena sizes are what the tensors need, not what the file says: 2^31
/// int8 elements made `Session::new` allocate 2 GiB (more than `isize::MAX`
/// on a 32-bit board).
#[test]
fn lying_arena_sizes_are_refused() {
    let need = (kws().graph.arena_i8, kws().graph.arena_f32);
    for (i8s, f32s) in [
        (1 << 31, need.1),
        (need.0, 1 << 29),
        (need.0 + 16, need.1),
        (need.0, need.1 + 16),
    ] {
        let e = load_mutated(kws(), |m| {
            (m.graph.arena_i8, m.graph.arena_f32) = (i8s, f32s)
        })
        .err()
        .unwrap_or_else(|| panic!("arenas of {i8s} / {f32s} elements loaded"))
        .to_string();
        assert!(
            e.contains("declares") && e.contains("but its tensors need"),
            "{e}"
        );
    }
}
