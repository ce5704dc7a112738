#!/usr/bin/env bash
# Cross-builds strix-kernels for aarch64 and 32-bit ARMv7 and runs its tests
# under qemu user emulation at several emulated CPUs, each with the set of
# kernel paths that must be detected there (STRIX_REQUIRE_ISA), so both the
# kernels and the run-time detection are checked.
#
# Usage: scripts/cross-test.sh [aarch64|armv7]...   (default: both)
# Env:   CARGO_TARGET_DIR (default target), CROSS_TEST_ARGS (extra args
#        after `--` for the test binaries, e.g. a test name filter),
#        QEMU_TIMEOUT (seconds per emulated test binary, default 900).
# Guests are linked statically and time-limited: see scripts/lib/arm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/arm.sh
source scripts/lib/arm.sh
arm_tools
# The host build's target dir: the ARM units get their own file names (other
# --target and RUSTFLAGS), the host's build scripts and proc-macros are shared.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

# run TARGET QEMU_CPU REQUIRED_PATHS: one `cargo test` of strix-kernels.
# REQUIRED_PATHS is the exact set of this architecture's paths that the CPU
# has ("" = none): the tests fail if detection disagrees either way.
run() {
    local target=$1 cpu=$2 req=$3
    echo "=== $target  QEMU_CPU=$cpu  STRIX_REQUIRE_ISA=${req:-<none>}"
    # shellcheck disable=SC2086
    QEMU_CPU=$cpu STRIX_REQUIRE_ISA=$req arm_cargo "$target QEMU_CPU=$cpu" \
        test -q --no-fail-fast -p strix-kernels --release --target "$target" -- ${CROSS_TEST_ARGS:-}
}

failed=()
try() { run "$@" || failed+=("$1 QEMU_CPU=$2"); }

archs=("$@")
((${#archs[@]})) || archs=(aarch64 armv7)
start=$SECONDS
for arch in "${archs[@]}"; do
    case $arch in
    aarch64)
        try aarch64-unknown-linux-gnu cortex-a53 neon
        try aarch64-unknown-linux-gnu neoverse-n1 neon,dotprod
        try aarch64-unknown-linux-gnu max neon,dotprod,i8mm
        ;;
    armv7)
        try armv7-unknown-linux-gnueabihf cortex-a7 armv7neon
        try armv7-unknown-linux-gnueabihf cortex-a7,neon=off ""
        ;;
    *)
        echo "cross-test: unknown arch $arch (aarch64|armv7)" >&2
        exit 2
        ;;
    esac
done
if ((${#failed[@]})); then
    printf 'cross-test: FAILED: %s\n' "${failed[@]}"
    echo "cross-test: $((SECONDS - start)) s"
    exit 1
fi
echo "cross-test: all runs passed in $((SECONDS - start)) s"
