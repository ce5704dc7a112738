//! `Reshape`: the same data under a new shape, and the runtime's one
//! aliasing rule. The planner gives a Reshape's output its input's buffer
//! when it can (then `run` has nothing to do); otherwise `run` copies.

use super::ctx::{want, Ctx, Out, Res, Run};
use crate::graph::{Graph, Node, Op};

/// The aliasing rule: whether `op`'s output may share its input's arena
/// buffer exactly (same offset, same length). Only a Reshape may, since its
/// bytes are its input's. The planner (`plan::plan`) aliases such outputs,
/// validation (`validate::check_overlap`) accepts that exact overlap and no
/// other, and [`runs_in_place`] skips the copy.
pub(crate) fn may_alias_input(op: &Op) -> bool {
    matches!(op, Op::Reshape)
}

/// True when the plan gave node `n`'s output its input's buffer: the node's
/// work is already done.
pub(crate) fn runs_in_place(g: &Graph, n: &Node) -> bool {
    may_alias_input(&n.op) && g.tensors[n.inputs[0]].storage == g.tensors[n.output].storage
}

pub(super) fn validate(cx: &Ctx) -> Res {
    cx.arity(1, 1)?;
    let (x, out) = (cx.input(0), cx.output());
    want(x.dtype == out.dtype && x.len() == out.len(), || {
        "reshape changes size".into()
    })
}

/// The copy, when the plan did not alias (see [`runs_in_place`]).
pub(super) fn run(r: &Run, out: Out) -> Res {
    match out {
        Out::F32(o) => o.copy_from_slice(r.f32(0)?),
        Out::I8(o) => o.copy_from_slice(r.i8(0)?),
    }
    Ok(())
}
