//! The compiler's graph: ONNX semantics in f32, after constant folding and
//! fusion, before precision is chosen. Values are either constants (weights,
//! folded shapes) or activations produced by exactly one node.

use strix_kernels::reference::{
    BinaryOp, ConvGeometry, LstmGeometry, PoolGeometry, ResizeGeometry, UnaryOp,
};

/// A host-side constant.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Self {
        HostTensor {
            shape,
            data: HostData::F32(v),
        }
    }
    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Self {
        HostTensor {
            shape,
            data: HostData::I64(v),
        }
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn as_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    pub fn as_i64(&self) -> Vec<i64> {
        match &self.data {
            HostData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            HostData::I64(v) => v.clone(),
        }
    }
    pub fn is_i64(&self) -> bool {
        matches!(self.data, HostData::I64(_))
    }
    /// The single value of a one-element tensor.
    pub fn scalar(&self) -> Option<f32> {
        (self.len() == 1).then(|| self.as_f32()[0])
    }
}

/// Activation clamp fused into a producer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Act {
    pub min: f32,
    pub max: f32,
}

impl Act {
    pub const NONE: Act = Act {
        min: f32::NEG_INFINITY,
        max: f32::INFINITY,
    };
    pub fn is_none(&self) -> bool {
        *self == Act::NONE
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum COp {
    /// inputs `[x, w, b]` (w, b constants)
    Conv {
        geom: ConvGeometry,
        act: Act,
    },
    /// `x[batch, m, k] @ w[k, n] + b`; inputs `[x, w, b?]`; w constant or activation.
    Gemm {
        m: usize,
        n: usize,
        k: usize,
        batch: usize,
        act: Act,
    },
    MaxPool {
        geom: PoolGeometry,
    },
    AvgPool {
        geom: PoolGeometry,
    },
    Binary(BinaryOp),
    Unary(UnaryOp),
    Softmax {
        outer: usize,
        axis: usize,
        inner: usize,
    },
    ReduceMean {
        outer: usize,
        axis: usize,
        inner: usize,
    },
    Concat {
        axis: usize,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Reshape,
    Slice {
        starts: Vec<usize>,
        steps: Vec<isize>,
    },
    Gather {
        axis: usize,
        indices: Vec<usize>,
    },
    Pad {
        before: Vec<usize>,
        value: f32,
    },
    Resize {
        geom: ResizeGeometry,
    },
    /// Forward LSTM (always f32); inputs `[x, w, r, b, h0, c0]`, output
    /// `[seq + 2, batch, hidden]` = `Y` rows, `Y_h`, `Y_c` (see `Op::Lstm`).
    Lstm {
        geom: LstmGeometry,
    },
    /// Layer normalization of `outer` rows of `inner` elements (always
    /// f32); inputs `[x, scale, bias?]` (constants of `inner` values).
    LayerNorm {
        outer: usize,
        inner: usize,
        epsilon: f32,
    },
}

impl COp {
    /// The op's name (each op module names its op: `ops::IrOp::name`).
    pub fn name(&self) -> &'static str {
        crate::ops::ir(self).name()
    }
}

#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub shape: Vec<usize>,
    pub konst: Option<HostTensor>,
}

#[derive(Clone, Debug)]
pub struct CNode {
    pub name: String,
    pub op: COp,
    pub inputs: Vec<usize>,
    pub output: usize,
}

#[derive(Clone, Debug, Default)]
pub struct CGraph {
    pub values: Vec<Value>,
    pub nodes: Vec<CNode>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// Quantization fixed by the model file (already-quantized imports);
    /// empty for float models. See [`crate::lower::Pinned`].
    pub pinned: crate::lower::Pinned,
}

impl CGraph {
    pub fn add_value(&mut self, name: &str, shape: Vec<usize>, konst: Option<HostTensor>) -> usize {
        self.values.push(Value {
            name: name.to_string(),
            shape,
            konst,
        });
        self.values.len() - 1
    }
    pub fn is_const(&self, v: usize) -> bool {
        self.values[v].konst.is_some()
    }
    /// Number of nodes (and graph outputs) reading each value.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.values.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                c[i] += 1;
            }
        }
        for &o in &self.outputs {
            c[o] += 1;
        }
        c
    }
    pub fn producer(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            p[n.output] = Some(i);
        }
        p
    }
    /// Drops nodes whose outputs nobody reads.
    pub fn remove_dead(&mut self) {
        let mut live = vec![false; self.values.len()];
        for &o in &self.outputs {
            live[o] = true;
        }
        let mut keep = vec![false; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().rev() {
            if live[n.output] {
                keep[i] = true;
                for &x in &n.inputs {
                    live[x] = true;
                }
            }
        }
        let mut i = 0;
        self.nodes.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
    /// Multiply-accumulates per inference (each op module counts its op's:
    /// `ops::IrOp::macs`), saturating.
    pub fn macs(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| crate::ops::ir(&n.op).macs(self, n))
            .fold(0u64, u64::saturating_add)
    }
}
