//! The executable graph stored in a `.strix` file: tensors, nodes, constants
//! and the memory plan. Everything here is untrusted until [`crate::validate::validate`]
//! has accepted it.

use serde::{Deserialize, Serialize};
use strix_kernels::reference::{
    BinaryOp, ConvGeometry, LstmGeometry, PoolGeometry, QAddParams, QConvParams, QGemmParams,
    QMulParams, ResizeGeometry, UnaryOp,
};
use strix_kernels::Requant;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    I8,
    I32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// Affine quantization of an int8 activation: `real = (q - zero_point) * scale`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quant {
    pub scale: f32,
    pub zero_point: i32,
}

/// Where a tensor's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// In the arena of its dtype, at this element offset (from the memory plan).
    Arena { offset: usize },
    /// In the constant pool of its dtype, at this element offset.
    Const { offset: usize },
    /// An f32 constant stored as IEEE half precision in the f16 pool
    /// ([`Consts::f16`]), at this element offset. Only f32 tensors may use it;
    /// the values are expanded to f32 once at load, so ops see an ordinary
    /// f32 constant and halving the file costs no time in `run`.
    ConstF16 { offset: usize },
}

impl Storage {
    /// Constant data (either pool), as opposed to an arena activation.
    pub fn is_const(self) -> bool {
        !matches!(self, Storage::Arena { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<Quant>,
    pub storage: Storage,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One operation. Inputs are listed in [`Node::inputs`] in the order given here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// f32 conv; inputs `[x, w, bias]`; per-batch geometry.
    Conv {
        geom: ConvGeometry,
        act_min: f32,
        act_max: f32,
    },
    /// int8 conv; inputs `[x, w (i8), bias (i32), requant (i32 pairs mult, shift)]`.
    QConv {
        geom: ConvGeometry,
        q: QConvParams,
    },
    /// Ungrouped int8 conv with block-sparse weights (1x4 blocks along the
    /// reduction, block CSR: see `strix_kernels::reference::SparseWeights`);
    /// inputs `[x, values (i8, 4 per stored block), blocks (i32 block column
    /// per stored block), row_ptr (i32, out_c + 1), bias (i32), requant]`.
    /// Output bit-identical to `QConv` on the dense weights.
    QConvSparse {
        geom: ConvGeometry,
        q: QConvParams,
    },
    /// int8 conv with f32 output (a layer feeding f32 ops); inputs
    /// `[x, w (i8), bias (i32), scale (f32 per output channel = s_in * s_w)]`.
    QConvF32 {
        geom: ConvGeometry,
        in_zp: i32,
        act_min: f32,
        act_max: f32,
    },
    /// f32 `x[m,k] @ w[k,n] + bias`; inputs `[x, w, bias?]` (w may be an activation).
    Gemm {
        m: usize,
        n: usize,
        k: usize,
        batch: usize,
        act_min: f32,
        act_max: f32,
    },
    /// int8 `x[m,k] @ w[n,k]^T`; inputs `[x, w (i8), bias (i32), requant]`.
    QGemm {
        m: usize,
        n: usize,
        k: usize,
        q: QGemmParams,
    },
    /// int8 gemm with f32 output; inputs `[x, w (i8), bias (i32), scale (f32)]`.
    QGemmF32 {
        m: usize,
        n: usize,
        k: usize,
        in_zp: i32,
        act_min: f32,
        act_max: f32,
    },
    MaxPool {
        geom: PoolGeometry,
    },
    /// Average pooling; int8 uses the input zero point for rounding.
    AvgPool {
        geom: PoolGeometry,
    },
    Binary {
        kind: BinaryOp,
    },
    QAdd {
        p: QAddParams,
    },
    QMul {
        p: QMulParams,
    },
    Unary {
        kind: UnaryOp,
    },
    /// int8 lookup table; inputs `[x, table (i8, 256)]`.
    Lut,
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
    /// Concatenation along `axis`; int8 inputs whose quantization differs from
    /// the output's are requantized with `requant[i]` (`None` = plain copy).
    Concat {
        axis: usize,
        requant: Vec<Option<Requant>>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    /// Same data, new shape (aliases its input's buffer when the plan allows).
    Reshape,
    Slice {
        starts: Vec<usize>,
        steps: Vec<isize>,
    },
    Gather {
        axis: usize,
        indices: Vec<usize>,
    },
    /// f32 LSTM, one forward direction, ONNX semantics (gates `i, o, f, c`,
    /// sigmoid/tanh/tanh); inputs `[x [seq, batch, input], w [4h, input],
    /// r [4h, h], b [4h] (Wb + Rb), h0 [batch, h], c0 [batch, h]]`. The output
    /// `[seq + 2, batch, h]` holds ONNX's `Y` rows, then `Y_h`, then `Y_c`
    /// (see `strix_kernels::reference::f32_lstm`); h0/c0 may be graph inputs
    /// so a caller carries the state between runs.
    Lstm {
        geom: LstmGeometry,
    },
    /// Constant padding; `value` is in the tensor's own domain (a code for int8).
    Pad {
        before: Vec<usize>,
        value: f32,
    },
    Resize {
        geom: ResizeGeometry,
    },
    /// f32 layer normalization of `outer` rows of `inner` elements; inputs
    /// `[x, scale (inner), bias (inner)?]` (see `ops/layer_norm.rs`).
    LayerNorm {
        outer: usize,
        inner: usize,
        epsilon: f32,
    },
    /// f32 -> int8 with the output's quantization.
    Quantize,
    /// int8 -> f32 with the input's quantization.
    Dequantize,
}

impl Op {
    /// Short op name for `inspect` and errors (each op module names its
    /// ops: `ops::name`).
    pub fn name(&self) -> &'static str {
        crate::ops::name(self)
    }

    /// Multiply-accumulates per inference over `batch` (0 for ops that do
    /// not multiply), saturating at `u64::MAX`: the dense work, as each op
    /// module counts it (`ops::macs`).
    pub fn macs(&self, batch: usize) -> u64 {
        crate::ops::macs(self, batch)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The ONNX node this came from (for errors and `inspect`).
    pub name: String,
    #[serde(flatten)]
    pub op: Op,
    pub inputs: Vec<usize>,
    pub output: usize,
}

/// The graph section of a `.strix` file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub tensors: Vec<Tensor>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// Arena sizes in elements, from the memory plan.
    pub arena_i8: usize,
    pub arena_f32: usize,
}

/// Constant pools, one per storage type so every access is naturally aligned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Consts {
    pub i8: Vec<i8>,
    pub i32: Vec<i32>,
    pub f32: Vec<f32>,
    /// Values of [`Storage::ConstF16`] tensors (f32 weights kept at half
    /// precision to halve their file size); every value must be finite.
    pub f16: Vec<half::f16>,
}

impl Consts {
    /// Bytes of constant data as stored (f16 values count 2 bytes each).
    pub fn bytes(&self) -> usize {
        self.i8.len() + 2 * self.f16.len() + 4 * (self.i32.len() + self.f32.len())
    }
}

impl Node {
    /// For a [`Op::QConvSparse`] node: `(stored blocks, dense blocks)`, i.e.
    /// the fraction of the weight's 1x4 blocks that are kept.
    pub fn sparse_blocks(&self, g: &Graph) -> Option<(usize, usize)> {
        match &self.op {
            Op::QConvSparse { geom, .. } => {
                let stored = g.tensors.get(*self.inputs.get(2)?)?.len();
                let kb = geom.k().div_ceil(strix_kernels::reference::SPARSE_BLOCK);
                Some((stored, geom.out_c * kb))
            }
            _ => None,
        }
    }
}

impl Graph {
    /// Arena bytes needed by one session. Saturates at `usize::MAX` (an
    /// unvalidated graph may declare anything; validation bounds a loaded
    /// model's arenas by `validate::MAX_ARENA_BYTES`).
    pub fn arena_bytes(&self) -> usize {
        self.arena_f32
            .saturating_mul(4)
            .saturating_add(self.arena_i8)
    }
    /// Multiply-accumulates per inference as executed (a sparse conv
    /// counts only its stored blocks), saturating.
    pub fn macs(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| crate::ops::executed_macs(self, n))
            .fold(0u64, u64::saturating_add)
    }
}
