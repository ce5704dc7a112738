//! The C ABI (`libstrix_runtime.so` / `.a`, header `runtime/include/strix.h`).
//!
//! Every exported item is prefixed `strix_`; handles are opaque; every entry
//! point returns a [`strix_status`] (or a plain value that cannot fail) and
//! leaves a message for [`strix_last_error`] when it fails. No panic crosses
//! the boundary: each entry runs inside `catch_unwind` and a panic becomes
//! [`strix_status::STRIX_E_INTERNAL`].
//!
//! The header is generated from this file by `build.rs` (cbindgen) into
//! `OUT_DIR`; the test `capi::tests::header_is_current` compares it with the
//! committed `runtime/include/strix.h` (`STRIX_BLESS_HEADER=1 cargo test -p
//! strix-runtime` rewrites it). The `///` docs below are the header's docs.
//!
//! All `unsafe` of the runtime's C API lives here; each block says why it is
//! sound given the documented contract of the C caller.
// The C names (`strix_model`, `STRIX_OK`) are the API.
#![allow(non_camel_case_types)]
// Every function taking pointers is `unsafe extern "C"`: its safety contract
// is the header's "Pointers" rules (valid or NULL pointers to the documented
// lengths), stated once in cbindgen.toml's header rather than per function.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::Error;
use crate::exec::{Session, TensorData};
use crate::graph::{DType, Graph, Op, Quant};
use crate::meta::{ColorOrder, Decoder, InputSpec, ResizeMode};
use crate::model::{LoadOptions, Model};
use crate::postprocess::{decode, Decoded};
use crate::preprocess::{image_to_tensor, Frame, PixelFormat, PreprocessError};
use strix_kernels::Isa;

/// Version of the C ABI described by this header. It changes whenever a
/// function signature, a struct layout or the meaning of a value changes;
/// compare it with `strix_abi_version()` at run time to detect a header/library
/// mismatch.
pub const STRIX_ABI_VERSION: u32 = 1;

/// Capacity of `strix_tensor_info.dims` (the runtime itself accepts ranks up
/// to 6).
pub const STRIX_MAX_RANK: usize = 8;

/// Result of every fallible call. `STRIX_OK` is 0; every failure also sets the
/// calling thread's `strix_last_error()` message.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum strix_status {
    /// Success.
    STRIX_OK = 0,
    /// A required pointer argument was NULL.
    STRIX_E_NULL = 1,
    /// An argument has an invalid value: index out of range, unknown pixel
    /// format, zero frame size, stride smaller than a row, invalid path.
    STRIX_E_ARGUMENT = 2,
    /// A buffer has the wrong length or is too small (inputs must match
    /// exactly; output and detection buffers must be large enough).
    STRIX_E_SIZE = 3,
    /// The model file could not be read (missing, unreadable, a directory).
    STRIX_E_IO = 4,
    /// Not a `.strix` model (bad magic, shorter than the header).
    STRIX_E_FORMAT = 5,
    /// A `.strix` model of a container version this library cannot read.
    STRIX_E_VERSION = 6,
    /// A damaged or inconsistent `.strix` model: truncated, checksum mismatch,
    /// undecodable sections, or a graph that fails validation.
    STRIX_E_CORRUPT = 7,
    /// The handle is not a live handle of the expected kind: already freed,
    /// a model passed as a context (or the reverse), or never returned by
    /// this library (see "Handles" in the header introduction).
    STRIX_E_HANDLE = 8,
    /// The model cannot do what was asked: `strix_detect` on a model without
    /// an image input or a detection decoder, `strix_set_input_i8` on an input
    /// without quantization, image queries on a non-image model.
    STRIX_E_UNSUPPORTED = 9,
    /// The call is out of order: reading outputs before a successful
    /// `strix_run` (or after a later `strix_set_input_*`).
    STRIX_E_STATE = 10,
    /// A bug inside the library: a caught panic or an executor failure on a
    /// validated model. The library stays usable; the context's outputs are
    /// invalid until the next successful run.
    STRIX_E_INTERNAL = 11,
}

use strix_status::*;

/// Element type of a tensor (`strix_tensor_info.dtype`).
pub type strix_dtype = u32;
/// 32-bit IEEE float.
pub const STRIX_DTYPE_F32: strix_dtype = 0;
/// Signed 8-bit integer, affine-quantized (`real = (q - zero_point) * scale`).
pub const STRIX_DTYPE_I8: strix_dtype = 1;
/// Signed 32-bit integer.
pub const STRIX_DTYPE_I32: strix_dtype = 2;

/// Memory layout of the frame given to `strix_detect`.
pub type strix_pixel_format = u32;
/// Packed 8-bit R, G, B (3 bytes per pixel).
pub const STRIX_FORMAT_RGB: strix_pixel_format = 0;
/// Packed 8-bit B, G, R (3 bytes per pixel; OpenCV's order).
pub const STRIX_FORMAT_BGR: strix_pixel_format = 1;
/// YUV 4:2:0 (BT.601 limited range): a `height`-row Y plane followed by
/// `ceil(height / 2)` rows of interleaved U, V pairs (`ceil(width / 2)` pairs
/// per row). With `stride == 0` the Y rows are `width` bytes and the UV rows
/// `2 * ceil(width / 2)` bytes; a non-zero stride applies to both planes and the
/// UV plane then starts at `stride * height`.
pub const STRIX_FORMAT_NV12: strix_pixel_format = 2;
/// One 8-bit grey value per pixel.
pub const STRIX_FORMAT_GRAY: strix_pixel_format = 3;

/// Channel order an image model expects (`strix_image_spec.color`).
pub type strix_color_order = u32;
/// Channels R, G, B.
pub const STRIX_COLOR_RGB: strix_color_order = 0;
/// Channels B, G, R.
pub const STRIX_COLOR_BGR: strix_color_order = 1;
/// Luminance (replicated when the model has three channels).
pub const STRIX_COLOR_GRAY: strix_color_order = 2;

/// How an image model fits frames of another size (`strix_image_spec.resize`).
pub type strix_resize_mode = u32;
/// Bilinear resize to the input size; the aspect ratio is not kept.
pub const STRIX_RESIZE_STRETCH: strix_resize_mode = 0;
/// Aspect ratio kept, centred, padded with grey 114.
pub const STRIX_RESIZE_LETTERBOX: strix_resize_mode = 1;

/// How a model's outputs are decoded (`strix_model_decoder`).
pub type strix_decoder_kind = u32;
/// No decoder: read the output tensors yourself.
pub const STRIX_DECODER_RAW: strix_decoder_kind = 0;
/// Classifier (output 0 holds class scores).
pub const STRIX_DECODER_CLASSIFY: strix_decoder_kind = 1;
/// FastestDet detector (usable with `strix_detect`).
pub const STRIX_DECODER_FASTESTDET: strix_decoder_kind = 2;
/// UltraFace face detector (usable with `strix_detect`).
pub const STRIX_DECODER_ULTRAFACE: strix_decoder_kind = 3;

/// Description of one model input or output (`strix_model_input_info`,
/// `strix_model_output_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strix_tensor_info {
    /// NUL-terminated tensor name, owned by the model: valid until the model's
    /// last handle (model or context) is freed.
    pub name: *const c_char,
    /// Element type of the tensor as stored. Inputs are always
    /// `STRIX_DTYPE_F32`; `strix_get_output_f32` dequantizes int8 outputs.
    pub dtype: strix_dtype,
    /// Number of dimensions (at most `STRIX_MAX_RANK`).
    pub rank: usize,
    /// The first `rank` entries are the dimensions (row-major); the rest are 0.
    pub dims: [usize; STRIX_MAX_RANK],
    /// Number of elements (the product of the dimensions): the exact length
    /// `strix_set_input_*` expects and the length `strix_get_output_f32` needs.
    pub size: usize,
    /// Whether `scale` and `zero_point` are meaningful. For an input: the
    /// model quantizes it to int8 with these parameters first thing (so
    /// `strix_set_input_i8` can take pre-quantized data). For an output: it is
    /// an int8 tensor, or the f32 dequantization of one, with these parameters.
    pub has_quant: bool,
    /// Quantization step: `real = (q - zero_point) * scale`.
    pub scale: f32,
    /// Quantization zero point.
    pub zero_point: i32,
}

/// Preprocessing of an image model's first input (`strix_model_image_input`).
/// Pixel values `p` in 0..255 become `(p - mean[c]) * scale[c]` for model
/// channel `c` (in the model's channel order).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct strix_image_spec {
    /// Model input width in pixels.
    pub width: usize,
    /// Model input height in pixels.
    pub height: usize,
    /// Model input channels (1 or 3).
    pub channels: usize,
    /// Channel order the model expects (`STRIX_COLOR_*`).
    pub color: strix_color_order,
    /// How frames of another size are fitted (`STRIX_RESIZE_*`).
    pub resize: strix_resize_mode,
    /// Per-channel mean subtracted from 0..255 pixel values.
    pub mean: [f32; 3],
    /// Per-channel factor applied after the mean.
    pub scale: [f32; 3],
}

/// One detected object. Corners are fractions (0..1) of the frame given to
/// `strix_detect` (letterboxing undone, clamped to the frame): multiply by the
/// frame's width and height for pixels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct strix_detection {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
    /// Confidence in 0..1.
    pub score: f32,
    /// Class index; `strix_model_label` gives its name.
    pub class_id: u32,
}

// --- handles ----------------------------------------------------------------

/// A loaded, validated model (opaque). Immutable: one model may be used from
/// any number of threads at once. Its memory is released when the model
/// handle and every context created from it have been freed.
pub struct strix_model {
    model: Model,
    input_names: Vec<CString>,
    output_names: Vec<CString>,
    input_quant: Vec<Option<Quant>>,
    output_quant: Vec<Option<Quant>>,
    labels: Vec<CString>,
    meta_json: CString,
}

/// An inference context (opaque): the input, activation and output buffers of
/// one model. Calls on one context run one at a time (use one context per
/// thread to run in parallel); it keeps its model alive.
pub struct strix_context {
    /// Borrows `shared.model`; declared before `shared` so it is dropped first.
    session: Session<'static>,
    shared: Arc<strix_model>,
    /// Outputs hold the result of a successful run with the current inputs.
    ran: bool,
    /// Per-output scratch for `strix_detect`, allocated with the context.
    outs: Vec<Vec<f32>>,
    /// How the session runs the model's NPU part (kept across
    /// `strix_set_threads`; changed by `strix_set_npu`).
    npu: crate::npu::NpuOptions,
    /// `session.backend()` as the NUL-terminated text `strix_context_backend`
    /// hands out; replaced with the session.
    backend: CString,
}

/// The C text of a session's backend (no interior NUL: the description is
/// built from names and numbers; one would be replaced, not fail).
fn backend_text(s: &Session<'_>) -> CString {
    CString::new(s.backend().to_string().replace('\0', "?")).unwrap_or_default()
}

/// What a live handle refers to. Each call clones the `Arc` out of the
/// registry, so a handle freed during the call (by another thread) only loses
/// its registry entry: the object lives until the call returns.
enum Entry {
    Model(Arc<strix_model>),
    /// The mutex makes concurrent calls on one context wait for each other.
    Context(Arc<Mutex<strix_context>>),
}

/// The live handles, by handle value.
///
/// A handle value is a token, never the address of the object: it is made
/// from a counter of handles issued (so a freed handle's value is not reused,
/// unlike a freed address that the allocator hands out again) mixed with a
/// per-process key (so a made-up or stray pointer is very unlikely to hit a
/// live handle). The C side only stores and compares it.
struct Registry {
    /// Handles issued so far.
    issued: u64,
    /// Random, with the low [`HANDLE_SHIFT`] bits clear; 0 until first use.
    key: usize,
    live: BTreeMap<usize, Entry>,
}

/// Handle values are multiples of 2^HANDLE_SHIFT, like the addresses of
/// 8-byte aligned objects, in case a caller keeps flags in the low bits.
const HANDLE_SHIFT: u32 = 3;

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    issued: 0,
    key: 0,
    live: BTreeMap::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic never happens while the lock is held (only map operations and
    // `Arc` clones run under it); recovering keeps the library usable anyway.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Registers `entry` under a handle value never issued before in this
    /// process (on 32-bit targets: not before 2^29 more handles were
    /// issued; a value still live is never reissued).
    fn insert(&mut self, entry: Entry) -> usize {
        if self.key == 0 {
            use std::hash::BuildHasher;
            let random = std::collections::hash_map::RandomState::new().hash_one(0x5354_5249u32);
            self.key = (random as usize) & !((1 << HANDLE_SHIFT) - 1);
        }
        loop {
            self.issued += 1;
            let value = ((self.issued << HANDLE_SHIFT) as usize) ^ self.key;
            if value != 0 && !self.live.contains_key(&value) {
                self.live.insert(value, entry);
                return value;
            }
        }
    }
}

fn not_live(what: &str) -> Fail {
    fail(
        STRIX_E_HANDLE,
        format!("{what} is not a live {what} handle (already freed, or not from strix)"),
    )
}

/// The model behind a handle. The registry is only read, never the memory
/// `p` points to: a stale or made-up handle cannot reach freed memory.
fn model_ref(p: *const strix_model) -> R<Arc<strix_model>> {
    not_null(p, "model")?;
    match registry().live.get(&p.addr()) {
        Some(Entry::Model(m)) => Ok(Arc::clone(m)),
        _ => Err(not_live("model")),
    }
}

/// Runs `f` on the context behind a handle, holding the context's lock (a
/// call from another thread on the same context waits) and a reference that
/// keeps it alive even if the handle is freed meanwhile.
fn with_context<T>(p: *mut strix_context, f: impl FnOnce(&mut strix_context) -> R<T>) -> R<T> {
    not_null(p, "context")?;
    let cell = match registry().live.get(&p.addr()) {
        Some(Entry::Context(c)) => Arc::clone(c),
        _ => return Err(not_live("context")),
    };
    // A panic inside an earlier call poisons the lock. That call reported
    // STRIX_E_INTERNAL and the context is as consistent as after a failed
    // call (outputs are only marked valid after a successful run), so it
    // stays usable.
    let mut c = cell.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut c)
}

/// Removes a handle of the kind `is_kind` accepts; the object is dropped by
/// the caller after the registry lock is released (dropping a context joins
/// its worker threads).
fn remove_handle(addr: usize, is_kind: fn(&Entry) -> bool, what: &str) -> R<Entry> {
    let mut r = registry();
    match r.live.remove(&addr) {
        Some(e) if is_kind(&e) => return Ok(e),
        // A live handle of the other kind stays registered.
        Some(e) => {
            r.live.insert(addr, e);
        }
        None => {}
    }
    Err(fail(
        STRIX_E_HANDLE,
        format!("{what} is not a live {what} handle (double free?)"),
    ))
}

// --- errors -----------------------------------------------------------------

struct Fail {
    status: strix_status,
    msg: String,
}

type R<T> = std::result::Result<T, Fail>;

fn fail(status: strix_status, msg: impl Into<String>) -> Fail {
    Fail {
        status,
        msg: msg.into(),
    }
}

/// Maps a load-time runtime error to a status.
fn load_error(e: Error) -> Fail {
    let status = match e {
        Error::Format(_) => STRIX_E_FORMAT,
        Error::Version { .. } => STRIX_E_VERSION,
        Error::Corrupt(_) | Error::Invalid(_) | Error::InvalidNode { .. } | Error::Signature(_) => {
            STRIX_E_CORRUPT
        }
        Error::Argument(_) => STRIX_E_ARGUMENT,
        Error::Io { .. } => STRIX_E_IO,
    };
    fail(status, e.to_string())
}

/// Maps a run-time executor error (impossible on a validated model) to a status.
fn run_error(e: Error) -> Fail {
    match e {
        Error::Argument(m) => fail(STRIX_E_ARGUMENT, m),
        e => fail(
            STRIX_E_INTERNAL,
            format!("executor failed on a validated model: {e}"),
        ),
    }
}

fn preprocess_error(e: PreprocessError) -> Fail {
    let status = match e {
        PreprocessError::BufferTooSmall { .. } => STRIX_E_SIZE,
        PreprocessError::EmptyFrame { .. }
        | PreprocessError::FrameTooLarge { .. }
        | PreprocessError::StrideTooSmall { .. } => STRIX_E_ARGUMENT,
        PreprocessError::NotImageSpec(_)
        | PreprocessError::EmptyInput { .. }
        | PreprocessError::UnsupportedChannels(_) => STRIX_E_UNSUPPORTED,
        PreprocessError::OutputLength { .. } => STRIX_E_INTERNAL,
    };
    fail(status, e.to_string())
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // Ignore the (only possible) failure: the thread is being torn down.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Runs one entry point: catches panics, records failures.
fn guard(name: &str, f: impl FnOnce() -> R<()>) -> strix_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => STRIX_OK,
        Ok(Err(e)) => {
            set_last_error(format!("{name}: {}", e.msg));
            e.status
        }
        Err(p) => {
            set_last_error(format!(
                "{name}: internal error (panic: {})",
                panic_message(&*p)
            ));
            STRIX_E_INTERNAL
        }
    }
}

// --- argument helpers ---------------------------------------------------------

fn not_null<T>(p: *const T, what: &str) -> R<()> {
    if p.is_null() {
        Err(fail(STRIX_E_NULL, format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// Writes `v` through a checked out-pointer.
fn put<T>(p: *mut T, v: T) {
    debug_assert!(!p.is_null());
    // SAFETY: every caller checked `p` with `not_null`; the C caller promises
    // it points to writable, aligned storage for a `T` (header contract).
    unsafe { p.write(v) }
}

/// A caller buffer of `len` elements as a slice.
fn slice<'a, T>(p: *const T, len: usize, what: &str) -> R<&'a [T]> {
    not_null(p, what)?;
    if len
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(fail(
            STRIX_E_SIZE,
            format!("{what}: length {len} is impossibly large"),
        ));
    }
    // SAFETY: `p` is non-null, the byte size fits in isize, and the C caller
    // promises `len` readable, initialized, aligned elements that it does not
    // modify during the call (header contract).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

fn slice_mut<'a, T>(p: *mut T, len: usize, what: &str) -> R<&'a mut [T]> {
    not_null(p, what)?;
    if len
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(fail(
            STRIX_E_SIZE,
            format!("{what}: length {len} is impossibly large"),
        ));
    }
    // SAFETY: as in `slice`; the caller also promises the buffer is writable
    // and not aliased by any other argument.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Quantization the model applies to graph input `id`: that of the Quantize
/// node(s) reading it, when they agree.
fn input_quant(g: &Graph, id: usize) -> Option<Quant> {
    let mut qs = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Quantize) && n.inputs.first() == Some(&id))
        .map(|n| g.tensors.get(n.output).and_then(|t| t.quant));
    let first = qs.next()??;
    qs.all(|q| q == Some(first)).then_some(first)
}

/// Quantization of graph output `id`: its own if int8, else that of the int8
/// tensor a Dequantize node turned into it.
fn output_quant(g: &Graph, id: usize) -> Option<Quant> {
    let t = g.tensors.get(id)?;
    if t.dtype == DType::I8 {
        return t.quant;
    }
    let n = g
        .nodes
        .iter()
        .find(|n| n.output == id && matches!(n.op, Op::Dequantize))?;
    g.tensors.get(*n.inputs.first()?)?.quant
}

fn new_model_handle(model: Model, out: *mut *mut strix_model) -> R<()> {
    let g = &model.graph;
    let names = |ids: &[usize]| {
        ids.iter()
            .map(|&i| cstring(&g.tensors[i].name))
            .collect::<Vec<_>>()
    };
    let meta_json = serde_json::to_string(&model.meta).map_err(|e| {
        fail(
            STRIX_E_INTERNAL,
            format!("metadata does not serialise: {e}"),
        )
    })?;
    let shared = strix_model {
        input_names: names(&g.inputs),
        output_names: names(&g.outputs),
        input_quant: g.inputs.iter().map(|&i| input_quant(g, i)).collect(),
        output_quant: g.outputs.iter().map(|&i| output_quant(g, i)).collect(),
        labels: model.meta.labels.iter().map(|l| cstring(l)).collect(),
        meta_json: cstring(&meta_json),
        model,
    };
    let h = registry().insert(Entry::Model(Arc::new(shared)));
    put(out, std::ptr::without_provenance_mut(h));
    Ok(())
}

// --- library ------------------------------------------------------------------

/// The library version ("MAJOR.MINOR.PATCH"), a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn strix_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version this library implements; equals `STRIX_ABI_VERSION` when
/// the header matches the library.
#[no_mangle]
pub extern "C" fn strix_abi_version() -> u32 {
    STRIX_ABI_VERSION
}

/// The message of the most recent failed call on the calling thread ("" if
/// none), NUL-terminated. Owned by the library: valid until the next failing
/// `strix_` call on the same thread. Each thread has its own message.
#[no_mangle]
pub extern "C" fn strix_last_error() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|e| e.borrow().as_ptr())
            .unwrap_or(c"".as_ptr())
    })
    .unwrap_or(c"".as_ptr())
}

/// The name of a status code ("STRIX_OK", "STRIX_E_SIZE", ...; "unknown" for
/// other values), a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn strix_status_name(status: c_int) -> *const c_char {
    let s: &CStr = match status {
        0 => c"STRIX_OK",
        1 => c"STRIX_E_NULL",
        2 => c"STRIX_E_ARGUMENT",
        3 => c"STRIX_E_SIZE",
        4 => c"STRIX_E_IO",
        5 => c"STRIX_E_FORMAT",
        6 => c"STRIX_E_VERSION",
        7 => c"STRIX_E_CORRUPT",
        8 => c"STRIX_E_HANDLE",
        9 => c"STRIX_E_UNSUPPORTED",
        10 => c"STRIX_E_STATE",
        11 => c"STRIX_E_INTERNAL",
        _ => c"unknown",
    };
    s.as_ptr()
}

/// Test hook for the panic guard: panics inside the library (without printing
/// anything) and returns the `STRIX_E_INTERNAL` the guard turns it into, with a
/// `strix_last_error()` message containing "panic". Has no other effect.
#[no_mangle]
pub extern "C" fn strix_selftest_panic() -> strix_status {
    guard("strix_selftest_panic", || {
        std::panic::resume_unwind(Box::new("deliberate test panic"))
    })
}

// --- models -------------------------------------------------------------------

/// Loads and validates a `.strix` model file. `path` is a NUL-terminated file
/// name (bytes passed to the OS as they are). On success `*model` receives a
/// new handle to free with `strix_model_free`; on failure it is set to NULL
/// (when `model` is not NULL). The model runs on the best kernel path this CPU
/// supports (see `strix_model_load_path_isa`).
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_IO`, `STRIX_E_FORMAT`, `STRIX_E_VERSION`,
/// `STRIX_E_CORRUPT` (files over 2 GiB included).
#[no_mangle]
pub unsafe extern "C" fn strix_model_load_path(
    path: *const c_char,
    model: *mut *mut strix_model,
) -> strix_status {
    guard("strix_model_load_path", || {
        load_path(
            path,
            &LoadOptions {
                lean: true,
                ..Default::default()
            },
            model,
        )
    })
}

/// `strix_model_load_path` on the kernel path named `isa` ("scalar", "avx2",
/// "avxvnni", "avx512vnni", "neon", "dotprod", "i8mm" or "armv7neon"; see
/// `strix_isa_available`).
/// `isa` NULL or "" picks the best path this CPU supports, as
/// `strix_model_load_path` does. Outputs are bit-identical on every path; a
/// forced path serves benchmarks and comparisons. The library reads no
/// environment variable: this is the only way to choose.
///
/// Errors: those of `strix_model_load_path`; `STRIX_E_ARGUMENT` for an
/// unknown path name, `STRIX_E_UNSUPPORTED` for a path this CPU cannot run
/// (both before the file is read).
#[no_mangle]
pub unsafe extern "C" fn strix_model_load_path_isa(
    path: *const c_char,
    isa: *const c_char,
    model: *mut *mut strix_model,
) -> strix_status {
    guard("strix_model_load_path_isa", || {
        not_null(model, "model (out)")?;
        put(model, std::ptr::null_mut());
        let opts = LoadOptions {
            isa: requested_isa(isa)?,
            lean: true,
        };
        load_path(path, &opts, model)
    })
}

fn load_path(path: *const c_char, opts: &LoadOptions, model: *mut *mut strix_model) -> R<()> {
    not_null(model, "model (out)")?;
    put(model, std::ptr::null_mut());
    not_null(path, "path")?;
    // SAFETY: non-null, and the caller promises a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(path) };
    #[cfg(unix)]
    let path = std::path::Path::new(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path.to_bytes()),
    );
    #[cfg(not(unix))]
    let path = std::path::Path::new(
        path.to_str()
            .map_err(|_| fail(STRIX_E_ARGUMENT, "path is not valid UTF-8"))?,
    );
    let m = Model::load_with(path, opts).map_err(load_error)?;
    new_model_handle(m, model)
}

/// Loads and validates a `.strix` model from memory. The `size` bytes at
/// `data` are only read during the call (the model keeps its own parsed copy):
/// the caller may free or reuse the buffer as soon as this returns. On success
/// `*model` receives a new handle; on failure it is set to NULL. The model
/// runs on the best kernel path this CPU supports (see
/// `strix_model_load_buffer_isa`).
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_FORMAT` (e.g. `size` shorter than the
/// 64-byte header), `STRIX_E_VERSION`, `STRIX_E_CORRUPT` (truncated, flipped
/// bytes, invalid graph).
#[no_mangle]
pub unsafe extern "C" fn strix_model_load_buffer(
    data: *const u8,
    size: usize,
    model: *mut *mut strix_model,
) -> strix_status {
    guard("strix_model_load_buffer", || {
        load_buffer(
            data,
            size,
            &LoadOptions {
                lean: true,
                ..Default::default()
            },
            model,
        )
    })
}

/// `strix_model_load_buffer` on the kernel path named `isa`, chosen as in
/// `strix_model_load_path_isa` (NULL or "": the best this CPU supports).
///
/// Errors: those of `strix_model_load_buffer`; `STRIX_E_ARGUMENT` for an
/// unknown path name, `STRIX_E_UNSUPPORTED` for a path this CPU cannot run.
#[no_mangle]
pub unsafe extern "C" fn strix_model_load_buffer_isa(
    data: *const u8,
    size: usize,
    isa: *const c_char,
    model: *mut *mut strix_model,
) -> strix_status {
    guard("strix_model_load_buffer_isa", || {
        not_null(model, "model (out)")?;
        put(model, std::ptr::null_mut());
        let opts = LoadOptions {
            isa: requested_isa(isa)?,
            lean: true,
        };
        load_buffer(data, size, &opts, model)
    })
}

fn load_buffer(
    data: *const u8,
    size: usize,
    opts: &LoadOptions,
    model: *mut *mut strix_model,
) -> R<()> {
    not_null(model, "model (out)")?;
    put(model, std::ptr::null_mut());
    let bytes = slice(data, size, "data")?;
    let m = Model::from_bytes_with(bytes, opts).map_err(load_error)?;
    new_model_handle(m, model)
}

/// Frees a model handle. Contexts created from it stay valid (they keep the
/// model alive); the model's memory, names and strings go with the last of
/// its handles. `NULL` is accepted and ignored (`STRIX_OK`).
///
/// Errors: `STRIX_E_HANDLE` for an already freed handle (double free).
#[no_mangle]
pub unsafe extern "C" fn strix_model_free(model: *mut strix_model) -> strix_status {
    guard("strix_model_free", || {
        if model.is_null() {
            return Ok(());
        }
        let entry = remove_handle(model.addr(), |e| matches!(e, Entry::Model(_)), "model")?;
        // Contexts made from the model hold their own `Arc`.
        drop(entry);
        Ok(())
    })
}

/// The name of the kernel path `model` runs on ("scalar", "avx2", "avxvnni",
/// "avx512vnni", "neon", "dotprod", "i8mm" or "armv7neon"), a static
/// NUL-terminated string, written to `*isa`.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`.
#[no_mangle]
pub unsafe extern "C" fn strix_model_isa(
    model: *const strix_model,
    isa: *mut *const c_char,
) -> strix_status {
    guard("strix_model_isa", || {
        let m = model_ref(model)?;
        not_null(isa, "isa (out)")?;
        put(isa, isa_c_name(m.model.isa()).as_ptr());
        Ok(())
    })
}

/// Whether this CPU can run the kernel path named `isa` (see
/// `strix_model_load_path_isa` for the names), written to `*available`.
/// "scalar" is always available; a path not built for this architecture
/// never is.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_ARGUMENT` (unknown name).
#[no_mangle]
pub unsafe extern "C" fn strix_isa_available(
    isa: *const c_char,
    available: *mut bool,
) -> strix_status {
    guard("strix_isa_available", || {
        not_null(available, "available (out)")?;
        put(available, false);
        not_null(isa, "isa")?;
        put(available, isa_named(isa)?.available());
        Ok(())
    })
}

/// The [`Isa`] a C caller names. The caller checked `p` is not NULL.
fn isa_named(p: *const c_char) -> R<Isa> {
    // SAFETY: non-null (caller), and the C caller promises a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(p) };
    let known = || {
        let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
        names.join(", ")
    };
    name.to_str().ok().and_then(Isa::from_name).ok_or_else(|| {
        fail(
            STRIX_E_ARGUMENT,
            format!(
                "{:?} is not a kernel path ({})",
                name.to_string_lossy(),
                known()
            ),
        )
    })
}

/// A load call's `isa` argument: NULL or "" = detect; else a path this CPU
/// runs.
fn requested_isa(p: *const c_char) -> R<Option<Isa>> {
    // SAFETY: non-null checked first; the C caller promises a NUL-terminated string.
    if p.is_null() || unsafe { *p } == 0 {
        return Ok(None);
    }
    let isa = isa_named(p)?;
    if !isa.available() {
        return Err(fail(
            STRIX_E_UNSUPPORTED,
            format!("this CPU cannot run the {} kernel path", isa.name()),
        ));
    }
    Ok(Some(isa))
}

/// [`Isa::name`] as a static C string.
fn isa_c_name(isa: Isa) -> &'static CStr {
    match isa {
        Isa::Scalar => c"scalar",
        Isa::Avx2 => c"avx2",
        Isa::AvxVnni => c"avxvnni",
        Isa::Avx512Vnni => c"avx512vnni",
        Isa::Neon => c"neon",
        Isa::Dotprod => c"dotprod",
        Isa::I8mm => c"i8mm",
        Isa::Armv7Neon => c"armv7neon",
    }
}

/// Number of model inputs, written to `*count`.
#[no_mangle]
pub unsafe extern "C" fn strix_model_input_count(
    model: *const strix_model,
    count: *mut usize,
) -> strix_status {
    guard("strix_model_input_count", || {
        let m = model_ref(model)?;
        not_null(count, "count")?;
        put(count, m.model.graph.inputs.len());
        Ok(())
    })
}

/// Number of model outputs, written to `*count`.
#[no_mangle]
pub unsafe extern "C" fn strix_model_output_count(
    model: *const strix_model,
    count: *mut usize,
) -> strix_status {
    guard("strix_model_output_count", || {
        let m = model_ref(model)?;
        not_null(count, "count")?;
        put(count, m.model.graph.outputs.len());
        Ok(())
    })
}

fn tensor_info(
    s: &strix_model,
    id: usize,
    name: &CStr,
    quant: Option<Quant>,
) -> R<strix_tensor_info> {
    let t = &s.model.graph.tensors[id];
    if t.shape.len() > STRIX_MAX_RANK {
        return Err(fail(
            STRIX_E_UNSUPPORTED,
            format!("rank {} exceeds STRIX_MAX_RANK", t.shape.len()),
        ));
    }
    let mut dims = [0; STRIX_MAX_RANK];
    dims[..t.shape.len()].copy_from_slice(&t.shape);
    Ok(strix_tensor_info {
        name: name.as_ptr(),
        dtype: match t.dtype {
            DType::F32 => STRIX_DTYPE_F32,
            DType::I8 => STRIX_DTYPE_I8,
            DType::I32 => STRIX_DTYPE_I32,
        },
        rank: t.shape.len(),
        dims,
        size: t.len(),
        has_quant: quant.is_some(),
        scale: quant.map_or(0.0, |q| q.scale),
        zero_point: quant.map_or(0, |q| q.zero_point),
    })
}

fn index_error(what: &str, index: usize, n: usize) -> Fail {
    fail(
        STRIX_E_ARGUMENT,
        format!("{what} index {index} out of range ({n} {what}s)"),
    )
}

/// Describes input `index` (0-based) in `*info`. The name stays valid while
/// the model is alive.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (index).
#[no_mangle]
pub unsafe extern "C" fn strix_model_input_info(
    model: *const strix_model,
    index: usize,
    info: *mut strix_tensor_info,
) -> strix_status {
    guard("strix_model_input_info", || {
        let s = model_ref(model)?;
        not_null(info, "info")?;
        let g = &s.model.graph;
        let &id = g
            .inputs
            .get(index)
            .ok_or_else(|| index_error("input", index, g.inputs.len()))?;
        put(
            info,
            tensor_info(&s, id, &s.input_names[index], s.input_quant[index])?,
        );
        Ok(())
    })
}

/// Describes output `index` (0-based) in `*info`. The name stays valid while
/// the model is alive.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (index).
#[no_mangle]
pub unsafe extern "C" fn strix_model_output_info(
    model: *const strix_model,
    index: usize,
    info: *mut strix_tensor_info,
) -> strix_status {
    guard("strix_model_output_info", || {
        let s = model_ref(model)?;
        not_null(info, "info")?;
        let g = &s.model.graph;
        let &id = g
            .outputs
            .get(index)
            .ok_or_else(|| index_error("output", index, g.outputs.len()))?;
        put(
            info,
            tensor_info(&s, id, &s.output_names[index], s.output_quant[index])?,
        );
        Ok(())
    })
}

/// The model's metadata (name, input preprocessing, decoder, labels) as a
/// NUL-terminated JSON object, owned by the model (valid while it is alive).
/// The layout is that of `strix inspect --json`'s `input_spec`/`decoder`.
#[no_mangle]
pub unsafe extern "C" fn strix_model_metadata_json(
    model: *const strix_model,
    json: *mut *const c_char,
) -> strix_status {
    guard("strix_model_metadata_json", || {
        let s = model_ref(model)?;
        not_null(json, "json")?;
        put(json, s.meta_json.as_ptr());
        Ok(())
    })
}

/// The image preprocessing of the model's first input, in `*spec`.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_UNSUPPORTED` (the input
/// is not an image, or not a 4-D NCHW tensor with 1 or 3 channels).
#[no_mangle]
pub unsafe extern "C" fn strix_model_image_input(
    model: *const strix_model,
    spec: *mut strix_image_spec,
) -> strix_status {
    guard("strix_model_image_input", || {
        let s = model_ref(model)?;
        not_null(spec, "spec")?;
        let (c, h, w) = image_input_dims(&s.model)?;
        let InputSpec::Image {
            color,
            mean,
            scale,
            resize,
        } = s.model.meta.input
        else {
            return Err(fail(
                STRIX_E_UNSUPPORTED,
                "the model's input is not an image",
            ));
        };
        put(
            spec,
            strix_image_spec {
                width: w,
                height: h,
                channels: c,
                color: match color {
                    ColorOrder::Rgb => STRIX_COLOR_RGB,
                    ColorOrder::Bgr => STRIX_COLOR_BGR,
                    ColorOrder::Gray => STRIX_COLOR_GRAY,
                },
                resize: match resize {
                    ResizeMode::Stretch => STRIX_RESIZE_STRETCH,
                    ResizeMode::Letterbox => STRIX_RESIZE_LETTERBOX,
                },
                mean,
                scale,
            },
        );
        Ok(())
    })
}

/// `(channels, height, width)` of an image model's first input.
fn image_input_dims(m: &Model) -> R<(usize, usize, usize)> {
    let kind = match m.meta.input {
        InputSpec::Image { .. } => None,
        InputSpec::Raw => Some("raw tensor"),
        InputSpec::Audio { .. } => Some("audio"),
    };
    if let Some(kind) = kind {
        return Err(fail(
            STRIX_E_UNSUPPORTED,
            format!("the model's input is {kind}, not an image"),
        ));
    }
    let g = &m.graph;
    let shape = g
        .inputs
        .first()
        .map(|&i| g.tensors[i].shape.as_slice())
        .unwrap_or(&[]);
    match *shape {
        [1, c @ (1 | 3), h, w] => Ok((c, h, w)),
        _ => Err(fail(
            STRIX_E_UNSUPPORTED,
            format!("image input shape {shape:?} is not [1, 1 or 3, H, W]"),
        )),
    }
}

/// The model's output decoder (`STRIX_DECODER_*`) in `*kind`.
#[no_mangle]
pub unsafe extern "C" fn strix_model_decoder(
    model: *const strix_model,
    kind: *mut strix_decoder_kind,
) -> strix_status {
    guard("strix_model_decoder", || {
        let s = model_ref(model)?;
        not_null(kind, "kind")?;
        put(
            kind,
            match s.model.meta.decoder {
                Decoder::Raw => STRIX_DECODER_RAW,
                Decoder::Classify { .. } => STRIX_DECODER_CLASSIFY,
                Decoder::Fastestdet { .. } => STRIX_DECODER_FASTESTDET,
                Decoder::Ultraface { .. } => STRIX_DECODER_ULTRAFACE,
            },
        );
        Ok(())
    })
}

/// Number of class labels in the model's metadata (0 if it has none).
#[no_mangle]
pub unsafe extern "C" fn strix_model_label_count(
    model: *const strix_model,
    count: *mut usize,
) -> strix_status {
    guard("strix_model_label_count", || {
        let s = model_ref(model)?;
        not_null(count, "count")?;
        put(count, s.labels.len());
        Ok(())
    })
}

/// The label of class `class_id` as a NUL-terminated string owned by the model
/// (valid while it is alive).
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (no such label).
#[no_mangle]
pub unsafe extern "C" fn strix_model_label(
    model: *const strix_model,
    class_id: u32,
    label: *mut *const c_char,
) -> strix_status {
    guard("strix_model_label", || {
        let s = model_ref(model)?;
        not_null(label, "label")?;
        let l = s
            .labels
            .get(class_id as usize)
            .ok_or_else(|| index_error("label", class_id as usize, s.labels.len()))?;
        put(label, l.as_ptr());
        Ok(())
    })
}

// --- contexts -----------------------------------------------------------------

/// Creates an inference context for `model`, allocating all of its buffers
/// (the only allocation of its life besides `strix_detect`'s result list).
/// The context holds a reference to the model: freeing the model handle
/// first is safe. Create one context per thread.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`.
#[no_mangle]
pub unsafe extern "C" fn strix_context_new(
    model: *const strix_model,
    context: *mut *mut strix_context,
) -> strix_status {
    guard("strix_context_new", || {
        not_null(context, "context (out)")?;
        put(context, std::ptr::null_mut());
        let shared = model_ref(model)?;
        // SAFETY: the Model lives in the Arc's heap allocation, which never
        // moves and is never mutated; `shared`, stored in the same context,
        // keeps it alive, and the field order drops `session` before `shared`.
        // The 'static lifetime never escapes the context.
        let m: &'static Model = unsafe { &*std::ptr::from_ref(&shared.model) };
        let outs = m
            .graph
            .outputs
            .iter()
            .map(|&i| vec![0.0; m.graph.tensors[i].len()])
            .collect();
        let npu = m.npu_options().clone();
        let session =
            Session::with_npu(m, 1, &npu).map_err(|e| fail(STRIX_E_INTERNAL, e.to_string()))?;
        let c = strix_context {
            backend: backend_text(&session),
            session,
            shared,
            ran: false,
            outs,
            npu,
        };
        let h = registry().insert(Entry::Context(Arc::new(Mutex::new(c))));
        put(context, std::ptr::without_provenance_mut(h));
        Ok(())
    })
}

/// Frees a context (and the model, if this was its last handle). `NULL` is
/// accepted and ignored. If another thread is inside a call on the context,
/// this returns at once and the memory is released when that call returns.
///
/// Errors: `STRIX_E_HANDLE` for an already freed context (double free).
#[no_mangle]
pub unsafe extern "C" fn strix_context_free(context: *mut strix_context) -> strix_status {
    guard("strix_context_free", || {
        if context.is_null() {
            return Ok(());
        }
        let entry = remove_handle(
            context.addr(),
            |e| matches!(e, Entry::Context(_)),
            "context",
        )?;
        // If another thread is inside a call on this context, that call holds
        // its own `Arc`: the context is dropped when it returns.
        drop(entry);
        Ok(())
    })
}

/// Sets the number of threads one inference of this context runs on
/// (0 = one per core, at most 64). Convolutions, depthwise convolutions and
/// fully connected layers are split across them; outputs are bit-identical
/// for every count. When the count changes, the context's buffers and worker
/// threads are replaced (threads start here, never during `strix_run`): set
/// the inputs again before the next `strix_run`.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (more than
/// 64), `STRIX_E_INTERNAL` (the OS refused to start a thread).
#[no_mangle]
pub unsafe extern "C" fn strix_set_threads(
    context: *mut strix_context,
    threads: u32,
) -> strix_status {
    guard("strix_set_threads", || {
        with_context(context, |c| {
            if threads > 64 {
                return Err(fail(
                    STRIX_E_ARGUMENT,
                    format!("threads must be 0 (automatic) or 1..=64, got {threads}"),
                ));
            }
            let n = match threads {
                0 => crate::pool::default_threads().min(64),
                t => t as usize,
            };
            if n != c.session.threads() {
                replace_session(c, n, c.npu.clone())?;
            }
            Ok(())
        })
    })
}

/// Turns the use of the model's Rockchip NPU part on or off for this
/// context. A context starts with it on: a model converted with
/// `strix convert --board rk3588|rk3566|rv1106` runs its NPU part through
/// `librknnrt.so` when the library built with the `rknpu` feature finds it,
/// and its CPU fallback otherwise (`strix_context_backend` says which and
/// why). Off, the CPU fallback always runs. Outputs of the two agree within
/// the NPU's arithmetic, not bit for bit. Like `strix_set_threads`, a change
/// replaces the context's buffers: set the inputs again before `strix_run`.
/// No effect (and `STRIX_OK`) for a model without an NPU part.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_INTERNAL` (the OS
/// refused a thread or the buffers).
#[no_mangle]
pub unsafe extern "C" fn strix_set_npu(context: *mut strix_context, enabled: bool) -> strix_status {
    guard("strix_set_npu", || {
        with_context(context, |c| {
            if enabled != c.npu.enabled {
                let npu = crate::npu::NpuOptions {
                    enabled,
                    ..c.npu.clone()
                };
                replace_session(c, c.session.threads(), npu)?;
            }
            Ok(())
        })
    })
}

/// Where this context runs the model, as a NUL-terminated string owned by
/// the context (valid until it is freed or its `strix_set_threads` /
/// `strix_set_npu` changes the session): `"cpu"` (no NPU part),
/// `"cpu (npu fallback: <reason>)"` (an NPU part whose CPU fallback runs:
/// no `rknpu` feature, library missing, `rknn_init` refused the blob, ...),
/// or `"npu (<board>, nodes A..B via <library>, cores <mask>, <io>) + cpu"`
/// (`<io>`: `zero-copy I/O` or `copy I/O: <why not zero-copy>`).
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`.
#[no_mangle]
pub unsafe extern "C" fn strix_context_backend(
    context: *mut strix_context,
    backend: *mut *const c_char,
) -> strix_status {
    guard("strix_context_backend", || {
        not_null(backend, "backend (out)")?;
        with_context(context, |c| {
            put(backend, c.backend.as_ptr());
            Ok(())
        })
    })
}

/// Gives `c` a new session on `threads` threads using `npu` (buffers and
/// workers replaced: the outputs are invalid until the next run). On failure
/// the old session stays.
fn replace_session(c: &mut strix_context, threads: usize, npu: crate::npu::NpuOptions) -> R<()> {
    c.session = Session::with_npu(c.session.model(), threads, &npu)
        .map_err(|e| fail(STRIX_E_INTERNAL, e.to_string()))?;
    c.npu = npu;
    c.backend = backend_text(&c.session);
    c.ran = false;
    Ok(())
}

/// Borrows the f32 buffer of input `index`, checking that `len` matches.
fn input_buffer(c: &mut strix_context, index: usize, len: usize) -> R<&mut [f32]> {
    let n = c.shared.model.graph.inputs.len();
    let buf = c
        .session
        .input_mut(index)
        .map_err(|_| index_error("input", index, n))?;
    if buf.len() != len {
        return Err(fail(
            STRIX_E_SIZE,
            format!("input {index} holds {} values, got {len}", buf.len()),
        ));
    }
    c.ran = false;
    Ok(buf)
}

/// Copies `len` floats into input `index`. `len` must equal the input's
/// `strix_tensor_info.size`. Invalidates the outputs until the next run.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (index),
/// `STRIX_E_SIZE` (length).
#[no_mangle]
pub unsafe extern "C" fn strix_set_input_f32(
    context: *mut strix_context,
    index: usize,
    data: *const f32,
    len: usize,
) -> strix_status {
    guard("strix_set_input_f32", || {
        with_context(context, |c| {
            let src = slice(data, len, "data")?;
            input_buffer(c, index, len)?.copy_from_slice(src);
            Ok(())
        })
    })
}

/// Sets input `index` from int8 values already quantized with the input's own
/// quantization (`strix_tensor_info.has_quant`, `scale`, `zero_point`): each
/// value `q` becomes `(q - zero_point) * scale`, which the model's first
/// quantization step maps back to exactly `q`. `len` must equal the input's
/// size. Invalidates the outputs until the next run.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (index),
/// `STRIX_E_SIZE` (length), `STRIX_E_UNSUPPORTED` (the input has no
/// quantization, e.g. an f32 model).
#[no_mangle]
pub unsafe extern "C" fn strix_set_input_i8(
    context: *mut strix_context,
    index: usize,
    data: *const i8,
    len: usize,
) -> strix_status {
    guard("strix_set_input_i8", || {
        with_context(context, |c| {
            let src = slice(data, len, "data")?;
            let q = *c
                .shared
                .input_quant
                .get(index)
                .ok_or_else(|| index_error("input", index, c.shared.input_quant.len()))?;
            let q = q.ok_or_else(|| {
                fail(
                    STRIX_E_UNSUPPORTED,
                    format!("input {index} has no int8 quantization"),
                )
            })?;
            let dst = input_buffer(c, index, len)?;
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (i32::from(s) - q.zero_point) as f32 * q.scale;
            }
            Ok(())
        })
    })
}

/// Sets input `index` from 8-bit values laid out exactly like the input
/// tensor (for images: NCHW planes in the model's channel order, already at
/// the model's size; no resizing or colour conversion is done; use
/// `strix_detect` or your own code for camera frames). If the model's input is
/// an image (`strix_model_image_input` succeeds) and `index` is 0, value `p`
/// of channel `c` becomes `(p - mean[c]) * scale[c]` (the model's own
/// normalisation); otherwise it becomes `(float)p` unchanged. `len` must equal
/// the input's size. Invalidates the outputs until the next run.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (index),
/// `STRIX_E_SIZE` (length).
#[no_mangle]
pub unsafe extern "C" fn strix_set_input_u8(
    context: *mut strix_context,
    index: usize,
    data: *const u8,
    len: usize,
) -> strix_status {
    guard("strix_set_input_u8", || {
        with_context(context, |c| {
            let src = slice(data, len, "data")?;
            let shared = Arc::clone(&c.shared);
            let norm = match (
                &shared.model.meta.input,
                index,
                image_input_dims(&shared.model),
            ) {
                (InputSpec::Image { mean, scale, .. }, 0, Ok((_, h, w))) => {
                    Some((mean, scale, h * w))
                }
                _ => None,
            };
            let dst = input_buffer(c, index, len)?;
            match norm {
                Some((mean, scale, plane)) => {
                    for (ch, (d, s)) in dst.chunks_mut(plane).zip(src.chunks(plane)).enumerate() {
                        for (d, &p) in d.iter_mut().zip(s) {
                            *d = (f32::from(p) - mean[ch]) * scale[ch];
                        }
                    }
                }
                None => {
                    for (d, &p) in dst.iter_mut().zip(src) {
                        *d = f32::from(p);
                    }
                }
            }
            Ok(())
        })
    })
}

/// Runs the model on the current inputs. Allocates nothing.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_INTERNAL`.
#[no_mangle]
pub unsafe extern "C" fn strix_run(context: *mut strix_context) -> strix_status {
    guard("strix_run", || {
        with_context(context, |c| {
            c.ran = false;
            c.session.run().map_err(run_error)?;
            c.ran = true;
            Ok(())
        })
    })
}

/// Dequantizes output `i` of a run into `out` (exactly the output's length).
fn read_output(session: &Session, s: &strix_model, i: usize, out: &mut [f32]) -> R<()> {
    let id = s.model.graph.outputs[i];
    match session.tensor(id) {
        Some(TensorData::F32(d)) => out.copy_from_slice(d),
        Some(TensorData::I8(d)) => {
            let q = s.model.graph.tensors[id].quant.unwrap_or(Quant {
                scale: 1.0,
                zero_point: 0,
            });
            for (o, &v) in out.iter_mut().zip(d) {
                *o = (i32::from(v) - q.zero_point) as f32 * q.scale;
            }
        }
        _ => {
            return Err(fail(
                STRIX_E_INTERNAL,
                format!("output {i} is not an f32 or int8 activation"),
            ))
        }
    }
    Ok(())
}

/// Copies output `index` of the last run, as floats (int8 outputs
/// dequantized), into `out`, which holds `len` floats. `len` must be at least
/// the output's `strix_tensor_info.size`; only that many are written.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (index),
/// `STRIX_E_SIZE` (`len` too small), `STRIX_E_STATE` (no successful
/// `strix_run` or `strix_detect` since the context was created or an input
/// was last set).
#[no_mangle]
pub unsafe extern "C" fn strix_get_output_f32(
    context: *mut strix_context,
    index: usize,
    out: *mut f32,
    len: usize,
) -> strix_status {
    guard("strix_get_output_f32", || {
        with_context(context, |c| {
            let dst = slice_mut(out, len, "out")?;
            let g = &c.shared.model.graph;
            let &id = g
                .outputs
                .get(index)
                .ok_or_else(|| index_error("output", index, g.outputs.len()))?;
            let n = g.tensors[id].len();
            if len < n {
                return Err(fail(
                    STRIX_E_SIZE,
                    format!("output {index} has {n} values, buffer holds {len}"),
                ));
            }
            if !c.ran {
                return Err(fail(
                    STRIX_E_STATE,
                    "no outputs yet: call strix_run after setting the inputs",
                ));
            }
            read_output(&c.session, &c.shared, index, &mut dst[..n])
        })
    })
}

/// Detects objects in one camera frame with the model's own preprocessing
/// and decoder: the frame is converted to the model's colour order, resized
/// (stretched or letterboxed as its metadata says) and normalised, the model
/// runs, and its outputs are decoded (score threshold, NMS) into boxes mapped
/// back to the frame (fractions 0..1 of the frame; see `strix_detection`).
/// Works for any model whose metadata names a detection decoder (FastestDet,
/// UltraFace) and whose input is an image.
///
/// `pixels` holds `size` bytes: a `width` x `height` frame in `format`
/// (`STRIX_FORMAT_*`), rows `stride` bytes apart (0 = tightly packed). At most
/// `capacity` detections, best first, are written to `out` (which may be NULL
/// when `capacity` is 0); `*count` receives the number found. If more were
/// found than fit, the first `capacity` are written, `*count` is the total and
/// `STRIX_E_SIZE` is returned. The raw outputs stay readable with
/// `strix_get_output_f32`. Allocates a small list per call.
///
/// Errors: `STRIX_E_NULL`, `STRIX_E_HANDLE`, `STRIX_E_ARGUMENT` (unknown
/// format, zero width or height, stride smaller than a row), `STRIX_E_SIZE`
/// (`size` too small for the frame, or more detections than `capacity`),
/// `STRIX_E_UNSUPPORTED` (not an image detector), `STRIX_E_INTERNAL`.
#[no_mangle]
pub unsafe extern "C" fn strix_detect(
    context: *mut strix_context,
    pixels: *const u8,
    size: usize,
    width: usize,
    height: usize,
    stride: usize,
    format: strix_pixel_format,
    out: *mut strix_detection,
    capacity: usize,
    count: *mut usize,
) -> strix_status {
    guard("strix_detect", || {
        with_context(context, |c| {
            let data = slice(pixels, size, "pixels")?;
            not_null(count, "count")?;
            put(count, 0);
            let out = if capacity == 0 && out.is_null() {
                &mut [][..]
            } else {
                slice_mut(out, capacity, "out")?
            };
            let format = match format {
                STRIX_FORMAT_RGB => PixelFormat::Rgb8,
                STRIX_FORMAT_BGR => PixelFormat::Bgr8,
                STRIX_FORMAT_NV12 => PixelFormat::Nv12,
                STRIX_FORMAT_GRAY => PixelFormat::Gray8,
                f => return Err(fail(STRIX_E_ARGUMENT, format!("unknown pixel format {f}"))),
            };
            let shared = Arc::clone(&c.shared);
            let m = &shared.model;
            if !matches!(
                m.meta.decoder,
                Decoder::Fastestdet { .. } | Decoder::Ultraface { .. }
            ) {
                return Err(fail(
                    STRIX_E_UNSUPPORTED,
                    "the model's metadata names no detection decoder",
                ));
            }
            let (ch, h, w) = image_input_dims(m)?;
            let frame = Frame {
                data,
                width,
                height,
                stride,
                format,
            };
            c.ran = false;
            let input = c.session.input_mut(0).map_err(run_error)?;
            let letterbox = image_to_tensor(&frame, &m.meta.input, ch, h, w, input)
                .map_err(preprocess_error)?;
            c.session.run().map_err(run_error)?;
            c.ran = true;
            for (i, buf) in c.outs.iter_mut().enumerate() {
                read_output(&c.session, &shared, i, buf)?;
            }
            let views: Vec<(&[f32], &[usize])> = c
                .outs
                .iter()
                .zip(&m.graph.outputs)
                .map(|(v, &id)| (v.as_slice(), m.graph.tensors[id].shape.as_slice()))
                .collect();
            let dets = match decode(&m.meta.decoder, &views) {
                Ok(Decoded::Detections(d)) => d,
                Ok(_) => {
                    return Err(fail(
                        STRIX_E_INTERNAL,
                        "detection decoder returned no detections list",
                    ))
                }
                Err(e) => {
                    return Err(fail(
                        STRIX_E_UNSUPPORTED,
                        format!("the model's outputs do not fit its decoder: {e}"),
                    ))
                }
            };
            for (o, d) in out.iter_mut().zip(&dets) {
                let d = letterbox.to_source(d);
                *o = strix_detection {
                    x0: d.x0,
                    y0: d.y0,
                    x1: d.x1,
                    y1: d.y1,
                    score: d.score,
                    class_id: d.class,
                };
            }
            put(count, dets.len());
            if dets.len() > capacity {
                return Err(fail(
                    STRIX_E_SIZE,
                    format!(
                    "{} detections found, room for {capacity}: the best {capacity} were written",
                    dets.len()
                ),
                ));
            }
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_current() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/strix.h"));
        assert!(
            !generated.contains("#error"),
            "cbindgen failed in build.rs:\n{generated}"
        );
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include/strix.h");
        if std::env::var_os("STRIX_BLESS_HEADER").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "runtime/include/strix.h is stale (it differs from what cbindgen generates \
             from runtime/src/capi.rs); regenerate it with \
             `STRIX_BLESS_HEADER=1 cargo test -p strix-runtime header_is_current` and commit it"
        );
    }

    #[test]
    fn panics_become_internal_errors() {
        assert_eq!(strix_selftest_panic(), STRIX_E_INTERNAL);
        // SAFETY: strix_last_error returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(strix_last_error()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("panic"), "{msg}");
    }

    #[test]
    fn null_and_stale_handles() {
        let mut m = std::ptr::null_mut();
        let mut n = 0;
        // SAFETY: every pointer is NULL, valid, or a made-up handle that the
        // registry rejects before any dereference.
        unsafe {
            assert_eq!(
                strix_model_load_path(std::ptr::null(), &mut m),
                STRIX_E_NULL
            );
            assert_eq!(
                strix_model_load_buffer(b"nope".as_ptr(), 4, &mut m),
                STRIX_E_FORMAT
            );
            assert!(m.is_null());
            assert_eq!(strix_model_free(std::ptr::null_mut()), STRIX_OK);
            assert_eq!(
                strix_model_input_count(0x1000 as *const strix_model, &mut n),
                STRIX_E_HANDLE
            );
            assert_eq!(
                strix_context_free(0x2000 as *mut strix_context),
                STRIX_E_HANDLE
            );
        }
        for s in 0..=11 {
            // SAFETY: static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(strix_status_name(s)) }
                .to_str()
                .unwrap();
            assert!(name.starts_with("STRIX_"), "{s} {name}");
        }
    }

    /// A small valid model (one f32 conv) as a `.strix` image.
    fn test_model_bytes() -> Vec<u8> {
        use crate::format::tests::{conv, noise, GEOM};
        let (meta, g, c) = conv(&noise(GEOM.weight_len(), 1), false);
        crate::format::write(&meta, &g, &c)
    }

    /// [`test_model_bytes`] loaded through the C API.
    fn load_test_model() -> *mut strix_model {
        let bytes = test_model_bytes();
        let mut m = std::ptr::null_mut();
        // SAFETY: `bytes` is readable for its length; `m` is a valid out-pointer.
        let s = unsafe { strix_model_load_buffer(bytes.as_ptr(), bytes.len(), &mut m) };
        assert_eq!(s, STRIX_OK);
        m
    }

    /// The kernel path of `m` as `strix_model_isa` reports it.
    fn model_isa(m: *const strix_model) -> String {
        let mut name = std::ptr::null();
        // SAFETY: `m` is a handle (checked by the callee), `name` a valid out-pointer.
        assert_eq!(unsafe { strix_model_isa(m, &mut name) }, STRIX_OK);
        // SAFETY: on success a static NUL-terminated string.
        unsafe { CStr::from_ptr(name) }
            .to_str()
            .unwrap()
            .to_string()
    }

    fn last_error() -> String {
        // SAFETY: strix_last_error returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(strix_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    /// Issue 13: the kernel path came from the `STRIX_ISA` environment
    /// variable, read inside the library. A C caller now picks it per model
    /// (`strix_model_load_*_isa`), reads it back (`strix_model_isa`) and can
    /// ask what this CPU runs (`strix_isa_available`).
    #[test]
    fn kernel_path_is_chosen_and_reported_per_model() {
        let bytes = test_model_bytes();
        let load = |isa: *const c_char| {
            let mut m = std::ptr::null_mut();
            // SAFETY: `bytes` is readable for its length; `isa` is NULL or a
            // NUL-terminated string; `m` is a valid out-pointer.
            let s =
                unsafe { strix_model_load_buffer_isa(bytes.as_ptr(), bytes.len(), isa, &mut m) };
            (s, m)
        };
        let best = Isa::detect().name();
        for (isa, want) in [
            (c"scalar".as_ptr(), "scalar"),
            (std::ptr::null(), best),
            (c"".as_ptr(), best),
        ] {
            let (s, m) = load(isa);
            assert_eq!(s, STRIX_OK, "{}", last_error());
            assert_eq!(model_isa(m), want);
            // SAFETY: a live handle.
            assert_eq!(unsafe { strix_model_free(m) }, STRIX_OK);
        }
        let m = load_test_model();
        assert_eq!(model_isa(m), best, "strix_model_load_buffer detects");
        // SAFETY: a live handle.
        assert_eq!(unsafe { strix_model_free(m) }, STRIX_OK);

        // From a file too.
        let path =
            std::env::temp_dir().join(format!("strix-capi-isa-{}.strix", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let cpath = CString::new(path.to_str().unwrap()).unwrap();
        let mut m = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings and a valid out-pointer.
        let s = unsafe { strix_model_load_path_isa(cpath.as_ptr(), c"scalar".as_ptr(), &mut m) };
        assert_eq!(s, STRIX_OK, "{}", last_error());
        assert_eq!(model_isa(m), "scalar");
        // SAFETY: a live handle.
        assert_eq!(unsafe { strix_model_free(m) }, STRIX_OK);

        // An unknown name, and a path this CPU lacks, are refused up front.
        let (s, m) = load(c"sse9".as_ptr());
        assert_eq!((s, m), (STRIX_E_ARGUMENT, std::ptr::null_mut()));
        assert!(
            last_error().contains("\"sse9\" is not a kernel path"),
            "{}",
            last_error()
        );
        let mut m = std::ptr::dangling_mut::<strix_model>();
        // SAFETY: as above.
        let s = unsafe { strix_model_load_path_isa(cpath.as_ptr(), c"sse9".as_ptr(), &mut m) };
        assert_eq!((s, m), (STRIX_E_ARGUMENT, std::ptr::null_mut()));
        if let Some(lacking) = Isa::ALL.into_iter().find(|i| !i.available()) {
            let name = CString::new(lacking.name()).unwrap();
            let (s, m) = load(name.as_ptr());
            assert_eq!((s, m), (STRIX_E_UNSUPPORTED, std::ptr::null_mut()));
            assert!(last_error().contains("cannot run"), "{}", last_error());
        }
        std::fs::remove_file(&path).unwrap();

        // What this CPU runs, by name.
        for isa in Isa::ALL {
            assert_eq!(isa_c_name(isa).to_str().unwrap(), isa.name());
            let mut avail = !isa.available();
            // SAFETY: a static NUL-terminated string and a valid out-pointer.
            let s = unsafe { strix_isa_available(isa_c_name(isa).as_ptr(), &mut avail) };
            assert_eq!((s, avail), (STRIX_OK, isa.available()));
        }
        let mut avail = true;
        // SAFETY: as above, and NULL.
        unsafe {
            assert_eq!(
                strix_isa_available(c"sse9".as_ptr(), &mut avail),
                STRIX_E_ARGUMENT
            );
            assert!(!avail);
            assert_eq!(
                strix_isa_available(std::ptr::null(), &mut avail),
                STRIX_E_NULL
            );
            assert_eq!(
                strix_isa_available(c"scalar".as_ptr(), std::ptr::null_mut()),
                STRIX_E_NULL
            );
        }
    }

    fn new_context(m: *const strix_model) -> *mut strix_context {
        let mut c = std::ptr::null_mut();
        // SAFETY: `m` is a handle (checked by the callee), `c` a valid out-pointer.
        assert_eq!(unsafe { strix_context_new(m, &mut c) }, STRIX_OK);
        c
    }

    /// Issue 12 H: handles were addresses, and a new context usually got the
    /// freed one's address, so a stale handle was accepted and a double free
    /// freed someone else's context. Handle values are now never reused.
    #[test]
    fn stale_handles_never_reach_a_new_object() {
        let mut seen = std::collections::HashSet::new();
        let m = load_test_model();
        let c1 = new_context(m);
        // SAFETY (all blocks below): the arguments are handles (live or not,
        // which is what is tested) and valid out-pointers.
        assert_eq!(unsafe { strix_context_free(c1) }, STRIX_OK);
        assert!(seen.insert(c1.addr()));
        for _ in 0..200 {
            let c2 = new_context(m);
            assert!(seen.insert(c2.addr()), "handle value reused");
            unsafe {
                assert_eq!(strix_run(c1), STRIX_E_HANDLE); // use after free
                assert_eq!(strix_context_free(c1), STRIX_E_HANDLE); // double free
                assert_eq!(strix_run(c2), STRIX_OK); // c2 was not touched
                assert_eq!(strix_context_free(c2), STRIX_OK);
            }
        }
        // The same for models; a model handle is not a context handle.
        unsafe {
            assert_eq!(strix_model_free(m), STRIX_OK);
            let m2 = load_test_model();
            assert_ne!(m2, m);
            let mut n = 0;
            assert_eq!(strix_model_input_count(m, &mut n), STRIX_E_HANDLE);
            assert_eq!(strix_model_free(m), STRIX_E_HANDLE);
            assert_eq!(strix_run(m2.cast()), STRIX_E_HANDLE);
            assert_eq!(strix_context_free(m2.cast()), STRIX_E_HANDLE);
            assert_eq!(strix_model_input_count(m2, &mut n), STRIX_OK);
            assert_eq!(n, 1);
            assert_eq!(strix_model_free(m2), STRIX_OK);
        }
    }

    /// Freeing a context while a call on it is in progress (here: the lock a
    /// call holds, taken by the test) returns at once; the call goes on with
    /// a live context, which is released when the call ends.
    #[test]
    fn free_during_a_call_keeps_the_context_until_the_call_ends() {
        let m = load_test_model();
        let c = new_context(m);
        let cell = match registry().live.get(&c.addr()) {
            Some(Entry::Context(cell)) => Arc::clone(cell),
            _ => panic!("context not registered"),
        };
        let released = Arc::downgrade(&cell);
        let mut call = cell.lock().unwrap();
        let h = c.addr();
        // SAFETY: a handle value; the callee only looks it up.
        let freed = std::thread::spawn(move || unsafe {
            strix_context_free(std::ptr::without_provenance_mut(h))
        })
        .join()
        .unwrap();
        assert_eq!(freed, STRIX_OK);
        call.session.run().unwrap();
        drop(call);
        drop(cell);
        assert!(released.upgrade().is_none(), "context leaked");
        // SAFETY: handles, checked by the callees.
        unsafe {
            assert_eq!(strix_run(c), STRIX_E_HANDLE);
            assert_eq!(strix_model_free(m), STRIX_OK);
        }
    }

    /// The real race: threads run a context in a loop while another frees it
    /// (before the fix: a use after free, SIGSEGV). Every run succeeds until
    /// the handle is gone, then fails with STRIX_E_HANDLE.
    #[test]
    fn free_from_another_thread_during_runs_is_safe() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let m = load_test_model();
        for _ in 0..20 {
            let h = new_context(m).addr();
            let runs = Arc::new(AtomicUsize::new(0));
            let runners: Vec<_> = (0..2)
                .map(|_| {
                    let runs = Arc::clone(&runs);
                    std::thread::spawn(move || loop {
                        // SAFETY: a handle value; the callee looks it up.
                        match unsafe { strix_run(std::ptr::without_provenance_mut(h)) } {
                            STRIX_OK => runs.fetch_add(1, Ordering::Relaxed),
                            s => return s,
                        };
                    })
                })
                .collect();
            while runs.load(Ordering::Relaxed) < 10 {
                std::thread::yield_now();
            }
            // SAFETY: as above.
            let freed = unsafe { strix_context_free(std::ptr::without_provenance_mut(h)) };
            assert_eq!(freed, STRIX_OK);
            for r in runners {
                assert_eq!(r.join().unwrap(), STRIX_E_HANDLE);
            }
        }
        // SAFETY: a live model handle.
        assert_eq!(unsafe { strix_model_free(m) }, STRIX_OK);
    }
}
