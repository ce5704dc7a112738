//! `Reshape`: the same data under a new shape, and the runtime's one
//! aliasing rule. The planner gives a Reshape's output its input's buffer
//! when it can (then `run` has nothing to do); otherwise `run` copies.

use super::ctx::{want, Ctx, Out, Res, Run};
use crate::graph::{Graph, Node, Op};

/// The op's name in `inspect` and errors.
pub(crate) const NAME: &str = "Reshape";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Storage;
    use crate::ops::test_graph::{codes, noise_i8, q, run, TestGraph};

    /// A Reshape runs in place when the plan aliases it (no copy), and
    /// copies otherwise; both give the input's values, f32 and int8.
    #[test]
    fn reshape_validates_prepares_and_runs() {
        let xs: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let codes_in = noise_i8(6, 3, -128, 127);
        for reuse in [true, false] {
            let mut t = TestGraph::new();
            t.reuse = reuse;
            let x = t.input(&[2, 3]);
            let y = t.act_f32(&[3, 2]);
            t.node(Op::Reshape, &[x], y);
            let model = t.load().unwrap();
            let (g, n) = (&model.graph, &model.graph.nodes[0]);
            assert_eq!(runs_in_place(g, n), reuse);
            assert_eq!(run(&model, &[&xs]).f32(), xs);

            let mut t = TestGraph::new();
            t.reuse = reuse;
            let x = t.input_i8(&[2, 3], q(1));
            let y = t.act_i8(&[6], q(1));
            t.node(Op::Reshape, &[x], y);
            let got = run(&t.load().unwrap(), &[&codes(&codes_in, q(1))]).i8();
            assert_eq!(got, codes_in);

            // (Unaliased: an aliased output of another size overlaps
            // its input, which the graph-level check reports first.)
            let mut bad = t.clone();
            bad.reuse = false;
            bad.g.tensors[y].shape = vec![5];
            let e = bad.load_err();
            assert!(e.contains("reshape changes size"), "{e}");
        }
    }

    /// The aliasing rule is Reshape's alone: any other op whose output
    /// shares its input's buffer is refused.
    #[test]
    fn only_a_reshape_may_alias_its_input() {
        let mut t = TestGraph::new();
        let x = t.input(&[4]);
        let y = t.act_f32(&[4]);
        t.node(Op::Reshape, &[x], y);
        let mut g = t.g.clone();
        g.outputs = vec![y];
        crate::plan::plan(&mut g, true);
        assert_eq!(g.tensors[x].storage, g.tensors[y].storage);
        crate::validate::validate(&g, &t.c).unwrap();
        g.nodes[0].op = Op::Transpose { perm: vec![0] };
        assert!(!may_alias_input(&g.nodes[0].op));
        let e = crate::validate::validate(&g, &t.c).unwrap_err().to_string();
        assert!(e.contains("output overlaps input"), "{e}");
        assert!(matches!(g.tensors[y].storage, Storage::Arena { .. }));
    }
}
