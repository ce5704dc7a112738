#!/usr/bin/env bash
# Tests the Rockchip NPU path (issue 17). There is no NPU and no librknnrt.so here:
#  1. the rknpu backend against the librknnrt test double (tests/rknn-double) on
#     the host: the backend dlopens the double (built as a shared object, also
#     without the zero-copy symbols and without the copy I/O symbols), in both
#     I/O modes (zero-copy rknn_create_mem/rknn_set_io_mem with native NHWC /
#     NC1HWC2 layouts, and rknn_inputs_set/rknn_outputs_get);
#  2. the same tests under valgrind (leaks and invalid accesses in the backend,
#     the double and the FFI between them);
#  3. the same tests cross-built for aarch64, statically linked with the double
#     (rknpu-static: a static guest cannot dlopen; the copy mode there through
#     NpuOptions::zero_copy = false) and run under qemu-aarch64;
#  4. rknn-toolkit2 2.5.0 (Rockchip's compiler + x86 simulator) installed into a
#     venv by scripts/lib/rknn-toolkit.sh (no torch), then `strix convert --board`
#     compiles VWW and FastestDet, and the simulator's outputs are compared with
#     fp32 and Strix's CPU int8 on the shipped samples;
#  5. strixd built with --features rknpu on the host, the double as its
#     librknnrt.so (firmware/tests/strixd/npu.rs): `--check` names the NPU
#     backend, a camera run over the shipped photos gives the CPU path's events,
#     a missing library falls back to the CPU.
# Usage: scripts/test-npu.sh [--no-cross] [--no-valgrind] [--no-toolkit]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
cross=1 grind=1 toolkit=1
for a in "$@"; do
    case $a in
    --no-cross) cross=0 ;;
    --no-valgrind) grind=0 ;;
    --no-toolkit) toolkit=0 ;;
    *) echo "usage: $0 [--no-cross] [--no-valgrind] [--no-toolkit]" >&2; exit 2 ;;
    esac
done
step() { echo "== [$((SECONDS - start))s] $*"; }
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
need=()
for p in gcc valgrind; do
    ((grind)) || [[ $p != valgrind ]] || continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Host builds select their tests from the whole workspace (`--workspace
# --test double`, not `-p strix-rknn-double`): cargo then resolves features
# as the workspace tests did, and reuses their build instead of compiling
# the runtime's dependencies again under another feature set.
ws=(--release --workspace)
step "rknpu backend vs the librknnrt double (host, dlopen)"
cargo test "${ws[@]}" --test double -- --test-threads=1

if ((grind)); then
    step "the same under valgrind"
    bin=$(cargo test "${ws[@]}" --test double --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
        "$bin" --test-threads=1
fi

if ((cross)); then
    step "the same, static aarch64 build with the double linked in, under qemu"
    # shellcheck source=scripts/lib/arm.sh
    source scripts/lib/arm.sh
    arm_tools
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        arm_cargo "rknn double (aarch64)" test --release -p strix-rknn-double \
        --target aarch64-unknown-linux-gnu -- --test-threads=1
fi

if ((toolkit)); then
    step "rknn-toolkit2 (compiler + simulator) vs fp32 and Strix int8 on the samples"
    # shellcheck source=scripts/lib/rknn-toolkit.sh
    source scripts/lib/rknn-toolkit.sh
    venv=${STRIX_RKNN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/strix/rknn-venv}
    rknn_toolkit_install "$venv"
    # --features rknpu: the runtime feature set of the steps above (no rebuild).
    STRIX_RKNN_PYTHON=$venv/bin/python cargo test "${ws[@]}" --features strix-tools/rknpu --lib npu:: -- \
        --nocapture --test-threads=1 2>&1 | grep -E '^(vww|fastestdet|test |SKIP)|panicked|FAILED|result'
fi
step "strixd --features rknpu against the double (host, dlopen)"
cargo test "${ws[@]}" --features strix-firmware/rknpu --test strixd npu:: -- --test-threads=1
step "done"
