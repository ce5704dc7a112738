#!/usr/bin/env bash
# ARM cost per inference, Strix vs tract, in one run (a benchmark, not a test).
#
# For each model: convert it to int8 .strix on the host (calibrated as
# strix-peers does), then count the guest instructions of strix-icount under
# qemu-user with /work/shared/tools/qemu-icount, per kernel path:
#   strix neon (cortex-a53), dotprod (neoverse-n1), i8mm (max), scalar (cortex-a53);
#   tract fp32 aarch64 (neoverse-n1, TRACT_CPU_AARCH64_KIND=neoverse);
#   strix armv7neon and scalar, tract fp32 armv7 (cortex-a7, TRACT_CPU_ARM32_NEON=1).
# Instructions per inference = (count(N runs) - count(0 runs)) / N; both
# processes do one warm-up inference, so loading, first-run set-up and exit
# cancel out. Prints a table and writes $OUT/arm-icount.json.
#
# Usage: scripts/arm-icount.sh [MODEL...]   (default: all of
#          mobilenet_v2 yolov8n fastestdet ultraface-rfb kws vww)
#        A MODEL ending in .strix is counted as it is (no conversion, no
#        tract column): e.g. an unpruned and a pruned build side by side,
#        `scripts/arm-icount.sh vww.strix vww-pruned.strix`.
# Env:   ICOUNT_PATHS   comma-separated subset of the paths above, by label
#                       (default all: see PATHS below)
#        ICOUNT_RUNS    N for every model (default per model: 1 for yolov8n,
#                       2 for the ~0.3-0.6 GMAC models, 10-20 for the tiny ones)
#        STRIX_ICOUNT_OUT  work/output directory (default out/icount)
#        ICOUNT_NO_BUILD=1 use the binaries already built (no cargo)
#        CARGO_TARGET_DIR  host build (default target); cross builds go to
#                       STRIX_CROSS_TARGET_DIR (default target/cross)
# Needs what scripts/cross-test.sh installs (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

# --- tools (idempotent, quiet; as scripts/cross-test.sh) ---------------------
pkgs=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "arm-icount: apt-get install ${missing[*]}" >&2
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
installed=$(rustup target list --installed)
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t" >/dev/null
done

OUT=${STRIX_ICOUNT_OUT:-out/icount}
HOST_TARGET=${CARGO_TARGET_DIR:-target}
CROSS_TARGET=${STRIX_CROSS_TARGET_DIR:-target/cross}
BENCH=${STRIX_BENCH_MODELS:-../shared/models/bench}
mkdir -p "$OUT"

# --- paths --------------------------------------------------------------------
# label  qemu  cpu  engine  environment
PATHS=(
    "strix-neon     aarch64 cortex-a53  strix STRIX_ISA=neon"
    "strix-dotprod  aarch64 neoverse-n1 strix STRIX_ISA=dotprod"
    "strix-i8mm     aarch64 max         strix STRIX_ISA=i8mm"
    "strix-scalar   aarch64 cortex-a53  strix STRIX_ISA=scalar"
    "tract          aarch64 neoverse-n1 tract TRACT_CPU_AARCH64_KIND=neoverse"
    "armv7-neon     arm     cortex-a7   strix STRIX_ISA=armv7neon"
    "armv7-scalar   arm     cortex-a7   strix STRIX_ISA=scalar"
    "armv7-tract    arm     cortex-a7   tract TRACT_CPU_ARM32_NEON=true"
)
# qemu-user shows guest programs the host's /proc/cpuinfo, so tract cannot
# detect the emulated CPU: the kind (aarch64) and NEON (armv7) are set as the
# real CPU would make tract detect them.
labels=()
for p in "${PATHS[@]}"; do
    read -r label _ <<<"$p"
    if [[ -z ${ICOUNT_PATHS:-} || ,$ICOUNT_PATHS, == *,$label,* ]]; then labels+=("$label"); fi
done
((${#labels[@]})) || { echo "arm-icount: ICOUNT_PATHS=$ICOUNT_PATHS selects no path" >&2; exit 2; }

arches=()
for p in "${PATHS[@]}"; do
    read -r label arch _ <<<"$p"
    if [[ " ${labels[*]} " == *" $label "* && " ${arches[*]} " != *" $arch "* ]]; then arches+=("$arch"); fi
done

# --- builds -------------------------------------------------------------------
build() { [[ -n ${ICOUNT_NO_BUILD:-} ]] || cargo build --release -q "$@"; }
echo "arm-icount: building (host strix, cross strix-icount)" >&2
CARGO_TARGET_DIR=$HOST_TARGET build -p strix-tools --bin strix --bin strix-peers
STRIX=$HOST_TARGET/release/strix
# shellcheck source=lib/arm.sh
source scripts/lib/arm.sh   # static guests, time-limited runs
for arch in "${arches[@]}"; do
    t=aarch64-unknown-linux-gnu
    [[ $arch == arm ]] && t=armv7-unknown-linux-gnueabihf
    CARGO_TARGET_DIR=$CROSS_TARGET build -p strix-icount --target "$t"
done
BIN_A64=$CROSS_TARGET/aarch64-unknown-linux-gnu/release/strix-icount
BIN_A32=$CROSS_TARGET/armv7-unknown-linux-gnueabihf/release/strix-icount

# The plugin API version follows qemu's major version (README of qemu-icount).
plugin_src=${QEMU_ICOUNT_SRC:-../shared/tools/qemu-icount/icount.c}
qver=$(qemu-aarch64 --version | sed -nE '1s/.*version ([0-9]+)\..*/\1/p')
api=1; ((qver >= 9)) && api=2
plugin=$OUT/libicount.so
gcc -O2 -shared -fPIC -DAPI_VERSION=$api -o "$plugin" "$plugin_src"

# --- models -------------------------------------------------------------------
all_models=(mobilenet_v2 yolov8n fastestdet ultraface-rfb kws vww)
models=("$@")
((${#models[@]})) || models=("${all_models[@]}")
images=(fastestdet_0.jpg fastestdet_3.jpg astronaut.png camera.png faces_1.jpg faces_13.jpg)
images=("${images[@]/#/models/images/}")
wavs=(yes no silence noise)
wavs=("${wavs[@]/#/models/kws/}")
wavs=("${wavs[@]/%/_1000ms.wav}")

onnx_of() {
    case $1 in
    *.strix) [[ -f $1 ]] && echo "$1" || { echo "arm-icount: no such file $1" >&2; return 1; } ;;
    mobilenet_v2 | yolov8n) echo "$BENCH/$1.fp32.onnx" ;;
    fastestdet) echo models/fastestdet/FastestDet.onnx ;;
    ultraface-rfb) echo models/ultraface/version-RFB-320.onnx ;;
    kws) echo models/kws/kws_dscnn_f32.onnx ;;
    vww) echo models/vww/vww_96_float.onnx ;;
    *) echo "arm-icount: unknown model $1 (known: ${all_models[*]})" >&2; return 1 ;;
    esac
}
runs_of() {
    if [[ -n ${ICOUNT_RUNS:-} ]]; then echo "$ICOUNT_RUNS"; return; fi
    case $1 in
    yolov8n) echo 1 ;;
    mobilenet_v2 | fastestdet | ultraface-rfb) echo 2 ;;
    vww) echo 10 ;;
    kws) echo 20 ;;
    *) echo 5 ;;
    esac
}
for m in "${models[@]}"; do onnx_of "$m" >/dev/null; done

# Calibration as strix-peers: the bench models (random weights, no TOML) on
# its random [0, 1) .npy tensors, the others on the bundled images / clips.
bench_models=()
for m in "${models[@]}"; do
    if [[ $m == mobilenet_v2 || $m == yolov8n ]]; then bench_models+=("$m"); fi
done
if ((${#bench_models[@]})); then
    list=$(IFS=,; echo "${bench_models[*]}")
    "$HOST_TARGET/release/strix-peers" --out "$OUT" --bench-dir "$BENCH" --models "$list" --dump-calib >/dev/null
fi
for m in "${models[@]}"; do
    [[ $m == *.strix ]] && continue
    onnx=$(onnx_of "$m") dst=$OUT/$m.strix
    # Reconvert when the compiler or the model is newer than the .strix.
    if [[ -f $dst && $dst -nt $STRIX && $dst -nt $onnx ]]; then continue; fi
    case $m in
    mobilenet_v2 | yolov8n) calib=("$OUT/calib/$m"/random_*.npy) ;;
    kws) calib=("${wavs[@]}") ;;
    *) calib=("${images[@]}") ;;
    esac
    echo "arm-icount: converting $m" >&2
    "$STRIX" convert "$onnx" --calib "${calib[@]}" -o "$dst" >/dev/null
done

# --- counting -----------------------------------------------------------------
# count ARCH CPU ENV FILE RUNS ENGINE -> "instructions info-line"
count() {
    local arch=$1 cpu=$2 env=$3 file=$4 runs=$5 engine=$6 bin sysroot log ic
    if [[ $arch == aarch64 ]]; then bin=$BIN_A64 sysroot=/usr/aarch64-linux-gnu; else bin=$BIN_A32 sysroot=/usr/arm-linux-gnueabihf; fi
    log=$(mktemp) ic=$(mktemp)
    if ! env $env ICOUNT_OUT="$ic" timeout -k 10 "$QEMU_TIMEOUT" "qemu-$arch" -cpu "$cpu" -L "$sysroot" -plugin "$plugin" \
        "$bin" "$engine" "$file" "$runs" 2>"$log"; then
        echo "arm-icount: FAILED: $env qemu-$arch -cpu $cpu strix-icount $engine $file $runs:" >&2
        cat "$log" >&2
        rm -f "$log" "$ic"
        return 1
    fi
    echo "$(sed -nE 's/^icount: ([0-9]+)$/\1/p' "$ic") $(grep '^engine=' "$log")"
    rm -f "$log" "$ic"
}

declare -A result info
for m in "${models[@]}"; do
    runs=$(runs_of "$m")
    f=$OUT/$m.strix
    [[ $m == *.strix ]] && f=$m
    macs=$("$STRIX" inspect "$f" --json | sed -nE 's/^  "macs": ([0-9]+).*/\1/p')
    result[$m,macs]=${macs:-0}
    result[$m,runs]=$runs
    for p in "${PATHS[@]}"; do
        read -r label arch cpu engine env <<<"$p"
        [[ " ${labels[*]} " == *" $label "* ]] || continue
        file=$OUT/$m.strix
        [[ $m == *.strix ]] && file=$m
        if [[ $engine == tract ]]; then
            [[ $m == *.strix ]] && continue
            file=$(onnx_of "$m")
        fi
        t0=$SECONDS
        if ! base=$(count "$arch" "$cpu" "$env" "$file" 0 "$engine") ||
            ! full=$(count "$arch" "$cpu" "$env" "$file" "$runs" "$engine"); then
            result[$m,$label]=failed
            continue
        fi
        read -r c0 info0 <<<"$base"
        read -r cn infon <<<"$full"
        # Same warm-up output in both processes: the runs did the same work.
        [[ ${info0##*checksum=} == "${infon##*checksum=}" ]] ||
            echo "arm-icount: WARNING $m $label: checksums differ between 0 and $runs runs" >&2
        result[$m,$label]=$(((cn - c0) / runs))
        info[$m,$label]=$infon
        printf 'arm-icount: %-13s %-14s %14d instructions/inference  (%s; %d s)\n' \
            "$m" "$label" "${result[$m,$label]}" "$infon" $((SECONDS - t0)) >&2
    done
    # Every Strix path must give the same bytes (the int8 contract), hence
    # the same output checksum within one architecture.
    for arch in aarch64 arm; do
        sums=$(for p in "${PATHS[@]}"; do
            read -r label a _ engine _ <<<"$p"
            if [[ $a == "$arch" && $engine == strix && -n ${info[$m,$label]:-} ]]; then
                echo "${info[$m,$label]##*checksum=}"
            fi
        done | sort -u | wc -l)
        ((sums <= 1)) || echo "arm-icount: WARNING $m: Strix $arch paths give different outputs" >&2
    done
done

# --- report -------------------------------------------------------------------
fmt() { # instructions -> millions, or the failure word
    [[ $1 =~ ^[0-9]+$ ]] && awk -v n="$1" 'BEGIN { printf "%.2fM", n / 1e6 }' || echo "${1:--}"
}
ratio() { # a b -> a / b
    [[ $1 =~ ^[0-9]+$ && $2 =~ ^[1-9][0-9]*$ ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }' || echo "-"
}
echo
printf '%-13s %9s %4s' model MMAC N
for l in "${labels[@]}"; do printf ' %13s' "$l"; done
printf ' %14s %12s\n' "dotprod/tract" "dotprod/MAC"
for m in "${models[@]}"; do
    printf '%-13s %9.1f %4d' "$m" "$(awk -v n="${result[$m,macs]}" 'BEGIN { print n / 1e6 }')" "${result[$m,runs]}"
    for l in "${labels[@]}"; do printf ' %13s' "$(fmt "${result[$m,$l]:-}")"; done
    printf ' %14s %12s\n' "$(ratio "${result[$m,strix-dotprod]:-}" "${result[$m,tract]:-}")" \
        "$(ratio "${result[$m,strix-dotprod]:-}" "${result[$m,macs]}")"
done

json=$OUT/arm-icount.json
{
    printf '{\n  "qemu": "%s",\n  "unit": "guest instructions per inference",\n  "models": [\n' \
        "$(qemu-aarch64 --version | head -n 1)"
    sep=""
    for m in "${models[@]}"; do
        printf '%s    {"model": "%s", "macs": %s, "runs": %s, "paths": {' "$sep" "$m" "${result[$m,macs]}" "${result[$m,runs]}"
        psep=""
        for p in "${PATHS[@]}"; do
            read -r label arch cpu engine env <<<"$p"
            [[ " ${labels[*]} " == *" $label "* ]] || continue
            v=${result[$m,$label]:-}
            [[ $v =~ ^[0-9]+$ ]] || v=null
            printf '%s\n      "%s": {"instructions": %s, "qemu_cpu": "%s", "env": "%s"}' "$psep" "$label" "$v" "$cpu" "$env"
            psep=","
        done
        r=$(ratio "${result[$m,strix-dotprod]:-}" "${result[$m,tract]:-}")
        [[ $r == - ]] && r=null
        printf '},\n     "dotprod_over_tract": %s}' "$r"
        sep=$',\n'
    done
    printf '\n  ],\n  "seconds": %d\n}\n' $((SECONDS - start))
} >"$json"
echo
echo "arm-icount: $json; target dotprod/tract <= 0.5; total $((SECONDS - start)) s"
