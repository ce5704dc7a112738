//! Builds the librknnrt test double (rknn_double.c): a static library linked
//! into the tests on aarch64 (statically linked guests cannot dlopen), a
//! shared object elsewhere, whose path the tests get as `RKNN_DOUBLE_SO`.
fn main() {
    println!("cargo:rerun-if-changed=rknn_double.c");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let mut b = cc::Build::new();
    b.file("rknn_double.c")
        .std("c11")
        .flag("-Wall")
        .flag("-Wextra")
        .warnings_into_errors(true);
    if arch == "aarch64" {
        // Statically linked guests: no dlopen, so no libstrix stand-in.
        b.define("RKNN_DOUBLE_NO_DLOPEN", None);
        b.compile("rknn_double");
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let cc = b.get_compiler();
    // Three builds: full, without the zero-copy symbols (older librknnrt),
    // without the copy I/O symbols (RV1106's librknnmrt).
    for (name, def, var) in [
        ("librknn_double.so", None, "RKNN_DOUBLE_SO"),
        (
            "librknn_double_nomem.so",
            Some("-DRKNN_DOUBLE_NO_MEM"),
            "RKNN_DOUBLE_NOMEM_SO",
        ),
        (
            "librknn_double_nocopy.so",
            Some("-DRKNN_DOUBLE_NO_COPY"),
            "RKNN_DOUBLE_NOCOPY_SO",
        ),
    ] {
        let so = out.join(name);
        let st = cc
            .to_command()
            .args([
                "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o",
            ])
            .arg(&so)
            .args(def)
            .arg("rknn_double.c")
            // dlopen (the libstrix stand-in): in libc since glibc 2.34, in libdl before.
            .arg("-ldl")
            .status()
            .expect("the C compiler runs");
        assert!(st.success(), "building the rknn double ({name}) failed");
        println!("cargo:rustc-env={var}={}", so.display());
    }
}
