//! The foundation's acceptance gates on the real shared models.

use std::path::PathBuf;
use strix_tests::{all_images, case, convert, crops, scratch};
use strix_tools::eval::evaluate;

/// Every model converts and the `.strix` file is at most 30% of the fp32 ONNX.
#[test]
fn all_models_convert_small() {
    let dir = scratch("size");
    for name in [
        "fastestdet",
        "ultraface-rfb",
        "ultraface-slim",
        "vww",
        "kws",
    ] {
        let c = case(name);
        let (_, path) = convert(&c, &dir);
        let onnx = std::fs::metadata(&c.onnx).unwrap().len() as f64;
        let strix = std::fs::metadata(&path).unwrap().len() as f64;
        eprintln!(
            "{name}: {onnx} -> {strix} bytes ({:.1}%)",
            100.0 * strix / onnx
        );
        assert!(
            strix <= 0.30 * onnx,
            "{name}: .strix is {:.1}% of the ONNX",
            100.0 * strix / onnx
        );
    }
}

/// The all-f32 build runs Strix's own importer and executor: it must match
/// tract on the original ONNX (this is what makes calibration trustworthy).
#[test]
fn fp32_build_matches_tract() {
    let dir = scratch("fp32");
    for name in ["fastestdet", "ultraface-rfb", "vww", "kws"] {
        let c = case(name);
        let out = dir.join(format!("{name}-f32.strix"));
        let m = strix_tools::convert(
            &c.onnx,
            &c.calib,
            &out,
            None,
            strix_tools::calib::Method::Minmax,
            true,
            false,
        )
        .unwrap();
        let r = evaluate(&c.onnx, &m, &c.samples).unwrap();
        for (i, cos) in r.cosine_min.iter().enumerate() {
            assert!(*cos > 0.99999, "{name} output {i}: f32 build cosine {cos}");
        }
        if let Some(a) = r.top1_agreement {
            assert_eq!(a, 1.0, "{name}");
        }
        if let Some(m) = r.map50_vs_fp32 {
            assert_eq!(m, 1.0, "{name}");
        }
    }
}

#[test]
fn detectors_keep_fp32_boxes() {
    let dir = scratch("map");
    for name in ["fastestdet", "ultraface-rfb", "ultraface-slim"] {
        let c = case(name);
        let (m, _) = convert(&c, &dir);
        let r = evaluate(&c.onnx, &m, &c.samples).unwrap();
        let map = r.map50_vs_fp32.unwrap();
        eprintln!("{name}: map50_vs_fp32 {map:.4}, cosine {:?}", r.cosine);
        assert!(map >= 0.95, "{name}: map50_vs_fp32 {map}");
    }
}

/// Fidelity on photos calibration never saw: the six shipped photos in two
/// folds, each model calibrated on one fold and evaluated on the other
/// fold's photos plus deterministic crops and mirror images of them.
#[test]
fn detectors_keep_fp32_boxes_on_photos_outside_calibration() {
    let dir = scratch("unseen");
    let imgs = all_images();
    let mut low = vec![];
    let folds: [Vec<PathBuf>; 2] = [
        imgs.iter().step_by(2).cloned().collect(),
        imgs.iter().skip(1).step_by(2).cloned().collect(),
    ];
    // Issue 16's bars, with calibration augmentation and bias correction
    // (`--calib-augment --bias-correction`, both opt-in). FastestDet: 0.855
    // and 0.898 with neither, 0.861 and 0.926 with augmentation alone,
    // 0.830 and 0.913 with bias correction alone, 0.929 and 0.931 with both.
    for (name, bar) in [("fastestdet", 0.90), ("ultraface-rfb", 0.95)] {
        let c = case(name);
        let mut maps = vec![];
        for (k, calib) in folds.iter().enumerate() {
            let held = &folds[1 - k];
            let fold_dir = dir.join(format!("{name}-{k}"));
            std::fs::create_dir_all(&fold_dir).unwrap();
            let mut samples = held.clone();
            samples.extend(crops(held, 8, &fold_dir));
            let out = fold_dir.join("m.strix");
            let opts = strix_tools::ConvertOptions {
                int8: strix_tools::lower::Int8Options {
                    bias_correction: true,
                    calib_augment: true,
                    ..Default::default()
                },
                ..Default::default()
            };
            let m = strix_tools::convert_with(
                &c.onnx,
                calib,
                &out,
                None,
                strix_tools::calib::Method::Mse,
                false,
                false,
                opts,
            )
            .unwrap();
            let map = evaluate(&c.onnx, &m, &samples)
                .unwrap()
                .map50_vs_fp32
                .unwrap();
            eprintln!(
                "{name}: calibrated on {} photos, map50_vs_fp32 {map:.4} on {} others (photos, crops, mirrors)",
                calib.len(),
                samples.len()
            );
            maps.push(map);
        }
        low.extend(
            maps.iter()
                .filter(|&&m| m < bar)
                .map(|m| format!("{name}: {m:.4} < {bar}")),
        );
    }
    assert!(low.is_empty(), "map50_vs_fp32 on unseen photos: {low:?}");
}

/// The shipped detector samples give the detections the models' authors report.
#[test]
fn detector_counts_on_samples() {
    let dir = scratch("counts");
    let count = |name: &str, img: &str| -> Vec<String> {
        let c = case(name);
        let (m, _) = convert(&c, &dir);
        let outs = strix_tools::infer(&m, &strix_tests::image(img)).unwrap();
        let j = strix_tools::decoded_json(&m, &outs).unwrap();
        j["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["label"].as_str().unwrap().to_string())
            .collect()
    };
    let d0 = count("fastestdet", "fastestdet_0.jpg");
    // fp32 finds 4 people here; int8 may add a fifth just over the 0.65
    // threshold (0.657 since the dead channels are removed, which raised
    // map50_vs_fp32 over 60 images and crops from 0.922 to 0.937).
    let p0 = d0.iter().filter(|l| *l == "person").count();
    assert!((4..=5).contains(&p0), "{d0:?}");
    let d3 = count("fastestdet", "fastestdet_3.jpg");
    assert_eq!(d3.iter().filter(|l| *l == "person").count(), 4, "{d3:?}");
    let f1 = count("ultraface-rfb", "faces_1.jpg").len();
    assert!((44..=46).contains(&f1), "{f1} faces");
    assert_eq!(count("ultraface-rfb", "faces_13.jpg").len(), 2);
}

/// Whole-model equality across kernel paths: every optimised path this CPU
/// runs (on x86 with AVX-VNNI, both `avx2` and `avxvnni`) gives the same
/// outputs as the scalar reference, bit for bit.
#[test]
fn kernel_paths_agree_on_whole_models() {
    use strix_kernels::Isa;
    let dir = scratch("paths");
    let fast_paths: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|i| *i != Isa::Scalar && i.available())
        .collect();
    if fast_paths.is_empty() {
        eprintln!("SKIP kernel_paths_agree_on_whole_models: no optimised path on this CPU");
        return;
    }
    for name in ["fastestdet", "ultraface-rfb", "vww", "kws"] {
        let c = case(name);
        let (m, _) = convert(&c, &dir);
        let scalar = m.clone().with_isa(Isa::Scalar).unwrap();
        for &isa in &fast_paths {
            let fast = m.clone().with_isa(isa).unwrap();
            for s in &c.samples {
                let shape = fast.graph.tensors[fast.graph.inputs[0]].shape.clone();
                let x = strix_tools::media::load_input(s, &fast.meta.input, &shape).unwrap();
                let a = strix_tools::run_values(&scalar, &x).unwrap();
                let b = strix_tools::run_values(&fast, &x).unwrap();
                for (i, ((va, _), (vb, _))) in a.iter().zip(&b).enumerate() {
                    let same = va.iter().zip(vb).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(
                        same,
                        "{name} output {i} differs between scalar and {}",
                        isa.name()
                    );
                }
            }
            eprintln!("{name}: scalar == {}", isa.name());
        }
    }
}

/// Whole-model equality across thread counts: every activation of every
/// shared model is bit-identical on 1, 2, 3 and 4 threads, on the scalar path
/// and on this CPU's best path (a wrong split would change or skip values).
#[test]
fn thread_counts_agree_on_whole_models() {
    use strix_kernels::Isa;
    use strix_runtime::{Session, TensorData};
    let dir = scratch("threads");
    let snapshot = |s: &Session| -> Vec<Vec<u32>> {
        (0..s.model().graph.tensors.len())
            .map(|id| match s.tensor(id) {
                Some(TensorData::F32(d)) => d.iter().map(|v| v.to_bits()).collect(),
                Some(TensorData::I8(d)) => d.iter().map(|&v| v as u8 as u32).collect(),
                Some(TensorData::I32(d)) => d.iter().map(|&v| v as u32).collect(),
                None => vec![],
            })
            .collect()
    };
    for name in ["fastestdet", "ultraface-rfb", "vww", "kws"] {
        let c = case(name);
        let (m, _) = convert(&c, &dir);
        for isa in [Isa::Scalar, Isa::detect()] {
            let m = m.clone().with_isa(isa).unwrap();
            let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
            let x = strix_tools::media::load_input(&c.samples[0], &m.meta.input, &shape).unwrap();
            let mut want = None;
            for threads in 1..=4 {
                let mut s = Session::with_threads(&m, threads).unwrap();
                assert_eq!(s.threads(), threads);
                // Twice: the second run reuses woken workers and dirty arenas.
                for _ in 0..2 {
                    s.input_mut(0).unwrap().copy_from_slice(&x);
                    s.run().unwrap();
                    let got = snapshot(&s);
                    match &want {
                        None => want = Some(got),
                        Some(w) => {
                            for (id, (a, b)) in w.iter().zip(&got).enumerate() {
                                assert!(
                                    a == b,
                                    "{name} ({}): tensor '{}' differs on {threads} threads",
                                    isa.name(),
                                    m.graph.tensors[id].name
                                );
                            }
                        }
                    }
                }
            }
            eprintln!("{name} ({}): 1 == 2 == 3 == 4 threads", isa.name());
        }
    }
}

/// `LoadOptions::lean` (what `strix run`/`bench`, strixd and the C ABI load
/// with): packed convs' weights are held once, in the constant pool, and
/// nothing else changes: outputs are bit-identical to an ordinary load, the
/// saved bytes are the file's, another path can be prepared from it, and no
/// tensor shows packed bytes as its values.
#[test]
fn lean_loading_holds_each_weight_once_and_changes_nothing_else() {
    use strix_kernels::Isa;
    use strix_runtime::{LoadOptions, Model, Session};
    let dir = scratch("lean");
    let best = Isa::detect();
    if !strix_kernels::table::kernels_for(best).conv_packed {
        eprintln!(
            "SKIP lean_loading_holds_each_weight_once: {} runs no conv packed",
            best.name()
        );
        return;
    }
    for name in ["fastestdet", "ultraface-rfb", "vww"] {
        let c = case(name);
        let (_, path) = convert(&c, &dir);
        let bytes = std::fs::read(&path).unwrap();
        let plain = Model::from_bytes(&bytes).unwrap();
        let lean_opts = LoadOptions {
            lean: true,
            ..Default::default()
        };
        let lean = Model::from_bytes_with(&bytes, &lean_opts).unwrap();
        let repacked: Vec<usize> = (0..lean.graph.tensors.len())
            .filter(|&t| lean.is_repacked(t))
            .collect();
        let held: usize = repacked.iter().map(|&t| lean.graph.tensors[t].len()).sum();
        assert!(held > 0, "{name}: no weights were repacked");
        // Every repacked weight's copy is gone (the plans stay).
        assert!(
            plain.prepared_bytes() - lean.prepared_bytes() >= held,
            "{name}: prepared {} -> {} bytes for {held} repacked",
            plain.prepared_bytes(),
            lean.prepared_bytes()
        );
        assert!(
            lean.to_bytes() == bytes,
            "{name}: a lean model saves other bytes"
        );
        let sl = Session::new(&lean);
        assert!(repacked.iter().all(|&t| sl.tensor(t).is_none()));
        assert!(Session::new(&plain).tensor(repacked[0]).is_some());
        let restored = lean.clone().with_isa(Isa::Scalar).unwrap();
        assert!(
            restored.to_bytes() == bytes,
            "{name}: with_isa lost the stored weights"
        );
        for s in &c.samples {
            let shape = plain.graph.tensors[plain.graph.inputs[0]].shape.clone();
            let x = strix_tools::media::load_input(s, &plain.meta.input, &shape).unwrap();
            let a = strix_tools::run_values(&plain, &x).unwrap();
            let b = strix_tools::run_values(&lean, &x).unwrap();
            let r = strix_tools::run_values(&restored, &x).unwrap();
            for (i, (((va, _), (vb, _)), (vr, _))) in a.iter().zip(&b).zip(&r).enumerate() {
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert!(bits(va) == bits(vb), "{name} output {i}: lean differs");
                assert!(
                    bits(va) == bits(vr),
                    "{name} output {i}: restored scalar differs"
                );
            }
        }
        eprintln!(
            "{name}: {} repacked tensors, {held} weight bytes held once; prepared {} -> {} bytes",
            repacked.len(),
            plain.prepared_bytes(),
            lean.prepared_bytes()
        );
    }
}
