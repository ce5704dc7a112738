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

/// The int8 model of a fully pinned graph (an imported TFLite or QDQ
/// model): lowered from its pins alone (no statistics), planned, validated.
/// Panics (the test fails) if any step refuses it.
pub fn lower_pinned(
    cg: &strix_tools::ir::CGraph,
    meta: strix_runtime::meta::ModelMeta,
) -> strix_runtime::Model {
    let mut b = strix_tools::lower::lower_int8(
        cg,
        &Default::default(),
        strix_tools::calib::Method::Minmax,
        &Default::default(),
    )
    .expect("lowering the pinned graph")
    .builder;
    strix_runtime::plan::plan(&mut b.g, true);
    strix_runtime::Model::new(meta, b.g, b.c).expect("the lowered graph validates")
}
