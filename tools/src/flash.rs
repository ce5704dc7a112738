//! `strix flash`: check models against a board, bundle strixd + models +
//! config + board file + public key into a signed release, install it
//! atomically into a root file system directory or over SSH, health-check
//! the new strixd and roll back when it fails.
//!
//! Layout on the board (the same under a directory DEST):
//!
//! ```text
//! /usr/share/strix/releases/<id>/   one release (a signed bundle):
//!     bin/strixd  strixd.toml  models/*.strix(.sig)  boards/<board>.toml
//!     strix.pub  MANIFEST  MANIFEST.sig
//! /usr/share/strix/current  -> releases/<id>      switched by rename
//! /usr/share/strix/models   -> current/models     (links made once)
//! /usr/share/strix/boards   -> current/boards
//! /usr/bin/strixd           -> ../share/strix/current/bin/strixd
//! /etc/strix/strixd.toml    -> ../../usr/share/strix/current/strixd.toml
//! /etc/strix/strix.pub      the trusted key (installed once, never replaced)
//! /var/lib/strix/           outbox.redb, snapshots/ (state, kept across releases)
//! ```
//!
//! The installed config's paths are relative to the release directory
//! (`models/x.strix`, `../../../../../var/lib/strix/outbox.redb`), so the same
//! bundle works on the board and inside a mounted root; it sets
//! `trusted_key` to `/etc/strix/strix.pub`, so strixd refuses models and
//! bundles that do not verify.

use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strix_boards::Board;
use strix_sign::{PublicKey, SecretKey};

/// `strix flash` options (see `strix flash --help`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Board name (`rpi4`) or path to a board file.
    pub board: String,
    /// A directory (root file system) or `ssh://user@host[:port]`.
    pub to: String,
    /// Models to bundle besides those the config names.
    pub models: Vec<PathBuf>,
    /// strixd config to install (its model paths are rewritten).
    pub config: Option<PathBuf>,
    /// The strixd binary; default `<target_dir>/<triple>/dist/strixd`.
    pub strixd: Option<PathBuf>,
    pub dry_run: bool,
    /// Private key that signs the bundle (`strix keygen`).
    pub key: PathBuf,
    /// Limit of the health check (`strixd --check`, under qemu when needed).
    pub health_timeout: Duration,
    /// Cargo's target directory, where `scripts/build-board.sh` leaves
    /// `<triple>/dist/strixd` (the default strixd).
    pub target_dir: PathBuf,
}

/// Where the release goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Dir(PathBuf),
    /// `root` is where the board's file system starts on the host: `/`
    /// unless the URL has a path (`ssh://pi@cam/mnt/b`: an A/B partition
    /// mounted there, or a test directory).
    Ssh {
        target: String,
        port: Option<u16>,
        root: String,
    },
}

impl Dest {
    pub fn parse(s: &str) -> Result<Dest> {
        let Some(rest) = s.strip_prefix("ssh://") else {
            return Ok(Dest::Dir(PathBuf::from(s)));
        };
        let (rest, root) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let path_ok = root
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-".contains(&c))
            && !root.split('/').any(|c| c == "..");
        if !path_ok {
            bail!("--to {s}: the root path may hold letters, digits, / . _ - only (no ..)");
        }
        let (target, port) = match rest.rsplit_once(':') {
            Some((t, p)) => (
                t,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| anyhow!("--to {s}: port {p:?} is not a number 1..65535"))?,
                ),
            ),
            None => (rest, None),
        };
        let ok = |x: &str| {
            !x.is_empty()
                && x.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        };
        let (user, host) = target.split_once('@').unwrap_or(("", target));
        if !ok(host) || (target.contains('@') && !ok(user)) || target.contains('/') {
            bail!("--to {s}: expected ssh://user@host[:port][/root] (letters, digits, . _ -)");
        }
        Ok(Dest::Ssh {
            target: target.to_string(),
            port,
            root: root.to_string(),
        })
    }
}

/// The release directory, relative to the root.
pub const RELEASES: &str = "usr/share/strix/releases";
const CURRENT: &str = "usr/share/strix/current";
/// From a release directory back to the root (`usr/share/strix/releases/<id>`).
const UP: &str = "../../../../..";

/// Links made once into the current release: (path, target).
const LINKS: [(&str, &str); 4] = [
    ("usr/bin/strixd", "../share/strix/current/bin/strixd"),
    (
        "etc/strix/strixd.toml",
        "../../usr/share/strix/current/strixd.toml",
    ),
    ("usr/share/strix/models", "current/models"),
    ("usr/share/strix/boards", "current/boards"),
];

/// What one model costs and needs.
#[derive(Debug, Clone)]
pub struct ModelFit {
    pub path: PathBuf,
    pub arena_bytes: u64,
    pub weight_bytes: u64,
    /// The kernel path named by the model's metadata (`isa`), if any.
    pub isa: Option<String>,
}

/// Loads a model (fully validated) and reads what it needs.
pub fn model_fit(path: &Path) -> Result<ModelFit> {
    let m =
        strix_runtime::Model::load(path).with_context(|| format!("model {}", path.display()))?;
    let bytes = std::fs::read(path).with_context(|| format!("model {}", path.display()))?;
    let meta = meta_json(&bytes).with_context(|| format!("model {}", path.display()))?;
    let isa = match meta.get("isa") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(v) => bail!(
            "model {}: metadata key `isa`: expected a kernel path name, found {v}",
            path.display()
        ),
    };
    Ok(ModelFit {
        path: path.to_path_buf(),
        arena_bytes: m.graph.arena_bytes() as u64,
        weight_bytes: m.consts.bytes() as u64,
        isa,
    })
}

/// The raw `META` section of a `.strix` container as JSON (the runtime's
/// `ModelMeta` drops keys it does not know, such as `isa`). Call after
/// `Model::load` succeeded: the container is then known to be sound.
pub fn meta_json(bytes: &[u8]) -> Result<serde_json::Value> {
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?))
    };
    let count = bytes
        .get(12..16)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| anyhow!("shorter than the .strix header"))?;
    for i in 0..count.min(16) {
        let e = 64 + 64 * i;
        let tag = bytes
            .get(e..e + 8)
            .ok_or_else(|| anyhow!("truncated section table"))?;
        if tag == b"META\0\0\0\0" {
            let (off, len, raw) = (
                u64_at(e + 8).unwrap_or(u64::MAX) as usize,
                u64_at(e + 16).unwrap_or(u64::MAX) as usize,
                u64_at(e + 24).unwrap_or(u64::MAX),
            );
            if raw != 0 {
                bail!("its META section is compressed (not written by this strix)");
            }
            let body = off
                .checked_add(len)
                .and_then(|end| bytes.get(off..end))
                .ok_or_else(|| anyhow!("META section out of bounds"))?;
            return serde_json::from_slice(body).map_err(|e| anyhow!("META is not JSON: {e}"));
        }
    }
    bail!("no META section")
}

/// The board CPU features a kernel path needs (and its architecture), as
/// named in board files' `[cpu] features` and `Board::arch`.
pub fn isa_needs(isa: &str) -> Option<(Option<&'static str>, &'static [&'static str])> {
    Some(match isa {
        "scalar" => (None, &[]),
        "neon" => (Some("aarch64"), &["neon"]),
        "dotprod" => (Some("aarch64"), &["neon", "dotprod"]),
        "i8mm" => (Some("aarch64"), &["neon", "i8mm"]),
        "armv7neon" => (Some("arm"), &["neon"]),
        "avx2" => (Some("x86_64"), &["avx2"]),
        "avxvnni" => (Some("x86_64"), &["avx2", "avxvnni"]),
        "avx512vnni" => (
            Some("x86_64"),
            &["avx2", "avx512f", "avx512bw", "avx512vl", "avx512vnni"],
        ),
        _ => return None,
    })
}

/// Refuses models the board cannot run: a kernel path its CPU lacks, or
/// (all together, as strixd loads them all) more arena + weight bytes than
/// its `[memory] budget_mb`.
pub fn check_fit(board: &Board, fits: &[ModelFit]) -> Result<()> {
    let arch = board.arch().unwrap_or("?");
    for f in fits {
        let Some(isa) = &f.isa else { continue };
        let Some((need_arch, need_feats)) = isa_needs(isa) else {
            bail!(
                "model {} needs kernel path {isa:?}, which strix does not know (scalar, neon, dotprod, i8mm, armv7neon, avx2, avxvnni, avx512vnni)",
                f.path.display()
            );
        };
        let lacks: Vec<&str> = need_feats
            .iter()
            .copied()
            .filter(|n| !board.cpu.features.iter().any(|h| h == n))
            .collect();
        if need_arch.is_some_and(|a| a != arch) || !lacks.is_empty() {
            bail!(
                "model {} needs kernel path {isa} ({} with {:?}); board {} is {arch} with [cpu] features = {:?}{}: refused",
                f.path.display(),
                need_arch.unwrap_or("any CPU"),
                need_feats,
                board.name,
                board.cpu.features,
                if lacks.is_empty() { String::new() } else { format!(" (lacks {})", lacks.join(", ")) }
            );
        }
    }
    let budget = u64::from(board.memory.budget_mb) << 20;
    let total: u64 = fits.iter().map(|f| f.arena_bytes + f.weight_bytes).sum();
    if total > budget {
        let each: Vec<String> = fits
            .iter()
            .map(|f| {
                format!(
                    "{}: arena {} + weights {}",
                    f.path.display(),
                    mib(f.arena_bytes),
                    mib(f.weight_bytes)
                )
            })
            .collect();
        bail!(
            "the models need {} ({}), over board {}'s memory budget_mb = {}: refused",
            mib(total),
            each.join("; "),
            board.name,
            board.memory.budget_mb
        );
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

/// The architecture of an executable, in `std::env::consts::ARCH` spelling;
/// `Ok(None)` for a script (`#!`), which runs on the host.
pub fn binary_arch(path: &Path) -> Result<Option<&'static str>> {
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(path).with_context(|| format!("strixd {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("strixd {}", path.display()))?;
    if n >= 2 && &head[..2] == b"#!" {
        return Ok(None);
    }
    if n < 20 || &head[..4] != b"\x7fELF" || head[5] != 1 {
        bail!(
            "strixd {}: not a little-endian ELF executable",
            path.display()
        );
    }
    match u16::from_le_bytes([head[18], head[19]]) {
        62 => Ok(Some("x86_64")),
        183 => Ok(Some("aarch64")),
        40 => Ok(Some("arm")),
        m => bail!(
            "strixd {}: ELF machine {m} is not one Strix builds for",
            path.display()
        ),
    }
}

fn default_strixd(o: &Options, board: &Board) -> Result<PathBuf> {
    if let Some(p) = &o.strixd {
        if !p.is_file() {
            bail!("--strixd {}: no such file", p.display());
        }
        return Ok(p.clone());
    }
    let p = o.target_dir.join(&board.cpu.target).join("dist/strixd");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "no strixd for board {} ({}): build it with `scripts/build-board.sh {}` (writes {}) or pass --strixd PATH",
        board.name,
        board.cpu.target,
        board.name,
        p.display()
    )
}

/// One file of the release: where it comes from and its path inside it.
#[derive(Debug, Clone)]
struct Item {
    rel: String,
    src: Source,
    exec: bool,
}

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Text(String),
}

/// Reads the user's config, collects the models it names, and rewrites its
/// paths for the release layout. Returns the text and the models.
fn bundle_config(o: &Options, board_file: &str) -> Result<(String, Vec<PathBuf>)> {
    let mut models: Vec<PathBuf> = Vec::new();
    let (mut t, base, origin) = match &o.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?;
            let t: toml::Table = toml::from_str(&text)
                .map_err(|e| anyhow!("--config {}: {}", p.display(), e.message()))?;
            let base = std::fs::canonicalize(p)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."));
            (t, base, p.display().to_string())
        }
        None => {
            let mut t = toml::Table::new();
            t.insert(
                "device".into(),
                toml::Value::String(strixd_device(&o.board)),
            );
            (
                t,
                PathBuf::from("."),
                "no --config: a minimal one".to_string(),
            )
        }
    };
    // A model the config names: the file beside the config, else a
    // --model of the same name.
    let mut take_model = |v: &mut toml::Value, key: &str| -> Result<()> {
        let s = v
            .as_str()
            .ok_or_else(|| anyhow!("--config {origin}: key `{key}`: expected a path string"))?;
        let p = base.join(s);
        let name = Path::new(s)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("--config {origin}: key `{key}`: {s:?} has no file name"))?
            .to_string();
        let chosen = if p.is_file() {
            p
        } else if let Some(m) = o
            .models
            .iter()
            .find(|m| m.file_name().and_then(|n| n.to_str()) == Some(&name))
        {
            m.clone()
        } else {
            bail!(
                "--config {origin}: key `{key}`: model {} not found (nor a --model named {name})",
                p.display()
            );
        };
        models.push(chosen);
        *v = toml::Value::String(format!("models/{name}"));
        Ok(())
    };
    if let Some(cam) = t.get_mut("camera").and_then(|v| v.as_table_mut()) {
        if let Some(v) = cam.get_mut("model") {
            take_model(v, "camera.model")?;
        }
        absolutize(cam, "source", &base, &origin, "camera.source");
        let snaps = cam
            .entry("snapshots")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(s) = snaps.as_table_mut() {
            state_path(s, "dir", "snapshots");
        }
    }
    if let Some(sp) = t.get_mut("speech").and_then(|v| v.as_table_mut()) {
        if let Some(v) = sp.get_mut("model") {
            take_model(v, "speech.model")?;
        }
        absolutize(sp, "source", &base, &origin, "speech.source");
        if let Some(vad) = sp.get_mut("vad").and_then(|v| v.as_table_mut()) {
            if let Some(v) = vad.get_mut("model") {
                take_model(v, "speech.vad.model")?;
            }
        }
    }
    for (sect, keys) in [
        ("mqtt", &["ca_file", "client_cert", "client_key"][..]),
        ("webhook", &["ca_file"][..]),
    ] {
        if let Some(s) = t.get_mut(sect).and_then(|v| v.as_table_mut()) {
            for k in keys {
                absolutize(s, k, &base, &origin, &format!("{sect}.{k}"));
            }
        }
    }
    t.insert(
        "board".into(),
        toml::Value::String(format!("boards/{board_file}")),
    );
    let ob = t
        .entry("outbox")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(ob) = ob.as_table_mut() {
        state_path(ob, "path", "outbox.redb");
    }
    t.insert(
        "trusted_key".into(),
        toml::Value::String(format!("{UP}/etc/strix/strix.pub")),
    );
    let body = toml::to_string(&t).context("writing the installed config")?;
    Ok((
        format!(
            "# Installed by `strix flash` from {origin}. Paths are relative to this\n\
             # release directory (usr/share/strix/releases/<id>); state is in /var/lib/strix.\n{body}"
        ),
        models,
    ))
}

/// strixd's device name from a board spec (a name or a path).
fn strixd_device(board: &str) -> String {
    let stem = Path::new(board)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("strix");
    let d: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if d.is_empty() {
        "strix".into()
    } else {
        d
    }
}

/// State files go to /var/lib/strix unless the config names an absolute path.
fn state_path(t: &mut toml::Table, key: &str, name: &str) {
    let keep = t
        .get(key)
        .and_then(|v| v.as_str())
        .is_some_and(|s| Path::new(s).is_absolute());
    if !keep {
        t.insert(
            key.into(),
            toml::Value::String(format!("{UP}/var/lib/strix/{name}")),
        );
    }
}

/// A relative file path in the user's config is made absolute (it names a
/// file on the machine that runs strixd, which the bundle does not carry).
fn absolutize(t: &mut toml::Table, key: &str, base: &Path, origin: &str, dotted: &str) {
    let Some(s) = t.get(key).and_then(|v| v.as_str()) else {
        return;
    };
    let live = s.starts_with("v4l2:") || s.starts_with("alsa:") || s.contains("://");
    if live || Path::new(s).is_absolute() {
        return;
    }
    let abs = base.join(s);
    eprintln!(
        "strix flash: note: {dotted} = {s:?} in {origin} is relative; installed as {} (the bundle does not carry it)",
        abs.display()
    );
    t.insert(key.into(), toml::Value::String(abs.display().to_string()));
}

/// Runs `cmd` with a time limit; returns (success, combined output).
fn run_limited(cmd: &mut Command, limit: Duration) -> Result<(bool, String)> {
    let what = format!("{cmd:?}");
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "strix-flash-out-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let out = std::fs::File::create(&dir).with_context(|| format!("{}", dir.display()))?;
    let err = out.try_clone()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = std::fs::read_to_string(&dir).unwrap_or_default();
    let _ = std::fs::remove_file(&dir);
    match status {
        Some(s) => {
            if !s.success() {
                text.push_str(&format!("\n({s})"));
            }
            Ok((s.success(), text))
        }
        None => {
            text.push_str(&format!("\n(timed out after {} s)", limit.as_secs()));
            Ok((false, text))
        }
    }
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-=:@,+".contains(&c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn show(cmd: &[String]) -> String {
    cmd.iter()
        .map(|s| sh_quote(s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A release id: seconds since the epoch and the manifest hash, so ids sort
/// by time and name their content.
fn release_id(manifest_sha: &[u8; 32]) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}-{}", &strix_sign::hex(manifest_sha)[..12])
}

/// The result of a flash.
#[derive(Debug)]
pub struct Flashed {
    /// The release id installed (or planned, with --dry-run).
    pub id: String,
    /// Every command run or planned (SSH), one shell line each.
    pub commands: Vec<String>,
}

/// `strix flash`.
pub fn flash(o: &Options) -> Result<Flashed> {
    let dest = Dest::parse(&o.to)?;
    let board = Board::resolve(&o.board, &[]).map_err(|e| anyhow!("--board {}: {e}", o.board))?;
    let arch = board
        .arch()
        .ok_or_else(|| anyhow!("--board {}: no architecture", o.board))?;
    let strixd = default_strixd(o, &board)?;
    match binary_arch(&strixd)? {
        Some(a) if a != arch => bail!(
            "strixd {} is built for {a}, but board {} is {arch} ({}): refused",
            strixd.display(),
            board.name,
            board.cpu.target
        ),
        Some(_) => {}
        None => eprintln!(
            "strix flash: note: strixd {} is a script: its architecture is not checked",
            strixd.display()
        ),
    }
    let key = SecretKey::load(&o.key)?;
    let public = key.public();

    let board_file = format!("{}.toml", board.name);
    let (config_text, mut models) = bundle_config(o, &board_file)?;
    for m in &o.models {
        if !models.contains(m) {
            models.push(m.clone());
        }
    }
    // One file per name in models/.
    let mut names = std::collections::BTreeMap::<String, PathBuf>::new();
    for m in &models {
        let name = m
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".strix"))
            .ok_or_else(|| anyhow!("model {}: expected a .strix file", m.display()))?
            .to_string();
        if let Some(prev) = names.get(&name) {
            if strix_sign::sha256_file(prev)? != strix_sign::sha256_file(m)? {
                bail!(
                    "two different models are named {name}: {} and {}",
                    prev.display(),
                    m.display()
                );
            }
        }
        names.insert(name, m.clone());
    }
    let fits = names
        .values()
        .map(|m| model_fit(m))
        .collect::<Result<Vec<_>>>()?;
    check_fit(&board, &fits)?;
    for f in &fits {
        println!(
            "model {}: arena {} + weights {}{} fits board {} (budget_mb = {})",
            f.path.display(),
            mib(f.arena_bytes),
            mib(f.weight_bytes),
            f.isa
                .as_ref()
                .map(|i| format!(", kernel path {i}"))
                .unwrap_or_default(),
            board.name,
            board.memory.budget_mb
        );
    }

    // The board file as resolved: the named file, or the built-in text.
    let board_text = match strix_boards::BUILTIN.iter().find(|(n, _)| *n == o.board) {
        Some((_, t)) => t.to_string(),
        None => {
            std::fs::read_to_string(&o.board).with_context(|| format!("--board {}", o.board))?
        }
    };
    let pem = public.to_pem().map_err(|e| anyhow!("public key: {e}"))?;
    let mut items = vec![
        Item {
            rel: "bin/strixd".into(),
            src: Source::File(strixd.clone()),
            exec: true,
        },
        Item {
            rel: "strixd.toml".into(),
            src: Source::Text(config_text),
            exec: false,
        },
        Item {
            rel: format!("boards/{board_file}"),
            src: Source::Text(board_text),
            exec: false,
        },
        Item {
            rel: "strix.pub".into(),
            src: Source::Text(pem.clone()),
            exec: false,
        },
    ];
    for (name, p) in &names {
        items.push(Item {
            rel: format!("models/{name}"),
            src: Source::File(p.clone()),
            exec: false,
        });
    }

    match dest {
        Dest::Dir(root) => flash_dir(o, &strixd, &key, &items, &root),
        Dest::Ssh { target, port, root } => flash_ssh(o, &key, &items, &target, port, &root),
    }
}

/// Writes the release into `stage` (a new directory), signs every model
/// and the manifest, and verifies the result. Returns the manifest hash.
fn stage(items: &[Item], key: &SecretKey, stage: &Path) -> Result<[u8; 32]> {
    std::fs::create_dir_all(stage).with_context(|| stage.display().to_string())?;
    for it in items {
        let p = stage.join(&it.rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
        }
        match &it.src {
            Source::File(s) => {
                std::fs::copy(s, &p)
                    .with_context(|| format!("copying {} to {}", s.display(), p.display()))?;
            }
            Source::Text(t) => std::fs::write(&p, t).with_context(|| p.display().to_string())?,
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if it.exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
        if it.rel.ends_with(".strix") {
            key.sign_to_file(&p)?;
        }
    }
    strix_sign::Manifest::write_signed(stage, key)?;
    strix_sign::verify_bundle(stage, &key.public())
        .context("the staged bundle does not verify (a bug)")?;
    strix_sign::sha256_file(&stage.join(strix_sign::MANIFEST)).map_err(Into::into)
}

/// The command that runs a strixd binary of `arch` on this machine: directly,
/// or under `qemu-<arch>` (user emulation; the binary must be static).
fn runner(bin_arch: Option<&str>) -> Result<Vec<String>> {
    match bin_arch {
        None => Ok(vec![]),
        Some(a) if a == std::env::consts::ARCH => Ok(vec![]),
        Some(a) => {
            let q = format!("qemu-{a}");
            // Spawned through PATH like the health check itself will be.
            let found = std::process::Command::new(&q)
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok();
            if !found {
                bail!("the health check runs the {a} strixd under {q}, which is not installed (apt-get install qemu-user)");
            }
            Ok(vec![q])
        }
    }
}

fn flash_dir(
    o: &Options,
    strixd: &Path,
    key: &SecretKey,
    items: &[Item],
    root: &Path,
) -> Result<Flashed> {
    if !root.is_dir() {
        bail!(
            "--to {}: not a directory (the board's root file system)",
            root.display()
        );
    }
    let root = &std::fs::canonicalize(root).with_context(|| root.display().to_string())?;
    let public = key.public();
    // The board trusts one key; a bundle signed by another would be refused
    // by strixd after the switch. Replacing it is a deliberate act.
    let trusted = root.join("etc/strix/strix.pub");
    if trusted.exists() {
        let k = PublicKey::load(&trusted)?;
        if k != public {
            bail!(
                "{} trusts key {}, but --key {} is key {}: refused (remove that file to change the board's key)",
                trusted.display(),
                k.id(),
                o.key.display(),
                public.id()
            );
        }
    }
    let releases = root.join(RELEASES);
    let run = runner(binary_arch(strixd)?)?;
    if o.dry_run {
        let tmp = std::env::temp_dir().join(format!("strix-flash-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let sha = stage(items, key, &tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        let id = release_id(&sha?);
        let rel = releases.join(&id);
        println!("plan (--dry-run: nothing is written):");
        for it in items {
            let src = match &it.src {
                Source::File(p) => p.display().to_string(),
                Source::Text(_) => "(generated)".into(),
            };
            println!("  install {src} -> {}", rel.join(&it.rel).display());
            if it.rel.ends_with(".strix") {
                println!("  sign    -> {}.sig", rel.join(&it.rel).display());
            }
        }
        println!("  sign    -> {}/MANIFEST, MANIFEST.sig", rel.display());
        if !trusted.exists() {
            println!(
                "  install {} (trusted key {})",
                trusted.display(),
                public.id()
            );
        }
        for (l, t) in LINKS {
            println!("  link    {} -> {t} (if absent)", root.join(l).display());
        }
        println!(
            "  mkdir   {}",
            root.join("var/lib/strix/snapshots").display()
        );
        println!(
            "  switch  {} -> releases/{id} (rename)",
            root.join(CURRENT).display()
        );
        let mut hc = run.clone();
        hc.extend(health_args(&root.join(CURRENT)));
        println!(
            "  check   {} (limit {} s; rollback when it fails)",
            show(&hc),
            o.health_timeout.as_secs()
        );
        return Ok(Flashed {
            id,
            commands: vec![],
        });
    }

    std::fs::create_dir_all(&releases).with_context(|| releases.display().to_string())?;
    let staging = releases.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let sha = match stage(items, key, &staging) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // The same bundle flashed twice within a second: a suffix keeps ids unique.
    let base_id = release_id(&sha);
    let mut id = base_id.clone();
    let mut n = 1;
    while releases.join(&id).symlink_metadata().is_ok() {
        n += 1;
        id = format!("{base_id}-{n}");
    }
    let rel = releases.join(&id);
    std::fs::rename(&staging, &rel)
        .with_context(|| format!("renaming {} to {}", staging.display(), rel.display()))?;
    println!(
        "release {} written ({} files, signed by key {})",
        rel.display(),
        items.len(),
        public.id()
    );

    // State, key and the links into `current` (made once).
    for d in ["var/lib/strix/snapshots", "etc/strix", "usr/bin"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).with_context(|| p.display().to_string())?;
    }
    if !trusted.exists() {
        std::fs::write(&trusted, public.to_pem().map_err(|e| anyhow!(e))?)
            .with_context(|| trusted.display().to_string())?;
        println!(
            "installed trusted key {} (id {})",
            trusted.display(),
            public.id()
        );
    }
    for (l, t) in LINKS {
        let p = root.join(l);
        match std::fs::read_link(&p) {
            Ok(cur) if cur == Path::new(t) => {}
            Ok(_) | Err(_) if p.symlink_metadata().is_ok() => println!(
                "kept {} (not strix flash's link to {t}): it does not follow the installed release",
                p.display()
            ),
            _ => std::os::unix::fs::symlink(t, &p)
                .with_context(|| format!("linking {} -> {t}", p.display()))?,
        }
    }

    // Atomic switch: a new link renamed over `current`.
    let current = root.join(CURRENT);
    let previous = std::fs::read_link(&current).ok();
    switch(&current, Some(Path::new(&format!("releases/{id}"))))?;
    println!(
        "switched {} -> releases/{id}{}",
        current.display(),
        previous
            .as_ref()
            .map(|p| format!(" (was {})", p.display()))
            .unwrap_or_default()
    );

    let mut hc = run;
    hc.extend(health_args(&current));
    println!("health check: {}", show(&hc));
    let (ok, out) = run_limited(Command::new(&hc[0]).args(&hc[1..]), o.health_timeout)?;
    if !ok {
        switch(&current, previous.as_deref())?;
        let _ = std::fs::remove_dir_all(&rel);
        bail!(
            "health check failed: {}\n{}\nrolled back: {} {} (release {id} removed)",
            show(&hc),
            out.trim_end(),
            current.display(),
            match &previous {
                Some(p) => format!("-> {} again", p.display()),
                None => "removed (there was no previous release)".into(),
            }
        );
    }
    println!(
        "health check passed: {}",
        out.trim_end().lines().last().unwrap_or("")
    );
    prune_releases(&releases, &id, previous.as_deref());
    Ok(Flashed {
        id,
        commands: vec![show(&hc)],
    })
}

fn health_args(current: &Path) -> Vec<String> {
    vec![
        current.join("bin/strixd").display().to_string(),
        "--check".into(),
        "--config".into(),
        current.join("strixd.toml").display().to_string(),
    ]
}

/// Points `current` at `target` by renaming a new link over it (atomic);
/// `None` removes it.
fn switch(current: &Path, target: Option<&Path>) -> Result<()> {
    match target {
        Some(t) => {
            let tmp = current.with_file_name(format!("current.new-{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(t, &tmp)
                .with_context(|| format!("linking {} -> {}", tmp.display(), t.display()))?;
            std::fs::rename(&tmp, current)
                .with_context(|| format!("renaming {} to {}", tmp.display(), current.display()))
        }
        None => match std::fs::remove_file(current) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| current.display().to_string()),
        },
    }
}

/// Keeps the current and the previous release; removes older ones (SD
/// cards are small).
fn prune_releases(releases: &Path, id: &str, previous: Option<&Path>) {
    let prev = previous
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .map(str::to_string);
    let Ok(rd) = std::fs::read_dir(releases) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == id || Some(&name) == prev.as_ref() {
            continue;
        }
        if e.path().join(strix_sign::MANIFEST).is_file()
            && std::fs::remove_dir_all(e.path()).is_ok()
        {
            println!("removed old release {}", e.path().display());
        }
    }
}

fn flash_ssh(
    o: &Options,
    key: &SecretKey,
    items: &[Item],
    target: &str,
    port: Option<u16>,
    root: &str,
) -> Result<Flashed> {
    // `root` is "" for the board's own `/`.
    let r = root;
    let tmp = std::env::temp_dir().join(format!("strix-flash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let staged = tmp.join("release");
    let sha = stage(items, key, &staged);
    let id = match sha {
        Ok(s) => release_id(&s),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let public = key.public();
    let pem = public.to_pem().map_err(|e| anyhow!(e))?;
    let ssh = |remote: String| -> Vec<String> {
        let mut c = vec!["ssh".to_string(), "-o".into(), "BatchMode=yes".into()];
        if let Some(p) = port {
            c.extend(["-p".into(), p.to_string()]);
        }
        c.extend([target.to_string(), remote]);
        c
    };
    let mut scp = vec![
        "scp".to_string(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-r".into(),
        "-p".into(),
    ];
    if let Some(p) = port {
        scp.extend(["-P".into(), p.to_string()]);
    }
    let rel = format!("{r}/{RELEASES}/{id}");
    let staging = format!("{r}/{RELEASES}/.staging-{id}");
    scp.extend([staged.display().to_string(), format!("{target}:{staging}")]);
    let pem_q = sh_quote(&pem);
    // `$(cat ...)` drops the final newline: compare without it.
    let pem_trim_q = sh_quote(pem.trim_end());
    let links: Vec<String> = LINKS
        .iter()
        .map(|(l, t)| format!("[ -e {r}/{l} ] || [ -L {r}/{l} ] || ln -s {t} {r}/{l}"))
        .collect();
    let prepare = format!(
        "set -e; mkdir -p {r}/{RELEASES} {r}/etc/strix {r}/var/lib/strix/snapshots {r}/usr/bin; \
         if [ -e {r}/etc/strix/strix.pub ]; then [ \"$(cat {r}/etc/strix/strix.pub)\" = {pem_trim_q} ] || \
         {{ echo 'strix flash: {r}/etc/strix/strix.pub trusts another key than {}: refused' >&2; exit 3; }}; \
         else printf '%s' {pem_q} > {r}/etc/strix/strix.pub; fi",
        public.id()
    );
    let install = format!(
        "set -e; mv -T {staging} {rel}; {}; \
         readlink {r}/{CURRENT} > {r}/{RELEASES}/.previous || : > {r}/{RELEASES}/.previous; \
         ln -sfn releases/{id} {r}/{CURRENT}.new && mv -T {r}/{CURRENT}.new {r}/{CURRENT}",
        links.join("; ")
    );
    let health = format!(
        "timeout {} {r}/{CURRENT}/bin/strixd --check --config {r}/{CURRENT}/strixd.toml",
        o.health_timeout.as_secs()
    );
    let rollback = format!(
        "set -e; p=$(cat {r}/{RELEASES}/.previous); \
         if [ -n \"$p\" ]; then ln -sfn \"$p\" {r}/{CURRENT}.new && mv -T {r}/{CURRENT}.new {r}/{CURRENT}; \
         else rm -f {r}/{CURRENT}; fi; rm -rf {rel}"
    );
    let steps = [ssh(prepare), scp, ssh(install), ssh(health.clone())];
    let commands: Vec<String> = steps.iter().map(|c| show(c)).collect();
    if o.dry_run {
        let _ = std::fs::remove_dir_all(&tmp);
        println!("plan (--dry-run: nothing is run):");
        for c in &commands {
            println!("  {c}");
        }
        println!("  on a failed health check: {}", show(&ssh(rollback)));
        return Ok(Flashed { id, commands });
    }
    let result = (|| -> Result<()> {
        for (i, c) in steps.iter().enumerate() {
            println!("+ {}", commands[i]);
            let limit = if i == 3 {
                o.health_timeout + Duration::from_secs(30)
            } else {
                Duration::from_secs(600)
            };
            let (ok, out) = run_limited(Command::new(&c[0]).args(&c[1..]), limit)?;
            if !out.trim().is_empty() {
                println!("{}", out.trim_end());
            }
            if !ok {
                if i == 3 {
                    let rb = ssh(rollback.clone());
                    println!("+ {}", show(&rb));
                    let (rok, rout) = run_limited(
                        Command::new(&rb[0]).args(&rb[1..]),
                        Duration::from_secs(120),
                    )?;
                    bail!(
                        "health check failed on {target}; {}",
                        if rok {
                            format!("rolled back to the previous release (release {id} removed)")
                        } else {
                            format!("ROLLBACK FAILED too: {}", rout.trim_end())
                        }
                    );
                }
                bail!("{} failed", commands[i]);
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|_| Flashed { id, commands })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        assert_eq!(Dest::parse("/mnt/sd").unwrap(), Dest::Dir("/mnt/sd".into()));
        assert_eq!(
            Dest::parse("ssh://pi@cam.local:2222").unwrap(),
            Dest::Ssh {
                target: "pi@cam.local".into(),
                port: Some(2222),
                root: "".into()
            }
        );
        assert_eq!(
            Dest::parse("ssh://cam").unwrap(),
            Dest::Ssh {
                target: "cam".into(),
                port: None,
                root: "".into()
            }
        );
        assert_eq!(
            Dest::parse("ssh://pi@cam:22/mnt/b/").unwrap(),
            Dest::Ssh {
                target: "pi@cam".into(),
                port: Some(22),
                root: "/mnt/b".into()
            }
        );
        for bad in [
            "ssh://pi@cam/../etc",
            "ssh://pi@cam/a b",
            "ssh://pi@cam:x",
            "ssh://",
            "ssh://a b@c",
            "ssh://pi@;rm",
        ] {
            assert!(Dest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn isa_needs_follow_the_board_features() {
        let rpi4 = Board::resolve("rpi4", &[]).unwrap();
        let rpi5 = Board::resolve("rpi5", &[]).unwrap();
        let fit = |isa: &str| ModelFit {
            path: "m.strix".into(),
            arena_bytes: 1,
            weight_bytes: 1,
            isa: Some(isa.into()),
        };
        assert!(check_fit(&rpi5, &[fit("dotprod")]).is_ok());
        let e = check_fit(&rpi4, &[fit("dotprod")]).unwrap_err().to_string();
        assert!(e.contains("lacks dotprod") && e.contains("rpi4"), "{e}");
        let e = check_fit(&rpi4, &[fit("armv7neon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("aarch64"), "{e}");
        assert!(check_fit(&rpi4, &[fit("neon"), fit("scalar")]).is_ok());
        assert!(check_fit(&rpi4, &[fit("sve2")]).is_err());
        let big = ModelFit {
            path: "big.strix".into(),
            arena_bytes: 300 << 20,
            weight_bytes: 0,
            isa: None,
        };
        assert!(check_fit(&rpi4, std::slice::from_ref(&big)).is_ok());
        let e = check_fit(&rpi4, &[big.clone(), big])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("budget_mb = 512") && e.contains("600.00 MiB"),
            "{e}"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
