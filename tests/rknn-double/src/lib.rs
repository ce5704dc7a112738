//! Helpers for testing Strix's `rknpu` backend against the librknnrt test
//! double (`rknn_double.c`, see its header for what it checks and computes).
//!
//! - [`Double`]: the double's control functions (compute stand-in, failure
//!   injection, contract violations, leak count), reached through `dlopen`
//!   on hosts and through static linking on aarch64.
//! - [`double_blob`]: the blob the double accepts in place of an `.rknn`:
//!   tensor descriptions plus a `.strix` of the same subgraph (the payload).
//! - [`strix_compute`]: the stand-in: runs the payload with Strix's CPU runtime.

use std::ffi::{c_char, c_int, c_void, CStr};
use strix_runtime::Model;

/// The compute stand-in's C signature (`rknn_double_compute_fn`).
pub type ComputeFn = unsafe extern "C" fn(
    *mut c_void,
    *const u8,
    usize,
    *const *const f32,
    *const usize,
    usize,
    *const *mut f32,
    *const usize,
    usize,
) -> c_int;

/// The double's control functions.
pub struct Double {
    set_compute: unsafe extern "C" fn(Option<ComputeFn>, *mut c_void),
    fail: unsafe extern "C" fn(*const c_char, c_int),
    violations: unsafe extern "C" fn() -> c_int,
    last_violation: unsafe extern "C" fn() -> *const c_char,
    live: unsafe extern "C" fn() -> c_int,
    reset: unsafe extern "C" fn(),
    core_mask: unsafe extern "C" fn() -> u32,
    set_native: unsafe extern "C" fn(u32),
    live_mems: unsafe extern "C" fn() -> c_int,
    #[cfg(not(target_arch = "aarch64"))]
    _lib: libloading::Library,
}

#[cfg(target_arch = "aarch64")]
extern "C" {
    fn rknn_double_set_compute(f: Option<ComputeFn>, user: *mut c_void);
    fn rknn_double_fail(call: *const c_char, code: c_int);
    fn rknn_double_violations() -> c_int;
    fn rknn_double_last_violation() -> *const c_char;
    fn rknn_double_live() -> c_int;
    fn rknn_double_reset();
    fn rknn_double_core_mask() -> u32;
    fn rknn_double_set_native(mode: u32);
    fn rknn_double_live_mems() -> c_int;
}

/// What the backend is told to open: the double's shared object on hosts;
/// ignored by the statically linked (aarch64) build.
pub fn library() -> String {
    #[cfg(not(target_arch = "aarch64"))]
    {
        env!("RKNN_DOUBLE_SO").to_string()
    }
    #[cfg(target_arch = "aarch64")]
    {
        "linked".to_string()
    }
}

/// The double built without the zero-copy symbols (like older librknnrt
/// releases) and without the copy I/O symbols (like RV1106's librknnmrt):
/// `None` in the statically linked (aarch64) build, which links the full one.
pub fn library_variants() -> Option<(String, String)> {
    #[cfg(not(target_arch = "aarch64"))]
    {
        Some((
            env!("RKNN_DOUBLE_NOMEM_SO").to_string(),
            env!("RKNN_DOUBLE_NOCOPY_SO").to_string(),
        ))
    }
    #[cfg(target_arch = "aarch64")]
    {
        None
    }
}

/// Whether the backend reaches the double through dlopen (so a missing
/// library can be tested).
pub const DLOPEN: bool = cfg!(not(target_arch = "aarch64"));

/// Native layouts the double reports (`rknn_double_set_native`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Native {
    /// The plain NCHW layout of INPUT_ATTR/OUTPUT_ATTR.
    Plain = 0,
    /// RK3588-like: 4-D inputs NHWC (rows padded to 8), 4-D outputs
    /// NC1HWC2 (C2 16 for int8, 4 for float32; W padded to 8).
    Rk3588 = 1,
    /// Outputs of type INT16, which Strix does not map.
    Int16Out = 2,
}

impl Double {
    /// The control functions of the full double.
    pub fn new() -> Double {
        Self::open(&library())
    }

    /// The control functions of the double at `path` (ignored by the
    /// statically linked build).
    pub fn open(path: &str) -> Double {
        let _ = path;
        #[cfg(not(target_arch = "aarch64"))]
        {
            // SAFETY: our own test library; the symbol types match rknn_double.c.
            unsafe {
                let lib = libloading::Library::new(path).expect("the double loads");
                macro_rules! s {
                    ($n:literal) => {
                        *lib.get($n.as_bytes()).expect($n)
                    };
                }
                Double {
                    set_compute: s!("rknn_double_set_compute"),
                    fail: s!("rknn_double_fail"),
                    violations: s!("rknn_double_violations"),
                    last_violation: s!("rknn_double_last_violation"),
                    live: s!("rknn_double_live"),
                    reset: s!("rknn_double_reset"),
                    core_mask: s!("rknn_double_core_mask"),
                    set_native: s!("rknn_double_set_native"),
                    live_mems: s!("rknn_double_live_mems"),
                    _lib: lib,
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        Double {
            set_compute: rknn_double_set_compute,
            fail: rknn_double_fail,
            violations: rknn_double_violations,
            last_violation: rknn_double_last_violation,
            live: rknn_double_live,
            reset: rknn_double_reset,
            core_mask: rknn_double_core_mask,
            set_native: rknn_double_set_native,
            live_mems: rknn_double_live_mems,
        }
    }

    /// Clears failures and counters and installs [`strix_compute`].
    pub fn reset(&self) {
        // SAFETY: plain C calls on the double's globals (tests serialise).
        unsafe {
            (self.reset)();
            (self.set_compute)(Some(strix_compute), std::ptr::null_mut());
        }
    }
    pub fn no_compute(&self) {
        unsafe { (self.set_compute)(None, std::ptr::null_mut()) }
    }
    /// Makes every later call of `call` return `code` (until [`Double::reset`]).
    pub fn fail(&self, call: &str, code: i32) {
        let c = std::ffi::CString::new(call).expect("no NUL");
        unsafe { (self.fail)(c.as_ptr(), code) }
    }
    /// Contract violations so far, with the last one's description.
    pub fn violations(&self) -> (i32, String) {
        unsafe {
            let n = (self.violations)();
            let m = CStr::from_ptr((self.last_violation)())
                .to_string_lossy()
                .into_owned();
            (n, m)
        }
    }
    /// Live contexts, unreleased output sets and undestroyed mems (0 = nothing leaked).
    pub fn live(&self) -> i32 {
        unsafe { (self.live)() }
    }
    pub fn core_mask(&self) -> u32 {
        unsafe { (self.core_mask)() }
    }
    /// Chooses the native layouts NATIVE_*_ATTR report (until [`Double::reset`]).
    pub fn set_native(&self, n: Native) {
        unsafe { (self.set_native)(n as u32) }
    }
    /// Tensor mems created and not destroyed.
    pub fn live_mems(&self) -> i32 {
        unsafe { (self.live_mems)() }
    }
}

impl Default for Double {
    fn default() -> Self {
        Double::new()
    }
}

/// One tensor of a double blob: dims, type (0 float32, 2 int8), scale, zero point.
pub struct TensorDesc {
    pub dims: Vec<u32>,
    pub int8: Option<(f32, i32)>,
}

/// A blob for the double: `RKDBL1\0\0`, counts, tensor descriptions, payload.
pub fn double_blob(ins: &[TensorDesc], outs: &[TensorDesc], payload: &[u8]) -> Vec<u8> {
    let mut b = b"RKDBL1\0\0".to_vec();
    b.extend((ins.len() as u32).to_le_bytes());
    b.extend((outs.len() as u32).to_le_bytes());
    for t in ins.iter().chain(outs) {
        b.extend((t.dims.len() as u32).to_le_bytes());
        b.extend((if t.int8.is_some() { 2u32 } else { 0 }).to_le_bytes());
        for d in &t.dims {
            b.extend(d.to_le_bytes());
        }
        let (s, z) = t.int8.unwrap_or((1.0, 0));
        b.extend(s.to_le_bytes());
        b.extend(z.to_le_bytes());
    }
    b.extend_from_slice(payload);
    b
}

/// The double's compute stand-in: loads the payload as a `.strix` model and
/// runs it on Strix's CPU runtime (inputs and outputs as real values).
/// Returns non-zero on any error; never unwinds into C.
///
/// # Safety
/// Called by the double with arrays of the stated lengths.
pub unsafe extern "C" fn strix_compute(
    _user: *mut c_void,
    payload: *const u8,
    payload_len: usize,
    ins: *const *const f32,
    in_lens: *const usize,
    n_in: usize,
    outs: *const *mut f32,
    out_lens: *const usize,
    n_out: usize,
) -> c_int {
    let r = std::panic::catch_unwind(|| -> Result<(), String> {
        let bytes = std::slice::from_raw_parts(payload, payload_len);
        let m = Model::from_bytes(bytes).map_err(|e| e.to_string())?;
        let mut s = strix_runtime::Session::new(&m);
        for i in 0..n_in {
            let x = std::slice::from_raw_parts(*ins.add(i), *in_lens.add(i));
            let dst = s.input_mut(i).map_err(|e| e.to_string())?;
            if dst.len() != x.len() {
                return Err(format!("input {i}: {} values for {}", x.len(), dst.len()));
            }
            dst.copy_from_slice(x);
        }
        s.run().map_err(|e| e.to_string())?;
        let mut y = vec![];
        for i in 0..n_out {
            s.output_f32(i, &mut y).map_err(|e| e.to_string())?;
            let out = std::slice::from_raw_parts_mut(*outs.add(i), *out_lens.add(i));
            if out.len() != y.len() {
                return Err(format!("output {i}: {} values for {}", y.len(), out.len()));
            }
            out.copy_from_slice(&y);
        }
        Ok(())
    });
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("rknn double stand-in: {e}");
            1
        }
        Err(_) => 2,
    }
}

/// Calls the double the wrong way on purpose (rknn_run before
/// rknn_inputs_set, outputs_release before outputs_get), so a test can
/// prove its contract checks fire. Returns the violations it caused.
pub fn misuse(d: &Double, blob: &mut [u8]) -> i32 {
    type Init = unsafe extern "C" fn(*mut u64, *mut c_void, u32, u32, *mut c_void) -> c_int;
    type Run = unsafe extern "C" fn(u64, *mut c_void) -> c_int;
    type Release = unsafe extern "C" fn(u64, u32, *mut c_void) -> c_int;
    type Destroy = unsafe extern "C" fn(u64) -> c_int;
    #[cfg(not(target_arch = "aarch64"))]
    let (lib, init, run, release, destroy): (_, Init, Run, Release, Destroy) = unsafe {
        let lib = libloading::Library::new(library()).expect("the double loads");
        let i = *lib.get(b"rknn_init").unwrap();
        let r = *lib.get(b"rknn_run").unwrap();
        let rel = *lib.get(b"rknn_outputs_release").unwrap();
        let de = *lib.get(b"rknn_destroy").unwrap();
        (lib, i, r, rel, de)
    };
    #[cfg(target_arch = "aarch64")]
    let (init, run, release, destroy): (Init, Run, Release, Destroy) = {
        extern "C" {
            fn rknn_init(c: *mut u64, m: *mut c_void, s: u32, f: u32, e: *mut c_void) -> c_int;
            fn rknn_run(c: u64, e: *mut c_void) -> c_int;
            fn rknn_outputs_release(c: u64, n: u32, o: *mut c_void) -> c_int;
            fn rknn_destroy(c: u64) -> c_int;
        }
        (rknn_init, rknn_run, rknn_outputs_release, rknn_destroy)
    };
    let before = d.violations().0;
    let mut ctx = 0u64;
    // SAFETY: valid pointers; the calls are wrong in order only.
    unsafe {
        assert_eq!(
            init(
                &mut ctx,
                blob.as_mut_ptr().cast(),
                blob.len() as u32,
                0,
                std::ptr::null_mut()
            ),
            0
        );
        assert_ne!(run(ctx, std::ptr::null_mut()), 0);
        assert_ne!(release(ctx, 1, std::ptr::null_mut()), 0);
        assert_eq!(destroy(ctx), 0);
        assert_ne!(destroy(ctx), 0, "a destroyed context is refused");
    }
    #[cfg(not(target_arch = "aarch64"))]
    drop(lib);
    d.violations().0 - before
}

pub use rknpu_sys::rknn::{rknn_tensor_attr, rknn_tensor_mem};

/// The double's API entry points, for tests that call it directly (to
/// break its contract on purpose).
pub struct Raw {
    pub init: unsafe extern "C" fn(*mut u64, *mut c_void, u32, u32, *mut c_void) -> c_int,
    pub destroy: unsafe extern "C" fn(u64) -> c_int,
    pub query: unsafe extern "C" fn(u64, u32, *mut c_void, u32) -> c_int,
    pub run: unsafe extern "C" fn(u64, *mut c_void) -> c_int,
    pub inputs_set: unsafe extern "C" fn(u64, u32, *mut c_void) -> c_int,
    pub create_mem: unsafe extern "C" fn(u64, u32) -> *mut rknn_tensor_mem,
    pub set_io_mem: unsafe extern "C" fn(u64, *mut rknn_tensor_mem, *mut rknn_tensor_attr) -> c_int,
    pub destroy_mem: unsafe extern "C" fn(u64, *mut rknn_tensor_mem) -> c_int,
    #[cfg(not(target_arch = "aarch64"))]
    _lib: libloading::Library,
}

#[cfg(target_arch = "aarch64")]
extern "C" {
    fn rknn_init(c: *mut u64, m: *mut c_void, s: u32, f: u32, e: *mut c_void) -> c_int;
    fn rknn_destroy(c: u64) -> c_int;
    fn rknn_query(c: u64, cmd: u32, info: *mut c_void, size: u32) -> c_int;
    fn rknn_run(c: u64, e: *mut c_void) -> c_int;
    fn rknn_inputs_set(c: u64, n: u32, i: *mut c_void) -> c_int;
    fn rknn_create_mem(c: u64, size: u32) -> *mut rknn_tensor_mem;
    fn rknn_set_io_mem(c: u64, m: *mut rknn_tensor_mem, a: *mut rknn_tensor_attr) -> c_int;
    fn rknn_destroy_mem(c: u64, m: *mut rknn_tensor_mem) -> c_int;
}

impl Raw {
    /// The full double's entry points.
    pub fn new() -> Raw {
        #[cfg(not(target_arch = "aarch64"))]
        // SAFETY: our own test library; the types match rknn_api.h.
        unsafe {
            let lib = libloading::Library::new(library()).expect("the double loads");
            macro_rules! s {
                ($n:literal) => {
                    *lib.get($n.as_bytes()).expect($n)
                };
            }
            Raw {
                init: s!("rknn_init"),
                destroy: s!("rknn_destroy"),
                query: s!("rknn_query"),
                run: s!("rknn_run"),
                inputs_set: s!("rknn_inputs_set"),
                create_mem: s!("rknn_create_mem"),
                set_io_mem: s!("rknn_set_io_mem"),
                destroy_mem: s!("rknn_destroy_mem"),
                _lib: lib,
            }
        }
        #[cfg(target_arch = "aarch64")]
        Raw {
            init: rknn_init,
            destroy: rknn_destroy,
            query: rknn_query,
            run: rknn_run,
            inputs_set: rknn_inputs_set,
            create_mem: rknn_create_mem,
            set_io_mem: rknn_set_io_mem,
            destroy_mem: rknn_destroy_mem,
        }
    }

    /// `rknn_init` on `blob`; panics unless it succeeds.
    pub fn ctx(&self, blob: &mut [u8]) -> u64 {
        let mut c = 0u64;
        // SAFETY: valid pointers of the stated sizes.
        let rc = unsafe {
            (self.init)(
                &mut c,
                blob.as_mut_ptr().cast(),
                blob.len() as u32,
                0,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "rknn_init");
        c
    }

    /// `rknn_query` of attribute `cmd` (1 input, 2 output, 8 native input,
    /// 9 native output) for tensor `index`; panics unless it succeeds.
    pub fn attr(&self, ctx: u64, cmd: u32, index: u32) -> rknn_tensor_attr {
        // SAFETY: plain data; all-zero is valid.
        let mut a: rknn_tensor_attr = unsafe { std::mem::zeroed() };
        a.index = index;
        let rc = unsafe {
            (self.query)(
                ctx,
                cmd,
                (&mut a as *mut rknn_tensor_attr).cast(),
                std::mem::size_of::<rknn_tensor_attr>() as u32,
            )
        };
        assert_eq!(rc, 0, "rknn_query {cmd}");
        a
    }
}

impl Default for Raw {
    fn default() -> Self {
        Raw::new()
    }
}
