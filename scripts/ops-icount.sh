#!/usr/bin/env bash
# Guest instruction counts of one call of each non-gemm int8 kernel (the
# shapes of kernels/examples/ops_icount.rs) per kernel path, under qemu-user
# with /work/shared/tools/qemu-icount.
# Per-call count = (count with ITERS runs - count with 0 runs) / ITERS, so
# process start-up, data generation and exit cancel out. The checksum column
# must agree across paths of one target.
#
# Usage: scripts/ops-icount.sh [ITERS] [OPS...]  (default 4; all ops). Needs
# what scripts/cross-test.sh installs (run it first on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-4}
shift || true
ops=("$@")
((${#ops[@]})) || ops=(dw_s2 dw_s1 dw_14 dw_7 vadd vmul requant maxpool avgpool)
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

run() { # QEMU SYSROOT CPU BIN ISA OP ITERS -> "icount checksum-line"
    STRIX_ISA=$5 timeout -k 10 "$QEMU_TIMEOUT" "$1" -cpu "$3" -L "$2" -plugin "$plugin" "$4" "$6" "$7" 2>&1
}

bench() { # TARGET QEMU SYSROOT CPU PATHS...
    local target=$1 qemu=$2 sysroot=$3 cpu=$4
    shift 4
    cargo build -q -p strix-kernels --release --target "$target" --example ops_icount
    local bin=$CARGO_TARGET_DIR/$target/release/examples/ops_icount out base full
    for op in "${ops[@]}"; do
        for isa in "$@"; do
            base=$(run "$qemu" "$sysroot" "$cpu" "$bin" "$isa" "$op" 0 | sed -nE 's/^icount: ([0-9]+)$/\1/p')
            out=$(run "$qemu" "$sysroot" "$cpu" "$bin" "$isa" "$op" "$iters")
            full=$(sed -nE 's/^icount: ([0-9]+)$/\1/p' <<<"$out")
            awk -v t="$target" -v o="$op" -v l="$(grep -o 'kernel=[^ ]*\|checksum=[^ ]*' <<<"$out" | tr '\n' ' ')" \
                -v n=$(((full - base) / iters)) \
                'BEGIN { printf "%-30s %-8s %12d instructions/call  %s\n", t, o, n, l }'
        done
    done
}

targets=${ICOUNT_TARGETS:-aarch64 armv7}
for t in $targets; do
    case $t in
    aarch64) bench aarch64-unknown-linux-gnu qemu-aarch64 /usr/aarch64-linux-gnu cortex-a53 scalar neon ;;
    armv7) bench armv7-unknown-linux-gnueabihf qemu-arm /usr/arm-linux-gnueabihf cortex-a7 scalar armv7neon ;;
    esac
done
