//! The parts of TFLite's schema (tensorflow/lite/schema/schema.fbs, the
//! `TFL3` file identifier) that Strix imports, decoded from the flatbuffer by
//! [`super::flatbuf`]: subgraph 0's tensors, operators (with their builtin
//! options) and inputs/outputs, the operator codes and the buffers. Field
//! numbers below are the schema's field order.

use super::flatbuf::Table;
use anyhow::{anyhow, bail, Context, Result};

/// `TensorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    Float32,
    Float16,
    Int32,
    Uint8,
    Int64,
    Int16,
    Int8,
    /// Any other type, by its schema number.
    Other(u8),
}

impl TensorType {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => TensorType::Float32,
            1 => TensorType::Float16,
            2 => TensorType::Int32,
            3 => TensorType::Uint8,
            4 => TensorType::Int64,
            7 => TensorType::Int16,
            9 => TensorType::Int8,
            o => TensorType::Other(o),
        }
    }
    pub fn name(self) -> String {
        match self {
            TensorType::Float32 => "float32".into(),
            TensorType::Float16 => "float16".into(),
            TensorType::Int32 => "int32".into(),
            TensorType::Uint8 => "uint8".into(),
            TensorType::Int64 => "int64".into(),
            TensorType::Int16 => "int16".into(),
            TensorType::Int8 => "int8".into(),
            TensorType::Other(o) => format!("type {o}"),
        }
    }
    /// Bytes per element, for the types whose data Strix reads.
    pub fn size(self) -> Option<usize> {
        match self {
            TensorType::Float32 | TensorType::Int32 => Some(4),
            TensorType::Int8 | TensorType::Uint8 => Some(1),
            TensorType::Int16 | TensorType::Float16 => Some(2),
            TensorType::Int64 => Some(8),
            TensorType::Other(_) => None,
        }
    }
}

/// `QuantizationParameters` (affine quantization only).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quantization {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    /// The axis the scales run along when there are several.
    pub quantized_dimension: usize,
}

/// `Tensor`.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub ttype: TensorType,
    /// Index into [`Model::buffers`] (0: no data, by convention).
    pub buffer: usize,
    pub quant: Option<Quantization>,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `Padding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Same,
    Valid,
}

/// `ActivationFunctionType`, by its schema number (0 NONE, 1 RELU,
/// 2 RELU_N1_TO_1, 3 RELU6, 4 TANH, 5 SIGN_BIT).
pub type Activation = u8;

pub const ACTIVATION_NAMES: [&str; 6] =
    ["NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT"];

/// The builtin options of the operators Strix maps (others: `None`).
#[derive(Clone, Debug, PartialEq)]
pub enum Options {
    None,
    Conv2D {
        padding: Padding,
        stride_w: i32,
        stride_h: i32,
        act: Activation,
        dilation_w: i32,
        dilation_h: i32,
    },
    DepthwiseConv2D {
        padding: Padding,
        stride_w: i32,
        stride_h: i32,
        depth_multiplier: i32,
        act: Activation,
        dilation_w: i32,
        dilation_h: i32,
    },
    Pool2D {
        padding: Padding,
        stride_w: i32,
        stride_h: i32,
        filter_w: i32,
        filter_h: i32,
        act: Activation,
    },
    FullyConnected {
        act: Activation,
        /// 0 DEFAULT; 1 SHUFFLED4x16INT8.
        weights_format: u8,
        keep_num_dims: bool,
        asymmetric_quantize_inputs: bool,
    },
    Softmax {
        beta: f32,
    },
    Add {
        act: Activation,
    },
    Reshape {
        new_shape: Vec<i32>,
    },
}

/// `Operator`.
#[derive(Clone, Debug)]
pub struct Operator {
    /// The builtin operator code (`BuiltinOperator`); custom operators have
    /// [`CUSTOM`] and `custom` set.
    pub code: i32,
    pub custom: Option<String>,
    /// Tensor indices; -1 marks an omitted optional input.
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options: Options,
}

/// A decoded `.tflite` file (subgraph 0).
#[derive(Clone, Debug)]
pub struct Model {
    pub version: u32,
    pub subgraphs: usize,
    pub tensors: Vec<Tensor>,
    pub operators: Vec<Operator>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// The data of each buffer (empty: none).
    pub buffers: Vec<Vec<u8>>,
}

pub const CUSTOM: i32 = 32;

/// Names of the builtin operators (`BuiltinOperator`, 0..=126), for messages.
const OP_NAMES: &[&str] = &[
    "ADD",
    "AVERAGE_POOL_2D",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEPTH_TO_SPACE",
    "DEQUANTIZE",
    "EMBEDDING_LOOKUP",
    "FLOOR",
    "FULLY_CONNECTED",
    "HASHTABLE_LOOKUP",
    "L2_NORMALIZATION",
    "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION",
    "LOGISTIC",
    "LSH_PROJECTION",
    "LSTM",
    "MAX_POOL_2D",
    "MUL",
    "RELU",
    "RELU_N1_TO_1",
    "RELU6",
    "RESHAPE",
    "RESIZE_BILINEAR",
    "RNN",
    "SOFTMAX",
    "SPACE_TO_DEPTH",
    "SVDF",
    "TANH",
    "CONCAT_EMBEDDINGS",
    "SKIP_GRAM",
    "CALL",
    "CUSTOM",
    "EMBEDDING_LOOKUP_SPARSE",
    "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN",
    "GATHER",
    "BATCH_TO_SPACE_ND",
    "SPACE_TO_BATCH_ND",
    "TRANSPOSE",
    "MEAN",
    "SUB",
    "DIV",
    "SQUEEZE",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "STRIDED_SLICE",
    "BIDIRECTIONAL_SEQUENCE_RNN",
    "EXP",
    "TOPK_V2",
    "SPLIT",
    "LOG_SOFTMAX",
    "DELEGATE",
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    "CAST",
    "PRELU",
    "MAXIMUM",
    "ARG_MAX",
    "MINIMUM",
    "LESS",
    "NEG",
    "PADV2",
    "GREATER",
    "GREATER_EQUAL",
    "LESS_EQUAL",
    "SELECT",
    "SLICE",
    "SIN",
    "TRANSPOSE_CONV",
    "SPARSE_TO_DENSE",
    "TILE",
    "EXPAND_DIMS",
    "EQUAL",
    "NOT_EQUAL",
    "LOG",
    "SUM",
    "SQRT",
    "RSQRT",
    "SHAPE",
    "POW",
    "ARG_MIN",
    "FAKE_QUANT",
    "REDUCE_PROD",
    "REDUCE_MAX",
    "PACK",
    "LOGICAL_OR",
    "ONE_HOT",
    "LOGICAL_AND",
    "LOGICAL_NOT",
    "UNPACK",
    "REDUCE_MIN",
    "FLOOR_DIV",
    "REDUCE_ANY",
    "SQUARE",
    "ZEROS_LIKE",
    "FILL",
    "FLOOR_MOD",
    "RANGE",
    "RESIZE_NEAREST_NEIGHBOR",
    "LEAKY_RELU",
    "SQUARED_DIFFERENCE",
    "MIRROR_PAD",
    "ABS",
    "SPLIT_V",
    "UNIQUE",
    "CEIL",
    "REVERSE_V2",
    "ADD_N",
    "GATHER_ND",
    "COS",
    "WHERE",
    "RANK",
    "ELU",
    "REVERSE_SEQUENCE",
    "MATRIX_DIAG",
    "QUANTIZE",
    "MATRIX_SET_DIAG",
    "ROUND",
    "HARD_SWISH",
    "IF",
    "WHILE",
    "NON_MAX_SUPPRESSION_V4",
    "NON_MAX_SUPPRESSION_V5",
    "SCATTER_ND",
    "SELECT_V2",
    "DENSIFY",
    "SEGMENT_SUM",
    "BATCH_MATMUL",
];

/// Builtin operator codes Strix maps.
pub mod op {
    pub const ADD: i32 = 0;
    pub const AVERAGE_POOL_2D: i32 = 1;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const DEQUANTIZE: i32 = 6;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const MAX_POOL_2D: i32 = 17;
    pub const RESHAPE: i32 = 22;
    pub const SOFTMAX: i32 = 25;
    pub const QUANTIZE: i32 = 114;
}

/// `NAME (code N)` of a builtin operator code.
pub fn op_name(code: i32) -> String {
    match usize::try_from(code).ok().and_then(|c| OP_NAMES.get(c)) {
        Some(n) => format!("{n} (code {code})"),
        None => format!("builtin operator code {code}"),
    }
}

/// Largest tensor rank and element count accepted (far beyond any model
/// Strix runs; they keep shape arithmetic from overflowing).
const MAX_RANK: usize = 8;
const MAX_ELEMENTS: usize = 1 << 31;

fn padding(v: u8, what: &str) -> Result<Padding> {
    match v {
        0 => Ok(Padding::Same),
        1 => Ok(Padding::Valid),
        o => bail!("{what}: unknown padding {o}"),
    }
}

/// `BuiltinOptions` union member `ty` (the union's type number) in table `t`.
fn options(code: i32, ty: u8, t: Option<Table>, what: &str) -> Result<Options> {
    // Union type numbers of the options tables read here.
    const CONV: u8 = 1;
    const DEPTHWISE: u8 = 2;
    const POOL: u8 = 5;
    const FC: u8 = 8;
    const SOFTMAX: u8 = 9;
    const ADD: u8 = 11;
    const RESHAPE: u8 = 17;
    let expected = match code {
        op::CONV_2D => Some(CONV),
        op::DEPTHWISE_CONV_2D => Some(DEPTHWISE),
        op::AVERAGE_POOL_2D | op::MAX_POOL_2D => Some(POOL),
        op::FULLY_CONNECTED => Some(FC),
        op::SOFTMAX => Some(SOFTMAX),
        op::ADD => Some(ADD),
        op::RESHAPE => Some(RESHAPE),
        _ => None,
    };
    let Some(expected) = expected else {
        return Ok(Options::None);
    };
    let Some(t) = t else {
        // Absent options take the schema's defaults (a RESHAPE commonly has
        // none: its shape is an input).
        return match code {
            op::RESHAPE => Ok(Options::Reshape { new_shape: vec![] }),
            op::ADD => Ok(Options::Add { act: 0 }),
            op::SOFTMAX => Ok(Options::Softmax { beta: 0.0 }),
            _ => bail!("{what}: {} has no builtin options", op_name(code)),
        };
    };
    if ty != expected {
        bail!(
            "{what}: {} carries builtin options of union type {ty}, expected {expected}",
            op_name(code)
        );
    }
    let w = |f: &str| format!("{what}: {f}");
    Ok(match ty {
        CONV => Options::Conv2D {
            padding: padding(t.u8(0, 0, &w("padding"))?, what)?,
            stride_w: t.i32(1, 0, &w("stride_w"))?,
            stride_h: t.i32(2, 0, &w("stride_h"))?,
            act: t.u8(3, 0, &w("fused_activation_function"))?,
            dilation_w: t.i32(4, 1, &w("dilation_w_factor"))?,
            dilation_h: t.i32(5, 1, &w("dilation_h_factor"))?,
        },
        DEPTHWISE => Options::DepthwiseConv2D {
            padding: padding(t.u8(0, 0, &w("padding"))?, what)?,
            stride_w: t.i32(1, 0, &w("stride_w"))?,
            stride_h: t.i32(2, 0, &w("stride_h"))?,
            depth_multiplier: t.i32(3, 0, &w("depth_multiplier"))?,
            act: t.u8(4, 0, &w("fused_activation_function"))?,
            dilation_w: t.i32(5, 1, &w("dilation_w_factor"))?,
            dilation_h: t.i32(6, 1, &w("dilation_h_factor"))?,
        },
        POOL => Options::Pool2D {
            padding: padding(t.u8(0, 0, &w("padding"))?, what)?,
            stride_w: t.i32(1, 0, &w("stride_w"))?,
            stride_h: t.i32(2, 0, &w("stride_h"))?,
            filter_w: t.i32(3, 0, &w("filter_width"))?,
            filter_h: t.i32(4, 0, &w("filter_height"))?,
            act: t.u8(5, 0, &w("fused_activation_function"))?,
        },
        FC => Options::FullyConnected {
            act: t.u8(0, 0, &w("fused_activation_function"))?,
            weights_format: t.u8(1, 0, &w("weights_format"))?,
            keep_num_dims: t.bool(2, false, &w("keep_num_dims"))?,
            asymmetric_quantize_inputs: t.bool(3, false, &w("asymmetric_quantize_inputs"))?,
        },
        SOFTMAX => Options::Softmax {
            beta: t.f32(0, 0.0, &w("beta"))?,
        },
        ADD => Options::Add {
            act: t.u8(0, 0, &w("fused_activation_function"))?,
        },
        RESHAPE => Options::Reshape {
            new_shape: t.i32s(0, &w("new_shape"))?,
        },
        _ => unreachable!("expected is one of the types above"),
    })
}

fn index(v: i64, len: usize, what: &str) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| anyhow!("{what}: index {v} out of range (0..{len})"))
}

impl Model {
    /// Decodes a `.tflite` file. Errors name the table and field that is
    /// malformed (and the operator or tensor index).
    pub fn parse(buf: &[u8]) -> Result<Model> {
        if buf.len() < 8 || &buf[4..8] != b"TFL3" {
            bail!("not a TFLite flatbuffer (no \"TFL3\" identifier at offset 4)");
        }
        let root = Table::root(buf)?;
        let version = root.u32(0, 0, "Model.version")?;
        let codes = root
            .tables(1, "Model.operator_codes")?
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = format!("operator_codes[{i}]");
                let dep = c.u8(0, 0, &format!("{w}.deprecated_builtin_code"))? as i8 as i32;
                let code = c.i32(3, 0, &format!("{w}.builtin_code"))?;
                let custom = c.string(1, &format!("{w}.custom_code"))?;
                // Files before schema 3a write only the deprecated byte;
                // newer ones write both (the deprecated one capped at 127).
                Ok((dep.max(code), custom))
            })
            .collect::<Result<Vec<_>>>()?;
        let subgraphs = root.tables(2, "Model.subgraphs")?;
        let Some(sg) = subgraphs.first() else {
            bail!("the model has no subgraph");
        };
        let buffers = root
            .tables(4, "Model.buffers")?
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let w = format!("buffers[{i}]");
                if let Some(d) = b.bytes(0, &format!("{w}.data"))? {
                    return Ok(d.to_vec());
                }
                // Models over 2 GB keep data after the flatbuffer.
                let off = b.u64(1, 0, &format!("{w}.offset"))?;
                let size = b.u64(2, 0, &format!("{w}.size"))?;
                if off > 1 && size > 0 {
                    let end = off.checked_add(size).filter(|&e| e <= buf.len() as u64);
                    let Some(end) = end else {
                        bail!("{w}: {size} bytes at offset {off} lie outside the file");
                    };
                    return Ok(buf[off as usize..end as usize].to_vec());
                }
                Ok(vec![])
            })
            .collect::<Result<Vec<_>>>()?;
        let tensors = sg
            .tables(0, "subgraph.tensors")?
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let w = format!("tensors[{i}]");
                let name = t.string(3, &format!("{w}.name"))?.unwrap_or_default();
                let w = format!("tensor {i} '{name}'");
                let dims = t.i32s(0, &format!("{w}.shape"))?;
                if dims.len() > MAX_RANK {
                    bail!("{w}: rank {} is beyond {MAX_RANK}", dims.len());
                }
                let shape = dims
                    .iter()
                    .map(|&d| {
                        usize::try_from(d).map_err(|_| anyhow!("{w}: dimension {d} in {dims:?}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                if shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_none_or(|n| n > MAX_ELEMENTS)
                {
                    bail!("{w}: shape {shape:?} has too many elements");
                }
                let ttype = TensorType::from_u8(t.u8(1, 0, &format!("{w}.type"))?);
                let buffer = index(
                    t.u32(2, 0, &format!("{w}.buffer"))? as i64,
                    buffers.len().max(1),
                    &format!("{w}.buffer"),
                )?;
                let quant = match t.table(4, &format!("{w}.quantization"))? {
                    None => None,
                    Some(q) => {
                        let scale = q.f32s(2, &format!("{w}.quantization.scale"))?;
                        let zero_point = q.i64s(3, &format!("{w}.quantization.zero_point"))?;
                        let details = q.u8(4, 0, &format!("{w}.quantization.details_type"))?;
                        if details != 0 {
                            bail!("{w}: custom quantization details (type {details}) are not supported");
                        }
                        let qd = q.i32(6, 0, &format!("{w}.quantization.quantized_dimension"))?;
                        let quantized_dimension = index(
                            qd as i64,
                            shape.len().max(1),
                            &format!("{w}.quantization.quantized_dimension"),
                        )?;
                        (!scale.is_empty()).then_some(Quantization {
                            scale,
                            zero_point,
                            quantized_dimension,
                        })
                    }
                };
                if t.table(6, &format!("{w}.sparsity"))?.is_some() {
                    bail!("{w}: sparse tensors are not supported");
                }
                Ok(Tensor {
                    name,
                    shape,
                    ttype,
                    buffer,
                    quant,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let nt = tensors.len();
        let tensor_list = |v: Vec<i32>, w: &str| -> Result<Vec<usize>> {
            v.iter().map(|&i| index(i as i64, nt, w)).collect()
        };
        let inputs = tensor_list(sg.i32s(1, "subgraph.inputs")?, "subgraph.inputs")?;
        let outputs = tensor_list(sg.i32s(2, "subgraph.outputs")?, "subgraph.outputs")?;
        let operators = sg
            .tables(3, "subgraph.operators")?
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let w = format!("operator {i}");
                let ci = o.u32(0, 0, &format!("{w}.opcode_index"))?;
                let (code, custom) = codes.get(ci as usize).cloned().ok_or_else(|| {
                    anyhow!("{w}: opcode_index {ci} out of range (0..{})", codes.len())
                })?;
                let inputs = o.i32s(1, &format!("{w}.inputs"))?;
                let outputs = o.i32s(2, &format!("{w}.outputs"))?;
                for &t in inputs.iter().chain(&outputs) {
                    if t != -1 {
                        index(t as i64, nt, &format!("{w} ({}) tensor", op_name(code)))?;
                    }
                }
                let ty = o.u8(3, 0, &format!("{w}.builtin_options_type"))?;
                let opts_t = o.table(4, &format!("{w}.builtin_options"))?;
                let options = options(code, ty, opts_t, &format!("{w} ({})", op_name(code)))?;
                Ok(Operator {
                    code,
                    custom,
                    inputs,
                    outputs,
                    options,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            version,
            subgraphs: subgraphs.len(),
            tensors,
            operators,
            inputs,
            outputs,
            buffers,
        })
    }

    /// The data of tensor `t` (empty when it has none), checked to hold
    /// exactly its elements.
    pub fn data(&self, t: usize) -> Result<&[u8]> {
        let tensor = &self.tensors[t];
        let d = self
            .buffers
            .get(tensor.buffer)
            .map(|b| b.as_slice())
            .unwrap_or(&[]);
        if d.is_empty() {
            return Ok(d);
        }
        let size = tensor.ttype.size().with_context(|| {
            format!(
                "tensor {t} '{}' has unsupported type {}",
                tensor.name,
                tensor.ttype.name()
            )
        })?;
        if d.len() != tensor.len() * size {
            bail!(
                "tensor {t} '{}' {:?} ({}) has {} bytes of data, expected {}",
                tensor.name,
                tensor.shape,
                tensor.ttype.name(),
                d.len(),
                tensor.len() * size
            );
        }
        Ok(d)
    }
}
