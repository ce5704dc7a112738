//! The `librknnrt` backend (cargo feature `rknpu`).
//!
//! Types come from `rknpu-sys` (its pre-generated bindings; nothing is
//! linked at build time). The functions are found at run time:
//! - default build: `dlopen` of [`super::NpuOptions::library`] (`libloading`),
//!   so one binary runs on boards with and without the NPU;
//! - `rknpu-static`: the symbols are linked into the program (for statically
//!   linked guests, which cannot `dlopen`; the tests link a test double).
//!
//! Calls used, in this order: `rknn_init` (blob copied by the library; no
//! zero-copy flag), `rknn_set_core_mask` (only when a mask other than auto
//! is asked for), `rknn_query` (`IN_OUT_NUM`, `INPUT_ATTR`, `OUTPUT_ATTR`),
//! then per run `rknn_inputs_set` (float32 NCHW from the arena),
//! `rknn_run`, `rknn_outputs_get` (float32, preallocated by the session,
//! so the library hands out no memory) and `rknn_outputs_release`; and
//! `rknn_destroy` when the session drops. `rknn_outputs_get` returns
//! outputs in the model's original (NCHW) layout, so the native NC1HWC2
//! layout never reaches Strix on this path; the zero-copy path
//! (`rknn_create_mem`/`rknn_set_io_mem` with native layouts, converted by
//! [`super::nc1hwc2_to_nchw`]) is not implemented.

use super::{Backend, NpuOptions, NpuPart};
use crate::graph::{DType, Graph, Storage};
use rknpu_sys::rknn::{
    rknn_context, rknn_core_mask, rknn_init_extend, rknn_input, rknn_input_output_num, rknn_output,
    rknn_output_extend, rknn_query_cmd, rknn_run_extend, rknn_tensor_attr, rknn_tensor_format,
    rknn_tensor_type,
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

/// The `librknnrt` entry points Strix calls.
struct Api {
    init: InitFn,
    destroy: DestroyFn,
    query: QueryFn,
    inputs_set: InputsSetFn,
    run: RunFn,
    outputs_get: OutputsGetFn,
    outputs_release: OutputsReleaseFn,
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
                .map_err(|e| format!("{library} has no {name}: {e}"))
        }
        Ok(Api {
            init: sym(&lib, library, "rknn_init")?,
            destroy: sym(&lib, library, "rknn_destroy")?,
            query: sym(&lib, library, "rknn_query")?,
            inputs_set: sym(&lib, library, "rknn_inputs_set")?,
            run: sym(&lib, library, "rknn_run")?,
            outputs_get: sym(&lib, library, "rknn_outputs_get")?,
            outputs_release: sym(&lib, library, "rknn_outputs_release")?,
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
            inputs_set: r::rknn_inputs_set,
            run: r::rknn_run,
            outputs_get: r::rknn_outputs_get,
            outputs_release: r::rknn_outputs_release,
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

fn check(call: &str, code: c_int) -> std::result::Result<(), String> {
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{call} returned {code}: {}", error_name(code)))
    }
}

/// Where one blob output goes in the arena.
struct OutSlot {
    offset: usize,
    len: usize,
    /// `Some` for an int8 tensor: quantize with it.
    quant: Option<crate::graph::Quant>,
}

/// One `rknn_context` running a model's NPU part for one session.
pub(crate) struct Runner {
    api: Api,
    ctx: rknn_context,
    pub(crate) first: usize,
    pub(crate) end: usize,
    /// (arena offset, length) of each input, in blob order.
    ins: Vec<(usize, usize)>,
    outs: Vec<OutSlot>,
    /// float32 output buffers handed to `rknn_outputs_get` (preallocated).
    scratch: Vec<Vec<f32>>,
    in_desc: Vec<rknn_input>,
    out_desc: Vec<rknn_output>,
}

// SAFETY: an rknn_context may be used from any thread, one call at a time;
// a Session (and so its Runner) is used by one thread at a time. The raw
// pointers in `in_desc`/`out_desc` are rewritten before every call.
unsafe impl Send for Runner {}

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
        // From here the context is destroyed on every error path (Drop).
        let mut r = Runner {
            api,
            ctx,
            first: part.first_node,
            end: part.end_node,
            ins: vec![],
            outs: vec![],
            scratch: vec![],
            in_desc: vec![],
            out_desc: vec![],
        };
        r.setup(part, g, opts)?;
        let backend = Backend::Npu {
            library: r.api.name.clone(),
            board: part.board.clone(),
            first: part.first_node,
            end: part.end_node,
            core_mask: opts.core_mask,
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

    fn setup(
        &mut self,
        part: &NpuPart,
        g: &Graph,
        opts: &NpuOptions,
    ) -> std::result::Result<(), String> {
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
        let arena = |t: usize| match g.tensors[t].storage {
            Storage::Arena { offset } => offset,
            // NpuPart::check admits arena tensors only.
            _ => unreachable!("checked NPU boundary"),
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
            self.ins.push((arena(t), len));
            self.in_desc.push(rknn_input {
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
            let tensor = &g.tensors[t];
            let len = tensor.len();
            if attr.n_elems as usize != len {
                return Err(format!(
                    "blob output {i} has {} elements, tensor {:?} {len}",
                    attr.n_elems, tensor.name
                ));
            }
            let quant = match tensor.dtype {
                DType::I8 => Some(tensor.quant.unwrap_or(crate::graph::Quant {
                    scale: 1.0,
                    zero_point: 0,
                })),
                _ => None,
            };
            self.outs.push(OutSlot {
                offset: arena(t),
                len,
                quant,
            });
            self.scratch.push(
                crate::error::try_vec(len, 0f32, "an NPU output buffer")
                    .map_err(|e| e.to_string())?,
            );
            self.out_desc.push(rknn_output {
                want_float: 1,
                is_prealloc: 1,
                index: i as u32,
                buf: std::ptr::null_mut(),
                size: (len * 4) as u32,
            });
        }
        Ok(())
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

    /// Runs the blob: inputs from `a32`, outputs into `a8`/`a32`. No allocation.
    pub(crate) fn run(
        &mut self,
        a8: &mut [i8],
        a32: &mut [f32],
    ) -> std::result::Result<(), String> {
        for (d, &(off, len)) in self.in_desc.iter_mut().zip(&self.ins) {
            d.buf = a32[off..off + len].as_mut_ptr().cast();
        }
        // SAFETY: descriptors point into live arena slices of the stated sizes;
        // the library copies the inputs before returning.
        check("rknn_inputs_set", unsafe {
            (self.api.inputs_set)(
                self.ctx,
                self.in_desc.len() as u32,
                self.in_desc.as_mut_ptr(),
            )
        })?;
        // SAFETY: valid context; no extension struct.
        check("rknn_run", unsafe {
            (self.api.run)(self.ctx, std::ptr::null_mut())
        })?;
        for (d, s) in self.out_desc.iter_mut().zip(&mut self.scratch) {
            d.buf = s.as_mut_ptr().cast();
        }
        let n = self.out_desc.len() as u32;
        // SAFETY: preallocated float buffers of the stated sizes.
        let got = check("rknn_outputs_get", unsafe {
            (self.api.outputs_get)(
                self.ctx,
                n,
                self.out_desc.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        });
        got?;
        // SAFETY: the descriptors rknn_outputs_get filled.
        check("rknn_outputs_release", unsafe {
            (self.api.outputs_release)(self.ctx, n, self.out_desc.as_mut_ptr())
        })?;
        for (slot, s) in self.outs.iter().zip(&self.scratch) {
            match slot.quant {
                None => a32[slot.offset..slot.offset + slot.len].copy_from_slice(s),
                Some(q) => {
                    let inv = 1.0 / q.scale;
                    for (d, &v) in a8[slot.offset..slot.offset + slot.len].iter_mut().zip(s) {
                        // NaN maps to the zero point (as casts saturate, NaN -> 0).
                        *d = ((v * inv).round() as i32 + q.zero_point).clamp(-128, 127) as i8;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // SAFETY: the context came from rknn_init and is destroyed once.
        unsafe { (self.api.destroy)(self.ctx) };
    }
}
