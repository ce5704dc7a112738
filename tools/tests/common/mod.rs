//! Helpers shared by the importer tests (`tflite_import.rs`, `qdq_import.rs`).

/// FNV-1a of int8 codes, as hex: written beside each reference input and
/// copied into the expectations by the reference scripts, so a test whose
/// input changed fails instead of comparing against another input's outputs.
pub fn fnv1a(b: &[i8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u8 as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}
