//! Generates the C header `strix.h` from `src/capi.rs` into `OUT_DIR` with
//! cbindgen. The committed copy is `include/strix.h`; the test
//! `capi::tests::header_is_current` fails when the two differ
//! (`STRIX_BLESS_HEADER=1 cargo test -p strix-runtime header_is_current`
//! rewrites it). A cbindgen failure does not break the build: the generated
//! header then holds an `#error` line and that test fails with it.
//!
//! On Linux the C library (cdylib) gets the SONAME `libstrix.so.0`: programs
//! linked against it record that name, so the installed file can be
//! `libstrix.so.0` (package `libstrix0`, see packaging/) and an incompatible
//! ABI later becomes `libstrix.so.1` beside it. The cargo output is still named
//! `libstrix_runtime.so`; whoever runs programs linked against it straight from
//! the target dir adds the `libstrix.so.0` symlink (scripts/test-c.sh does).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/capi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    // The target's OS, not the host's: build scripts run on the host.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libstrix.so.0");
    }
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("strix.h");
    let generated = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .map_err(|e| e.to_string())
        .and_then(|config| {
            cbindgen::Builder::new()
                .with_config(config)
                .with_src(dir.join("src/capi.rs"))
                .generate()
                .map_err(|e| e.to_string())
        });
    match generated {
        Ok(bindings) => {
            bindings.write_to_file(&out);
        }
        Err(e) => {
            println!("cargo:warning=cbindgen could not generate strix.h: {e}");
            std::fs::write(
                &out,
                format!(
                    "#error \"cbindgen failed: {}\"\n",
                    e.replace(['"', '\n'], " ")
                ),
            )
            .expect("write OUT_DIR/strix.h");
        }
    }
}
