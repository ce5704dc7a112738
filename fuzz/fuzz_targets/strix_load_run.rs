//! The `.strix` loader and executor on raw bytes: `Model::from_bytes`, and
//! when that accepts the bytes, a session run on zero inputs (detected and
//! scalar kernel paths) and the model's decoder. Most mutations stop at the
//! checksums; this target guards the header, table and bound checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strix_fuzz::load_and_run(data);
});
