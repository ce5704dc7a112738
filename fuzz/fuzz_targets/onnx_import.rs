//! The ONNX importer of `strix convert` (`strix_tools::onnx::import`:
//! protobuf, constant folding, shape inference) and, when it accepts the
//! model, the f32 lowering, memory planning and validation of the result.
//! No calibration. A lowered graph that fails validation panics: `strix
//! convert` reports that as a compiler bug.
//!
//! The custom mutator edits the protobuf structure: it replaces an integer
//! field (dimensions, attributes such as strides, pads, axis, group, data
//! types, the opset) by a boundary value, deletes or duplicates a field (a
//! dimension, an input, a node), then re-encodes with correct length
//! prefixes; a fifth of the time it mutates bytes as libFuzzer does.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use strix_fuzz::{pb_boundary, pb_count, pb_encode, pb_parse, pb_varints, pb_with_entry, Rng};
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

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let mut rng = Rng::new(seed);
    if rng.below(5) == 0 {
        return fuzzer_mutate(data, size, max_size);
    }
    let Some(mut msg) = pb_parse(&data[..size]) else {
        return fuzzer_mutate(data, size, max_size);
    };
    let done = match rng.below(4) {
        0 | 1 => {
            let mut ints = pb_varints(&mut msg);
            if ints.is_empty() {
                false
            } else {
                let i = rng.below(ints.len());
                *ints[i] = pb_boundary(*ints[i], rng.next() as usize);
                true
            }
        }
        op => {
            let mut k = rng.below(pb_count(&msg).max(1));
            pb_with_entry(&mut msg, &mut k, &mut |m, i| {
                if op == 2 {
                    m.remove(i);
                } else {
                    let e = m[i].clone();
                    m.insert(i + 1, e);
                }
            })
        }
    };
    if !done {
        return fuzzer_mutate(data, size, max_size);
    }
    let out = pb_encode(&msg);
    if out.len() > max_size {
        return fuzzer_mutate(data, size, max_size);
    }
    data[..out.len()].copy_from_slice(&out);
    out.len()
});
