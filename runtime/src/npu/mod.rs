//! Rockchip NPU part of a model: the `RKNN` section of a `.strix` file and,
//! with the `rknpu` cargo feature, the backend that runs it through
//! `librknnrt` (see `rknn.rs`).
//!
//! A model with an NPU part is an ordinary Strix graph plus a compiled
//! `.rknn` blob that replaces one contiguous range of its nodes
//! (`first_node..end_node`, in execution order). Those nodes stay in the
//! graph: they are the CPU fallback, run whenever the NPU is not used
//! (runtime built without `rknpu`, no `librknnrt.so`, `rknn_init` refused
//! the blob, or the caller disabled it). A runtime that does not know the
//! section skips it (unknown sections are skipped) and runs the CPU graph.
//!
//! Boundary: the blob's inputs are the range's f32 input tensors, in
//! [`NpuPart::inputs`] order (given to `rknn_inputs_set` as float32 NCHW,
//! or stored by Strix into `rknn_create_mem` buffers in the NPU's native
//! layout and type, see [`NativeLayout`]); its outputs are read back as
//! real values (float32 from `rknn_outputs_get`, or converted from the
//! native buffers) and stored into the range's output tensors, quantized
//! with the Strix tensor's own scale and zero point when that tensor is
//! int8. So the CPU ops after the range see exactly the tensors they would
//! see after the CPU range, up to the NPU's numerics.

use crate::error::{Error, Result};
use crate::graph::{DType, Graph, Storage};
use serde::{Deserialize, Serialize};

#[cfg(feature = "rknpu")]
pub mod rknn;

/// The section body starts with this, then a u32 LE length, the JSON
/// descriptor and the blob.
const SECTION_MAGIC: &[u8; 8] = b"SXRKNN1\0";

/// The NPU part of a model (the `RKNN` section).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NpuPart {
    /// Board the blob was compiled for (`rk3588`, `rk3566`, `rv1106`).
    pub board: String,
    /// First node (index into `Graph::nodes`) the blob replaces.
    pub first_node: usize,
    /// One past the last node the blob replaces.
    pub end_node: usize,
    /// Graph tensors fed to the blob, in its input order.
    pub inputs: Vec<usize>,
    /// Graph tensors the blob produces, in its output order.
    pub outputs: Vec<usize>,
    /// What produced the blob (e.g. `rknn-toolkit2 2.5.0`), for `inspect`.
    #[serde(default)]
    pub compiler: String,
    /// The compiled `.rknn` model (not in the JSON: stored after it).
    #[serde(skip)]
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for NpuPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpuPart")
            .field("board", &self.board)
            .field("nodes", &(self.first_node..self.end_node))
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("compiler", &self.compiler)
            .field("blob_bytes", &self.blob.len())
            .finish()
    }
}

/// Boards whose NPU generation the compiler targets.
pub const BOARDS: [&str; 3] = ["rk3588", "rk3566", "rv1106"];

impl NpuPart {
    /// The section body: magic, u32 LE JSON length, JSON, blob.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("descriptor serialises");
        let mut out = Vec::with_capacity(12 + json.len() + self.blob.len());
        out.extend_from_slice(SECTION_MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.blob);
        out
    }

    /// Parses a section body (not yet checked against a graph: see [`NpuPart::check`]).
    pub fn decode(body: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Corrupt(format!("RKNN section: {m}"));
        if body.len() < 12 || &body[..8] != SECTION_MAGIC {
            return Err(bad("bad magic (expected \"SXRKNN1\")".into()));
        }
        let n = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
        let end = 12usize.checked_add(n).filter(|&e| e <= body.len());
        let json = end
            .map(|e| &body[12..e])
            .ok_or_else(|| bad(format!("descriptor of {n} bytes runs past the section")))?;
        let mut part: NpuPart =
            serde_json::from_slice(json).map_err(|e| bad(format!("descriptor: {e}")))?;
        part.blob = body[12 + n..].to_vec(); // 12 + n <= len, checked above
        Ok(part)
    }

    /// Checks the part against the graph it belongs to: a non-empty blob,
    /// a non-empty node range inside the graph (the CPU fallback; a file
    /// whose section names no fallback nodes is refused), and declared
    /// inputs/outputs equal to the range's real boundary, inputs f32 and
    /// outputs f32 or int8 arena tensors.
    pub fn check(&self, g: &Graph) -> Result<()> {
        let bad = |m: String| Error::Corrupt(format!("RKNN section: {m}"));
        if self.blob.is_empty() {
            return Err(bad("the compiled blob is empty".into()));
        }
        if !BOARDS.contains(&self.board.as_str()) {
            return Err(bad(format!(
                "board {:?} is not one of {BOARDS:?}",
                self.board
            )));
        }
        if self.first_node >= self.end_node || self.end_node > g.nodes.len() {
            return Err(bad(format!(
                "node range {}..{} is not a non-empty range of the graph's {} nodes \
                 (the CPU fallback must be present)",
                self.first_node,
                self.end_node,
                g.nodes.len()
            )));
        }
        let (ins, outs) = boundary(g, self.first_node, self.end_node);
        let same = |declared: &[usize], real: &[usize]| {
            let mut a = declared.to_vec();
            a.sort_unstable();
            a.dedup();
            a.len() == declared.len() && a == real
        };
        if !same(&self.inputs, &ins) {
            return Err(bad(format!(
                "declared inputs {:?} differ from the inputs {ins:?} of nodes {}..{}",
                self.inputs, self.first_node, self.end_node
            )));
        }
        if !same(&self.outputs, &outs) {
            return Err(bad(format!(
                "declared outputs {:?} differ from the outputs {outs:?} of nodes {}..{}",
                self.outputs, self.first_node, self.end_node
            )));
        }
        for &t in &self.inputs {
            let t = &g.tensors[t];
            if t.dtype != DType::F32 || !matches!(t.storage, Storage::Arena { .. }) {
                return Err(bad(format!("input {:?} is not an f32 activation", t.name)));
            }
        }
        for &t in &self.outputs {
            let t = &g.tensors[t];
            if !matches!(t.dtype, DType::F32 | DType::I8)
                || !matches!(t.storage, Storage::Arena { .. })
            {
                return Err(bad(format!(
                    "output {:?} is not an f32 or int8 activation",
                    t.name
                )));
            }
        }
        Ok(())
    }
}

/// The activations nodes `first..end` read but do not produce (sorted), and
/// those they produce that a later node or the graph's outputs read
/// (sorted). Constants are not part of the boundary: the blob holds its
/// own weights. Indices must be in range (validated graph).
pub fn boundary(g: &Graph, first: usize, end: usize) -> (Vec<usize>, Vec<usize>) {
    let inside = first..end;
    let produced: Vec<usize> = g.nodes[inside.clone()].iter().map(|n| n.output).collect();
    let mut ins: Vec<usize> = g.nodes[inside.clone()]
        .iter()
        .flat_map(|n| n.inputs.iter().copied())
        .filter(|t| !produced.contains(t) && !g.tensors[*t].storage.is_const())
        .collect();
    ins.sort_unstable();
    ins.dedup();
    let mut outs: Vec<usize> = produced
        .iter()
        .copied()
        .filter(|t| {
            g.outputs.contains(t)
                || g.nodes
                    .iter()
                    .enumerate()
                    .any(|(i, n)| !inside.contains(&i) && n.inputs.contains(t))
        })
        .collect();
    outs.sort_unstable();
    outs.dedup();
    (ins, outs)
}

/// Where a session runs the model's NPU part (see [`crate::Session::backend`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The model has no NPU part: everything runs on the CPU.
    Cpu,
    /// The model has an NPU part but its CPU fallback runs, for `reason`.
    CpuFallback { reason: String },
    /// Nodes `first..end` run on the NPU through `library`.
    Npu {
        library: String,
        board: String,
        first: usize,
        end: usize,
        core_mask: CoreMask,
        /// How tensors cross to the NPU.
        io: NpuIo,
    },
}

/// How a session moves the NPU part's tensors (see `rknn.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NpuIo {
    /// `rknn_create_mem` buffers bound once with `rknn_set_io_mem`, in the
    /// NPU's native layouts, converted by Strix ([`NativeLayout`]).
    ZeroCopy,
    /// `rknn_inputs_set` / `rknn_outputs_get` (float32 NCHW; the library
    /// converts), for `reason` (why zero-copy is not used).
    Copy { reason: String },
}

impl std::fmt::Display for NpuIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NpuIo::ZeroCopy => write!(f, "zero-copy I/O"),
            NpuIo::Copy { reason } => write!(f, "copy I/O: {reason}"),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Cpu => write!(f, "cpu"),
            Backend::CpuFallback { reason } => write!(f, "cpu (npu fallback: {reason})"),
            Backend::Npu {
                library,
                board,
                first,
                end,
                core_mask,
                io,
            } => write!(
                f,
                "npu ({board}, nodes {first}..{end} via {library}, cores {core_mask:?}, {io}) + cpu"
            ),
        }
    }
}

/// Which NPU cores a session may use (`rknn_set_core_mask`; RK3588 has
/// three, RK3566 and RV1106 one: there only `Auto` and `Core0` apply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CoreMask {
    #[default]
    Auto,
    Core0,
    Core1,
    Core2,
    Core01,
    Core012,
}

impl CoreMask {
    /// The `rknn_core_mask` value.
    pub fn bits(self) -> u32 {
        match self {
            CoreMask::Auto => 0,
            CoreMask::Core0 => 1,
            CoreMask::Core1 => 2,
            CoreMask::Core2 => 4,
            CoreMask::Core01 => 3,
            CoreMask::Core012 => 7,
        }
    }

    /// Parses `auto`, `0`, `1`, `2`, `0,1`, `0,1,2`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => CoreMask::Auto,
            "0" => CoreMask::Core0,
            "1" => CoreMask::Core1,
            "2" => CoreMask::Core2,
            "0,1" => CoreMask::Core01,
            "0,1,2" => CoreMask::Core012,
            _ => {
                return Err(Error::Argument(format!(
                    "NPU core mask {s:?}: expected auto, 0, 1, 2, 0,1 or 0,1,2"
                )))
            }
        })
    }
}

/// How a session uses a model's NPU part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpuOptions {
    /// Run the NPU part at all (`false`: always the CPU fallback).
    pub enabled: bool,
    /// The runtime library to open: a file name searched the usual way by
    /// the dynamic loader, or a path. Ignored by a `rknpu-static` build.
    pub library: String,
    pub core_mask: CoreMask,
    /// The board the session runs on, when known (a board file's name:
    /// `rk3588`, `rk3566`, `rv1106`, ...). A part compiled for another board
    /// then runs on the CPU with that reason; with `enabled == false` the
    /// reason names the board as having no NPU. `None`: no check.
    pub board: Option<String>,
    /// Use zero-copy I/O (`rknn_create_mem` / `rknn_set_io_mem`) when the
    /// library has it (default `true`); `false` forces the copy API
    /// (`rknn_inputs_set` / `rknn_outputs_get`), e.g. to compare the two.
    pub zero_copy: bool,
}

impl Default for NpuOptions {
    fn default() -> Self {
        NpuOptions {
            enabled: true,
            library: DEFAULT_LIBRARY.into(),
            core_mask: CoreMask::Auto,
            board: None,
            zero_copy: true,
        }
    }
}

impl NpuOptions {
    /// The options for a board: the NPU on when its board file lists one
    /// (`has_npu`), through that board's runtime library
    /// ([`library_for_board`]).
    pub fn for_board(board: &str, has_npu: bool) -> Self {
        NpuOptions {
            enabled: has_npu,
            library: library_for_board(board).into(),
            core_mask: CoreMask::Auto,
            board: Some(board.into()),
            zero_copy: true,
        }
    }
}

/// Rockchip's runtime for RK3588/RK3566 (RV1106 uses `librknnmrt.so`).
pub const DEFAULT_LIBRARY: &str = "librknnrt.so";

/// The library a board's runtime is called.
pub fn library_for_board(board: &str) -> &'static str {
    if board == "rv1106" {
        "librknnmrt.so"
    } else {
        DEFAULT_LIBRARY
    }
}

/// Converts a native NC1HWC2 tensor (`[n][c1][h][w][c2]`, `c1 = ceil(c / c2)`,
/// channels past `c` padding) to NCHW. `src` holds `n * c1 * h * w * c2`
/// values; `dst` receives `n * c * h * w`. Errors on mismatched lengths or
/// `c2 == 0`.
pub fn nc1hwc2_to_nchw<T: Copy>(
    src: &[T],
    dst: &mut [T],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    c2: usize,
) -> Result<()> {
    if c2 == 0 {
        return Err(Error::Argument("NC1HWC2 with C2 = 0".into()));
    }
    let c1 = c.div_ceil(c2);
    let need_src = n * c1 * h * w * c2;
    if src.len() != need_src || dst.len() != n * c * h * w {
        return Err(Error::Argument(format!(
            "NC1HWC2 [{n},{c1},{h},{w},{c2}] has {need_src} values, got {}; NCHW [{n},{c},{h},{w}] needs {}, got {}",
            src.len(),
            n * c * h * w,
            dst.len()
        )));
    }
    let hw = h * w;
    for b in 0..n {
        for ch in 0..c {
            let (o, i) = (ch / c2, ch % c2);
            let s0 = ((b * c1 + o) * hw) * c2 + i;
            let d0 = (b * c + ch) * hw;
            for p in 0..hw {
                dst[d0 + p] = src[s0 + p * c2];
            }
        }
    }
    Ok(())
}

/// A tensor attribute as `rknn_query(RKNN_QUERY_NATIVE_*_ATTR)` reports it
/// (the fields of `rknn_tensor_attr` the zero-copy path reads; codes as in
/// rknn_api.h).
#[derive(Clone, Debug, PartialEq)]
pub struct NativeAttr {
    /// `rknn_tensor_format`: 0 NCHW, 1 NHWC, 2 NC1HWC2, 3 undefined.
    pub fmt: u32,
    pub dims: Vec<u32>,
    pub n_elems: u32,
    /// `rknn_tensor_type`: 0 float32, 1 float16, 2 int8, 3 uint8 (others refused).
    pub ty: u32,
    /// `rknn_tensor_qnt_type`: 0 none, 1 DFP (`fl`), 2 affine (`scale`, `zp`).
    pub qnt_type: u32,
    pub fl: i8,
    pub zp: i32,
    pub scale: f32,
    /// Elements per stored row (NHWC: padded W), 0 when not padded.
    pub w_stride: u32,
    pub h_stride: u32,
    /// Bytes the tensor occupies with its padding.
    pub size_with_stride: u32,
}

/// Element type of a native tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeType {
    F32,
    F16,
    I8,
    U8,
}

impl NativeType {
    pub fn bytes(self) -> usize {
        match self {
            NativeType::F32 => 4,
            NativeType::F16 => 2,
            NativeType::I8 | NativeType::U8 => 1,
        }
    }
}

/// Where the elements of a Strix tensor (NCHW, logical `[n, c, h, w]`) sit
/// in an NPU buffer of a native layout, and how values are stored there.
/// Built from a [`NativeAttr`] and the Strix tensor's shape by
/// [`NativeLayout::new`], which refuses what it cannot map exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NativeLayout {
    kind: Kind,
    pub ty: NativeType,
    /// real = (stored - zero_point) * scale (int8/uint8; 1 and 0 for floats).
    scale: f32,
    zero_point: i32,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    /// Stored H and W (>= h, w: rows and planes may be padded).
    hs: usize,
    ws: usize,
    /// Bytes the layout spans (padding included).
    bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Same order as NCHW (NCHW or undefined format, no padding).
    Flat,
    Nhwc,
    Nc1hwc2 {
        c1: usize,
        c2: usize,
    },
}

impl NativeLayout {
    /// The layout of `attr` for a Strix tensor of `shape` (rank 4 `[n, c,
    /// h, w]` or rank 2 `[n, c]`; other ranks only in a flat layout).
    /// Errors name what does not fit: an unsupported type, quantization or
    /// format, dims that disagree with the shape, or a `size_with_stride`
    /// smaller than the layout spans.
    pub fn new(attr: &NativeAttr, shape: &[usize]) -> std::result::Result<Self, String> {
        let ty = match attr.ty {
            0 => NativeType::F32,
            1 => NativeType::F16,
            2 => NativeType::I8,
            3 => NativeType::U8,
            t => {
                return Err(format!(
                    "native tensor type {t} is not float32/float16/int8/uint8"
                ))
            }
        };
        let (scale, zero_point) = match (ty, attr.qnt_type) {
            (NativeType::F32 | NativeType::F16, _) => (1.0, 0),
            (_, 0) => (1.0, 0),
            (_, 1) => ((-(attr.fl as f32)).exp2(), 0),
            (_, 2) if attr.scale.is_finite() && attr.scale > 0.0 => (attr.scale, attr.zp),
            (_, 2) => {
                return Err(format!(
                    "native quantization scale {} is not positive",
                    attr.scale
                ))
            }
            (_, q) => {
                return Err(format!(
                    "native quantization type {q} is not none/DFP/affine"
                ))
            }
        };
        let len: usize = shape.iter().product();
        let dims: Vec<usize> = attr.dims.iter().map(|&d| d as usize).collect();
        let (n, c, h, w) = match *shape {
            [n, c, h, w] => (n, c, h, w),
            [n, c] => (n, c, 1, 1),
            _ => (1, len, 1, 1),
        };
        let shape_err = || {
            format!(
                "native dims {dims:?} (format {}) do not match the tensor's shape {shape:?}",
                attr.fmt
            )
        };
        let (kind, hs, ws) = match attr.fmt {
            0 | 3 => {
                let w_last = dims.last().copied().unwrap_or(0);
                if dims.iter().product::<usize>() != len
                    || !(attr.w_stride == 0 || attr.w_stride as usize == w_last)
                {
                    return Err(shape_err());
                }
                (Kind::Flat, h, w)
            }
            1 => {
                if !matches!(shape.len(), 2 | 4) || dims != [n, h, w, c] {
                    return Err(shape_err());
                }
                let ws = (attr.w_stride as usize).max(w);
                let hs = (attr.h_stride as usize).max(h);
                (Kind::Nhwc, hs, ws)
            }
            2 => {
                let [dn, c1, hs, ws, c2] = dims[..] else {
                    return Err(shape_err());
                };
                if !matches!(shape.len(), 2 | 4)
                    || dn != n
                    || c2 == 0
                    || c1 != c.div_ceil(c2)
                    || hs < h
                    || ws < w
                {
                    return Err(shape_err());
                }
                (Kind::Nc1hwc2 { c1, c2 }, hs, ws)
            }
            f => return Err(format!("native format {f} is not NCHW/NHWC/NC1HWC2")),
        };
        let elems = match kind {
            Kind::Flat => len,
            Kind::Nhwc => n * hs * ws * c,
            Kind::Nc1hwc2 { c1, c2 } => n * c1 * hs * ws * c2,
        };
        let bytes = elems * ty.bytes();
        if attr.size_with_stride != 0 && (attr.size_with_stride as usize) < bytes {
            return Err(format!(
                "native size_with_stride {} is smaller than the {bytes} bytes its dims {dims:?} span",
                attr.size_with_stride
            ));
        }
        Ok(NativeLayout {
            kind,
            ty,
            scale,
            zero_point,
            n,
            c,
            h,
            w,
            hs,
            ws,
            bytes,
        })
    }

    /// Bytes of NPU memory the tensor needs (padding included).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Element index in the native buffer of NCHW element `(b, ch, y, x)`.
    fn index(&self, b: usize, ch: usize, y: usize, x: usize) -> usize {
        match self.kind {
            Kind::Flat => ((b * self.c + ch) * self.h + y) * self.w + x,
            Kind::Nhwc => ((b * self.hs + y) * self.ws + x) * self.c + ch,
            Kind::Nc1hwc2 { c1, c2 } => {
                (((b * c1 + ch / c2) * self.hs + y) * self.ws + x) * c2 + ch % c2
            }
        }
    }

    /// Calls `f(native element index, NCHW index)` for every element.
    fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let mut i = 0;
        for b in 0..self.n {
            for ch in 0..self.c {
                for y in 0..self.h {
                    for x in 0..self.w {
                        f(self.index(b, ch, y, x), i);
                        i += 1;
                    }
                }
            }
        }
    }

    /// Stores NCHW real values `src` into the native buffer `dst` (at least
    /// [`NativeLayout::bytes`] long; padding is left as it is), quantizing
    /// for int8/uint8 (round half away from zero, saturating).
    pub fn store(&self, src: &[f32], dst: &mut [u8]) {
        assert!(dst.len() >= self.bytes && src.len() == self.n * self.c * self.h * self.w);
        let inv = 1.0 / self.scale;
        let q =
            |v: f32, lo: i32, hi: i32| ((v * inv).round() as i32 + self.zero_point).clamp(lo, hi);
        match self.ty {
            NativeType::F32 => {
                self.for_each(|o, i| dst[o * 4..o * 4 + 4].copy_from_slice(&src[i].to_ne_bytes()))
            }
            NativeType::F16 => self.for_each(|o, i| {
                dst[o * 2..o * 2 + 2]
                    .copy_from_slice(&half::f16::from_f32(src[i]).to_bits().to_ne_bytes())
            }),
            NativeType::I8 => self.for_each(|o, i| dst[o] = q(src[i], -128, 127) as i8 as u8),
            NativeType::U8 => self.for_each(|o, i| dst[o] = q(src[i], 0, 255) as u8),
        }
    }

    /// Reads the native buffer `src` (at least [`NativeLayout::bytes`]
    /// long) as real values, calling `put(NCHW index, value)` for each.
    pub fn load(&self, src: &[u8], mut put: impl FnMut(usize, f32)) {
        assert!(src.len() >= self.bytes);
        let (s, z) = (self.scale, self.zero_point);
        match self.ty {
            NativeType::F32 => self.for_each(|o, i| {
                put(
                    i,
                    f32::from_ne_bytes(src[o * 4..o * 4 + 4].try_into().expect("4 bytes")),
                )
            }),
            NativeType::F16 => self.for_each(|o, i| {
                let b = u16::from_ne_bytes(src[o * 2..o * 2 + 2].try_into().expect("2 bytes"));
                put(i, half::f16::from_bits(b).to_f32())
            }),
            NativeType::I8 => self.for_each(|o, i| put(i, (src[o] as i8 as i32 - z) as f32 * s)),
            NativeType::U8 => self.for_each(|o, i| put(i, (src[o] as i32 - z) as f32 * s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nc1hwc2_round_trip_with_channel_padding() {
        // c = 5, c2 = 4: c1 = 2, channels 5..8 are padding (set to a marker).
        let (n, c, h, w, c2): (usize, usize, usize, usize, usize) = (2, 5, 3, 2, 4);
        let nchw: Vec<i32> = (0..(n * c * h * w) as i32).collect();
        let c1 = c.div_ceil(c2);
        let mut native = vec![-1i32; n * c1 * h * w * c2];
        for b in 0..n {
            for ch in 0..c {
                for p in 0..h * w {
                    native[((b * c1 + ch / c2) * h * w + p) * c2 + ch % c2] =
                        nchw[(b * c + ch) * h * w + p];
                }
            }
        }
        let mut back = vec![0; nchw.len()];
        nc1hwc2_to_nchw(&native, &mut back, n, c, h, w, c2).unwrap();
        assert_eq!(back, nchw);
        assert!(nc1hwc2_to_nchw(&native[1..], &mut back, n, c, h, w, c2).is_err());
        assert!(nc1hwc2_to_nchw(&native, &mut back, n, c, h, w, 0).is_err());
    }

    #[test]
    fn section_round_trips_and_rejects_garbage() {
        let p = NpuPart {
            board: "rk3588".into(),
            first_node: 0,
            end_node: 2,
            inputs: vec![0],
            outputs: vec![5],
            compiler: "test".into(),
            blob: vec![1, 2, 3],
        };
        assert_eq!(NpuPart::decode(&p.encode()).unwrap(), p);
        assert!(NpuPart::decode(b"SXRKNN1\0\xff\xff\xff\x00{}").is_err());
        assert!(NpuPart::decode(b"SXRKNN1\0\xff\xff\xff\xff{}").is_err());
        assert!(NpuPart::decode(b"nonsense").is_err());
    }

    fn attr(fmt: u32, dims: &[u32], ty: u32, w_stride: u32) -> NativeAttr {
        NativeAttr {
            fmt,
            dims: dims.to_vec(),
            n_elems: 0,
            ty,
            qnt_type: if ty == 2 { 2 } else { 0 },
            fl: 0,
            zp: -3,
            scale: 0.5,
            w_stride,
            h_stride: 0,
            size_with_stride: 0,
        }
    }

    #[test]
    fn native_nc1hwc2_with_padding_matches_the_reference_conversion() {
        // [1, 5, 3, 2] stored as NC1HWC2 with C2 = 4 and W padded to 4.
        let (n, c, h, w, c2, ws) = (1usize, 5usize, 3usize, 2usize, 4usize, 4usize);
        let l = NativeLayout::new(&attr(2, &[1, 2, 3, 4, 4], 0, 0), &[n, c, h, w]).unwrap();
        assert_eq!(l.bytes(), 2 * 3 * 4 * 4 * 4);
        let x: Vec<f32> = (0..n * c * h * w).map(|v| v as f32).collect();
        let mut buf = vec![0u8; l.bytes()];
        l.store(&x, &mut buf);
        // Without the W padding, the reference conversion reads the same values.
        let native: Vec<f32> = buf
            .chunks(4)
            .map(|b| f32::from_ne_bytes(b.try_into().unwrap()))
            .collect();
        let unpadded: Vec<f32> = native
            .chunks(ws * c2)
            .flat_map(|row| row[..w * c2].to_vec())
            .collect();
        let mut back = vec![0f32; x.len()];
        nc1hwc2_to_nchw(&unpadded, &mut back, n, c, h, w, c2).unwrap();
        assert_eq!(back, x);
        let mut got = vec![f32::NAN; x.len()];
        l.load(&buf, |i, v| got[i] = v);
        assert_eq!(got, x);
    }

    #[test]
    fn native_nhwc_int8_quantizes_with_the_native_scale() {
        // [1, 2, 1, 3] as NHWC int8 with rows padded to 4, scale 0.5, zp -3.
        let l = NativeLayout::new(&attr(1, &[1, 1, 3, 2], 2, 4), &[1, 2, 1, 3]).unwrap();
        assert_eq!(l.bytes(), 4 * 2);
        let x = [0.0, 1.0, -1.0, 100.0, 0.25, -100.0];
        let mut buf = vec![0x55u8; 8];
        l.store(&x, &mut buf);
        let q: Vec<i8> = buf.iter().map(|&b| b as i8).collect();
        // NHWC order: (x0: c0, c1), (x1: c0, c1), (x2: c0, c1), padding.
        assert_eq!(q, [-3, 127, -1, -2, -5, -128, 0x55, 0x55]);
        let mut got = [0f32; 6];
        l.load(&buf, |i, v| got[i] = v);
        assert_eq!(got, [0.0, 1.0, -1.0, 65.0, 0.5, -62.5]);
    }

    #[test]
    fn native_f16_u8_and_dfp_round_trip() {
        let x = [0.5f32, -2.0, 3.25, 1.0];
        let shape = [1usize, 4];
        for (ty, qnt, fl, want) in [
            (1u32, 0u32, 0i8, vec![0.5f32, -2.0, 3.25, 1.0]), // float16: exact here
            (3, 2, 0, vec![0.5, -2.0, 3.5, 1.0]),             // uint8, scale 0.5, zp 10
            (2, 1, 2, vec![0.5, -2.0, 3.25, 1.0]),            // int8 DFP, fl 2: steps of 0.25
        ] {
            let mut a = attr(3, &[4], ty, 0);
            a.qnt_type = qnt;
            a.fl = fl;
            a.zp = 10;
            let l = NativeLayout::new(&a, &shape).unwrap();
            let mut buf = vec![0u8; l.bytes()];
            l.store(&x, &mut buf);
            let mut got = [0f32; 4];
            l.load(&buf, |i, v| got[i] = v);
            assert_eq!(got.to_vec(), want, "type {ty} qnt {qnt}");
        }
    }

    #[test]
    fn native_layouts_that_do_not_fit_are_refused() {
        let s = [1, 5, 3, 2];
        let e = |a: NativeAttr| NativeLayout::new(&a, &s).unwrap_err();
        assert!(e(attr(2, &[1, 2, 3, 4, 4], 4, 0)).contains("type 4"));
        assert!(e(attr(2, &[1, 1, 3, 4, 4], 0, 0)).contains("do not match"));
        assert!(e(attr(1, &[1, 5, 3, 2], 0, 0)).contains("do not match"));
        assert!(e(attr(7, &[30], 0, 0)).contains("format 7"));
        let mut a = attr(0, &[1, 5, 3, 2], 0, 0);
        a.size_with_stride = 10;
        assert!(e(a).contains("smaller than"));
        assert!(NativeLayout::new(&attr(3, &[30], 0, 0), &s).is_ok());
    }

    #[test]
    fn core_masks_parse() {
        assert_eq!(CoreMask::parse("0,1,2").unwrap().bits(), 7);
        assert_eq!(CoreMask::parse("auto").unwrap().bits(), 0);
        assert!(CoreMask::parse("3").is_err());
    }
}
