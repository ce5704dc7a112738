//! The C ABI as a C caller that honours `strix.h` drives it, with every index,
//! length, size and order of calls chosen by the fuzzer. Checks the header's
//! promises: every call returns a status, none returns `STRIX_E_INTERNAL`
//! ("a bug inside the library"; a caught panic also aborts here through
//! libFuzzer's panic hook), every failure leaves a readable
//! `strix_last_error()`, and detections are boxes inside the frame.
//!
//! Input: 32 control bytes, then a `.strix` image (re-sealed unless bit 0 of
//! the first control byte is set). The remaining control bytes are a
//! program: an operation byte followed by its arguments, until they run out.
//! Pointers are always valid for the lengths passed (or NULL): handing the
//! library a buffer shorter than the stated length breaks its contract, and
//! finding that is not the point. Freed handles are passed again on purpose:
//! the header promises `STRIX_E_HANDLE` for them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ffi::{c_char, CStr};
use std::ptr::{null, null_mut};
use strix_runtime::capi::*;
use strix_runtime::capi::strix_status::*;

const CONTROL: usize = 32;
/// Buffers larger than this are not built (the harness's own memory).
const MAX_ELEMS: usize = 1 << 24;

struct Program<'a> {
    bytes: &'a [u8],
}

impl Program<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }
    /// An argument byte (0 once the program has run out).
    fn arg(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }
    fn arg16(&mut self) -> usize {
        usize::from(self.arg()) << 8 | usize::from(self.arg())
    }
}

/// Asserts the status contract; true on `STRIX_OK`.
fn ok(st: strix_status, call: &str) -> bool {
    let msg = || {
        let e = strix_last_error();
        assert!(!e.is_null(), "{call}: strix_last_error() is NULL");
        // SAFETY: the library returns a NUL-terminated thread-local string.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    };
    assert_ne!(st, STRIX_E_INTERNAL, "{call}: STRIX_E_INTERNAL: {}", msg());
    let name = strix_status_name(st as i32);
    assert!(!name.is_null());
    if st != STRIX_OK {
        msg();
    }
    st == STRIX_OK
}

fn elems(info: &strix_tensor_info) -> usize {
    info.size
}

/// A length derived from the exact one by `mode`; `None` means a NULL
/// pointer (with the exact length).
fn length(exact: usize, mode: u8, small: u8) -> Option<usize> {
    match mode % 6 {
        0 | 1 => Some(exact),
        2 => Some(exact.saturating_sub(1)),
        3 => Some(exact + 1),
        4 => Some(usize::from(small)),
        _ => None,
    }
}

fn value(b: u8) -> f32 {
    [0.0, 1.0, -1.0, f32::NAN, f32::INFINITY, 1e30, -0.5, f32::MIN_POSITIVE][usize::from(b % 8)]
}

fn check_detections(out: &[strix_detection]) {
    for d in out {
        for v in [d.x0, d.y0, d.x1, d.y1] {
            assert!(
                (0.0..=1.0).contains(&v),
                "detection outside the frame: {:?}",
                (d.x0, d.y0, d.x1, d.y1)
            );
        }
        assert!(d.x0 <= d.x1 && d.y0 <= d.y1, "inverted box");
    }
}

/// Bytes of a `w` x `h` frame in `format` with row stride `stride`
/// (0 = packed), as the header describes.
fn frame_size(format: u32, w: usize, h: usize, stride: usize) -> usize {
    let (row, uv_rows, uv_row) = match format {
        STRIX_FORMAT_RGB | STRIX_FORMAT_BGR => (3 * w, 0, 0),
        STRIX_FORMAT_NV12 => (w, h.div_ceil(2), 2 * w.div_ceil(2)),
        _ => (w, 0, 0),
    };
    if stride == 0 {
        row * h + uv_row * uv_rows
    } else {
        stride * (h + uv_rows)
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < CONTROL {
        return;
    }
    let (control, model_bytes) = data.split_at(CONTROL);
    let mut bytes = model_bytes.to_vec();
    if control[0] & 1 == 0 {
        strix_fuzz::reseal(&mut bytes);
    }
    let mut model = null_mut();
    // SAFETY (all calls below): pointers are NULL or valid for the lengths
    // passed, as `strix.h` requires; handles are live, freed or NULL.
    let st = unsafe {
        if control[0] & 2 != 0 {
            strix_model_load_buffer(null(), bytes.len(), &mut model)
        } else {
            strix_model_load_buffer(bytes.as_ptr(), bytes.len(), &mut model)
        }
    };
    if !ok(st, "strix_model_load_buffer") {
        assert!(model.is_null());
        return;
    }
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    unsafe {
        let (mut ni, mut no) = (0usize, 0usize);
        assert!(ok(strix_model_input_count(model, &mut ni), "input_count"));
        assert!(ok(strix_model_output_count(model, &mut no), "output_count"));
        for i in 0..ni {
            let mut info = std::mem::zeroed();
            assert!(ok(strix_model_input_info(model, i, &mut info), "input_info"));
            inputs.push(elems(&info));
        }
        for i in 0..no {
            let mut info = std::mem::zeroed();
            assert!(ok(strix_model_output_info(model, i, &mut info), "output_info"));
            outputs.push(elems(&info));
        }
    }
    let mut contexts: Vec<*mut strix_context> = Vec::new();
    let mut freed: Vec<*mut strix_context> = Vec::new();
    let mut model_live = true;
    let mut p = Program {
        bytes: &control[1..],
    };
    let pick = |b: u8, live: &[*mut strix_context], dead: &[*mut strix_context]| {
        // Mostly live contexts, sometimes a freed one or NULL.
        let all = live.len() + dead.len() + 1;
        let i = usize::from(b) % all;
        if i < live.len() {
            live[i]
        } else if i < all - 1 {
            dead[i - live.len()]
        } else {
            null_mut()
        }
    };
    while let Some(op) = p.byte() {
        unsafe {
            match op % 12 {
                0 | 1 => {
                    let mut c = null_mut();
                    if ok(strix_context_new(model, &mut c), "context_new") {
                        contexts.push(c);
                    } else {
                        assert!(c.is_null());
                    }
                }
                2 => {
                    let c = pick(p.arg(), &contexts, &freed);
                    if ok(strix_context_free(c), "context_free") && !c.is_null() {
                        contexts.retain(|&x| x != c);
                        freed.push(c);
                    }
                }
                3 | 4 => {
                    let c = pick(p.arg(), &contexts, &freed);
                    let index = usize::from(p.arg() % 4);
                    let exact = inputs.get(index).copied().unwrap_or(1);
                    let (mode, small, v, kind) = (p.arg(), p.arg(), p.arg(), p.arg());
                    let len = length(exact, mode, small);
                    let n = len.unwrap_or(exact);
                    if n > MAX_ELEMS {
                        continue;
                    }
                    let st = match kind % 3 {
                        0 => {
                            let buf = vec![value(v); n];
                            let ptr = if len.is_some() { buf.as_ptr() } else { null() };
                            strix_set_input_f32(c, index, ptr, n)
                        }
                        1 => {
                            let buf = vec![v as i8; n];
                            let ptr = if len.is_some() { buf.as_ptr() } else { null() };
                            strix_set_input_i8(c, index, ptr, n)
                        }
                        _ => {
                            let buf: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(v)).collect();
                            let ptr = if len.is_some() { buf.as_ptr() } else { null() };
                            strix_set_input_u8(c, index, ptr, n)
                        }
                    };
                    ok(st, "set_input");
                }
                5 | 6 => {
                    let c = pick(p.arg(), &contexts, &freed);
                    ok(strix_run(c), "run");
                }
                7 => {
                    let c = pick(p.arg(), &contexts, &freed);
                    let index = usize::from(p.arg() % 4);
                    let exact = outputs.get(index).copied().unwrap_or(1);
                    let len = length(exact, p.arg(), p.arg());
                    let n = len.unwrap_or(exact);
                    if n > MAX_ELEMS {
                        continue;
                    }
                    let mut buf = vec![0f32; n];
                    let ptr = if len.is_some() { buf.as_mut_ptr() } else { null_mut() };
                    ok(strix_get_output_f32(c, index, ptr, n), "get_output_f32");
                }
                8 => {
                    let c = pick(p.arg(), &contexts, &freed);
                    let w = p.arg16() % 1024;
                    let h = p.arg16() % 1024;
                    let format = u32::from(p.arg() % 5);
                    let packed = frame_size(format, w, h, 0) / h.max(1);
                    let stride = match p.arg() % 4 {
                        0 => 0,
                        1 => packed + usize::from(p.arg() % 8),
                        2 => packed.saturating_sub(1),
                        _ => usize::from(p.arg()),
                    };
                    let exact = frame_size(format, w, h, stride);
                    let len = length(exact, p.arg(), p.arg());
                    let size = len.unwrap_or(exact);
                    let k = p.arg();
                    let pixels: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(k)).collect();
                    let capacity = usize::from(p.arg() % 8);
                    let mut out = vec![strix_detection::default(); capacity];
                    let mut count = 0usize;
                    let flags = p.arg();
                    let st = strix_detect(
                        c,
                        if len.is_some() { pixels.as_ptr() } else { null() },
                        size,
                        w,
                        h,
                        stride,
                        format,
                        if capacity == 0 && flags & 1 != 0 {
                            null_mut()
                        } else {
                            out.as_mut_ptr()
                        },
                        capacity,
                        if flags & 2 != 0 { null_mut() } else { &mut count },
                    );
                    if ok(st, "detect") {
                        check_detections(&out[..count.min(capacity)]);
                    }
                }
                9 => {
                    let c = pick(p.arg(), &contexts, &freed);
                    let threads = u32::from(p.arg() % 4) + if p.arg() == 255 { 100 } else { 0 };
                    ok(strix_set_threads(c, threads), "set_threads");
                }
                10 => {
                    // Queries on the model handle (live or freed).
                    let m = model;
                    let mut info = std::mem::zeroed();
                    let index = usize::from(p.arg() % 4);
                    ok(strix_model_input_info(m, index, &mut info), "input_info");
                    ok(strix_model_output_info(m, index, &mut info), "output_info");
                    let mut json: *const c_char = null();
                    if ok(strix_model_metadata_json(m, &mut json), "metadata_json") {
                        let _ = CStr::from_ptr(json).to_bytes().len();
                    }
                    let mut spec = std::mem::zeroed();
                    ok(strix_model_image_input(m, &mut spec), "image_input");
                    let mut kind = 0;
                    ok(strix_model_decoder(m, &mut kind), "decoder");
                    let mut n = 0usize;
                    ok(strix_model_label_count(m, &mut n), "label_count");
                    let mut label: *const c_char = null();
                    if ok(strix_model_label(m, u32::from(p.arg()), &mut label), "label") {
                        let _ = CStr::from_ptr(label).to_bytes().len();
                    }
                }
                _ => {
                    // Frees the model (contexts keep it alive); a second
                    // free must report a stale handle.
                    let st = strix_model_free(model);
                    assert_eq!(ok(st, "model_free"), model_live);
                    model_live = false;
                }
            }
        }
    }
    unsafe {
        for c in contexts {
            ok(strix_context_free(c), "context_free");
        }
        if model_live {
            assert!(ok(strix_model_free(model), "model_free"));
        }
    }
});
