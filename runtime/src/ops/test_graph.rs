//! A small graph builder for the ops' unit tests: a few tensors and one or
//! two nodes, planned and loaded through [`Model::new`] (validate +
//! prepare), then run ([`run`]) on every kernel path this CPU has, on one
//! and on three threads, which must all agree.
//!
//! int8 inputs come through a `Quantize` node from an f32 graph input (the
//! only kind a graph may have): with a power-of-two scale, [`codes`] gives
//! the f32 values that quantize to exactly the wanted codes.
//!
//! [`run`] also checks that `Session::run` allocates nothing: the runtime's
//! unit tests count the allocations of each thread (a counting global
//! allocator), and every op's test runs through it.

use crate::graph::{Consts, DType, Graph, Node, Op, Quant, Storage, Tensor};
use crate::{Model, Result, Session, TensorData};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use strix_kernels::Isa;

/// The system allocator, counting each thread's allocations.
struct Counting;

thread_local! {
    // `const`, without destructor: reading it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down may still allocate.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations the calling thread makes in `f`.
pub(crate) fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - before)
}

#[derive(Clone, Debug, Default)]
pub(crate) struct TestGraph {
    pub g: Graph,
    pub c: Consts,
    /// Whether the planner may reuse and alias buffers (see `plan::plan`).
    pub reuse: bool,
}

impl TestGraph {
    pub fn new() -> Self {
        TestGraph {
            reuse: true,
            ..Default::default()
        }
    }

    fn tensor(
        &mut self,
        shape: &[usize],
        dtype: DType,
        quant: Option<Quant>,
        storage: Storage,
    ) -> usize {
        self.g.tensors.push(Tensor {
            name: format!("t{}", self.g.tensors.len()),
            shape: shape.to_vec(),
            dtype,
            quant,
            storage,
        });
        self.g.tensors.len() - 1
    }

    /// A fresh activation (the planner gives it its offset).
    pub fn act(&mut self, shape: &[usize], dtype: DType, quant: Option<Quant>) -> usize {
        self.tensor(shape, dtype, quant, Storage::Arena { offset: 0 })
    }

    pub fn act_f32(&mut self, shape: &[usize]) -> usize {
        self.act(shape, DType::F32, None)
    }

    pub fn act_i8(&mut self, shape: &[usize], q: Quant) -> usize {
        self.act(shape, DType::I8, Some(q))
    }

    /// An f32 graph input (inputs are fed in the order they are made).
    pub fn input(&mut self, shape: &[usize]) -> usize {
        let id = self.act_f32(shape);
        self.g.inputs.push(id);
        id
    }

    /// An int8 activation of quantization `q`, quantized from a new f32
    /// graph input (feed it [`codes`]).
    pub fn input_i8(&mut self, shape: &[usize], q: Quant) -> usize {
        let x = self.input(shape);
        let y = self.act_i8(shape, q);
        self.node(Op::Quantize, &[x], y);
        y
    }

    pub fn const_f32(&mut self, shape: &[usize], data: &[f32]) -> usize {
        let offset = self.c.f32.len();
        self.c.f32.extend_from_slice(data);
        self.tensor(shape, DType::F32, None, Storage::Const { offset })
    }

    pub fn const_i8(&mut self, shape: &[usize], data: &[i8]) -> usize {
        let offset = self.c.i8.len();
        self.c.i8.extend_from_slice(data);
        self.tensor(shape, DType::I8, None, Storage::Const { offset })
    }

    pub fn const_i32(&mut self, shape: &[usize], data: &[i32]) -> usize {
        let offset = self.c.i32.len();
        self.c.i32.extend_from_slice(data);
        self.tensor(shape, DType::I32, None, Storage::Const { offset })
    }

    /// A requantization table (`[mult, shift]` pairs).
    pub fn const_requant(&mut self, rq: &[strix_kernels::Requant]) -> usize {
        let pairs: Vec<i32> = rq.iter().flat_map(|r| [r.mult, r.shift]).collect();
        self.const_i32(&[rq.len(), 2], &pairs)
    }

    pub fn node(&mut self, op: Op, inputs: &[usize], output: usize) {
        self.g.nodes.push(Node {
            name: format!("n{}", self.g.nodes.len()),
            op,
            inputs: inputs.to_vec(),
            output,
        });
    }

    /// The last node of the graph (to mutate it in tests of validation).
    pub fn last(&mut self) -> &mut Node {
        self.g.nodes.last_mut().expect("a node")
    }

    /// Plans the graph (the last node's output is the graph output) and
    /// loads it: validate, then prepare.
    pub fn load(&self) -> Result<Model> {
        let mut g = self.g.clone();
        g.outputs = vec![g.nodes.last().expect("a node").output];
        crate::plan::plan(&mut g, self.reuse);
        Model::new(Default::default(), g, self.c.clone())
    }

    /// The error loading reports, as text (panics if the graph loads).
    pub fn load_err(&self) -> String {
        match self.load() {
            Ok(_) => panic!("the graph was accepted"),
            Err(e) => e.to_string(),
        }
    }
}

/// f32 values that quantize to exactly `codes` under `q` (a power-of-two
/// scale keeps every step exact).
pub(crate) fn codes(codes: &[i8], q: Quant) -> Vec<f32> {
    assert_eq!(q.scale.log2().fract(), 0.0, "scale must be a power of two");
    codes
        .iter()
        .map(|&c| (c as i32 - q.zero_point) as f32 * q.scale)
        .collect()
}

/// The data of a graph output.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    F32(Vec<f32>),
    I8(Vec<i8>),
}

impl Data {
    pub fn f32(self) -> Vec<f32> {
        match self {
            Data::F32(v) => v,
            d => panic!("not f32: {d:?}"),
        }
    }
    pub fn i8(self) -> Vec<i8> {
        match self {
            Data::I8(v) => v,
            d => panic!("not int8: {d:?}"),
        }
    }
}

/// Runs `model` with `inputs` (one per graph input) on every kernel path
/// this CPU has, on one and three threads, twice each (stale arena data
/// must not matter), and returns graph output 0: every run must give the
/// same bits, and no run may allocate on the calling thread.
pub(crate) fn run(model: &Model, inputs: &[&[f32]]) -> Data {
    let mut first: Option<Data> = None;
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let m = model.clone().with_isa(isa).unwrap();
        for threads in [1, 3] {
            let mut s = Session::with_threads(&m, threads).unwrap();
            for _ in 0..2 {
                for (i, x) in inputs.iter().enumerate() {
                    s.input_mut(i).unwrap().copy_from_slice(x);
                }
                let (r, n) = allocations(|| s.run());
                r.unwrap();
                assert_eq!(n, 0, "Session::run allocated on {}", isa.name());
                let id = m.graph.outputs[0];
                let got = match s.tensor(id).unwrap() {
                    TensorData::F32(v) => Data::F32(v.to_vec()),
                    TensorData::I8(v) => Data::I8(v.to_vec()),
                    TensorData::I32(_) => unreachable!("no int32 activations"),
                };
                match &first {
                    None => first = Some(got),
                    Some(want) => assert!(
                        bits(want) == bits(&got),
                        "{} on {threads} threads: {got:?} differs from {want:?}",
                        isa.name()
                    ),
                }
            }
        }
    }
    first.expect("scalar is always available")
}

/// Bit patterns, so NaNs and signed zeros compare exactly.
fn bits(d: &Data) -> Vec<u32> {
    match d {
        Data::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        Data::I8(v) => v.iter().map(|&x| x as u8 as u32).collect(),
    }
}

/// The usual int8 quantization of the tests: scale 1/16, zero point `zp`.
pub(crate) fn q(zp: i32) -> Quant {
    Quant {
        scale: 1.0 / 16.0,
        zero_point: zp,
    }
}

/// Deterministic int8 values in `lo..=hi` (xorshift; no dependency).
pub(crate) fn noise_i8(n: usize, seed: u32, lo: i8, hi: i8) -> Vec<i8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9) | 1;
    let span = (hi as i32 - lo as i32 + 1) as u32;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (lo as i32 + (s % span) as i32) as i8
        })
        .collect()
}

/// Small integers as f32 (sums of their products are exact in f32, so
/// the order of additions cannot change a result).
pub(crate) fn small_f32(n: usize, seed: u32) -> Vec<f32> {
    noise_i8(n, seed, -4, 4)
        .into_iter()
        .map(f32::from)
        .collect()
}

/// A square conv geometry: `in_c x hw x hw` to `out_c` channels, a `k x k`
/// window, `stride`, padding `k / 2` (SAME for odd `k` and stride 1).
pub(crate) fn conv_geom(
    in_c: usize,
    hw: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    groups: usize,
) -> strix_kernels::reference::ConvGeometry {
    let pad = k / 2;
    let out = (hw + 2 * pad - k) / stride + 1;
    strix_kernels::reference::ConvGeometry {
        in_c,
        in_h: hw,
        in_w: hw,
        out_c,
        out_h: out,
        out_w: out,
        kh: k,
        kw: k,
        stride_h: stride,
        stride_w: stride,
        dil_h: 1,
        dil_w: 1,
        pad_top: pad,
        pad_left: pad,
        groups,
    }
}

/// Guards a test against comparing degenerate outputs (all clamped, all
/// equal): at least `min` distinct values.
pub(crate) fn assert_varied<T: PartialOrd + Copy + std::fmt::Debug>(v: &[T], min: usize) {
    let mut d: Vec<T> = v.to_vec();
    d.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    d.dedup();
    assert!(d.len() >= min, "only {} distinct values: {d:?}", d.len());
}

/// The allocation check of [`run`] could not fail if the counter did not
/// count.
#[test]
fn the_allocation_counter_counts() {
    let (v, n) = allocations(|| std::hint::black_box(vec![1u8; 10]));
    assert_eq!((v.len(), n), (10, 1));
}
