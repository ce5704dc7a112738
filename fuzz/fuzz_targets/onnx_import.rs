//! The ONNX importer of `strix convert` (`strix_tools::onnx::import`:
//! protobuf, constant folding, shape inference) and, when it accepts the
//! model, the f32 lowering, memory planning and validation of the result.
//! No calibration. A lowered graph that fails validation panics: `strix
//! convert` reports that as a compiler bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strix_runtime::meta::ModelMeta;
use strix_runtime::Model;

fuzz_target!(|data: &[u8]| {
    let path = strix_fuzz::scratch_file("onnx", data);
    let Ok(cg) = strix_tools::onnx::import(&path) else {
        return;
    };
    let Ok((mut b, _)) = strix_tools::lower::lower_f32(&cg) else {
        return;
    };
    strix_runtime::plan::plan(&mut b.g, true);
    if let Err(e) = Model::new(ModelMeta::default(), b.g, b.c) {
        panic!("the lowered graph failed validation (compiler bug): {e}");
    }
});
