//! Board files (`boards/<name>.toml`): CPU target and features, NPU, memory
//! budget, GPIO output lines and flash method. strixd reads the GPIO lines
//! from here so a daemon config names outputs (`siren`), not chip offsets.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

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
    /// Reads and checks a board file; errors name the key (prefixed `board.`).
    pub fn load(path: &Path) -> Result<Board, ConfigError> {
        let e = |key: &str, expected: &str, found: String| ConfigError {
            key: key.into(),
            expected: expected.into(),
            found,
        };
        let text = std::fs::read_to_string(path).map_err(|x| {
            e(
                "board",
                "a readable board TOML file",
                format!("{}: {x}", path.display()),
            )
        })?;
        let b: Board = toml::from_str(&text).map_err(|x| {
            e(
                "board",
                "a valid board file (see boards/*.toml)",
                format!("{}: {}", path.display(), x.message()),
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
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_boards_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
        for name in ["rk3588", "rk3566", "rv1106", "rpi4", "rpi5"] {
            let b = Board::load(&dir.join(format!("{name}.toml"))).unwrap();
            assert_eq!(b.name, name);
            assert!(!b.gpio.outputs.is_empty(), "{name} has GPIO outputs");
        }
    }
}
