//! The TFLite importer of `strix convert model.tflite`: the flatbuffer
//! reader (`strix_tools::tflite::Model::parse`, every offset and length
//! checked), the operator mapping with pinned quantization, then, when the
//! importer accepts the model, the int8 lowering from the pins (no
//! calibration), memory planning and validation. A lowered graph that fails
//! validation panics: `strix convert` reports that as a compiler bug.
//! libFuzzer's byte mutations are enough here: a flatbuffer is offsets and
//! scalars, no lengths to re-seal; the seeds are the MLPerf Tiny int8 files
//! and the importer tests' synthetic model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use strix_runtime::meta::ModelMeta;
use strix_runtime::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = strix_tools::tflite::Model::parse(data) else {
        return;
    };
    let Ok((cg, _warnings)) = strix_tools::tflite::import::import(&m) else {
        return;
    };
    let Ok(lowered) = strix_tools::lower::lower_int8(
        &cg,
        &HashMap::new(),
        strix_tools::calib::Method::Minmax,
        &strix_tools::lower::Int8Options::default(),
    ) else {
        return;
    };
    let mut b = lowered.builder;
    strix_runtime::plan::plan(&mut b.g, true);
    if let Err(e) = Model::new(ModelMeta::default(), b.g, b.c) {
        panic!("the lowered graph failed validation (compiler bug): {e}");
    }
});
