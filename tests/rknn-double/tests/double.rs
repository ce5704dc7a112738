//! The rknpu backend against the librknnrt test double: outputs equal to
//! the CPU path, CPU fallback when the library is missing or rknn_init /
//! setup fails, every RKNN_ERR_* code named in run errors, no leaked
//! context or output set, and the `.strix` RKNN section's checks.
//! Runs on the host (dlopen of the double) and under qemu-aarch64 (a
//! statically linked test with the double linked in): scripts/test-npu.sh.

use std::sync::Mutex;
use strix_kernels::reference::{ConvGeometry, UnaryOp};
use strix_rknn_double::{
    double_blob, library, library_variants, misuse, Double, Native, Raw, TensorDesc, DLOPEN,
};
use strix_runtime::graph::{Consts, DType, Graph, Node, Op, Quant, Storage, Tensor};
use strix_runtime::meta::ModelMeta;
use strix_runtime::npu::{rknn::error_name, Backend, CoreMask, NpuIo, NpuOptions, NpuPart};
use strix_runtime::{Model, Session};

/// The double has global state: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const GEOM: ConvGeometry = ConvGeometry {
    in_c: 4,
    in_h: 6,
    in_w: 6,
    out_c: 8,
    out_h: 6,
    out_w: 6,
    kh: 3,
    kw: 3,
    stride_h: 1,
    stride_w: 1,
    dil_h: 1,
    dil_w: 1,
    pad_top: 1,
    pad_left: 1,
    groups: 1,
};
const YQ: Quant = Quant {
    scale: 0.05,
    zero_point: 3,
};

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `x -> Conv -> Quantize (yq) -> Dequantize -> Sigmoid -> z`; with
/// `sidecar`, only the first two nodes with `yq` as the output (the
/// subgraph the NPU blob stands for).
fn graph(sidecar: bool) -> (ModelMeta, Graph, Consts) {
    let mut c = Consts::default();
    c.f32.extend(noise(GEOM.weight_len(), 3));
    c.f32.extend(noise(GEOM.out_c, 7));
    let a = Storage::Arena { offset: 0 };
    let t = |name: &str, shape: &[usize], dtype, quant, storage| Tensor {
        name: name.into(),
        shape: shape.to_vec(),
        dtype,
        quant,
        storage,
    };
    let mut tensors = vec![
        t("x", &[1, 4, 6, 6], DType::F32, None, a),
        t(
            "w",
            &[8, 4, 3, 3],
            DType::F32,
            None,
            Storage::Const { offset: 0 },
        ),
        t(
            "b",
            &[8],
            DType::F32,
            None,
            Storage::Const {
                offset: GEOM.weight_len(),
            },
        ),
        t("y", &[1, 8, 6, 6], DType::F32, None, a),
        t("yq", &[1, 8, 6, 6], DType::I8, Some(YQ), a),
    ];
    let node = |name: &str, op, inputs: Vec<usize>, output| Node {
        name: name.into(),
        op,
        inputs,
        output,
    };
    let mut nodes = vec![
        node(
            "conv",
            Op::Conv {
                geom: GEOM,
                act_min: f32::MIN,
                act_max: f32::MAX,
            },
            vec![0, 1, 2],
            3,
        ),
        node("q", Op::Quantize, vec![3], 4),
    ];
    let mut outputs = vec![4];
    if !sidecar {
        tensors.push(t("yd", &[1, 8, 6, 6], DType::F32, None, a));
        tensors.push(t("z", &[1, 8, 6, 6], DType::F32, None, a));
        nodes.push(node("dq", Op::Dequantize, vec![4], 5));
        nodes.push(node(
            "sig",
            Op::Unary {
                kind: UnaryOp::Sigmoid,
            },
            vec![5],
            6,
        ));
        outputs = vec![6];
    }
    let mut g = Graph {
        tensors,
        nodes,
        inputs: vec![0],
        outputs,
        ..Default::default()
    };
    strix_runtime::plan::plan(&mut g, true);
    let meta = ModelMeta {
        name: "npu-test".into(),
        ..Default::default()
    };
    (meta, g, c)
}

fn part(blob: Vec<u8>) -> NpuPart {
    NpuPart {
        board: "rk3588".into(),
        first_node: 0,
        end_node: 2,
        inputs: vec![0],
        outputs: vec![4],
        compiler: "rknn double".into(),
        blob,
    }
}

fn good_blob() -> Vec<u8> {
    let (m, g, c) = graph(true);
    let sidecar = strix_runtime::format::write(&m, &g, &c);
    double_blob(
        &[TensorDesc {
            dims: vec![1, 4, 6, 6],
            int8: None,
        }],
        &[TensorDesc {
            dims: vec![1, 8, 6, 6],
            int8: Some((YQ.scale, YQ.zero_point)),
        }],
        &sidecar,
    )
}

/// The model with its NPU part, through a save/load round trip.
fn model(blob: Vec<u8>) -> Model {
    let (m, g, c) = graph(false);
    let model = Model::new(m, g, c)
        .unwrap()
        .with_npu_part(part(blob))
        .unwrap();
    Model::from_bytes(&model.to_bytes()).unwrap()
}

fn opts() -> NpuOptions {
    NpuOptions {
        library: library(),
        ..Default::default()
    }
}

fn run(s: &mut Session, x: &[f32]) -> strix_runtime::Result<Vec<f32>> {
    s.input_mut(0)?.copy_from_slice(x);
    s.run()?;
    let mut y = vec![];
    s.output_f32(0, &mut y)?;
    Ok(y)
}

fn cpu(m: &Model, x: &[f32]) -> Vec<f32> {
    let o = NpuOptions {
        enabled: false,
        ..opts()
    };
    let mut s = Session::with_npu(m, 1, &o).unwrap();
    assert!(matches!(s.backend(), Backend::CpuFallback { reason } if reason.contains("disabled")));
    run(&mut s, x).unwrap()
}

fn setup() -> (std::sync::MutexGuard<'static, ()>, Double) {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = Double::new();
    d.reset();
    (g, d)
}

fn assert_clean(d: &Double) {
    let (n, last) = d.violations();
    assert_eq!(n, 0, "contract violations, last: {last}");
    assert_eq!(d.live(), 0, "a context, output set or mem leaked");
    assert_eq!(d.live_mems(), 0, "a mem leaked");
}

/// The session's I/O mode (panics unless the NPU is used).
fn io(s: &Session) -> NpuIo {
    match s.backend() {
        Backend::Npu { io, .. } => io.clone(),
        b => panic!("not on the NPU: {b}"),
    }
}

fn copy_opts() -> NpuOptions {
    NpuOptions {
        zero_copy: false,
        ..opts()
    }
}

#[test]
fn npu_outputs_equal_the_cpu_path() {
    let (_g, d) = setup();
    let m = model(good_blob());
    for (mask, bits) in [
        (CoreMask::Auto, 0),
        (CoreMask::Core012, 7),
        (CoreMask::Core1, 2),
    ] {
        d.reset();
        let o = NpuOptions {
            core_mask: mask,
            ..opts()
        };
        {
            let mut s = Session::with_npu(&m, 1, &o).unwrap();
            assert!(
                matches!(
                    s.backend(),
                    Backend::Npu {
                        first: 0,
                        end: 2,
                        ..
                    }
                ),
                "{}",
                s.backend()
            );
            assert_eq!(d.core_mask(), bits);
            assert_eq!(io(&s), NpuIo::ZeroCopy);
            assert!(s.backend().to_string().contains(", zero-copy I/O) + cpu"));
            for seed in [11, 12, 13] {
                let x = noise(4 * 36, seed);
                let want = cpu(&m, &x);
                assert_eq!(run(&mut s, &x).unwrap(), want, "seed {seed}");
                assert!(
                    want.iter().any(|&v| (v - 0.5).abs() > 0.1),
                    "trivial outputs"
                );
            }
            // The NPU path really runs the double: without its stand-in, run fails.
            d.no_compute();
            let e = run(&mut s, &noise(4 * 36, 1)).unwrap_err().to_string();
            assert!(e.contains("rknn_run") && e.contains("RKNN_ERR_FAIL"), "{e}");
            d.reset(); // the violation above was the test's doing
        }
        assert_clean(&d);
    }
}

#[test]
fn a_missing_library_falls_back_to_the_cpu() {
    let (_g, d) = setup();
    if !DLOPEN {
        eprintln!("SKIP a_missing_library_falls_back_to_the_cpu: static build (no dlopen)");
        return;
    }
    let m = model(good_blob());
    let o = NpuOptions {
        library: "/nonexistent/librknnrt.so".into(),
        ..opts()
    };
    let mut s = Session::with_npu(&m, 1, &o).unwrap();
    let Backend::CpuFallback { reason } = s.backend().clone() else {
        panic!("{}", s.backend())
    };
    assert!(
        reason.contains("cannot load /nonexistent/librknnrt.so"),
        "{reason}"
    );
    let x = noise(4 * 36, 5);
    assert_eq!(run(&mut s, &x).unwrap(), cpu(&m, &x));
    assert_clean(&d);
}

#[test]
fn init_and_setup_failures_fall_back_with_the_reason() {
    let (_g, d) = setup();
    let x = noise(4 * 36, 6);
    // A blob the runtime does not accept (not the double's format).
    let mut foreign = b"RKNN\0\0\0\0 not a double blob".to_vec();
    foreign.resize(64, 0);
    let m = model(foreign);
    let want = cpu(&m, &x);
    let mut s = Session::with_npu(&m, 1, &opts()).unwrap();
    assert!(
        matches!(s.backend(), Backend::CpuFallback { reason } if reason.contains("rknn_init returned -6: RKNN_ERR_MODEL_INVALID")),
        "{}",
        s.backend()
    );
    assert_eq!(run(&mut s, &x).unwrap(), want);
    drop(s);
    let m = model(good_blob());
    for (call, code) in [
        ("rknn_init", -3),
        ("rknn_init", -10),
        ("rknn_query", -7),
        ("rknn_set_core_mask", -5),
    ] {
        d.reset();
        d.fail(call, code);
        let o = NpuOptions {
            core_mask: CoreMask::Core0,
            ..opts()
        };
        let mut s = Session::with_npu(&m, 1, &o).unwrap();
        let Backend::CpuFallback { reason } = s.backend().clone() else {
            panic!("{call}: {}", s.backend())
        };
        let expect = format!("{call} returned {code}: {}", error_name(code));
        assert!(reason.contains(&expect), "{reason} / {expect}");
        assert_eq!(run(&mut s, &x).unwrap(), want);
        drop(s);
        assert_clean(&d); // a context made before the failure was destroyed
    }
    // A blob whose tensors do not match the model's NPU part.
    d.reset();
    let (mm, g, c) = graph(true);
    let wrong = double_blob(
        &[TensorDesc {
            dims: vec![1, 4, 6, 5],
            int8: None,
        }],
        &[TensorDesc {
            dims: vec![1, 8, 6, 6],
            int8: Some((YQ.scale, YQ.zero_point)),
        }],
        &strix_runtime::format::write(&mm, &g, &c),
    );
    let m = model(wrong);
    let s = Session::with_npu(&m, 1, &opts()).unwrap();
    assert!(
        matches!(s.backend(), Backend::CpuFallback { reason } if reason.contains("blob input 0 has 120 elements")),
        "{}",
        s.backend()
    );
    drop(s);
    assert_clean(&d);
}

#[test]
fn every_rknn_error_in_a_run_is_named() {
    let (_g, d) = setup();
    let m = model(good_blob());
    let x = noise(4 * 36, 8);
    for (o, call) in [
        (copy_opts(), "rknn_inputs_set"),
        (copy_opts(), "rknn_run"),
        (copy_opts(), "rknn_outputs_get"),
        (copy_opts(), "rknn_outputs_release"),
        (opts(), "rknn_run"),
    ] {
        for code in -13..=-1 {
            d.reset();
            d.set_native(Native::Rk3588);
            {
                let mut s = Session::with_npu(&m, 1, &o).unwrap();
                assert_eq!(io(&s) == NpuIo::ZeroCopy, o.zero_copy);
                d.fail(call, code);
                let e = run(&mut s, &x).unwrap_err().to_string();
                let name = error_name(code);
                assert!(name.starts_with("RKNN_ERR_"), "{code}: {name}");
                assert!(
                    e.contains(&format!("{call} returned {code}: {name}")),
                    "{call} {code}: {e}"
                );
                // The session recovers when the library does.
                d.fail("", 0);
                assert_eq!(run(&mut s, &x).unwrap(), cpu(&m, &x), "{call} {code}");
            }
            assert_clean(&d);
        }
    }
    assert!(error_name(-99).contains("unknown"));
}

/// Both I/O modes, every native layout the double presents: outputs equal
/// to the CPU path's, and the mode (with the reason for copy) reported.
#[test]
fn io_modes_and_native_layouts_equal_the_cpu_path() {
    let (_g, d) = setup();
    let m = model(good_blob());
    for (native, o, want) in [
        (Native::Plain, opts(), None),
        (Native::Rk3588, opts(), None),
        (
            Native::Rk3588,
            copy_opts(),
            Some("zero-copy disabled by the caller"),
        ),
        (
            Native::Int16Out,
            opts(),
            Some("blob output 0: native tensor type 4 is not float32/float16/int8/uint8"),
        ),
    ] {
        d.reset();
        d.set_native(native);
        {
            let mut s = Session::with_npu(&m, 1, &o).unwrap();
            match (io(&s), want) {
                (NpuIo::ZeroCopy, None) => {}
                (NpuIo::Copy { reason }, Some(w)) => assert_eq!(reason, w),
                (got, w) => panic!("{native:?}: {got:?}, wanted {w:?}"),
            }
            for seed in [21, 22] {
                let x = noise(4 * 36, seed);
                assert_eq!(run(&mut s, &x).unwrap(), cpu(&m, &x), "{native:?} {seed}");
            }
        }
        assert_clean(&d);
    }
}

/// A library without the zero-copy symbols (older librknnrt) runs the copy
/// API and says why; one without the copy API (RV1106's librknnmrt) runs
/// zero-copy, and falls back to the CPU when zero-copy is turned off.
#[test]
fn the_exported_symbols_choose_the_io_api() {
    let (_g, _d) = setup();
    let Some((nomem, nocopy)) = library_variants() else {
        eprintln!(
            "SKIP the_exported_symbols_choose_the_io_api: static build (one double linked in)"
        );
        return;
    };
    let m = model(good_blob());
    let x = noise(4 * 36, 31);
    let want = cpu(&m, &x);
    for (lib, zero_copy, expect) in [
        (&nomem, true, format!("copy I/O: {nomem} has no rknn_create_mem")),
        (&nocopy, true, "zero-copy I/O".to_string()),
        (
            &nocopy,
            false,
            format!("npu fallback: zero-copy disabled by the caller, and {nocopy} has no rknn_inputs_set"),
        ),
    ] {
        let d = Double::open(lib);
        d.reset();
        d.set_native(Native::Rk3588);
        let o = NpuOptions {
            library: lib.clone(),
            zero_copy,
            ..opts()
        };
        {
            let mut s = Session::with_npu(&m, 1, &o).unwrap();
            let b = s.backend().to_string();
            assert!(b.contains(&expect), "{b} / {expect}");
            assert_eq!(run(&mut s, &x).unwrap(), want, "{b}");
        }
        assert_clean(&d);
    }
}

/// Failures of the zero-copy calls at session creation: the CPU fallback
/// with the call and its RKNN_ERR_* named, nothing leaked (mems created
/// before the failure are destroyed).
#[test]
fn zero_copy_setup_failures_fall_back_to_the_cpu() {
    let (_g, d) = setup();
    let m = model(good_blob());
    let x = noise(4 * 36, 41);
    let want = cpu(&m, &x);
    let mut cases: Vec<(&str, i32, String)> = vec![(
        "rknn_create_mem",
        -4,
        "rknn_create_mem(".to_string() + "576) returned NULL (allocation failed)",
    )];
    for code in -13..=-1 {
        cases.push((
            "rknn_set_io_mem",
            code,
            format!("rknn_set_io_mem returned {code}: {}", error_name(code)),
        ));
    }
    for (call, code, expect) in cases {
        d.reset();
        d.set_native(Native::Plain);
        d.fail(call, code);
        {
            let mut s = Session::with_npu(&m, 1, &opts()).unwrap();
            let Backend::CpuFallback { reason } = s.backend().clone() else {
                panic!("{call}: {}", s.backend())
            };
            assert!(reason.contains(&expect), "{reason} / {expect}");
            assert_eq!(run(&mut s, &x).unwrap(), want);
        }
        assert_clean(&d);
    }
}

/// A real model (the FastestDet detector of the fuzz corpus, 352x352 input,
/// a [1, 85, 22, 22] output: NC1HWC2 with channel and width padding in the
/// RK3588-like layout) run whole on the "NPU" in both I/O modes: outputs
/// identical to the CPU path's.
#[test]
fn a_real_model_gives_the_cpu_outputs_in_both_io_modes() {
    let (_g, d) = setup();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/strix_load_run_sealed/seed-fastestdet.strix"
    );
    let bytes = std::fs::read(path).expect(path);
    let plain = Model::from_bytes(&bytes).unwrap();
    let g = &plain.graph;
    let desc = |t: usize| {
        let t = &g.tensors[t];
        TensorDesc {
            dims: t.shape.iter().map(|&v| v as u32).collect(),
            int8: (t.dtype == DType::I8).then(|| {
                let q = t.quant.expect("int8 outputs are quantized");
                (q.scale, q.zero_point)
            }),
        }
    };
    let ins: Vec<TensorDesc> = g.inputs.iter().map(|&t| desc(t)).collect();
    let outs: Vec<TensorDesc> = g.outputs.iter().map(|&t| desc(t)).collect();
    assert!(
        outs.iter()
            .any(|t| t.dims.len() == 4 && t.dims[1] % 16 != 0),
        "the test wants a 4-D output with channel padding in NC1HWC2"
    );
    // The whole graph is the NPU part; the double's stand-in runs the file itself.
    let part = NpuPart {
        board: "rk3588".into(),
        first_node: 0,
        end_node: g.nodes.len(),
        inputs: g.inputs.clone(),
        outputs: g.outputs.clone(),
        compiler: "rknn double".into(),
        blob: double_blob(&ins, &outs, &bytes),
    };
    let m = Model::new(plain.meta.clone(), g.clone(), plain.consts.clone())
        .unwrap()
        .with_npu_part(part)
        .unwrap();
    let n_in = g.tensors[g.inputs[0]].len();
    let x: Vec<f32> = noise(n_in, 51).iter().map(|v| v * 0.5 + 0.5).collect();
    let outputs = |s: &mut Session| {
        s.input_mut(0).unwrap().copy_from_slice(&x);
        s.run().unwrap();
        (0..g.outputs.len())
            .map(|i| {
                let mut y = vec![];
                s.output_f32(i, &mut y).unwrap();
                y
            })
            .collect::<Vec<_>>()
    };
    let want = outputs(
        &mut Session::with_npu(
            &m,
            1,
            &NpuOptions {
                enabled: false,
                ..opts()
            },
        )
        .unwrap(),
    );
    for (native, o) in [(Native::Rk3588, opts()), (Native::Rk3588, copy_opts())] {
        d.reset();
        d.set_native(native);
        {
            let mut s = Session::with_npu(&m, 1, &o).unwrap();
            assert_eq!(io(&s) == NpuIo::ZeroCopy, o.zero_copy, "{}", s.backend());
            assert_eq!(outputs(&mut s), want, "{}", s.backend());
        }
        assert_clean(&d);
    }
}

/// Breaks each zero-copy contract rule on purpose: each is caught, refused
/// and described.
#[test]
fn the_double_catches_zero_copy_contract_violations() {
    let (_g, d) = setup();
    d.set_native(Native::Rk3588);
    let r = Raw::new();
    let mut blob = good_blob();
    let (a, b) = (r.ctx(&mut blob), r.ctx(&mut blob));
    let caught = |what: &str| {
        let (n, last) = d.violations();
        assert!(
            n > 0 && last.contains(what),
            "{what}: not caught ({n}: {last})"
        );
        d.reset();
        d.set_native(Native::Rk3588);
    };
    let expect = |what: &str, rc: i32| {
        assert_ne!(rc, 0, "{what}: the call was not refused");
        caught(what);
    };
    unsafe {
        let mut ia = r.attr(a, 8, 0);
        let mut oa = r.attr(a, 9, 0);
        assert_eq!(oa.fmt.0, 2, "NC1HWC2 output");
        assert_eq!(ia.fmt.0, 1, "NHWC input");
        assert_eq!(d.violations().0, 0);
        let small = (r.create_mem)(a, ia.size_with_stride - 1);
        let mi = (r.create_mem)(a, ia.size_with_stride);
        let mo = (r.create_mem)(a, oa.size_with_stride);
        let mb = (r.create_mem)(b, oa.size_with_stride);
        ia.pass_through = 1;
        expect(
            "less than the native size_with_stride",
            (r.set_io_mem)(a, small, &mut ia),
        );
        expect("used with another context", (r.set_io_mem)(a, mb, &mut oa));
        let mut changed = oa;
        changed.fmt.0 = 0;
        expect(
            "is not the native attribute",
            (r.set_io_mem)(a, mo, &mut changed),
        );
        let mut plain = r.attr(a, 2, 0);
        expect(
            "is not the native attribute",
            (r.set_io_mem)(a, mo, &mut plain),
        );
        let mut foreign = oa;
        foreign.index = 3;
        expect(
            "is not one rknn_query returned",
            (r.set_io_mem)(a, mo, &mut foreign),
        );
        let mut no_pt = ia;
        no_pt.pass_through = 0;
        expect("without pass_through", (r.set_io_mem)(a, mi, &mut no_pt));
        assert_eq!((r.set_io_mem)(a, mi, &mut ia), 0);
        expect(
            "not bound by rknn_set_io_mem",
            (r.run)(a, std::ptr::null_mut()),
        );
        assert_eq!((r.set_io_mem)(a, mo, &mut oa), 0);
        expect(
            "the two input APIs mixed",
            (r.inputs_set)(a, 1, std::ptr::NonNull::<u8>::dangling().as_ptr().cast()),
        );
        assert_eq!((r.run)(a, std::ptr::null_mut()), 0, "{}", d.violations().1);
        assert_eq!((r.destroy_mem)(a, mo), 0);
        expect(
            "destroyed by rknn_destroy_mem",
            (r.run)(a, std::ptr::null_mut()),
        );
        expect("used after rknn_destroy_mem", (r.destroy_mem)(a, mo));
        expect(
            "used after rknn_destroy_mem",
            (r.set_io_mem)(a, mo, &mut oa),
        );
        expect(
            "not a mem from rknn_create_mem",
            (r.destroy_mem)(a, (&mut oa as *mut _ as *mut u8).cast()),
        );
        let altered = (r.create_mem)(a, 64);
        (*altered).size = 32;
        expect("were altered", (r.set_io_mem)(a, altered, &mut oa));
        (*altered).size = 64;
        assert_eq!((r.destroy_mem)(a, altered), 0);
        assert!((r.create_mem)(a, 0).is_null());
        caught("rknn_create_mem: size 0");
        (r.destroy_mem)(a, mi);
        (r.destroy_mem)(a, small);
        assert_eq!(d.violations().0, 0, "{}", d.violations().1);
        // b still holds mb: destroying b reports the leak (and frees it).
        assert_eq!((r.destroy)(b), 0, "destroyed anyway");
        caught("mems not destroyed by rknn_destroy_mem (leak)");
        assert_eq!((r.destroy)(a), 0);
    }
    assert_clean(&d);
}

#[test]
fn the_double_catches_contract_violations() {
    let (_g, d) = setup();
    let mut blob = good_blob();
    assert!(misuse(&d, &mut blob) >= 3);
    d.reset();
}

#[test]
fn the_rknn_section_is_checked_and_old_files_still_load() {
    let (_g, _d) = setup();
    let (m, g, c) = graph(false);
    // Without the section: byte-identical to a plain write, no NPU part.
    let plain = Model::new(m.clone(), g.clone(), c.clone()).unwrap();
    assert_eq!(plain.to_bytes(), strix_runtime::format::write(&m, &g, &c));
    assert!(Model::from_bytes(&plain.to_bytes()).unwrap().npu.is_none());
    // With it: round trip.
    let with = model(good_blob());
    assert_eq!(with.npu.as_deref(), Some(&part(good_blob())));
    let bytes = with.to_bytes();
    assert!(bytes.len() > plain.to_bytes().len() + good_blob().len());
    // A runtime that does not know the section reads the same CPU model.
    let (m2, g2, c2) = strix_runtime::format::read(&bytes).unwrap();
    assert_eq!((m2, g2, c2), (m, g.clone(), c.clone()));

    let refused = |p: NpuPart, what: &str| {
        let e = Model::new(graph(false).0, g.clone(), c.clone())
            .unwrap()
            .with_npu_part(p.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{e} / {what}");
        // And from a file carrying such a section.
        let bytes = strix_runtime::format::write_all(&graph(false).0, &g, &c, Some(&p));
        let e = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(e.contains(what), "{e} / {what}");
    };
    let mut p = part(good_blob());
    p.end_node = 0;
    refused(p, "the CPU fallback must be present");
    let mut p = part(good_blob());
    p.end_node = 9;
    refused(p, "not a non-empty range");
    let mut p = part(good_blob());
    p.outputs = vec![3];
    refused(p, "declared outputs [3] differ");
    let mut p = part(good_blob());
    p.inputs = vec![0, 0];
    refused(p, "declared inputs [0, 0] differ");
    let mut p = part(vec![]);
    p.blob.clear();
    refused(p, "blob is empty");
    let mut p = part(good_blob());
    p.board = "rk9999".into();
    refused(p, "board \"rk9999\"");
    // Nodes 0..3 end in the f32 `yd`: fine; 1..3 start at the int8 `y`? no:
    // Quantize reads the f32 `y`, an allowed input. An int8 input is refused.
    let mut p = part(good_blob());
    p.first_node = 2;
    p.end_node = 4;
    p.inputs = vec![4];
    p.outputs = vec![6];
    refused(p, "input \"yq\" is not an f32 activation");
}

/// What strixd and the C ABI get without asking: `Session::new` and
/// `strix_context_new` follow the model's NPU options (a board daemon sets
/// them from its board file), and the C ABI reports and switches the backend.
#[test]
fn sessions_follow_the_board_and_the_c_abi_reports_the_backend() {
    use std::ffi::CStr;
    use strix_runtime::capi::*;
    let (_g, d) = setup();
    let board = |name: &str, has_npu: bool| NpuOptions {
        library: library(),
        ..NpuOptions::for_board(name, has_npu)
    };
    let m = model(good_blob()).with_npu_options(board("rk3588", true));
    {
        let s = Session::new(&m);
        assert!(
            matches!(s.backend(), Backend::Npu { .. }),
            "{}",
            s.backend()
        );
    }
    for (opts, want) in [
        (
            board("rk3566", true),
            "compiled for rk3588, this board is rk3566",
        ),
        (board("rpi4", false), "board rpi4 has no NPU"),
    ] {
        let m = model(good_blob()).with_npu_options(opts);
        let mut s = Session::new(&m);
        assert!(
            matches!(s.backend(), Backend::CpuFallback { reason } if reason.contains(want)),
            "{}",
            s.backend()
        );
        let x = noise(4 * 36, 9);
        assert_eq!(run(&mut s, &x).unwrap(), cpu(&m, &x));
    }
    assert_clean(&d);

    // The C ABI: a loaded model tries the NPU (the double, when the default
    // library name cannot be found the fallback says so).
    let bytes = model(good_blob()).to_bytes();
    let backend = |c: *mut strix_context| unsafe {
        let mut p = std::ptr::null();
        assert_eq!(strix_context_backend(c, &mut p) as i32, 0);
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    unsafe {
        let mut mh = std::ptr::null_mut();
        assert_eq!(
            strix_model_load_buffer(bytes.as_ptr(), bytes.len(), &mut mh) as i32,
            0
        );
        let mut c = std::ptr::null_mut();
        assert_eq!(strix_context_new(mh, &mut c) as i32, 0);
        let first = backend(c);
        if DLOPEN {
            assert!(
                first.starts_with("cpu (npu fallback: cannot load librknnrt.so"),
                "{first}"
            );
        } else {
            assert!(first.starts_with("npu (rk3588, nodes 0..2"), "{first}");
        }
        assert_eq!(strix_set_npu(c, false) as i32, 0);
        assert_eq!(backend(c), "cpu (npu fallback: NPU disabled by the caller)");
        assert_eq!(strix_set_threads(c, 2) as i32, 0);
        assert_eq!(backend(c), "cpu (npu fallback: NPU disabled by the caller)");
        assert_eq!(strix_set_npu(c, true) as i32, 0);
        assert_eq!(backend(c), first);
        assert_eq!(strix_context_free(c) as i32, 0);
        assert_eq!(strix_model_free(mh) as i32, 0);
    }
    assert_clean(&d);
}
