//! Rules about the source itself, checked on the workspace's files.

use std::path::{Path, PathBuf};

/// The workspace root (this crate is `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules `src` declares as test-only (`#[cfg(test)]` then
/// `mod name;`), as the file names they live in.
fn test_only_modules(src: &str) -> Vec<String> {
    let lines: Vec<&str> = src.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0].starts_with("#[cfg(test)]") || w[0].starts_with("#[cfg(all(test"))
        .filter_map(|w| {
            let decl = w[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            let name = decl.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(format!("{name}.rs"))
        })
        .collect()
}

/// Issue 13: library code read `STRIX_ISA` (in `Model::new`),
/// `STRIX_NO_SPARSE`, `STRIX_NO_CLE` and `STRIX_KEEP_DEAD`, so the same call
/// behaved differently by process environment, and the C ABI had no other way
/// to pick a kernel path. Only binaries (`main.rs`, `src/bin/`), build
/// scripts and tests may read the environment: library sources, up to their
/// first test-only item, must not.
#[test]
fn library_code_reads_no_environment_variables() {
    let root = root();
    let mut files = vec![];
    for dir in ["kernels/src", "runtime/src", "tools/src", "firmware/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "only {} files found", files.len());
    // Test-only module files, declared as such in a sibling file.
    let mut test_only: Vec<PathBuf> = vec![];
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let dir = f.parent().unwrap();
        // `foo.rs` declares its submodules in `foo/`, `mod.rs`/`lib.rs` beside it.
        let sub = match f.file_stem().unwrap().to_str().unwrap() {
            "mod" | "lib" | "main" => dir.to_path_buf(),
            stem => dir.join(stem),
        };
        test_only.extend(test_only_modules(&src).iter().map(|m| sub.join(m)));
    }
    let mut offenders = vec![];
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.ends_with("/main.rs") || rel.contains("/src/bin/") || test_only.contains(f) {
            continue;
        }
        let src = std::fs::read_to_string(f).unwrap();
        for (i, line) in src.lines().enumerate() {
            let t = line.trim();
            if t.starts_with("#[cfg(test)]") || t.starts_with("#[cfg(all(test") {
                break; // the rest of the file is (or may be) test code
            }
            if t.starts_with("//") {
                continue;
            }
            if ["env::var", "env::vars", "getenv", "env::set_var"]
                .iter()
                .any(|p| t.contains(p))
            {
                offenders.push(format!("{rel}:{}: {t}", i + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "library code reads the environment (let the binary read it and pass an option):\n{}",
        offenders.join("\n")
    );
    // The scan sees what it claims to: a test-only module was found (the
    // ARM gemm harness, or at least some `#[cfg(test)] mod tests;`).
    assert!(!test_only.is_empty());
}
