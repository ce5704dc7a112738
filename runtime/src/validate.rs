//! Validation of an untrusted [`Graph`] against its constants, so that
//! execution can neither panic nor read out of bounds. This file checks the
//! graph as a whole (tensor sizes and storage, arenas, the order in which
//! nodes define tensors, overlaps); each op's own checks, which mirror the
//! index computations of its `run`, sit beside that `run` in
//! `ops/<op>.rs` and are called from here through `ops::validate`.
//!
//! Every size computed from the file is computed with checked arithmetic:
//! a plain `usize` product wraps in release builds, so a dimension plus 2^63
//! would otherwise pass as a small size and the kernels would index with the
//! lie. After [`validate`] accepts a graph, every tensor has fewer than
//! [`MAX_ELEMENTS`] elements (so `Tensor::len` and `offset + len` no longer
//! overflow), every loop bound of every op is at most a tensor dimension,
//! and the arenas hold exactly what the tensors need.

use crate::error::{Error, Result};
use crate::graph::{Consts, DType, Graph, Node, Storage, Tensor};
use crate::ops;
use strix_kernels::shape::MAX_RANK;

/// Largest reduction the int8 kernels accept (their documented overflow bound).
pub const MAX_QS8_REDUCTION: usize = 33_000;

/// Every tensor has fewer elements than this, and so does the product of its
/// non-zero dimensions (so a zero-sized tensor cannot carry a 2^62 loop bound).
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Bound on every index a conv or pool computes along one axis (input plus
/// padding plus window extent), and on strides and dilations: fits `i32`,
/// hence `isize` on every target. The compiler refuses larger attributes.
pub const MAX_AXIS: usize = i32::MAX as usize;

/// Most bytes the two arenas of one session may take together: 2 GiB, and
/// never more than `isize::MAX` (the most a Rust allocation may hold, which
/// on 32-bit targets is 2 GiB - 1).
pub const MAX_ARENA_BYTES: usize = if (isize::MAX as u64) < (1 << 31) {
    isize::MAX as usize
} else {
    1 << 31
};

/// The plan's arenas end at their furthest activation rounded up to this many
/// elements (`plan` aligns every offset and size to 16).
const ARENA_ALIGN: usize = 16;

pub fn validate(g: &Graph, c: &Consts) -> Result<()> {
    let nt = g.tensors.len();
    // The compiler never writes infinities or NaNs (it refuses weights beyond
    // the f16 range), so one here is corruption, not a model.
    if let Some(i) = c.f16.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "f16 constant {i} is {} (f16 weights must be finite)",
            c.f16[i]
        )));
    }
    // Element counts must not overflow and must fit their storage.
    for (i, t) in g.tensors.iter().enumerate() {
        if t.shape.len() > MAX_RANK {
            return Err(Error::Invalid(format!(
                "tensor {i} '{}' has rank {} > {MAX_RANK}",
                t.name,
                t.shape.len()
            )));
        }
        // Also bounded with zeros read as ones: loops over the other
        // dimensions of an empty tensor must stay short too.
        let product = |zero_as_one: bool| {
            t.shape
                .iter()
                .try_fold(1usize, |a, &d| {
                    a.checked_mul(if zero_as_one { d.max(1) } else { d })
                })
                .filter(|&l| l < MAX_ELEMENTS)
        };
        let len = product(false)
            .filter(|_| product(true).is_some())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "tensor {i} '{}' is too large: {:?}",
                    t.name, t.shape
                ))
            })?;
        let (cap, what) = match (t.storage, t.dtype) {
            (Storage::Arena { .. }, DType::I8) => (g.arena_i8, "int8 arena"),
            (Storage::Arena { .. }, DType::F32) => (g.arena_f32, "f32 arena"),
            (Storage::Arena { .. }, DType::I32) => {
                return Err(Error::Invalid(format!(
                    "tensor {i} '{}': int32 activations are not supported",
                    t.name
                )))
            }
            (Storage::Const { .. }, DType::I8) => (c.i8.len(), "int8 constants"),
            (Storage::Const { .. }, DType::I32) => (c.i32.len(), "int32 constants"),
            (Storage::Const { .. }, DType::F32) => (c.f32.len(), "f32 constants"),
            (Storage::ConstF16 { .. }, DType::F32) => (c.f16.len(), "f16 constants"),
            (Storage::ConstF16 { .. }, d) => {
                return Err(Error::Invalid(format!(
                    "tensor {i} '{}' is {d:?} but stored as f16 (only f32 tensors may be)",
                    t.name
                )))
            }
        };
        let off = match t.storage {
            Storage::Arena { offset }
            | Storage::Const { offset }
            | Storage::ConstF16 { offset } => offset,
        };
        if off.checked_add(len).is_none_or(|end| end > cap) {
            return Err(Error::Invalid(format!(
                "tensor {i} '{}' ({len} elements at {off}) lies outside the {what} ({cap} elements)",
                t.name
            )));
        }
        if let Some(q) = t.quant {
            if !(q.scale.is_finite() && q.scale > 0.0 && (-128..=127).contains(&q.zero_point)) {
                return Err(Error::Invalid(format!(
                    "tensor {i} '{}' has bad quantization {q:?}",
                    t.name
                )));
            }
        }
        if t.dtype == DType::I8 && matches!(t.storage, Storage::Arena { .. }) && t.quant.is_none() {
            return Err(Error::Invalid(format!(
                "int8 tensor {i} '{}' has no quantization",
                t.name
            )));
        }
    }
    check_arenas(g)?;
    let mut defined = vec![false; nt];
    for (i, t) in g.tensors.iter().enumerate() {
        defined[i] = t.storage.is_const();
    }
    for &i in &g.inputs {
        let t = g
            .tensors
            .get(i)
            .ok_or_else(|| Error::Invalid(format!("graph input {i} does not exist")))?;
        if t.dtype != DType::F32 || !matches!(t.storage, Storage::Arena { .. }) {
            return Err(Error::Invalid(format!(
                "graph input '{}' must be an f32 activation",
                t.name
            )));
        }
        defined[i] = true;
    }
    for n in &g.nodes {
        let bad = |msg: String| Error::InvalidNode {
            node: n.name.clone(),
            op: n.op.name(),
            msg,
        };
        for &i in n.inputs.iter().chain(std::iter::once(&n.output)) {
            if i >= nt {
                return Err(bad(format!("tensor index {i} out of range")));
            }
        }
        for &i in &n.inputs {
            if !defined[i] {
                return Err(bad(format!(
                    "reads tensor '{}' before it is computed",
                    g.tensors[i].name
                )));
            }
        }
        let out = &g.tensors[n.output];
        if !matches!(out.storage, Storage::Arena { .. }) || defined[n.output] {
            return Err(bad(format!(
                "output '{}' must be a fresh activation",
                out.name
            )));
        }
        check_overlap(g, n).map_err(bad)?;
        ops::validate(&ops::Ctx { g, c, n }).map_err(bad)?;
        defined[n.output] = true;
    }
    for &o in &g.outputs {
        if !defined.get(o).copied().unwrap_or(false) || g.tensors[o].dtype == DType::I32 {
            return Err(Error::Invalid(format!(
                "graph output {o} is never computed"
            )));
        }
    }
    Ok(())
}

/// The arena sizes are derived from the tensors, not trusted: each must be
/// the end of its furthest activation rounded up to [`ARENA_ALIGN`] elements
/// (what `plan` writes), so a file cannot make `Session::new` allocate more
/// than its graph uses; together they must fit [`MAX_ARENA_BYTES`].
/// Contract: every tensor already checked to lie inside its storage.
fn check_arenas(g: &Graph) -> Result<()> {
    let need = |dt: DType| {
        g.tensors
            .iter()
            .filter(|t| t.dtype == dt)
            .filter_map(|t| range(t).map(|(_, _, end)| end))
            .max()
            .unwrap_or(0)
            .next_multiple_of(ARENA_ALIGN)
    };
    for (declared, dt, what) in [
        (g.arena_i8, DType::I8, "arena_i8"),
        (g.arena_f32, DType::F32, "arena_f32"),
    ] {
        let need = need(dt);
        if declared != need {
            return Err(Error::Invalid(format!(
                "{what} declares {declared} elements but its tensors need {need}"
            )));
        }
    }
    let bytes = g
        .arena_f32
        .checked_mul(4)
        .and_then(|b| b.checked_add(g.arena_i8))
        .filter(|&b| b <= MAX_ARENA_BYTES);
    if bytes.is_none() {
        return Err(Error::Invalid(format!(
            "arenas of {} int8 and {} f32 elements exceed {MAX_ARENA_BYTES} bytes",
            g.arena_i8, g.arena_f32
        )));
    }
    Ok(())
}

fn range(t: &Tensor) -> Option<(DType, usize, usize)> {
    match t.storage {
        Storage::Arena { offset } => Some((t.dtype, offset, offset + t.len())),
        Storage::Const { .. } | Storage::ConstF16 { .. } => None,
    }
}

/// A node may not write over its own inputs, except for the exact alias
/// [`ops::reshape::may_alias_input`] allows.
fn check_overlap(g: &Graph, n: &Node) -> std::result::Result<(), String> {
    let Some((dt, s, e)) = range(&g.tensors[n.output]) else {
        return Ok(());
    };
    for &i in &n.inputs {
        if let Some((dt2, s2, e2)) = range(&g.tensors[i]) {
            let exact_alias = ops::reshape::may_alias_input(&n.op) && s == s2 && e == e2;
            if dt == dt2 && s2 < e && s < e2 && !exact_alias && s < e {
                return Err(format!(
                    "output overlaps input '{}' in the arena",
                    g.tensors[i].name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{conv, noise, GEOM};
    use crate::graph::Op;
    use crate::Model;
    use strix_kernels::reference::ConvGeometry;

    /// The f32 conv graph of the format tests, mutated, as a loaded file
    /// would give it (written and read back, checksums correct).
    fn load_mutated(f: impl FnOnce(&mut Graph)) -> Result<Model> {
        let (meta, mut g, c) = conv(&noise(GEOM.weight_len(), 3), false);
        f(&mut g);
        Model::from_bytes(&crate::format::write(&meta, &g, &c))
    }

    fn err(f: impl FnOnce(&mut Graph)) -> String {
        load_mutated(f).expect_err("accepted").to_string()
    }

    fn geom(g: &mut Graph) -> &mut ConvGeometry {
        match &mut g.nodes[0].op {
            Op::Conv { geom, .. } => geom,
            op => panic!("{op:?}"),
        }
    }

    #[test]
    fn the_unmutated_conv_loads() {
        load_mutated(|_| {}).unwrap();
    }

    /// A dimension plus 2^62 whose size product wraps back to the true size
    /// (4 * (6 + 2^62) * 6 = 144 mod 2^64) passed the unchecked validation;
    /// the kernels then indexed with the lie.
    #[test]
    fn wrapped_conv_dimensions_are_refused() {
        let wrapped = GEOM
            .in_c
            .wrapping_mul(6 + (1 << 62))
            .wrapping_mul(GEOM.in_w);
        assert_eq!(wrapped, GEOM.in_c * GEOM.in_h * GEOM.in_w);
        let e = err(|g| geom(g).in_h += 1 << 62);
        assert!(
            e.contains("node conv (Conv)") && e.contains("height"),
            "{e}"
        );
        // And through the output, the weights and the reduction.
        let e = err(|g| geom(g).out_w += 1 << 62);
        assert!(e.contains("width"), "{e}");
        let e = err(|g| geom(g).kw += 1 << 62);
        assert!(e.contains("width") && e.contains("too large"), "{e}");
        // out_c * k = 8 * (4 * 3 * (3 + 2^63)) wraps to the true 288.
        let e = err(|g| {
            geom(g).kw = 3 + (1 << 63);
            geom(g).pad_left = 0;
        });
        assert!(e.contains("width"), "{e}");
        // input + padding itself wraps (found by fuzzing): an error, not an
        // overflow panic with debug assertions.
        let e = err(|g| geom(g).in_h = usize::MAX);
        assert!(e.contains("node conv (Conv)"), "{e}");
    }

    /// The output length must follow from input, padding, kernel, stride
    /// and dilation; zero strides and dilations are refused.
    #[test]
    fn inconsistent_conv_geometry_is_refused() {
        // The output width of `x`, with `y`'s shape and the plan to match.
        let out_w = |w: usize, stride: usize| {
            load_mutated(|g| {
                geom(g).stride_w = stride;
                geom(g).out_w = w;
                let y = g.nodes[0].output;
                g.tensors[y].shape[3] = w;
                crate::plan::plan(g, true);
            })
        };
        // 6 wide, kernel 3, leading padding 1, stride 1: 5 windows fit with
        // no trailing padding, 7 with 2 (the most below the window size).
        for w in 5..=7 {
            out_w(w, 1).unwrap();
        }
        for w in [1, 4, 8, 100] {
            let e = out_w(w, 1).unwrap_err().to_string();
            assert!(
                e.contains(&format!("width: output {w} does not follow from input 6"))
                    && e.contains("expected 5..=7"),
                "{e}"
            );
        }
        // Stride 2: (6 + 1 - 3) / 2 + 1 = 3 to (6 + 1 - 1) / 2 + 1 = 4.
        for (w, ok) in [(2, false), (3, true), (4, true), (5, false)] {
            let r = out_w(w, 2);
            assert_eq!(r.is_ok(), ok, "out_w {w}: {:?}", r.err());
        }
        let e = err(|g| geom(g).stride_h = 0);
        assert!(e.contains("invalid geometry"), "{e}");
        let e = err(|g| geom(g).dil_w = 0);
        assert!(e.contains("invalid geometry"), "{e}");
        let e = err(|g| geom(g).pad_top = 3);
        assert!(
            e.contains("padding 3 is not smaller than the window (3)"),
            "{e}"
        );
    }

    /// `f32::clamp` panics on `min > max`; NaN was refused, disorder was not.
    #[test]
    fn disordered_activation_bounds_are_refused() {
        let e = err(|g| {
            g.nodes[0].op = Op::Conv {
                geom: GEOM,
                act_min: 1.0,
                act_max: -1.0,
            }
        });
        assert!(e.contains("activation bounds [1, -1]"), "{e}");
        // NaN cannot come through the JSON of a file (it has no NaN), only
        // from a graph built in memory.
        let (_, mut g, c) = conv(&noise(GEOM.weight_len(), 3), false);
        g.nodes[0].op = Op::Conv {
            geom: GEOM,
            act_min: f32::NAN,
            act_max: 1.0,
        };
        let e = validate(&g, &c).unwrap_err().to_string();
        assert!(e.contains("NaN or out of order"), "{e}");
    }

    /// Arena sizes come from the tensors, not from the file.
    #[test]
    fn arena_sizes_must_be_what_the_tensors_need() {
        let (_, g, _) = conv(&noise(GEOM.weight_len(), 3), false);
        let need = g.arena_f32;
        let e = err(|g| g.arena_f32 = 1 << 29);
        assert!(
            e.contains(&format!(
                "arena_f32 declares 536870912 elements but its tensors need {need}"
            )),
            "{e}"
        );
        let e = err(|g| g.arena_i8 = 1 << 31);
        assert!(e.contains("arena_i8 declares 2147483648"), "{e}");
        let e = err(|g| g.arena_f32 -= 16);
        assert!(e.contains("lies outside the f32 arena"), "{e}");
    }

    /// Two activations ending together past the 2 GiB of arena (each tensor
    /// alone is within the element bound).
    #[test]
    fn arenas_over_the_byte_bound_are_refused() {
        let e = err(|g| {
            let y = g.nodes[0].output;
            g.tensors[y].storage = Storage::Arena { offset: 1 << 29 };
            g.arena_f32 = (1 << 29) + 288;
        });
        assert!(e.contains("exceed 2147483648 bytes"), "{e}");
    }

    #[test]
    fn arena_bytes_saturates() {
        let g = Graph {
            arena_i8: 1,
            arena_f32: usize::MAX / 2,
            ..Default::default()
        };
        assert_eq!(g.arena_bytes(), usize::MAX);
    }

    /// A zero-sized tensor may not carry a huge dimension: loops over its
    /// other dimensions would run 2^40 times doing nothing.
    #[test]
    fn empty_tensors_with_huge_dimensions_are_refused() {
        let e = err(|g| g.tensors[0].shape = vec![0, 1 << 40, 1, 1]);
        assert!(e.contains("tensor 0 'x' is too large"), "{e}");
    }
}
