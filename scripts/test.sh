#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every check.
# Usage: scripts/test.sh            (everything)
#        STRIX_SKIP_CROSS=1 scripts/test.sh   (skip the ARM emulation runs, board packages and flash)
#        STRIX_SKIP_EXTRA=1 scripts/test.sh   (skip the C ABI, NPU and fuzz tests)
#        STRIX_FUZZ_RUNS=N scripts/test.sh    (fuzz inputs per target, default 3000)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in espeak-ng sox mosquitto ffmpeg openssl libasound2-dev pkg-config libclang-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
t0=$SECONDS last=$SECONDS
# step NAME: prints the wall time of the previous step and the total so far.
step() {
  echo "== [+$((SECONDS - last)) s, total $((SECONDS - t0)) s] $*"
  last=$SECONDS
}

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
step "feature resolution shared by the builds below (scripts/check-features.sh)"
scripts/check-features.sh
step "cargo build --release -p strix-tools (the converter strixd's tests call)"
cargo build --release -p strix-tools
step "the README's first command, as written (scripts/check-readme.sh)"
scripts/check-readme.sh
step "cargo test (host: reference kernels, AVX2 when the CPU has it, real models end to end)"
cargo test --release --workspace
if [ -z "${STRIX_SKIP_CROSS:-}" ] && [ -x scripts/cross-test.sh ]; then
  step "ARM kernels under qemu user emulation"
  scripts/cross-test.sh
fi
if [ -z "${STRIX_SKIP_CROSS:-}" ]; then
  # Board packages for aarch64 and armv7 (cargo-zigbuild, glibc 2.31) and the
  # static aarch64 strixd, checked as they ship. CI builds them with the
  # release profile (no LTO, parallel codegen): the same code and packaging
  # in less build time; `scripts/build-board.sh` alone uses the dist profile.
  step "board packages (scripts/test-dist.sh)"
  BOARD_PROFILE=${BOARD_PROFILE:-release} scripts/test-dist.sh
  # strix flash into a directory root, the installed strixd under qemu
  # against mosquitto, signatures, rollback, ssh to a loopback sshd; it
  # reuses the static strixd test-dist.sh just built.
  step "strix flash end to end (scripts/test-flash.sh)"
  STRIXD=${STRIXD:-target/aarch64-unknown-linux-gnu/dist-static/strixd} scripts/test-flash.sh
fi
# (strixd's end-to-end tests already ran in the workspace tests above.)
board_libs=""
[ -n "${STRIX_SKIP_CROSS:-}" ] || board_libs=${CARGO_TARGET_DIR:-target}
for extra in scripts/test-c.sh scripts/test-npu.sh scripts/fuzz.sh; do
  if [ -z "${STRIX_SKIP_EXTRA:-}" ] && [ -x "$extra" ]; then
    step "$extra"
    # fuzz.sh: the runtime's targets (the loader and executor, raw and
    # re-sealed, the C ABI, the WAV reader) on a fixed seed for 3000 inputs
    # (at most 60 s): repeatable, so a pass here is a pass in CI; a visible
    # SKIP without nightly. The compiler's and strixd's targets (onnx_import,
    # image, config) need a sanitizer build of tract and ONNX Runtime that
    # doubled the test command's time: `scripts/fuzz.sh` runs them.
    case $extra in
    */fuzz.sh) STRIX_FUZZ_RUNS=${STRIX_FUZZ_RUNS:-3000} STRIX_FUZZ_SEED=${STRIX_FUZZ_SEED:-1} "$extra" --runtime-only 60 ;;
    # The header test (capi::tests::header_is_current) ran in the workspace tests.
    # Its ARM library sizes are those of the libstrix.so.0 test-dist.sh built
    # (no second cross build of the cdylib) unless the board steps were skipped.
    */test-c.sh) STRIX_BOARD_LIBS=$board_libs "$extra" --no-header ;;
    *) "$extra" ;;
    esac
  fi
done
step "all tests passed"
