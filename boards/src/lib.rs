//! Board files (`boards/<name>.toml`): CPU target and features, NPU, memory
//! budget, GPIO output lines and flash method. A board is data: strixd reads
//! its GPIO lines and checks its CPU and memory budget against it, `strix
//! flash` checks a model against it before installing. The shipped boards are
//! built into this crate ([`Board::builtin`]), so `board = "rpi4"` works
//! without installed files; a path names any other board file.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A board file that does not load: the key (prefixed `board`), what was
/// expected there and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardError {
    pub key: String,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config key `{}`: expected {}, found {}",
            self.key, self.expected, self.found
        )
    }
}

impl std::error::Error for BoardError {}

/// The board files shipped in `boards/`, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("rk3588", include_str!("../rk3588.toml")),
    ("rk3566", include_str!("../rk3566.toml")),
    ("rv1106", include_str!("../rv1106.toml")),
    ("rpi4", include_str!("../rpi4.toml")),
    ("rpi5", include_str!("../rpi5.toml")),
    ("rpi-armhf", include_str!("../rpi-armhf.toml")),
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub cpu: Cpu,
    pub npu: Npu,
    pub memory: Memory,
    pub flash: Flash,
    #[serde(default)]
    pub gpio: Gpio,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// Rust target triple to build strixd for.
    pub target: String,
    /// CPU features the kernels may use (`neon`, `dotprod`, `i8mm`, `fp16`).
    #[serde(default)]
    pub features: Vec<String>,
    pub cores: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Npu {
    /// `none` or `rknpu2`.
    pub kind: String,
    #[serde(default)]
    pub tops: f32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub total_mb: u32,
    /// What strixd and its models may use.
    pub budget_mb: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Flash {
    /// `ssh` or `sd-image`.
    pub method: String,
    #[serde(default)]
    pub notes: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gpio {
    /// Output name -> line.
    #[serde(default)]
    pub outputs: BTreeMap<String, GpioLine>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpioLine {
    /// GPIO character device (`/dev/gpiochip0`).
    pub chip: PathBuf,
    /// Line offset on that chip.
    pub line: u32,
    /// The output is on when the line is low.
    #[serde(default)]
    pub active_low: bool,
}

impl Board {
    /// Resolves `board = ...`: a bare name (`rpi4`, no `/` and no `.toml`) is
    /// looked up first as `<dir>/<name>.toml` in each of `dirs` (installed
    /// board files win, so a site can edit one), then among [`BUILTIN`]; anything else is
    /// a path to a board file.
    pub fn resolve(spec: &str, dirs: &[PathBuf]) -> Result<Board, BoardError> {
        let is_name = !spec.contains('/') && !spec.ends_with(".toml") && !spec.is_empty();
        if !is_name {
            return Board::load(Path::new(spec));
        }
        for d in dirs {
            let p = d.join(format!("{spec}.toml"));
            if p.is_file() {
                return Board::load(&p);
            }
        }
        match Board::builtin(spec) {
            Some(b) => b,
            None => Err(BoardError {
                key: "board".into(),
                expected: format!(
                    "a board name ({}) or a path to a board file",
                    BUILTIN
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                found: format!("{spec:?}"),
            }),
        }
    }

    /// A shipped board by name; `None` when there is no such board.
    pub fn builtin(name: &str) -> Option<Result<Board, BoardError>> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Board::parse(text, &format!("<built-in {n}>")))
    }

    /// Reads and checks a board file; errors name the key (prefixed `board.`).
    pub fn load(path: &Path) -> Result<Board, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|x| BoardError {
            key: "board".into(),
            expected: "a readable board TOML file".into(),
            found: format!("{}: {x}", path.display()),
        })?;
        Board::parse(&text, &path.display().to_string())
    }

    /// Parses and checks board TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Board, BoardError> {
        let e = |key: &str, expected: &str, found: String| BoardError {
            key: key.into(),
            expected: expected.into(),
            found,
        };
        let b: Board = toml::from_str(text).map_err(|x| {
            e(
                "board",
                "a valid board file (see boards/*.toml)",
                format!("{origin}: {}", x.message()),
            )
        })?;
        if !matches!(b.npu.kind.as_str(), "none" | "rknpu2") {
            return Err(e(
                "board.npu.kind",
                "\"none\" or \"rknpu2\"",
                format!("{:?}", b.npu.kind),
            ));
        }
        if b.memory.budget_mb == 0 || b.memory.budget_mb > b.memory.total_mb {
            return Err(e(
                "board.memory.budget_mb",
                "1..=memory.total_mb",
                b.memory.budget_mb.to_string(),
            ));
        }
        if !matches!(b.flash.method.as_str(), "ssh" | "sd-image") {
            return Err(e(
                "board.flash.method",
                "\"ssh\" or \"sd-image\"",
                format!("{:?}", b.flash.method),
            ));
        }
        if b.cpu.cores == 0 {
            return Err(e("board.cpu.cores", "at least 1", "0".into()));
        }
        if b.arch().is_none() {
            return Err(e(
                "board.cpu.target",
                "an aarch64, armv7 or arm Linux target triple",
                format!("{:?}", b.cpu.target),
            ));
        }
        Ok(b)
    }

    /// The CPU architecture of the board's target triple, in the spelling of
    /// `std::env::consts::ARCH` (`aarch64`, `arm`), so a binary can compare
    /// it with its own; `None` for a triple Strix does not build for.
    pub fn arch(&self) -> Option<&'static str> {
        let t = self.cpu.target.as_str();
        if t.starts_with("aarch64-") {
            Some("aarch64")
        } else if t.starts_with("armv7-") || t.starts_with("arm-") || t.starts_with("thumbv7neon-")
        {
            Some("arm")
        } else if t.starts_with("x86_64-") {
            Some("x86_64")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_boards_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") && !p.ends_with("Cargo.toml") {
                let b = Board::load(&p).unwrap();
                assert_eq!(
                    Some(b.name.as_str()),
                    p.file_stem().and_then(|s| s.to_str())
                );
                assert!(!b.gpio.outputs.is_empty(), "{} has GPIO outputs", b.name);
                let builtin = Board::builtin(&b.name).expect("every shipped board is built in");
                assert_eq!(builtin.unwrap(), b);
                files += 1;
            }
        }
        assert_eq!(files, BUILTIN.len(), "BUILTIN lists every boards/*.toml");
    }

    #[test]
    fn resolve_by_name_path_and_install_dir() {
        assert_eq!(Board::resolve("rpi4", &[]).unwrap().name, "rpi4");
        let err = Board::resolve("rpi9", &[]).unwrap_err();
        assert_eq!(err.key, "board");
        assert!(err.expected.contains("rpi4"), "{err}");
        let dir = std::env::temp_dir().join(format!("strix-boards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = BUILTIN[3].1.replace("budget_mb = 512", "budget_mb = 100");
        std::fs::write(dir.join("rpi4.toml"), text).unwrap();
        let b = Board::resolve("rpi4", std::slice::from_ref(&dir)).unwrap();
        assert_eq!(
            b.memory.budget_mb, 100,
            "an installed file wins over the built-in one"
        );
        let by_path = Board::resolve(dir.join("rpi4.toml").to_str().unwrap(), &[]).unwrap();
        assert_eq!(by_path, b);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_boards_name_the_key() {
        let rpi4 = BUILTIN[3].1;
        for (from, to, key) in [
            ("kind = \"none\"", "kind = \"tpu\"", "board.npu.kind"),
            (
                "budget_mb = 512",
                "budget_mb = 4096",
                "board.memory.budget_mb",
            ),
            ("method = \"ssh\"", "method = \"usb\"", "board.flash.method"),
            ("cores = 4", "cores = 0", "board.cpu.cores"),
            (
                "aarch64-unknown-linux-gnu",
                "riscv64gc-unknown-linux-gnu",
                "board.cpu.target",
            ),
            ("[memory]", "[memry]", "board"),
        ] {
            assert!(rpi4.contains(from), "{from}");
            let err = Board::parse(&rpi4.replace(from, to), "t").unwrap_err();
            assert_eq!(err.key, key, "{from} -> {to}: {err}");
        }
    }
}
