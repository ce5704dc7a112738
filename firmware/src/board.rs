//! Board files: parsed and checked by the `strix-boards` crate (shared with
//! `strix flash`); strixd maps their errors to config errors, resolves
//! `board = "<name>"` through the installed board folders, and checks the
//! board against the binary, the CPU and the models.

pub use strix_boards::*;

use crate::config::ConfigError;
use std::path::{Path, PathBuf};
use strix_runtime::{Isa, Model};

impl From<BoardError> for ConfigError {
    fn from(e: BoardError) -> ConfigError {
        ConfigError {
            key: e.key,
            expected: e.expected,
            found: e.found,
        }
    }
}

/// Whether `board = spec` names a board (`rpi4`) rather than a path: no `/`,
/// no `.toml` suffix (the rule of [`Board::resolve`]).
pub fn is_name(spec: &str) -> bool {
    !spec.contains('/') && !spec.ends_with(".toml") && !spec.is_empty()
}

/// Folders searched for `<name>.toml`, first match wins: the config's
/// folder's `boards/`, then the packaged `/etc/strix/boards` (site edits)
/// and `/usr/share/strix/boards`; the built-in boards come after them.
pub fn search_dirs(config_dir: &Path) -> Vec<PathBuf> {
    vec![
        config_dir.join("boards"),
        PathBuf::from("/etc/strix/boards"),
        PathBuf::from("/usr/share/strix/boards"),
    ]
}

/// Where a resolved board came from, for the logs and `--check`.
pub fn origin(spec: &str, dirs: &[PathBuf]) -> String {
    if !is_name(spec) {
        return spec.to_string();
    }
    dirs.iter()
        .map(|d| d.join(format!("{spec}.toml")))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built in".into())
}

/// The kernel paths a board's `[cpu] features` promise, best first:
/// aarch64 `i8mm`, `dotprod`, `neon`; arm `neon` (ARMv7 NEON); x86_64
/// `avx2`. Other features (`fp16`) select no kernel path.
pub fn kernel_paths(b: &Board) -> Vec<Isa> {
    let has = |f: &str| b.cpu.features.iter().any(|x| x == f);
    let mut out = Vec::new();
    match b.arch() {
        Some("aarch64") => {
            for (f, isa) in [
                ("i8mm", Isa::I8mm),
                ("dotprod", Isa::Dotprod),
                ("neon", Isa::Neon),
            ] {
                if has(f) {
                    out.push(isa);
                }
            }
        }
        Some("arm") if has("neon") => out.push(Isa::Armv7Neon),
        Some("x86_64") if has("avx2") => out.push(Isa::Avx2),
        _ => {}
    }
    out
}

/// Checks that a binary built for `binary_arch` (`std::env::consts::ARCH`)
/// runs `b`'s target, and that `available` (the CPU's kernel paths, from
/// the runtime: [`Isa::available`]) holds every kernel path the board
/// promises. Returns the path models run on: the board's best, or scalar
/// when it promises none.
pub fn check_cpu(
    b: &Board,
    binary_arch: &str,
    available: impl Fn(Isa) -> bool,
) -> Result<Isa, String> {
    let arch = b.arch().unwrap_or("?");
    if arch != binary_arch {
        return Err(format!(
            "board {} is for {arch} ({}), but this strixd is built for {binary_arch}: \
             install the {arch} build, or name the board this machine is",
            b.name, b.cpu.target
        ));
    }
    let paths = kernel_paths(b);
    let missing: Vec<&str> = paths
        .iter()
        .filter(|i| !available(**i))
        .map(|i| i.name())
        .collect();
    if !missing.is_empty() {
        let have: Vec<&str> = Isa::ALL
            .iter()
            .filter(|i| available(**i))
            .map(|i| i.name())
            .collect();
        return Err(format!(
            "board {} promises the kernel path(s) {} ([cpu] features {:?}), which this CPU cannot \
             run (it runs {}): is this the right board file?",
            b.name,
            missing.join(", "),
            b.cpu.features,
            have.join(", ")
        ));
    }
    Ok(paths.first().copied().unwrap_or(Isa::Scalar))
}

/// What one loaded model costs in memory: the arena of each of its
/// sessions plus its constant data (weights) once.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCost {
    /// `camera`, `speech`, `speech.vad`.
    pub role: String,
    pub path: PathBuf,
    pub ops: usize,
    /// Arena bytes of one session.
    pub arena: usize,
    pub sessions: usize,
    pub weights: usize,
}

impl ModelCost {
    pub fn of(role: &str, path: &Path, m: &Model, sessions: usize) -> ModelCost {
        ModelCost {
            role: role.into(),
            path: path.to_path_buf(),
            ops: m.graph.nodes.len(),
            arena: m.graph.arena_bytes(),
            sessions,
            weights: m.consts.bytes(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.arena
            .saturating_mul(self.sessions)
            .saturating_add(self.weights)
    }
}

/// Refuses models whose arenas and weights together exceed the board's
/// `[memory] budget_mb`.
pub fn check_budget(b: &Board, models: &[ModelCost]) -> Result<(), String> {
    let total: usize = models.iter().map(ModelCost::bytes).sum();
    let budget = b.memory.budget_mb as usize * 1024 * 1024;
    if total <= budget {
        return Ok(());
    }
    let parts: Vec<String> = models
        .iter()
        .map(|m| {
            format!(
                "{} {}: arena {} B x {} session(s) + weights {} B",
                m.role,
                m.path.display(),
                m.arena,
                m.sessions,
                m.weights
            )
        })
        .collect();
    Err(format!(
        "the models need {total} bytes ({:.1} MB), over board {}'s [memory] budget_mb = {} \
         ({budget} bytes): {}",
        total as f64 / 1048576.0,
        b.name,
        b.memory.budget_mb,
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(target: &str, features: &[&str]) -> Board {
        let mut b = Board::builtin("rpi4").unwrap().unwrap();
        b.cpu.target = target.into();
        b.cpu.features = features.iter().map(|s| s.to_string()).collect();
        b
    }

    #[test]
    fn arch_and_kernel_paths_are_checked() {
        let rpi5 = Board::builtin("rpi5").unwrap().unwrap();
        assert_eq!(kernel_paths(&rpi5), [Isa::Dotprod, Isa::Neon]);
        let e = check_cpu(&rpi5, "x86_64", |_| true).unwrap_err();
        assert!(
            e.contains("for aarch64") && e.contains("built for x86_64"),
            "{e}"
        );
        // A Cortex-A72 (neon, no dotprod) refuses a board promising dotprod.
        let a72 = |i: Isa| matches!(i, Isa::Scalar | Isa::Neon);
        let e = check_cpu(&rpi5, "aarch64", a72).unwrap_err();
        assert!(
            e.contains("dotprod") && e.contains("runs scalar, neon"),
            "{e}"
        );
        assert_eq!(check_cpu(&rpi5, "aarch64", |_| true), Ok(Isa::Dotprod));
        let rv = Board::builtin("rv1106").unwrap().unwrap();
        assert_eq!(check_cpu(&rv, "arm", |_| true), Ok(Isa::Armv7Neon));
        assert!(check_cpu(&rv, "aarch64", |_| true).is_err());
        let plain = board("x86_64-unknown-linux-gnu", &[]);
        assert_eq!(check_cpu(&plain, "x86_64", |_| false), Ok(Isa::Scalar));
    }

    #[test]
    fn budget_counts_sessions_and_weights() {
        let mut b = board("aarch64-unknown-linux-gnu", &["neon"]);
        b.memory.budget_mb = 1;
        let m = |arena, sessions, weights| ModelCost {
            role: "camera".into(),
            path: "m.strix".into(),
            ops: 1,
            arena,
            sessions,
            weights,
        };
        assert!(check_budget(&b, &[m(300_000, 2, 400_000)]).is_ok());
        let e = check_budget(&b, &[m(300_000, 2, 400_000), m(100_000, 1, 0)]).unwrap_err();
        assert!(
            e.contains("1100000 bytes") && e.contains("budget_mb = 1"),
            "{e}"
        );
    }

    #[test]
    fn names_and_search_dirs() {
        assert!(is_name("rpi4") && !is_name("rpi4.toml") && !is_name("b/rpi4"));
        let d = search_dirs(Path::new("/etc/x"));
        assert_eq!(d[0], Path::new("/etc/x/boards"));
        assert_eq!(origin("rpi4", &[]), "built in");
    }
}
