//! strixd built with `--features rknpu` against the librknnrt test double
//! (tests/rknn-double; no NPU and no librknnrt.so exist here). Run by
//! scripts/test-npu.sh: `cargo test --release -p strix-firmware --features
//! rknpu --test strixd npu::`.
//!
//! The board file (`[npu] kind = "rknpu2"`, named `rk3588` like the model's
//! NPU part) makes strixd open `librknnrt.so` the way the dynamic loader
//! finds it; the test puts the double under that name in a folder on
//! `LD_LIBRARY_PATH`. The camera model is FastestDet with the whole graph as
//! its NPU part (what `strix convert --board rk3588` makes of it), the part's
//! blob a double blob whose payload is the model itself: inside strixd the
//! double runs it through libstrix's C ABI (`RKNN_DOUBLE_LIBSTRIX`), with
//! RK3588-like native layouts (`RKNN_DOUBLE_NATIVE=1`: NHWC input, NC1HWC2
//! output with padding), and appends its contract record to a report file at
//! each unload (`RKNN_DOUBLE_REPORT`). Needs a C compiler (`cc`) and
//! libstrix (`<target>/release/libstrix_runtime.so`, built here if missing).

use super::harness::*;

/// The double built as a shared object in `dir` (the same command as
/// tests/rknn-double/build.rs's full build).
fn build_double(dir: &Path) -> PathBuf {
    let so = dir.join("librknn_double.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    run_ok(
        Command::new(cc)
            .args([
                "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o",
            ])
            .arg(&so)
            .arg(root().join("tests/rknn-double/rknn_double.c"))
            .arg("-ldl"),
    );
    so
}

/// strix-runtime's C library, which the double's stand-in runs the payload
/// with (built by the command scripts/test-c.sh uses, so CI reuses it).
fn libstrix() -> PathBuf {
    let p = target_dir().join("release/libstrix_runtime.so");
    if !p.exists() {
        let ok = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "strix-runtime",
                "-p",
                "strix-tools",
            ])
            .current_dir(root())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "building strix-runtime (libstrix) failed");
    }
    p
}

/// The double's blob (tests/rknn-double/src/lib.rs `double_blob`): magic,
/// tensor counts, each tensor's dims, type (0 float32, 2 int8), scale and
/// zero point, then the payload.
fn double_blob(g: &strix_runtime::graph::Graph, payload: &[u8]) -> Vec<u8> {
    use strix_runtime::graph::DType;
    let mut b = b"RKDBL1\0\0".to_vec();
    b.extend((g.inputs.len() as u32).to_le_bytes());
    b.extend((g.outputs.len() as u32).to_le_bytes());
    for &t in g.inputs.iter().chain(&g.outputs) {
        let t = &g.tensors[t];
        let q = (t.dtype == DType::I8).then(|| t.quant.expect("int8 tensors are quantized"));
        b.extend((t.shape.len() as u32).to_le_bytes());
        b.extend((if q.is_some() { 2u32 } else { 0 }).to_le_bytes());
        for &d in &t.shape {
            b.extend((d as u32).to_le_bytes());
        }
        let (s, z) = q.map_or((1.0f32, 0i32), |q| (q.scale, q.zero_point));
        b.extend(s.to_le_bytes());
        b.extend(z.to_le_bytes());
    }
    b.extend_from_slice(payload);
    b
}

/// FastestDet (the fuzz corpus's converted file) with its whole graph as an
/// NPU part for rk3588; returns the path and the node count.
fn npu_model(dir: &Path) -> (PathBuf, usize) {
    use strix_runtime::npu::NpuPart;
    let bytes =
        std::fs::read(root().join("fuzz/corpus/strix_load_run_sealed/seed-fastestdet.strix"))
            .unwrap();
    let m = strix_runtime::Model::from_bytes(&bytes).unwrap();
    let g = &m.graph;
    let part = NpuPart {
        board: "rk3588".into(),
        first_node: 0,
        end_node: g.nodes.len(),
        inputs: g.inputs.clone(),
        outputs: g.outputs.clone(),
        compiler: "rknn double".into(),
        blob: double_blob(g, &bytes),
    };
    let n = g.nodes.len();
    let p = dir.join("fastestdet-rk3588.strix");
    m.with_npu_part(part).unwrap().save(&p).unwrap();
    (p, n)
}

/// A folder of frames: each shipped photo, four frames in a row, so a
/// person (min_frames 3) makes an event and a scene change ends it.
fn frames(dir: &Path) -> (PathBuf, usize) {
    let out = dir.join("frames");
    std::fs::create_dir(&out).unwrap();
    let photos = [
        "camera.png",
        "fastestdet_3.jpg",
        "astronaut.png",
        "fastestdet_0.jpg",
        "faces_1.jpg",
    ];
    let mut n = 0;
    for p in photos {
        let src = root().join("models/images").join(p);
        let ext = src.extension().unwrap().to_str().unwrap();
        for _ in 0..4 {
            std::os::unix::fs::symlink(&src, out.join(format!("f{n:03}.{ext}"))).unwrap();
            n += 1;
        }
    }
    (out, n)
}

/// A board file named like the NPU part's board, for this machine's
/// architecture (scalar kernels), with the NPU listed or not.
fn board(npu: bool) -> String {
    format!(
        "name = \"rk3588\"\n[cpu]\ntarget = \"{}-unknown-linux-gnu\"\nfeatures = []\ncores = 2\n[npu]\nkind = \"{}\"\n[memory]\ntotal_mb = 4096\nbudget_mb = 256\n[flash]\nmethod = \"ssh\"\n",
        std::env::consts::ARCH,
        if npu { "rknpu2" } else { "none" }
    )
}

struct Setup {
    dir: tempfile::TempDir,
    model: PathBuf,
    nodes: usize,
    frames: PathBuf,
    n_frames: usize,
    libstrix: PathBuf,
    /// `LD_LIBRARY_PATH` folders: the double as librknnrt.so; a dangling
    /// librknnrt.so (a missing file).
    with_double: PathBuf,
    dangling: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let so = build_double(d);
    let with_double = d.join("lib");
    std::fs::create_dir(&with_double).unwrap();
    std::os::unix::fs::symlink(&so, with_double.join("librknnrt.so")).unwrap();
    let dangling = d.join("lib-missing");
    std::fs::create_dir(&dangling).unwrap();
    std::os::unix::fs::symlink(d.join("no-such-file.so"), dangling.join("librknnrt.so")).unwrap();
    let (model, nodes) = npu_model(d);
    let (frames, n_frames) = frames(d);
    Setup {
        model,
        nodes,
        frames,
        n_frames,
        libstrix: libstrix(),
        with_double,
        dangling,
        dir,
    }
}

impl Setup {
    /// Writes config `name` (its own board folder and state dir).
    fn config(&self, name: &str, npu: bool) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(d.join("boards")).unwrap();
        std::fs::write(d.join("boards/rk3588.toml"), board(npu)).unwrap();
        let body = format!(
            "device = \"npu\"\nboard = \"rk3588\"\nstate_dir = \"{}\"\n{}",
            d.join("state").display(),
            CAMERA
                .replace("@CLIP@", &self.frames.display().to_string())
                .replace("@DET@", &self.model.display().to_string())
                .replace("@RT@", "false")
        );
        let cfg = d.join("strixd.toml");
        std::fs::write(&cfg, body).unwrap();
        cfg
    }

    fn env(&self, lib_dir: &Path, report: &Path) -> Vec<(String, String)> {
        [
            ("LD_LIBRARY_PATH", lib_dir.display().to_string()),
            ("RKNN_DOUBLE_LIBSTRIX", self.libstrix.display().to_string()),
            ("RKNN_DOUBLE_NATIVE", "1".into()),
            ("RKNN_DOUBLE_REPORT", report.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `strixd --check`: the line saying where the camera model's NPU part runs.
    fn check(&self, cfg: &Path, env: &[(String, String)]) -> String {
        let out = Command::new(strixd())
            .arg("--config")
            .arg(cfg)
            .arg("--check")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--check failed:\n{stdout}\n{stderr}");
        let head = format!(
            "strixd: camera model: NPU part for rk3588 (nodes 0..{}): runs on ",
            self.nodes
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&head))
            .unwrap_or_else(|| panic!("no line {head:?} in:\n{stdout}\n{stderr}"))
            .to_string()
    }

    /// Runs strixd over the frames: its events (alerts on stdout), with the
    /// fields that vary between runs (ids, wall clock, snapshot paths) removed.
    fn events(&self, cfg: &Path, env: &[(String, String)]) -> Vec<Value> {
        let out = Command::new(strixd())
            .arg("--config")
            .arg(cfg)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "strixd failed:\n{stdout}\n{stderr}");
        assert!(
            !stderr.contains("rknn double:"),
            "the double's stand-in failed:\n{stderr}"
        );
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|mut v| {
                let o = v.as_object_mut().expect("an alert is a JSON object");
                for k in ["msg_id", "id", "start_time", "end_time", "snapshot"] {
                    o.remove(k);
                }
                v
            })
            .collect()
    }
}

/// The double's report lines: (inits, runs) summed over its loads; every
/// load ended with no contract violation and nothing live.
fn report(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut inits, mut runs) = (0, 0);
    for l in text.lines() {
        let field = |k: &str| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {k} in {l:?}"))
        };
        assert!(
            l.contains(" violations=0 live=0 "),
            "the double saw a broken contract or a leak: {l}"
        );
        inits += field("inits=");
        runs += field("runs=");
    }
    (inits, runs)
}

/// strixd with the NPU backend on the double: `--check` says the camera
/// model's NPU part runs on the rknpu backend with zero-copy I/O; a camera run
/// over the shipped photos gives exactly the events of the same config with
/// the NPU off (the CPU path), every frame run on the "NPU" with the
/// double's contract kept and nothing leaked.
#[test]
fn strixd_runs_the_npu_part_through_librknnrt_and_matches_the_cpu() {
    let s = setup();
    let d = s.dir.path();

    let cpu_cfg = s.config("cpu", false);
    let cpu_report = d.join("cpu-report");
    let cpu_env = s.env(&s.with_double, &cpu_report);
    assert_eq!(
        s.check(&cpu_cfg, &cpu_env),
        "cpu (npu fallback: board rk3588 has no NPU)"
    );
    let want = s.events(&cpu_cfg, &cpu_env);
    assert!(
        want.iter()
            .any(|v| v["label"] == "person" && v["type"] == "new"),
        "the photos give a person event on the CPU path: {want:#?}"
    );
    // NPU off: the library is never opened.
    assert!(
        !cpu_report.exists(),
        "the double was loaded with the NPU off"
    );

    let npu_cfg = s.config("npu", true);
    let rep = d.join("npu-report");
    let env = s.env(&s.with_double, &rep);
    assert_eq!(
        s.check(&npu_cfg, &env),
        format!(
            "npu (rk3588, nodes 0..{} via librknnrt.so, cores Auto, zero-copy I/O) + cpu",
            s.nodes
        )
    );
    // --check: one session, set up and dropped, no run.
    assert_eq!(report(&rep), (1, 0));
    std::fs::remove_file(&rep).unwrap();
    let got = s.events(&npu_cfg, &env);
    assert_eq!(got, want, "NPU events differ from the CPU path's");
    // The check session of the run, then the camera's: every frame on the "NPU".
    assert_eq!(report(&rep), (2, s.n_frames as u64));
}

/// The board lists the NPU but `librknnrt.so` is a missing file: `--check`
/// reports the CPU fallback with the loader's reason, and the run still
/// gives the CPU path's events.
#[test]
fn strixd_falls_back_to_the_cpu_when_librknnrt_is_missing() {
    let s = setup();
    let d = s.dir.path();
    let cpu_cfg = s.config("cpu", false);
    let want = s.events(&cpu_cfg, &s.env(&s.with_double, &d.join("cpu-report")));

    let cfg = s.config("missing", true);
    let rep = d.join("missing-report");
    let env = s.env(&s.dangling, &rep);
    let line = s.check(&cfg, &env);
    // The loader's own words follow (localised by glibc: not compared).
    let reason = line
        .strip_prefix("cpu (npu fallback: cannot load librknnrt.so: ")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(reason.len() > 2, "{line}");
    assert_eq!(s.events(&cfg, &env), want);
    assert!(
        !rep.exists(),
        "the double was loaded through a dangling link"
    );
}
