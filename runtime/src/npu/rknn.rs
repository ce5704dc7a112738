//! The `librknnrt` backend (cargo feature `rknpu`).
//!
//! Types come from `rknpu-sys` (its pre-generated bindings; nothing is
//! linked at build time). The functions are found at run time:
//! - default build: `dlopen` of [`super::NpuOptions::library`] (`libloading`),
//!   so one binary runs on boards with and without the NPU;
//! - `rknpu-static`: the symbols are linked into the program (for statically
//!   linked guests, which cannot `dlopen`; the tests link a test double).
//!
//! Session creation: `rknn_init` (blob copied by the library; no zero-copy
//! flag), `rknn_set_core_mask` (only when a mask other than auto is asked
//! for), `rknn_query` (`IN_OUT_NUM`), then one of two I/O modes:
//!
//! - **zero-copy** (when the library exports `rknn_create_mem`,
//!   `rknn_set_io_mem` and `rknn_destroy_mem`, and
//!   [`super::NpuOptions::zero_copy`]): `rknn_query`
//!   (`NATIVE_INPUT_ATTR`, `NATIVE_OUTPUT_ATTR`), one `rknn_create_mem` of
//!   the native size per tensor and one `rknn_set_io_mem` with the native
//!   attribute, all at session creation. Each run stores the f32 arena
//!   inputs into the input buffers in their native type and layout
//!   ([`super::NativeLayout`]: NCHW, NHWC with padded rows, NC1HWC2,
//!   quantized with the native scale for int8/uint8; `pass_through` set, so
//!   the library takes the bytes as they are), calls `rknn_run`, and reads
//!   the outputs back from their native layout (NC1HWC2 on RK3588) into
//!   the arena. No allocation per run. `rknn_destroy_mem` for every buffer,
//!   then `rknn_destroy`, when the session drops. This is the only I/O API
//!   of RV1106's `librknnmrt`.
//! - **copy** (otherwise; the reason is in [`super::NpuIo::Copy`]):
//!   `rknn_query` (`INPUT_ATTR`, `OUTPUT_ATTR`), then per run
//!   `rknn_inputs_set` (float32 NCHW from the arena), `rknn_run`,
//!   `rknn_outputs_get` (float32, preallocated by the session, so the
//!   library hands out no memory; the library converts from the native
//!   layout) and `rknn_outputs_release`; `rknn_destroy` at drop.
//!
//! A native layout Strix cannot map (another tensor type or format) makes
//! the session use the copy API, with that reason. An `RKNN_ERR_*` from any
//! call at session creation makes it run the CPU fallback (see
//! [`crate::Session::with_npu`]); in a run, it is that run's error.

use super::{Backend, NativeAttr, NativeLayout, NpuIo, NpuOptions, NpuPart};
use crate::graph::{DType, Graph, Storage};
use rknpu_sys::rknn::{
    rknn_context, rknn_core_mask, rknn_init_extend, rknn_input, rknn_input_output_num, rknn_output,
    rknn_output_extend, rknn_query_cmd, rknn_run_extend, rknn_tensor_attr, rknn_tensor_format,
    rknn_tensor_mem, rknn_tensor_type,
};
use std::ffi::{c_int, c_void};

type InitFn =
    unsafe extern "C" fn(*mut rknn_context, *mut c_void, u32, u32, *mut rknn_init_extend) -> c_int;
type DestroyFn = unsafe extern "C" fn(rknn_context) -> c_int;
type QueryFn = unsafe extern "C" fn(rknn_context, rknn_query_cmd, *mut c_void, u32) -> c_int;
type InputsSetFn = unsafe extern "C" fn(rknn_context, u32, *mut rknn_input) -> c_int;
type RunFn = unsafe extern "C" fn(rknn_context, *mut rknn_run_extend) -> c_int;
type OutputsGetFn =
    unsafe extern "C" fn(rknn_context, u32, *mut rknn_output, *mut rknn_output_extend) -> c_int;
type OutputsReleaseFn = unsafe extern "C" fn(rknn_context, u32, *mut rknn_output) -> c_int;
type SetCoreMaskFn = unsafe extern "C" fn(rknn_context, rknn_core_mask) -> c_int;
type CreateMemFn = unsafe extern "C" fn(rknn_context, u32) -> *mut rknn_tensor_mem;
type SetIoMemFn =
    unsafe extern "C" fn(rknn_context, *mut rknn_tensor_mem, *mut rknn_tensor_attr) -> c_int;
type DestroyMemFn = unsafe extern "C" fn(rknn_context, *mut rknn_tensor_mem) -> c_int;

/// The copy I/O entry points (absent from RV1106's `librknnmrt`).
#[derive(Clone, Copy)]
struct CopyApi {
    inputs_set: InputsSetFn,
    outputs_get: OutputsGetFn,
    outputs_release: OutputsReleaseFn,
}

/// The zero-copy entry points (absent from older `librknnrt` releases).
#[derive(Clone, Copy)]
struct MemApi {
    create: CreateMemFn,
    set_io: SetIoMemFn,
    destroy: DestroyMemFn,
}

/// The `librknnrt` entry points Strix calls.
struct Api {
    init: InitFn,
    destroy: DestroyFn,
    query: QueryFn,
    run: RunFn,
    /// `Err`: why the copy API is unavailable (a missing symbol).
    copy: std::result::Result<CopyApi, String>,
    /// `Err`: why the zero-copy API is unavailable (a missing symbol).
    mem: std::result::Result<MemApi, String>,
    /// Absent from some runtimes (RV1106's `librknnmrt` has one core).
    set_core_mask: Option<SetCoreMaskFn>,
    /// Keeps the library mapped while the pointers above are used.
    #[cfg(not(feature = "rknpu-static"))]
    _lib: libloading::Library,
    name: String,
}

impl Api {
    #[cfg(not(feature = "rknpu-static"))]
    fn open(library: &str) -> std::result::Result<Api, String> {
        // SAFETY: loading runs the library's initialisers; librknnrt's are
        // Rockchip's, and we only open the library the caller names.
        let lib = unsafe { libloading::Library::new(library) }
            .map_err(|e| format!("cannot load {library}: {e}"))?;
        fn sym<T: Copy>(
            lib: &libloading::Library,
            library: &str,
            name: &str,
        ) -> std::result::Result<T, String> {
            // SAFETY: the symbol's type is rknn_api.h's prototype for `name`.
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| format!("{library} has no {name}"))
        }
        let copy = (|| {
            Ok(CopyApi {
                inputs_set: sym(&lib, library, "rknn_inputs_set")?,
                outputs_get: sym(&lib, library, "rknn_outputs_get")?,
                outputs_release: sym(&lib, library, "rknn_outputs_release")?,
            })
        })();
        let mem = (|| {
            Ok(MemApi {
                create: sym(&lib, library, "rknn_create_mem")?,
                set_io: sym(&lib, library, "rknn_set_io_mem")?,
                destroy: sym(&lib, library, "rknn_destroy_mem")?,
            })
        })();
        if let (Err(c), Err(m)) = (&copy, &mem) {
            return Err(format!("{library} offers no I/O API Strix uses ({c}; {m})"));
        }
        Ok(Api {
            init: sym(&lib, library, "rknn_init")?,
            destroy: sym(&lib, library, "rknn_destroy")?,
            query: sym(&lib, library, "rknn_query")?,
            run: sym(&lib, library, "rknn_run")?,
            copy,
            mem,
            set_core_mask: sym(&lib, library, "rknn_set_core_mask").ok(),
            _lib: lib,
            name: library.to_string(),
        })
    }

    #[cfg(feature = "rknpu-static")]
    fn open(_library: &str) -> std::result::Result<Api, String> {
        use rknpu_sys::rknn as r;
        extern "C" {
            fn rknn_set_core_mask(ctx: rknn_context, mask: rknn_core_mask) -> c_int;
        }
        Ok(Api {
            init: r::rknn_init,
            destroy: r::rknn_destroy,
            query: r::rknn_query,
            run: r::rknn_run,
            copy: Ok(CopyApi {
                inputs_set: r::rknn_inputs_set,
                outputs_get: r::rknn_outputs_get,
                outputs_release: r::rknn_outputs_release,
            }),
            mem: Ok(MemApi {
                create: r::rknn_create_mem,
                set_io: r::rknn_set_io_mem,
                destroy: r::rknn_destroy_mem,
            }),
            set_core_mask: Some(rknn_set_core_mask),
            name: "linked librknnrt".into(),
        })
    }
}

/// What an `RKNN_ERR_*` code means (rknn_api.h).
pub fn error_name(code: c_int) -> &'static str {
    match code {
        0 => "RKNN_SUCC",
        -1 => "RKNN_ERR_FAIL (execution failed)",
        -2 => "RKNN_ERR_TIMEOUT (execution timed out)",
        -3 => "RKNN_ERR_DEVICE_UNAVAILABLE (NPU device unavailable)",
        -4 => "RKNN_ERR_MALLOC_FAIL (memory allocation failed)",
        -5 => "RKNN_ERR_PARAM_INVALID (parameter invalid)",
        -6 => "RKNN_ERR_MODEL_INVALID (the .rknn model is invalid)",
        -7 => "RKNN_ERR_CTX_INVALID (context invalid)",
        -8 => "RKNN_ERR_INPUT_INVALID (input invalid)",
        -9 => "RKNN_ERR_OUTPUT_INVALID (output invalid)",
        -10 => "RKNN_ERR_DEVICE_UNMATCH (the device does not match; update the NPU driver or runtime)",
        -11 => "RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL (a pre-compiled model for another runtime version)",
        -12 => "RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION (optimisation level of another toolkit version)",
        -13 => "RKNN_ERR_TARGET_PLATFORM_UNMATCH (the model was compiled for another platform)",
        _ => "unknown RKNN error code",
    }
}

/// Where one blob output goes in the arena.
struct OutSlot {
    offset: usize,
    len: usize,
    /// `Some` for an int8 tensor: quantize with it.
    quant: Option<crate::graph::Quant>,
}

impl OutSlot {
    /// Stores real value `v` as element `i` of the Strix tensor.
    #[inline]
    fn put(&self, a8: &mut [i8], a32: &mut [f32], i: usize, v: f32) {
        match self.quant {
            None => a32[self.offset + i] = v,
            // NaN maps to the zero point (as casts saturate, NaN -> 0).
            Some(q) => {
                a8[self.offset + i] =
                    ((v * (1.0 / q.scale)).round() as i32 + q.zero_point).clamp(-128, 127) as i8
            }
        }
    }
}

/// The copy API's per-session state.
struct CopyIo {
    api: CopyApi,
    /// (arena offset, length) of each input, in blob order.
    ins: Vec<(usize, usize)>,
    outs: Vec<OutSlot>,
    /// float32 output buffers handed to `rknn_outputs_get` (preallocated).
    scratch: Vec<Vec<f32>>,
    in_desc: Vec<rknn_input>,
    out_desc: Vec<rknn_output>,
}

/// One `rknn_create_mem` buffer bound to a blob input or output.
struct MemTensor {
    mem: *mut rknn_tensor_mem,
    layout: NativeLayout,
}

/// The first `len` bytes of a tensor mem's buffer.
///
/// # Safety
/// `mem` is live (not yet destroyed), its `virt_addr` spans at least `len`
/// bytes (checked at creation) and nothing else refers to them meanwhile.
unsafe fn mem_bytes<'a>(mem: *mut rknn_tensor_mem, len: usize) -> &'a mut [u8] {
    std::slice::from_raw_parts_mut((*mem).virt_addr.cast(), len)
}

/// The zero-copy API's per-session state.
struct MemIo {
    /// Input buffers with the (arena offset, length) they are filled from.
    ins: Vec<(MemTensor, usize, usize)>,
    outs: Vec<(MemTensor, OutSlot)>,
}

enum Io {
    Copy(CopyIo),
    Mem(MemIo),
}

/// One `rknn_context` running a model's NPU part for one session.
pub(crate) struct Runner {
    api: Api,
    ctx: rknn_context,
    pub(crate) first: usize,
    pub(crate) end: usize,
    io: Io,
    /// Every buffer `rknn_create_mem` returned, destroyed (once) at drop
    /// before the context, also when setup failed half-way.
    mems: Vec<*mut rknn_tensor_mem>,
}

// SAFETY: an rknn_context may be used from any thread, one call at a time;
// a Session (and so its Runner) is used by one thread at a time. The raw
// pointers in the copy descriptors are rewritten before every call; the
// tensor mems belong to this runner alone.
unsafe impl Send for Runner {}

fn check(call: &str, code: c_int) -> std::result::Result<(), String> {
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{call} returned {code}: {}", error_name(code)))
    }
}

/// The arena offset of a boundary tensor.
fn arena(g: &Graph, t: usize) -> usize {
    match g.tensors[t].storage {
        Storage::Arena { offset } => offset,
        // NpuPart::check admits arena tensors only.
        _ => unreachable!("checked NPU boundary"),
    }
}

fn out_slot(g: &Graph, t: usize) -> OutSlot {
    let tensor = &g.tensors[t];
    OutSlot {
        offset: arena(g, t),
        len: tensor.len(),
        quant: match tensor.dtype {
            DType::I8 => Some(tensor.quant.unwrap_or(crate::graph::Quant {
                scale: 1.0,
                zero_point: 0,
            })),
            _ => None,
        },
    }
}

impl NativeAttr {
    fn from_rknn(a: &rknn_tensor_attr) -> NativeAttr {
        let n = (a.n_dims as usize).min(a.dims.len());
        NativeAttr {
            fmt: a.fmt.0,
            dims: a.dims[..n].to_vec(),
            n_elems: a.n_elems,
            ty: a.type_.0,
            qnt_type: a.qnt_type.0,
            fl: a.fl,
            zp: a.zp,
            scale: a.scale,
            w_stride: a.w_stride,
            h_stride: a.h_stride,
            size_with_stride: a.size_with_stride,
        }
    }
}

/// Why zero-copy setup did not complete: a layout Strix cannot map (use
/// the copy API) or an error from the library (run the CPU fallback).
enum MemSetupError {
    Unsupported(String),
    Rknn(String),
}

impl Runner {
    /// Opens the library and initialises a context for `part`, or says why
    /// not (the session then runs the CPU fallback).
    pub(crate) fn new(
        part: &NpuPart,
        g: &Graph,
        opts: &NpuOptions,
    ) -> std::result::Result<(Runner, Backend), String> {
        let api = Api::open(&opts.library)?;
        let mut ctx: rknn_context = 0;
        // rknn_init takes a mutable pointer but copies the model (no
        // zero-copy flag); a private copy keeps the model untouched anyway.
        let mut blob = part.blob.clone();
        let size = u32::try_from(blob.len())
            .map_err(|_| format!("blob of {} bytes exceeds rknn_init's u32", blob.len()))?;
        // SAFETY: rknn_api.h contract: ctx out-pointer, model buffer of `size` bytes.
        let rc = unsafe {
            (api.init)(
                &mut ctx,
                blob.as_mut_ptr().cast(),
                size,
                0,
                std::ptr::null_mut(),
            )
        };
        check("rknn_init", rc)?;
        // From here the context (and every mem) is destroyed on every error
        // path (Drop).
        let mut r = Runner {
            api,
            ctx,
            first: part.first_node,
            end: part.end_node,
            io: Io::Mem(MemIo {
                ins: vec![],
                outs: vec![],
            }),
            mems: vec![],
        };
        let io = r.setup(part, g, opts)?;
        let backend = Backend::Npu {
            library: r.api.name.clone(),
            board: part.board.clone(),
            first: part.first_node,
            end: part.end_node,
            core_mask: opts.core_mask,
            io,
        };
        Ok((r, backend))
    }

    fn query<T>(&self, cmd: rknn_query_cmd, what: &mut T) -> std::result::Result<(), String> {
        // SAFETY: `what` is the struct rknn_api.h pairs with `cmd`, of its size.
        let rc = unsafe {
            (self.api.query)(
                self.ctx,
                cmd,
                (what as *mut T).cast(),
                std::mem::size_of::<T>() as u32,
            )
        };
        check("rknn_query", rc)
    }

    fn attr(
        &self,
        cmd: rknn_query_cmd,
        index: usize,
    ) -> std::result::Result<rknn_tensor_attr, String> {
        // SAFETY: rknn_tensor_attr is plain data; all-zero is a valid value.
        let mut a: rknn_tensor_attr = unsafe { std::mem::zeroed() };
        a.index = index as u32;
        self.query(cmd, &mut a)?;
        Ok(a)
    }

    /// Sets the core mask, checks the blob's tensor counts and picks and
    /// prepares the I/O mode, which it returns.
    fn setup(
        &mut self,
        part: &NpuPart,
        g: &Graph,
        opts: &NpuOptions,
    ) -> std::result::Result<NpuIo, String> {
        if opts.core_mask != super::CoreMask::Auto {
            let f = self.api.set_core_mask.ok_or_else(|| {
                format!(
                    "{} has no rknn_set_core_mask (single-core runtime)",
                    self.api.name
                )
            })?;
            // SAFETY: valid context, a mask value from rknn_api.h.
            check("rknn_set_core_mask", unsafe {
                f(self.ctx, rknn_core_mask(opts.core_mask.bits()))
            })?;
        }
        let mut num = rknn_input_output_num {
            n_input: 0,
            n_output: 0,
        };
        self.query(rknn_query_cmd::RKNN_QUERY_IN_OUT_NUM, &mut num)?;
        if num.n_input as usize != part.inputs.len() || num.n_output as usize != part.outputs.len()
        {
            return Err(format!(
                "the blob has {} inputs and {} outputs, the model's NPU part {} and {}",
                num.n_input,
                num.n_output,
                part.inputs.len(),
                part.outputs.len()
            ));
        }
        let reason = match (opts.zero_copy, self.api.mem.clone()) {
            (false, _) => "zero-copy disabled by the caller".to_string(),
            (true, Err(why)) => why,
            (true, Ok(mem)) => match self.setup_mem(mem, part, g) {
                Ok(io) => {
                    self.io = Io::Mem(io);
                    return Ok(NpuIo::ZeroCopy);
                }
                Err(MemSetupError::Rknn(e)) => return Err(e),
                Err(MemSetupError::Unsupported(why)) => {
                    // Nothing is bound yet (layouts are checked before any
                    // rknn_create_mem), so the copy API may take over.
                    why
                }
            },
        };
        let copy = match &self.api.copy {
            Ok(c) => *c,
            Err(no_copy) => return Err(format!("{reason}, and {no_copy}")),
        };
        self.io = Io::Copy(self.setup_copy(copy, part, g)?);
        Ok(NpuIo::Copy { reason })
    }

    fn setup_copy(
        &self,
        api: CopyApi,
        part: &NpuPart,
        g: &Graph,
    ) -> std::result::Result<CopyIo, String> {
        let mut io = CopyIo {
            api,
            ins: vec![],
            outs: vec![],
            scratch: vec![],
            in_desc: vec![],
            out_desc: vec![],
        };
        for (i, &t) in part.inputs.iter().enumerate() {
            let attr = self.attr(rknn_query_cmd::RKNN_QUERY_INPUT_ATTR, i)?;
            let len = g.tensors[t].len();
            if attr.n_elems as usize != len {
                return Err(format!(
                    "blob input {i} has {} elements, tensor {:?} {len}",
                    attr.n_elems, g.tensors[t].name
                ));
            }
            io.ins.push((arena(g, t), len));
            io.in_desc.push(rknn_input {
                index: i as u32,
                buf: std::ptr::null_mut(),
                size: (len * 4) as u32,
                pass_through: 0,
                type_: rknn_tensor_type::RKNN_TENSOR_FLOAT32,
                fmt: rknn_tensor_format::RKNN_TENSOR_NCHW,
            });
        }
        for (i, &t) in part.outputs.iter().enumerate() {
            let attr = self.attr(rknn_query_cmd::RKNN_QUERY_OUTPUT_ATTR, i)?;
            let slot = out_slot(g, t);
            if attr.n_elems as usize != slot.len {
                return Err(format!(
                    "blob output {i} has {} elements, tensor {:?} {}",
                    attr.n_elems, g.tensors[t].name, slot.len
                ));
            }
            io.scratch.push(
                crate::error::try_vec(slot.len, 0f32, "an NPU output buffer")
                    .map_err(|e| e.to_string())?,
            );
            io.out_desc.push(rknn_output {
                want_float: 1,
                is_prealloc: 1,
                index: i as u32,
                buf: std::ptr::null_mut(),
                size: (slot.len * 4) as u32,
            });
            io.outs.push(slot);
        }
        Ok(io)
    }

    /// Queries every native attribute and maps it to a layout (refusing
    /// with `Unsupported` before anything is allocated), then creates and
    /// binds one buffer per tensor.
    fn setup_mem(
        &mut self,
        mem: MemApi,
        part: &NpuPart,
        g: &Graph,
    ) -> std::result::Result<MemIo, MemSetupError> {
        let mut attrs = vec![];
        for (input, cmd, tensors) in [
            (
                true,
                rknn_query_cmd::RKNN_QUERY_NATIVE_INPUT_ATTR,
                &part.inputs,
            ),
            (
                false,
                rknn_query_cmd::RKNN_QUERY_NATIVE_OUTPUT_ATTR,
                &part.outputs,
            ),
        ] {
            for (i, &t) in tensors.iter().enumerate() {
                let attr = self.attr(cmd, i).map_err(MemSetupError::Rknn)?;
                let tensor = &g.tensors[t];
                let what = if input { "input" } else { "output" };
                if attr.n_elems as usize != tensor.len() {
                    return Err(MemSetupError::Rknn(format!(
                        "blob {what} {i} has {} elements, tensor {:?} {}",
                        attr.n_elems,
                        tensor.name,
                        tensor.len()
                    )));
                }
                let layout = NativeLayout::new(&NativeAttr::from_rknn(&attr), &tensor.shape)
                    .map_err(|e| MemSetupError::Unsupported(format!("blob {what} {i}: {e}")))?;
                attrs.push((input, t, attr, layout));
            }
        }
        let mut io = MemIo {
            ins: vec![],
            outs: vec![],
        };
        for (input, t, mut attr, layout) in attrs {
            let bytes = layout.bytes().max(attr.size_with_stride as usize);
            let size = u32::try_from(bytes).map_err(|_| {
                MemSetupError::Rknn(format!("a native tensor of {bytes} bytes exceeds u32"))
            })?;
            // SAFETY: valid context; the size is the native attribute's.
            let m = unsafe { (mem.create)(self.ctx, size) };
            if m.is_null() {
                return Err(MemSetupError::Rknn(format!(
                    "rknn_create_mem({size}) returned NULL (allocation failed)"
                )));
            }
            self.mems.push(m);
            // SAFETY: a non-null rknn_tensor_mem from rknn_create_mem.
            let (virt, got) = unsafe { ((*m).virt_addr, (*m).size) };
            if virt.is_null() || (got as usize) < layout.bytes() {
                return Err(MemSetupError::Rknn(format!(
                    "rknn_create_mem({size}) gave {got} bytes at {virt:?}"
                )));
            }
            // Padding is never written by Strix: zero it once.
            // SAFETY: `got` bytes at `virt` belong to the mem.
            unsafe { std::ptr::write_bytes(virt.cast::<u8>(), 0, got as usize) };
            // Inputs hold the native type and layout already: no conversion
            // by the library.
            attr.pass_through = u8::from(input);
            // SAFETY: a live mem of this context, an attribute from rknn_query.
            check("rknn_set_io_mem", unsafe {
                (mem.set_io)(self.ctx, m, &mut attr)
            })
            .map_err(MemSetupError::Rknn)?;
            let mt = MemTensor { mem: m, layout };
            if input {
                io.ins.push((mt, arena(g, t), g.tensors[t].len()));
            } else {
                io.outs.push((mt, out_slot(g, t)));
            }
        }
        Ok(io)
    }

    /// Runs the blob: inputs from `a32`, outputs into `a8`/`a32`. No allocation.
    pub(crate) fn run(
        &mut self,
        a8: &mut [i8],
        a32: &mut [f32],
    ) -> std::result::Result<(), String> {
        match &mut self.io {
            Io::Copy(io) => Self::run_copy(&self.api, self.ctx, io, a8, a32),
            Io::Mem(io) => {
                let io = &*io;
                for (m, off, len) in &io.ins {
                    // SAFETY: the mem is live until drop (checked size).
                    let dst = unsafe { mem_bytes(m.mem, m.layout.bytes()) };
                    m.layout.store(&a32[*off..*off + *len], dst);
                }
                // SAFETY: valid context; every input and output is bound.
                check("rknn_run", unsafe {
                    (self.api.run)(self.ctx, std::ptr::null_mut())
                })?;
                for (m, slot) in &io.outs {
                    // SAFETY: as above.
                    let src = unsafe { mem_bytes(m.mem, m.layout.bytes()) };
                    m.layout.load(src, |i, v| slot.put(a8, a32, i, v));
                }
                Ok(())
            }
        }
    }

    fn run_copy(
        api: &Api,
        ctx: rknn_context,
        io: &mut CopyIo,
        a8: &mut [i8],
        a32: &mut [f32],
    ) -> std::result::Result<(), String> {
        for (d, &(off, len)) in io.in_desc.iter_mut().zip(&io.ins) {
            d.buf = a32[off..off + len].as_mut_ptr().cast();
        }
        // SAFETY: descriptors point into live arena slices of the stated sizes;
        // the library copies the inputs before returning.
        check("rknn_inputs_set", unsafe {
            (io.api.inputs_set)(ctx, io.in_desc.len() as u32, io.in_desc.as_mut_ptr())
        })?;
        // SAFETY: valid context; no extension struct.
        check("rknn_run", unsafe { (api.run)(ctx, std::ptr::null_mut()) })?;
        for (d, s) in io.out_desc.iter_mut().zip(&mut io.scratch) {
            d.buf = s.as_mut_ptr().cast();
        }
        let n = io.out_desc.len() as u32;
        // SAFETY: preallocated float buffers of the stated sizes.
        check("rknn_outputs_get", unsafe {
            (io.api.outputs_get)(ctx, n, io.out_desc.as_mut_ptr(), std::ptr::null_mut())
        })?;
        // SAFETY: the descriptors rknn_outputs_get filled.
        check("rknn_outputs_release", unsafe {
            (io.api.outputs_release)(ctx, n, io.out_desc.as_mut_ptr())
        })?;
        for (slot, s) in io.outs.iter().zip(&io.scratch) {
            match slot.quant {
                None => a32[slot.offset..slot.offset + slot.len].copy_from_slice(s),
                Some(_) => {
                    for (i, &v) in s.iter().enumerate() {
                        slot.put(a8, a32, i, v);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Ok(mem) = self.api.mem {
            for &m in &self.mems {
                // SAFETY: a mem of this context, destroyed once, before the
                // context (rknn_api.h: mems must not outlive it).
                unsafe { (mem.destroy)(self.ctx, m) };
            }
        }
        // SAFETY: the context came from rknn_init and is destroyed once.
        unsafe { (self.api.destroy)(self.ctx) };
    }
}
