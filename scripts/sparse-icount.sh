#!/usr/bin/env bash
# Guest instruction counts of dense vs block-sparse conv kernels (the layers
# of kernels/examples/sparse_speed.rs, kernels only, one whole layer per call)
# on aarch64 under qemu-user with /work/shared/tools/qemu-icount: baseline
# NEON on cortex-a53, dotprod on neoverse-n1 (whose dense gemm is `sdot`; the
# sparse kernel is the NEON one on both). Per-call count = (count with ITERS
# runs - count with 0 runs) / ITERS. The checksums of one line must agree.
#
# Usage: scripts/sparse-icount.sh [ZERO_PERCENT] [ITERS] [SHAPES...]
#        (default 80, 2, every shape). Needs what scripts/cross-test.sh
#        installs (run it first on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
zero=${1:-80}
iters=${2:-2}
shift 2 || shift $#
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

target=aarch64-unknown-linux-gnu
cargo build -q -p strix-kernels --release --target $target --example sparse_icount
bin=$CARGO_TARGET_DIR/$target/release/examples/sparse_icount
run() { # CPU ISA SHAPE MODE ITERS -> "icount" and the example's line
    STRIX_ISA=$2 timeout -k 10 "$QEMU_TIMEOUT" qemu-aarch64 -cpu "$1" -L /usr/aarch64-linux-gnu -plugin "$plugin" \
        "$bin" "$3" "$4" "$zero" "$5" 2>&1
}
count() { # CPU ISA SHAPE MODE -> "instructions/call checksum"
    local base out full
    base=$(run "$1" "$2" "$3" "$4" 0 | sed -nE 's/^icount: ([0-9]+)$/\1/p')
    out=$(run "$1" "$2" "$3" "$4" "$iters")
    full=$(sed -nE 's/^icount: ([0-9]+)$/\1/p' <<<"$out")
    echo "$(((full - base) / iters)) $(grep -o 'checksum=[^ ]*' <<<"$out")"
}

shapes=("$@")
((${#shapes[@]})) || mapfile -t shapes < <(timeout -k 10 "$QEMU_TIMEOUT" qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" list)
printf "%-12s %-5s %-14s %12s %12s %7s  %s\n" cpu isa shape dense sparse ratio "checksums (zero=$zero%)"
for cfg in "cortex-a53 neon" "neoverse-n1 dotprod"; do
    read -r cpu isa <<<"$cfg"
    for s in "${shapes[@]}"; do
        read -r d dc < <(count "$cpu" "$isa" "$s" dense)
        read -r sp sc < <(count "$cpu" "$isa" "$s" sparse)
        awk -v c="$cpu" -v i="$isa" -v s="$s" -v d="$d" -v sp="$sp" -v dc="$dc" -v sc="$sc" \
            'BEGIN { printf "%-12s %-5s %-14s %12d %12d %6.2fx  %s %s\n", c, i, s, d, sp, d / sp, dc, sc }'
    done
done
