//! `strix flash`, `strix sign`/`verify` end to end on the host: a real model
//! (FastestDet, converted here from models/), a temporary directory as the
//! board's root file system, and strixd stand-ins (shell scripts) for the
//! health check, so that a passing, failing and hanging strixd are all
//! exercised. The real strixd's signature checks run in firmware/src/verify.rs
//! (unit tests) and in scripts/test-flash.sh (aarch64 strixd under qemu).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use strix_sign::{PublicKey, SecretKey};
use strix_tools::flash::{flash, Options};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("strix-flash-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// FastestDet converted to int8 once for all tests (arena ~2.4 MiB).
fn model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let d = scratch("model");
        let out = d.join("fastestdet.strix");
        let imgs = repo().join("models/images");
        let calib: Vec<PathBuf> = ["fastestdet_0.jpg", "fastestdet_3.jpg", "camera.png"]
            .iter()
            .map(|n| imgs.join(n))
            .collect();
        strix_tools::convert(
            &repo().join("models/fastestdet/FastestDet.onnx"),
            &calib,
            &out,
            None,
            strix_tools::calib::Method::Mse,
            false,
            false,
        )
        .unwrap();
        out
    })
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A strixd stand-in that passes only when called as the health check with
/// the installed config (which must carry the trusted key).
fn good_strixd(dir: &Path) -> PathBuf {
    script(
        dir,
        "strixd-ok",
        r#"[ "$1" = --check ] && [ "$2" = --config ] && grep -q '^trusted_key' "$3" && grep -q 'models/fastestdet.strix' "$3" && echo "strixd: config OK" && exit 0
echo "stand-in: unexpected call: $*" >&2; exit 9"#,
    )
}

struct Setup {
    dir: PathBuf,
    root: PathBuf,
    key: PathBuf,
    config: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let dir = scratch(tag);
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let key = dir.join("strix.key");
    SecretKey::generate().unwrap().save(&key).unwrap();
    let config = dir.join("strixd.toml");
    std::fs::write(
        &config,
        format!(
            "device = \"porch\"\n[camera]\nsource = \"{}\"\nmodel = \"fastestdet.strix\"\n[mqtt]\nhost = \"127.0.0.1\"\n",
            repo().join("models/images").display()
        ),
    )
    .unwrap();
    Setup {
        dir,
        root,
        key,
        config,
    }
}

fn opts(s: &Setup, strixd: &Path) -> Options {
    Options {
        board: "rpi4".into(),
        to: s.root.display().to_string(),
        models: vec![model().to_path_buf()],
        config: Some(s.config.clone()),
        strixd: Some(strixd.to_path_buf()),
        dry_run: false,
        key: s.key.clone(),
        health_timeout: Duration::from_secs(30),
        target_dir: s.dir.join("target"),
    }
}

fn current(root: &Path) -> PathBuf {
    std::fs::read_link(root.join("usr/share/strix/current")).unwrap()
}

fn public(s: &Setup) -> PublicKey {
    PublicKey::load(&PathBuf::from(format!("{}.pub", s.key.display()))).unwrap()
}

#[test]
fn flash_installs_a_signed_release_and_rolls_back_a_failed_health_check() {
    let s = setup("install");
    let ok = good_strixd(&s.dir);
    let first = flash(&opts(&s, &ok)).unwrap();
    let root = &s.root;
    assert_eq!(
        current(root),
        PathBuf::from(format!("releases/{}", first.id))
    );
    let rel = root.join("usr/share/strix/current");
    let key = public(&s);
    // The bundle and its model verify against the installed trusted key.
    assert_eq!(
        PublicKey::load(&root.join("etc/strix/strix.pub")).unwrap(),
        key
    );
    let m = strix_sign::verify_bundle(&rel, &key).unwrap();
    let files: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        files,
        [
            "bin/strixd",
            "boards/rpi4.toml",
            "models/fastestdet.strix",
            "models/fastestdet.strix.sig",
            "strix.pub",
            "strixd.toml"
        ]
    );
    key.verify_file(&rel.join("models/fastestdet.strix"))
        .unwrap();
    // The layout: links into the release, state directory, config paths.
    for (link, to) in [
        ("usr/bin/strixd", "../share/strix/current/bin/strixd"),
        (
            "etc/strix/strixd.toml",
            "../../usr/share/strix/current/strixd.toml",
        ),
        ("usr/share/strix/models", "current/models"),
        ("usr/share/strix/boards", "current/boards"),
    ] {
        assert_eq!(
            std::fs::read_link(root.join(link)).unwrap(),
            PathBuf::from(to),
            "{link}"
        );
    }
    assert!(root
        .join("usr/share/strix/models/fastestdet.strix")
        .is_file());
    assert!(root.join("var/lib/strix/snapshots").is_dir());
    let cfg = std::fs::read_to_string(root.join("etc/strix/strixd.toml")).unwrap();
    for want in [
        "model = \"models/fastestdet.strix\"",
        "board = \"boards/rpi4.toml\"",
        "trusted_key = \"../../../../../etc/strix/strix.pub\"",
        "path = \"../../../../../var/lib/strix/outbox.redb\"",
        "dir = \"../../../../../var/lib/strix/snapshots\"",
        "host = \"127.0.0.1\"",
    ] {
        assert!(cfg.contains(want), "{want} in\n{cfg}");
    }
    // The relative state paths land in the root's /var/lib/strix.
    let via = rel
        .canonicalize()
        .unwrap()
        .join("../../../../../var/lib/strix/snapshots");
    assert_eq!(
        via.canonicalize().unwrap(),
        root.join("var/lib/strix/snapshots").canonicalize().unwrap()
    );

    // A strixd that fails its health check: the link goes back, the new
    // release is removed, the error says so and shows strixd's output.
    std::thread::sleep(Duration::from_millis(1100)); // a new release id
    let bad = script(
        &s.dir,
        "strixd-bad",
        "echo 'strixd: error: camera source missing' >&2; exit 4",
    );
    let e = format!("{:#}", flash(&opts(&s, &bad)).unwrap_err());
    assert!(
        e.contains("health check failed") && e.contains("rolled back"),
        "{e}"
    );
    assert!(e.contains("camera source missing"), "{e}");
    assert_eq!(
        current(root),
        PathBuf::from(format!("releases/{}", first.id))
    );
    let releases: Vec<_> = std::fs::read_dir(root.join("usr/share/strix/releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        releases,
        [first.id.as_str()],
        "the failed release is removed"
    );

    // A strixd that hangs: stopped at the limit, rolled back.
    let hang = script(&s.dir, "strixd-hang", "exec sleep 60");
    let mut o = opts(&s, &hang);
    o.health_timeout = Duration::from_secs(1);
    let e = format!("{:#}", flash(&o).unwrap_err());
    assert!(e.contains("timed out") && e.contains("rolled back"), "{e}");
    assert_eq!(
        current(root),
        PathBuf::from(format!("releases/{}", first.id))
    );

    // A second good release replaces the first; the first is kept as the previous one.
    let second = flash(&opts(&s, &ok)).unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(
        current(root),
        PathBuf::from(format!("releases/{}", second.id))
    );
    assert!(root
        .join("usr/share/strix/releases")
        .join(&first.id)
        .is_dir());

    // No previous release and a failing strixd: `current` is removed.
    let s2 = setup("first-fails");
    let e = format!("{:#}", flash(&opts(&s2, &bad)).unwrap_err());
    assert!(e.contains("no previous release"), "{e}");
    assert!(s2
        .root
        .join("usr/share/strix/current")
        .symlink_metadata()
        .is_err());
}

#[test]
fn tampered_models_and_bundles_are_refused() {
    let s = setup("tamper");
    flash(&opts(&s, &good_strixd(&s.dir))).unwrap();
    let rel = s.root.join("usr/share/strix/current");
    let key = public(&s);
    let model = rel.join("models/fastestdet.strix");
    let orig = std::fs::read(&model).unwrap();
    let mut bytes = orig.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&model, &bytes).unwrap();
    let e = key.verify_file(&model).unwrap_err().to_string();
    assert!(
        e.contains("fastestdet.strix") && e.contains("was changed"),
        "{e}"
    );
    let e = strix_sign::verify_bundle(&rel, &key)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fastestdet.strix") && e.contains("changed after it was signed"),
        "{e}"
    );
    // The command line says the same and fails.
    let strix = env!("CARGO_BIN_EXE_strix");
    let pubk = format!("{}.pub", s.key.display());
    let out = Command::new(strix)
        .args(["verify", "--pub", &pubk])
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signature does not verify"), "{err}");
    std::fs::write(&model, &orig).unwrap();
    let out = Command::new(strix)
        .args(["verify", "--pub", &pubk])
        .arg(&rel)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The bundle: a changed config, an added file.
    let cfg = rel.join("strixd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("porch", "evil")).unwrap();
    let e = strix_sign::verify_bundle(&rel, &key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("strixd.toml"), "{e}");
    std::fs::write(&cfg, &text).unwrap();
    std::fs::write(rel.join("models/extra.strix"), &orig).unwrap();
    let e = strix_sign::verify_bundle(&rel, &key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("extra.strix") && e.contains("not listed"), "{e}");
    std::fs::remove_file(rel.join("models/extra.strix")).unwrap();
    strix_sign::verify_bundle(&rel, &key).unwrap();

    // Flashing with another key onto a board that trusts this one: refused.
    let other = s.dir.join("other.key");
    SecretKey::generate().unwrap().save(&other).unwrap();
    let mut o = opts(&s, &good_strixd(&s.dir));
    o.key = other;
    let e = format!("{:#}", flash(&o).unwrap_err());
    assert!(e.contains("trusts key") && e.contains("refused"), "{e}");
}

/// Writes a copy of `src` whose metadata says it needs kernel path `isa`
/// (the META JSON edited in place at the same length, checksums redone).
fn with_isa(src: &Path, dst: &Path, isa: &str) {
    let m = strix_runtime::Model::load(src).unwrap();
    let mut meta = m.meta.clone();
    meta.name = "x".repeat(40);
    let mut bytes = strix_runtime::format::write(&meta, &m.graph, &m.consts);
    let from = format!("\"name\":\"{}\"", meta.name);
    let head = format!("\"isa\":\"{isa}\",\"name\":\"");
    let to = format!("{head}{}\"", "x".repeat(from.len() - head.len() - 1));
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap();
    bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    for i in 0..count {
        let e = 64 + 64 * i;
        if &bytes[e..e + 8] == b"META\0\0\0\0" {
            let off = u64::from_le_bytes(bytes[e + 8..e + 16].try_into().unwrap()) as usize;
            let len = u64::from_le_bytes(bytes[e + 16..e + 24].try_into().unwrap()) as usize;
            let sha = Sha256::digest(&bytes[off..off + len]);
            bytes[e + 32..e + 64].copy_from_slice(&sha);
        }
    }
    let sha = Sha256::digest(&bytes[64..64 + 64 * count]);
    bytes[24..56].copy_from_slice(&sha);
    std::fs::write(dst, bytes).unwrap();
    strix_runtime::Model::load(dst).expect("the edited model still loads");
}

#[test]
fn models_the_board_cannot_run_are_refused_before_anything_is_written() {
    let s = setup("fit");
    let ok = good_strixd(&s.dir);
    // A kernel path the board lacks: dotprod on a Pi 4 (neon only).
    std::fs::create_dir_all(s.dir.join("isa")).unwrap();
    let dot = s.dir.join("isa/fastestdet.strix");
    with_isa(model(), &dot, "dotprod");
    assert_eq!(
        strix_tools::flash::model_fit(&dot).unwrap().isa.as_deref(),
        Some("dotprod")
    );
    let mut o = opts(&s, &ok);
    o.models = vec![dot.clone()];
    let e = format!("{:#}", flash(&o).unwrap_err());
    assert!(
        e.contains("needs kernel path dotprod")
            && e.contains("lacks dotprod")
            && e.contains("rpi4"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(&s.root).unwrap().count(),
        0,
        "nothing written"
    );
    // The same model fits a Pi 5 (dotprod).
    o.board = "rpi5".into();
    o.dry_run = true;
    flash(&o).unwrap();

    // Over the memory budget: a board file with budget_mb = 1 (the model's
    // arena alone is ~2.4 MiB).
    let small = s.dir.join("tiny.toml");
    let rpi4 = strix_boards::BUILTIN
        .iter()
        .find(|(n, _)| *n == "rpi4")
        .unwrap()
        .1;
    std::fs::write(
        &small,
        rpi4.replace("budget_mb = 512", "budget_mb = 1")
            .replace("name = \"rpi4\"", "name = \"tiny\""),
    )
    .unwrap();
    let mut o = opts(&s, &ok);
    o.board = small.display().to_string();
    let e = format!("{:#}", flash(&o).unwrap_err());
    assert!(
        e.contains("budget_mb = 1") && e.contains("fastestdet.strix") && e.contains("refused"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(&s.root).unwrap().count(),
        0,
        "nothing written"
    );

    // A strixd for another architecture: this test binary's own strix (the
    // host's ELF) for an aarch64 board.
    let host_elf = PathBuf::from(env!("CARGO_BIN_EXE_strix"));
    if std::env::consts::ARCH != "aarch64" {
        let e = format!("{:#}", flash(&opts(&s, &host_elf)).unwrap_err());
        assert!(e.contains("is built for") && e.contains("rpi4"), "{e}");
    }
    // No strixd given and none built: the error names the build command.
    let mut o = opts(&s, &ok);
    o.strixd = None;
    let e = format!("{:#}", flash(&o).unwrap_err());
    assert!(e.contains("scripts/build-board.sh rpi4"), "{e}");
}

#[test]
fn dry_runs_change_nothing_and_show_every_step() {
    let s = setup("dry");
    let strix = env!("CARGO_BIN_EXE_strix");
    let ok = good_strixd(&s.dir);
    let run = |to: &str| {
        Command::new(strix)
            .args(["flash", "--board", "rpi4", "--to", to, "--dry-run", "--key"])
            .arg(&s.key)
            .arg("--config")
            .arg(&s.config)
            .arg("--strixd")
            .arg(&ok)
            .arg("--model")
            .arg(model())
            .output()
            .unwrap()
    };
    let out = run(s.root.to_str().unwrap());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "plan (--dry-run",
        "models/fastestdet.strix",
        "MANIFEST",
        "switch",
        "check",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    assert_eq!(
        std::fs::read_dir(&s.root).unwrap().count(),
        0,
        "nothing written"
    );

    let out = run("ssh://pi@cam.local:2222");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "ssh -o BatchMode=yes -p 2222 pi@cam.local",
        "scp -o BatchMode=yes -r -p -P 2222",
        "/usr/share/strix/current/bin/strixd --check",
        "mv -T /usr/share/strix/current.new /usr/share/strix/current",
        "on a failed health check",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }

    // Without a key: a clear error naming keygen.
    let out = Command::new(strix)
        .args([
            "flash",
            "--board",
            "rpi4",
            "--to",
            "/nonexistent",
            "--dry-run",
        ])
        .env_remove("STRIX_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("strix keygen"));
}
