#!/usr/bin/env bash
# Cross-builds strix-kernels for aarch64 and 32-bit ARMv7 and runs its tests
# under qemu user emulation at several emulated CPUs, each with the set of
# kernel paths that must be detected there (STRIX_REQUIRE_ISA), so both the
# kernels and the run-time detection are checked.
#
# Usage: scripts/cross-test.sh [aarch64|armv7]...   (default: both)
# Env:   CARGO_TARGET_DIR (default target/cross), CROSS_TEST_ARGS (extra args
#        after `--` for the test binaries, e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- tools (idempotent, quiet) ----------------------------------------------
pkgs=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "cross-test: apt-get install ${missing[*]}"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t" >/dev/null
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm -L /usr/arm-linux-gnueabihf"

# run TARGET QEMU_CPU REQUIRED_PATHS: one `cargo test` of strix-kernels.
# REQUIRED_PATHS is the exact set of this architecture's paths that the CPU
# has ("" = none): the tests fail if detection disagrees either way.
run() {
    local target=$1 cpu=$2 req=$3
    echo "=== $target  QEMU_CPU=$cpu  STRIX_REQUIRE_ISA=${req:-<none>}"
    # pipefail: cargo's status is the pipeline's (sed only drops noise lines).
    QEMU_CPU=$cpu STRIX_REQUIRE_ISA=$req \
        cargo test -q --no-fail-fast -p strix-kernels --release --target "$target" -- ${CROSS_TEST_ARGS:-} 2>&1 |
        sed -E '/^\s*$/d; /^test .* \.\.\. ok$/d; /^running [0-9]+ tests?$/d'
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
