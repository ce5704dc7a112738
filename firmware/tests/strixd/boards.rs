//! Boards used: by name from the config's `boards/` folder, refused for the
//! wrong architecture or over the memory budget; the `--check` report;
//! `state_dir`; snapshot retention; log levels.

use super::harness::*;

/// A board file for the machine running the tests (its architecture, no
/// SIMD kernel path promised, so any CPU of that architecture runs it).
fn host_board(budget_mb: u32) -> String {
    format!(
        "name = \"testhost\"\n[cpu]\ntarget = \"{}-unknown-linux-gnu\"\nfeatures = []\ncores = 2\n[npu]\nkind = \"none\"\n[memory]\ntotal_mb = 4096\nbudget_mb = {budget_mb}\n[flash]\nmethod = \"ssh\"\n",
        std::env::consts::ARCH
    )
}

/// Runs `strixd --config cfg args...`: (exit code, stdout, stderr).
fn run_strixd(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(strixd())
        .arg("--config")
        .arg(cfg)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

const MODELS: &str = "[speech]\nsource = \"@SPEECH@\"\nmodel = \"@KWS@\"\nkeywords = [\"yes\"]\n";

#[test]
fn check_reports_board_by_name_kernel_path_models_sources_and_broker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("boards")).unwrap();
    std::fs::write(d.join("boards/testhost.toml"), host_board(64)).unwrap();
    let port = free_port();
    let clip = clip("one.y4m", &[false, true, false]);
    let body = format!(
        "device = \"chk\"\nboard = \"testhost\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n{MODELS}{}",
        CAMERA.replace("@CLIP@", &clip.display().to_string()).replace("@RT@", "false")
    );
    let cfg = write_config(d, &body);
    let (code, out, err) = run_strixd(&cfg, &["--check"], &[]);
    assert_eq!(code, 0, "{err}");
    let board_file = d.join("boards/testhost.toml");
    let want = [
        format!(
            "strixd: board testhost ({}, {}-unknown-linux-gnu)",
            board_file.display(),
            std::env::consts::ARCH
        ),
        "strixd: kernel path scalar (the best of board testhost's paths".into(),
        format!("strixd: camera camera: Y4M file {}", clip.display()),
        "strixd: audio: WAV file ".into(),
        "strixd: model camera ".into(),
        "strixd: model speech ".into(),
        "strixd: memory: models ".into(),
        format!("strixd: warning: broker 127.0.0.1:{port} unreachable"),
        "strixd: config OK".into(),
    ];
    let lines: Vec<&str> = out.lines().collect();
    for w in &want {
        assert!(
            lines.iter().filter(|l| l.starts_with(w.as_str())).count() == 1,
            "no line {w:?} in:\n{out}"
        );
    }
    let model_line = lines
        .iter()
        .find(|l| l.starts_with("strixd: model camera "))
        .unwrap();
    assert!(
        model_line.contains(" ops, arena ") && model_line.contains(" B x 1 session(s), weights "),
        "{model_line}"
    );
    assert!(
        out.contains("within board testhost's budget of 64 MB"),
        "{out}"
    );
    let _broker = Broker::start(d, port);
    let (code, out, err) = run_strixd(&cfg, &["--check"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("strixd: broker 127.0.0.1:{port} reachable\n")),
        "{out}"
    );
}

#[test]
fn wrong_arch_and_over_budget_boards_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A shipped board of another architecture than this binary's.
    let (other, arch) = if std::env::consts::ARCH == "aarch64" {
        ("rpi-armhf", "arm")
    } else {
        ("rpi4", "aarch64")
    };
    let cfg = write_config(d, &format!("device = \"b\"\nboard = \"{other}\"\n{MODELS}"));
    let (code, _, err) = run_strixd(&cfg, &["--check"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("board {other} is for {arch}"))
            && err.contains(&format!("built for {}", std::env::consts::ARCH)),
        "{err}"
    );
    // The same refusal at start, not only in --check.
    let (code, _, err) = run_strixd(&cfg, &[], &[]);
    assert_eq!(code, 2, "{err}");
    // A board path; a budget of 1 MB is below the detector's arena.
    std::fs::write(d.join("tiny.toml"), host_board(1)).unwrap();
    let body = format!(
        "device = \"b\"\nboard = \"tiny.toml\"\n{MODELS}[camera]\nsource = \"{}\"\nmodel = \"@DET@\"\nthreads = 2\n",
        clip("one.y4m", &[false, true, false]).display()
    );
    let cfg = write_config(d, &body);
    let (code, out, err) = run_strixd(&cfg, &["--check"], &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("over board testhost's [memory] budget_mb = 1")
            && err.contains("fastestdet.strix: arena ")
            && err.contains("x 2 session(s)"),
        "{err}"
    );
    let (code, _, err) = run_strixd(&cfg, &[], &[]);
    assert_eq!(code, 3, "{err}");
    // An unknown board name lists the known ones.
    let cfg = write_config(d, &format!("device = \"b\"\nboard = \"rpi9\"\n{MODELS}"));
    let (code, _, err) = run_strixd(&cfg, &["--check"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rpi-armhf") && err.contains("\"rpi9\""),
        "{err}"
    );
}

#[test]
fn state_dir_holds_outbox_and_log_levels_filter_with_journal_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = format!("device = \"st\"\nstate_dir = \"var/state\"\n{MODELS}");
    let cfg = write_config(d, &body);
    let (code, out, err) = run_strixd(&cfg, &[], &[("JOURNAL_STREAM", "8:1234")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"keyword\""), "{out}");
    assert!(d.join("var/state/outbox.redb").is_file());
    assert!(!d.join("outbox.redb").exists());
    // Under journald every line carries its syslog priority; info is default.
    assert!(err.contains("<6>strixd: st running\n"), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with('<')),
        "every line prefixed: {err}"
    );
    assert!(!err.contains("<7>"), "no debug at info: {err}");
    let (code, _, err) = run_strixd(&cfg, &["--log-level", "debug"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("strixd: stored "), "debug lines: {err}");
    assert!(!err.contains("<6>"), "no prefixes outside journald: {err}");
    let cfg = write_config(d, &format!("log_level = \"warn\"\n{body}"));
    let (code, _, err) = run_strixd(&cfg, &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("running"), "no info at warn: {err}");
    let (_, _, err) = run_strixd(&cfg, &["--log-level", "info"], &[]);
    assert!(
        err.contains("strixd: st running"),
        "--log-level wins: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI escapes in the log: {err:?}"
    );
}

#[test]
fn retention_deletes_oldest_over_limits_but_not_undelivered_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clip = clip("one.y4m", &[false, true, false]);
    // No broker on this port: the alerts (and their snapshots) stay undelivered.
    let port = free_port();
    let cfg_body = |retention: &str| {
        format!(
            "device = \"ret\"\nstate_dir = \"state\"\n[shutdown]\ndrain_timeout_s = 1\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[stdout]\nenabled = true\n{}\n[camera.snapshots]\n{retention}\n",
            CAMERA.replace("@CLIP@", &clip.display().to_string()).replace("@RT@", "false")
        )
    };
    let cfg = write_config(d, &cfg_body(""));
    let (code, out, err) = run_strixd(&cfg, &[], &[]);
    assert_eq!(code, 0, "{err}");
    let snaps = d.join("state/snapshots");
    let mut referenced: Vec<PathBuf> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|a| a["snapshot"].as_str().map(PathBuf::from))
        .collect();
    // An event's new, update and end messages name the same file.
    referenced.sort();
    referenced.dedup();
    assert!(!referenced.is_empty(), "{out}");
    assert!(
        referenced.iter().all(|p| p.starts_with(&snaps)),
        "{referenced:?}"
    );
    let day = Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let age = |p: &Path, days: u32| {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(now - day * days).unwrap();
    };
    for p in &referenced {
        age(p, 30);
    }
    let mut old = Vec::new();
    for days in [10u32, 5, 3, 2] {
        let p = snaps.join(format!("old-{days}d.jpg"));
        std::fs::write(&p, vec![0u8; 100_000]).unwrap();
        age(&p, days);
        old.push(p);
    }
    let referenced_bytes: u64 = referenced
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // 4 days; and bytes: the referenced ones plus one 100 kB file fit.
    let max_mb = (referenced_bytes + 150_000) as f64 / 1048576.0;
    let cfg = write_config(
        d,
        &cfg_body(&format!("max_age_days = 4\nmax_mb = {max_mb}")),
    );
    let (code, _, err) = run_strixd(&cfg, &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!old[0].exists() && !old[1].exists(), "over 4 days: deleted");
    assert!(!old[2].exists(), "the oldest file over max_mb: deleted");
    assert!(old[3].exists(), "the rest fits in max_mb: kept");
    for p in &referenced {
        assert!(
            p.exists(),
            "{} is named by an undelivered alert",
            p.display()
        );
    }
    assert!(
        err.contains(&format!(
            "strixd: snapshots: deleted 3 (300000 B), {} kept for undelivered alerts",
            referenced.len()
        )),
        "{err}"
    );
}

/// A model converted for a Rockchip NPU: `--check` names where its NPU part
/// runs, decided by the board file (no NPU listed, a part compiled for
/// another board) and the build (this test's strixd has no `rknpu`
/// feature; the NPU path itself is tested against a librknnrt double in
/// tests/rknn-double).
#[test]
fn check_reports_where_an_npu_part_runs() {
    use strix_runtime::npu::{boundary, NpuPart};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = strix_runtime::Model::load(assets().dir.join("fastestdet.strix")).unwrap();
    let (inputs, outputs) = boundary(&m.graph, 0, 1);
    let part = NpuPart {
        board: "rk3588".into(),
        first_node: 0,
        end_node: 1,
        inputs,
        outputs,
        compiler: "test".into(),
        blob: b"not a real rknn blob".to_vec(),
    };
    let npu_model = d.join("npu.strix");
    m.with_npu_part(part).unwrap().save(&npu_model).unwrap();
    std::fs::create_dir(d.join("boards")).unwrap();
    let clip = clip("npu.y4m", &[false]);
    let camera = CAMERA
        .replace("@CLIP@", &clip.display().to_string())
        .replace("@RT@", "false")
        .replace("@DET@", &npu_model.display().to_string());
    for (npu_kind, board, want) in [
        ("none", "board = \"testhost\"\n", "runs on cpu (npu fallback: board testhost has no NPU)"),
        (
            "rknpu2",
            "board = \"testhost\"\n",
            "runs on cpu (npu fallback: the model's NPU part is compiled for rk3588, this board is testhost",
        ),
        // No board: the NPU is tried. Without the rknpu feature that is the
        // reason; with it (a workspace build unifies the feature through the
        // librknnrt double's crate) the library is missing here.
        ("none", "", "runs on cpu (npu fallback: "),
    ] {
        std::fs::write(
            d.join("boards/testhost.toml"),
            host_board(64).replace("kind = \"none\"", &format!("kind = \"{npu_kind}\"")),
        )
        .unwrap();
        let cfg = write_config(d, &format!("device = \"npu\"\n{board}{camera}"));
        let (code, out, err) = run_strixd(&cfg, &["--check"], &[]);
        assert_eq!(code, 0, "{err}");
        let line = format!("strixd: camera model: NPU part for rk3588 (nodes 0..1): {want}");
        let found = out.lines().find(|l| l.starts_with(&line));
        assert!(found.is_some(), "no line {line:?} in:\n{out}");
        if board.is_empty() {
            let l = found.unwrap_or_default();
            assert!(
                l.ends_with("this runtime was built without the rknpu feature)")
                    || l.contains("cannot load librknnrt.so"),
                "{l}"
            );
        }
    }
}
