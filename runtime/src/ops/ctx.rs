//! What an op's phases see: [`Ctx`] (a node of the untrusted graph at load,
//! for validate and prepare) with the checks every validator shares, and
//! [`Run`] (the node's inputs and output in a session's arena, for run).

use crate::graph::{Consts, DType, Graph, Node, Storage, Tensor};
use crate::par::Workers;
use strix_kernels::driver::PackedConv;
use strix_kernels::table::KernelSet;
use strix_kernels::Requant;

/// What a validator or a run returns: `Err` holds the message, which the
/// caller wraps with the node's name and op (`Error::InvalidNode`).
pub(crate) type Res<T = ()> = std::result::Result<T, String>;

pub(crate) use crate::validate::MAX_AXIS;

/// A node at load time. Before the op's validator has accepted it, only the
/// graph-level facts `validate::validate` checked hold: every tensor index
/// exists, every tensor lies within its storage with fewer than
/// `validate::MAX_ELEMENTS` elements, and the inputs are computed before
/// the node. The validator indexes inputs only after checking the arity.
pub(crate) struct Ctx<'a> {
    pub g: &'a Graph,
    pub c: &'a Consts,
    pub n: &'a Node,
}

impl<'a> Ctx<'a> {
    /// Input `k` (contract: `k` below the checked arity).
    pub fn input(&self, k: usize) -> &'a Tensor {
        &self.g.tensors[self.n.inputs[k]]
    }

    pub fn output(&self) -> &'a Tensor {
        &self.g.tensors[self.n.output]
    }

    /// Between `lo` and `hi` inputs.
    pub fn arity(&self, lo: usize, hi: usize) -> Res {
        let n = self.n.inputs.len();
        want(n >= lo && n <= hi, || {
            format!("expects {lo}..={hi} inputs, has {n}")
        })
    }

    /// Input `k` has dtype `d`.
    pub fn dtype(&self, k: usize, d: DType) -> Res {
        let have = self.input(k).dtype;
        want(have == d, || {
            format!("input {k} must be {d:?}, is {have:?}")
        })
    }

    /// The output has dtype `d`.
    pub fn out_dtype(&self, d: DType) -> Res {
        let have = self.output().dtype;
        want(have == d, || format!("output must be {d:?}, is {have:?}"))
    }

    /// Input `k` is a constant (of either pool).
    pub fn is_const(&self, k: usize) -> bool {
        self.input(k).storage.is_const()
    }

    /// The data of input `k` if it is an int8 constant (for prepare and
    /// validators that read weights). `None` for anything else.
    pub fn const_i8(&self, k: usize) -> Option<&'a [i8]> {
        self.konst(k).and_then(|r| self.c.i8.get(r))
    }

    /// The data of input `k` if it is an int32 constant.
    pub fn const_i32(&self, k: usize) -> Option<&'a [i32]> {
        self.konst(k).and_then(|r| self.c.i32.get(r))
    }

    fn konst(&self, k: usize) -> Option<std::ops::Range<usize>> {
        let t = self.input(k);
        match t.storage {
            Storage::Const { offset } => Some(offset..offset.checked_add(t.len())?),
            Storage::Arena { .. } | Storage::ConstF16 { .. } => None,
        }
    }

    /// Input `k` is a constant requantization table of `count` `[mult,
    /// shift]` pairs in the kernels' range, and input `k - 1` (the bias it
    /// goes with) is within the accumulation bound ([`bias_ok`]).
    pub fn requant(&self, k: usize, count: usize) -> Res {
        let t = self.input(k);
        let pairs = mul("requantization table", 2, count)?;
        want(
            self.is_const(k) && t.dtype == DType::I32 && t.len() == pairs,
            || "requantization table has the wrong size".into(),
        )?;
        let Storage::Const { offset } = t.storage else {
            return Err("requantization must be constant".into());
        };
        let table = &self.c.i32[offset..offset + pairs];
        want(
            table.chunks(2).all(|p| {
                rq_sane(Requant {
                    mult: p[0],
                    shift: p[1],
                })
            }),
            || "requantization multiplier out of range".into(),
        )?;
        bias_ok(self.c, self.input(k - 1))
    }
}

/// `Ok` if `cond`, else the message.
pub(crate) fn want(cond: bool, msg: impl FnOnce() -> String) -> Res {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// `a * b`, or an error naming `what` when it overflows.
pub(crate) fn mul(what: &str, a: usize, b: usize) -> Res<usize> {
    a.checked_mul(b)
        .ok_or_else(|| format!("{what} ({a} x {b}) overflows"))
}

/// The product of `dims` in u64, saturating: an op's multiply-accumulates
/// (a validated geometry's product can pass `usize` on 32-bit targets, and
/// `inspect` reports unvalidated graphs too).
pub(crate) fn macs_of(dims: &[usize]) -> u64 {
    dims.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

/// One spatial axis of a conv or pool: windows of extent
/// `(kernel - 1) * dilation + 1` every `stride` elements, starting at
/// `-pad`. The declared output length must be the one this implies. The
/// trailing padding is not stored, so "implied" is: at least the windows that
/// fit without trailing padding (ONNX's count with none), and no window
/// starting past the input (trailing padding smaller than the window, which
/// also covers ceil-mode pooling and SAME padding); the leading padding must
/// be smaller than the window too. Then every window overlaps the input and
/// every index the kernels compute along the axis is below [`MAX_AXIS`].
pub(crate) fn axis_ok(
    axis: &str,
    input: usize,
    pad: usize,
    kernel: usize,
    stride: usize,
    dil: usize,
    out: usize,
) -> Res {
    want(input > 0 && kernel > 0 && stride > 0 && dil > 0, || {
        format!("{axis}: input {input}, kernel {kernel}, stride {stride} and dilation {dil} must be non-zero")
    })?;
    // Past the input a stride only matters with one output (and a dilation
    // with a one-tap kernel), but the kernels still multiply by them.
    want(stride <= MAX_AXIS && dil <= MAX_AXIS, || {
        format!("{axis}: stride {stride} or dilation {dil} is too large")
    })?;
    let ext = (kernel - 1)
        .checked_mul(dil)
        .and_then(|e| e.checked_add(1))
        .filter(|&e| e <= MAX_AXIS)
        .ok_or_else(|| format!("{axis}: window of {kernel} taps dilated {dil} is too large"))?;
    want(pad < ext, || {
        format!("{axis}: padding {pad} is not smaller than the window ({ext})")
    })?;
    let padded = input
        .checked_add(pad)
        .filter(|p| p.checked_add(ext).is_some_and(|e| e <= MAX_AXIS))
        .ok_or_else(|| {
            format!("{axis}: input {input} with padding {pad} and window {ext} is too large")
        })?;
    let lo = if padded >= ext {
        (padded - ext) / stride + 1
    } else {
        1
    };
    let hi = (padded - 1) / stride + 1;
    want(lo <= out && out <= hi, || {
        let expect = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}..={hi}")
        };
        format!(
            "{axis}: output {out} does not follow from input {input}, padding {pad}, \
             window {ext} and stride {stride} (expected {expect})"
        )
    })
}

/// Activation bounds of an f32 output: ordered, and neither NaN
/// (`f32::clamp` panics on both).
pub(crate) fn act_ok(act_min: f32, act_max: f32) -> Res {
    want(act_min <= act_max, || {
        format!("activation bounds [{act_min}, {act_max}] are NaN or out of order")
    })
}

/// Activation bounds of an int8 output (the kernels assert them ordered).
pub(crate) fn qact_ok(act_min: i8, act_max: i8) -> Res {
    want(act_min <= act_max, || {
        format!("activation bounds [{act_min}, {act_max}] are out of order")
    })
}

/// Bias must leave room for the accumulation (see the kernels' overflow bound).
pub(crate) fn bias_ok(c: &Consts, t: &Tensor) -> Res {
    let Storage::Const { offset } = t.storage else {
        return Err("bias must be constant".into());
    };
    want(
        c.i32[offset..offset + t.len()]
            .iter()
            .all(|b| b.unsigned_abs() <= 1 << 30),
        || "bias exceeds 2^30".into(),
    )
}

pub(crate) fn zp_ok(z: i32) -> bool {
    (-128..=127).contains(&z)
}

pub(crate) fn rq_sane(r: Requant) -> bool {
    r.mult >= 0 && (-31..=30).contains(&r.shift)
}

/// A packed conv at run time: what prepare made, and its packed weights
/// (its own copy, or its range of a lean model's constant pool).
#[derive(Clone, Copy)]
pub(crate) struct Packed<'a> {
    pub conv: &'a PackedConv,
    pub weights: &'a [i8],
}

/// A node at run time: its inputs (readable while the output is borrowed
/// mutably), its output tensor, the kernel path and what prepare computed
/// for it. Every accessor's bounds were checked by the op's validator.
pub(crate) struct Run<'a> {
    pub n: &'a Node,
    /// The output tensor (its data is the [`Out`] passed beside).
    pub out: &'a Tensor,
    pub ks: &'static KernelSet,
    /// The zero-point-folded bias prepare made for this node, if any.
    pub folded: Option<&'a [i32]>,
    /// The packed weights and panel plan prepare made for this node, if any.
    pub packed: Option<Packed<'a>>,
    src: Src<'a>,
}

impl<'a> Run<'a> {
    /// Input `k`'s tensor.
    pub fn input(&self, k: usize) -> &'a Tensor {
        &self.src.t[self.n.inputs[k]]
    }

    pub fn shape(&self, k: usize) -> &'a [usize] {
        &self.input(k).shape
    }

    /// Input `k`'s data, f32.
    pub fn f32(&self, k: usize) -> Res<&'a [f32]> {
        self.src.f32(self.n.inputs[k])
    }

    /// Input `k`'s data, int8.
    pub fn i8(&self, k: usize) -> Res<&'a [i8]> {
        self.src.i8(self.n.inputs[k])
    }

    /// Input `k`'s data, an int32 constant.
    pub fn i32(&self, k: usize) -> Res<&'a [i32]> {
        self.src.i32(self.n.inputs[k])
    }

    /// Input `k`, an int32 constant of `[mult, shift]` pairs, as `Requant`s.
    pub fn requant(&self, k: usize) -> Res<&'a [Requant]> {
        Ok(as_requant(self.i32(k)?))
    }
}

/// Views `[mult, shift]` pairs as `Requant`s (same layout: two `i32`s).
fn as_requant(raw: &[i32]) -> &[Requant] {
    let n = raw.len() / 2;
    // SAFETY: Requant is a #[repr(C)] pair of i32 with the alignment of i32;
    // the slice covers exactly n pairs.
    unsafe { std::slice::from_raw_parts(raw.as_ptr() as *const Requant, n) }
}

/// The output's data, by dtype.
pub(crate) enum Out<'a> {
    F32(&'a mut [f32]),
    I8(&'a mut [i8]),
}

impl<'a> Out<'a> {
    /// The f32 output of an op that only produces f32.
    pub fn f32(self) -> Res<&'a mut [f32]> {
        match self {
            Out::F32(o) => Ok(o),
            Out::I8(_) => Err(cannot_produce(DType::I8)),
        }
    }

    /// The int8 output of an op that only produces int8.
    pub fn i8(self) -> Res<&'a mut [i8]> {
        match self {
            Out::I8(o) => Ok(o),
            Out::F32(_) => Err(cannot_produce(DType::F32)),
        }
    }
}

#[cold]
fn cannot_produce(d: DType) -> String {
    format!("cannot produce a {d:?} output")
}

/// The part of an arena outside the output's range, readable while the output
/// range is borrowed mutably.
struct Parts<'a, T> {
    lo: &'a [T],
    hi: &'a [T],
    hole: (usize, usize),
}

impl<'a, T> Parts<'a, T> {
    fn whole(all: &'a [T]) -> Self {
        Parts {
            lo: all,
            hi: &[],
            hole: (usize::MAX, usize::MAX),
        }
    }
    fn get(&self, start: usize, len: usize) -> Res<&'a [T]> {
        let end = start + len;
        if end <= self.hole.0 {
            self.lo.get(start..end)
        } else if start >= self.hole.1 {
            self.hi.get(start - self.hole.1..end - self.hole.1)
        } else {
            None
        }
        .ok_or_else(|| "input overlaps output".to_string())
    }
}

struct Src<'a> {
    t: &'a [Tensor],
    c: &'a Consts,
    /// The f16 pool expanded to f32 at load (`Prepared::f16_as_f32`).
    f16: &'a [f32],
    a8: Parts<'a, i8>,
    a32: Parts<'a, f32>,
}

impl<'a> Src<'a> {
    fn f32(&self, id: usize) -> Res<&'a [f32]> {
        let t = &self.t[id];
        match (t.storage, t.dtype) {
            (Storage::Arena { offset }, DType::F32) => self.a32.get(offset, t.len()),
            (Storage::Const { offset }, DType::F32) => Ok(&self.c.f32[offset..offset + t.len()]),
            (Storage::ConstF16 { offset }, DType::F32) => Ok(&self.f16[offset..offset + t.len()]),
            _ => Err(format!("tensor '{}' is not f32", t.name)),
        }
    }
    fn i8(&self, id: usize) -> Res<&'a [i8]> {
        let t = &self.t[id];
        match (t.storage, t.dtype) {
            (Storage::Arena { offset }, DType::I8) => self.a8.get(offset, t.len()),
            (Storage::Const { offset }, DType::I8) => Ok(&self.c.i8[offset..offset + t.len()]),
            _ => Err(format!("tensor '{}' is not int8", t.name)),
        }
    }
    fn i32(&self, id: usize) -> Res<&'a [i32]> {
        let t = &self.t[id];
        match (t.storage, t.dtype) {
            (Storage::Const { offset }, DType::I32) => Ok(&self.c.i32[offset..offset + t.len()]),
            _ => Err(format!("tensor '{}' is not an int32 constant", t.name)),
        }
    }
}

/// Runs node `node` of `g` on the arenas: splits out the output's range (so
/// the inputs stay readable beside it) and hands the op its [`Run`] view.
/// No allocation, no locks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_node(
    p: &crate::kernels::Prepared,
    node: usize,
    g: &Graph,
    c: &Consts,
    a8: &mut [i8],
    a32: &mut [f32],
    wk: &mut Workers,
) -> Res {
    let n = &g.nodes[node];
    let ot = &g.tensors[n.output];
    let Storage::Arena { offset } = ot.storage else {
        return Err("output is not an activation".into());
    };
    let len = ot.len();
    if super::reshape::runs_in_place(g, n) {
        return Ok(());
    }
    let run = |src: Src<'_>, out: Out<'_>, wk: &mut Workers| {
        let r = Run {
            n,
            out: ot,
            ks: p.ks,
            folded: p.folded[node].as_deref(),
            packed: p.packed[node]
                .as_ref()
                .zip(p.packed_weights(node, c))
                .map(|(conv, weights)| Packed { conv, weights }),
            src,
        };
        super::run(&r, out, wk)
    };
    match ot.dtype {
        DType::I8 => {
            let (lo, rest) = a8.split_at_mut(offset);
            let (out, hi) = rest.split_at_mut(len);
            let src = Src {
                t: &g.tensors,
                c,
                f16: &p.f16_as_f32,
                a8: Parts {
                    lo,
                    hi,
                    hole: (offset, offset + len),
                },
                a32: Parts::whole(a32),
            };
            run(src, Out::I8(out), wk)
        }
        DType::F32 => {
            let (lo, rest) = a32.split_at_mut(offset);
            let (out, hi) = rest.split_at_mut(len);
            let src = Src {
                t: &g.tensors,
                c,
                f16: &p.f16_as_f32,
                a8: Parts::whole(a8),
                a32: Parts {
                    lo,
                    hi,
                    hole: (offset, offset + len),
                },
            };
            run(src, Out::F32(out), wk)
        }
        DType::I32 => Err("int32 activations are not supported".into()),
    }
}
