#!/usr/bin/env bash
# Guest instruction counts of one int8 NT gemm call (m=64, n=256, k=576) per
# kernel path, under qemu-user with /work/shared/tools/qemu-icount.
# Per-call count = (count with ITERS runs - count with 0 runs) / ITERS, so
# process start-up, data generation and exit cancel out.
#
# Usage: scripts/gemm-icount.sh [ITERS]   (default 10). Needs what
# scripts/cross-test.sh installs (run it first on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-10}
plugin_src=${QEMU_ICOUNT_SRC:-/work/shared/tools/qemu-icount/icount.c}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
# shellcheck source=lib/arm.sh
source scripts/lib/arm.sh   # static guests, time-limited runs

# The plugin API version follows qemu's major version (README of qemu-icount).
qver=$(qemu-aarch64 --version | sed -nE '1s/.*version ([0-9]+)\..*/\1/p')
api=1; ((qver >= 9)) && api=2
plugin=$CARGO_TARGET_DIR/icount/libicount.so
mkdir -p "$(dirname "$plugin")"
gcc -O2 -shared -fPIC -DAPI_VERSION=$api -o "$plugin" "$plugin_src"

count() { # QEMU SYSROOT CPU BIN ISA ITERS -> instruction count
    STRIX_ISA=$5 timeout -k 10 "$QEMU_TIMEOUT" "$1" -cpu "$3" -L "$2" -plugin "$plugin" "$4" "$6" 2>&1 >/dev/null |
        sed -nE 's/^icount: ([0-9]+)$/\1/p'
}

bench() { # TARGET QEMU SYSROOT CPU PATHS...
    local target=$1 qemu=$2 sysroot=$3 cpu=$4
    shift 4
    cargo build -q -p strix-kernels --release --target "$target" --example gemm_icount
    local bin=$CARGO_TARGET_DIR/$target/release/examples/gemm_icount base
    for isa in "$@"; do
        base=$(count "$qemu" "$sysroot" "$cpu" "$bin" "$isa" 0)
        full=$(count "$qemu" "$sysroot" "$cpu" "$bin" "$isa" "$iters")
        awk -v t="$target" -v i="$isa" -v n=$(((full - base) / iters)) \
            'BEGIN { printf "%-30s %-10s %10d instructions/call  (%.3f per MAC)\n", t, i, n, n / (64 * 256 * 576) }'
    done
}

bench aarch64-unknown-linux-gnu qemu-aarch64 /usr/aarch64-linux-gnu max scalar neon dotprod i8mm
bench armv7-unknown-linux-gnueabihf qemu-arm /usr/arm-linux-gnueabihf cortex-a7 scalar armv7neon
