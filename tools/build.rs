//! Links the `strix` binaries with packed relative relocations (DT_RELR)
//! when they are built for the machine that builds them and its glibc can
//! load them (2.36 or later). A position-independent binary of this size
//! carries about 60,000 relative relocations: as RELA entries (1.4 MB) the
//! loader reads every page of them at start, which is resident memory for
//! the life of `strix bench`/`run`; as RELR they take 13 KB. The binaries
//! stay position-independent (ASLR). Cross builds and older glibc link as
//! before.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let native = var("TARGET") == var("HOST");
    if native
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && glibc_has_relr()
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`, "glibc 2.36")
/// is 2.36 or later, the first to load DT_RELR.
fn glibc_has_relr() -> bool {
    let Ok(out) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    let s = String::from_utf8_lossy(&out.stdout);
    let mut v = s
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
