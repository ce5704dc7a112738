#!/usr/bin/env bash
# ARM cost measured as guest instructions under qemu-user with the TCG plugin of
# ../shared/tools/qemu-icount (a benchmark, not a test). One script, four modes:
#
#   scripts/icount.sh models [MODEL...]     instructions per inference of whole models,
#                                           Strix per kernel path vs tract (below)
#   scripts/icount.sh gemm [ITERS]          one int8 NT gemm call (m=64, n=256, k=576)
#                                           per kernel path (default ITERS 10)
#   scripts/icount.sh ops [ITERS] [OPS...]  one call of each non-gemm int8 kernel
#                                           (kernels/examples/ops_icount.rs; default 4, all)
#   scripts/icount.sh sparse [ZERO%] [ITERS] [SHAPES...]
#                                           dense vs block-sparse conv layers on aarch64
#                                           (kernels/examples/sparse_icount.rs; default 80, 2)
#   scripts/icount.sh profile MODEL.strix [ISA] [SYMBOL]
#                                           where one model's instructions go on aarch64:
#                                           per function, per inference (ISA default dotprod:
#                                           neon runs on cortex-a53, dotprod on neoverse-n1,
#                                           i8mm on max); with SYMBOL (a substring of a
#                                           mangled name) also per instruction, annotated
#                                           from objdump (scripts/lib/qemu-profile.c)
#
# Every count is per call: (count with N runs - count with 0 runs) / N, so start-up,
# data generation and exit cancel out; checksums printed beside must agree across the
# paths of one architecture (the int8 contract). Guests are static and time-limited
# (scripts/lib/arm.sh). Env: QEMU_ICOUNT_SRC (plugin source), QEMU_TIMEOUT,
# CARGO_TARGET_DIR (kernel modes; default target/cross), ICOUNT_TARGETS (ops mode:
# "aarch64 armv7").
#
# models mode:
#
#   For each model: convert it to int8 .strix on the host (calibrated as
#   strix-peers does), then count the guest instructions of strix-icount under
#   qemu-user with /work/shared/tools/qemu-icount, per kernel path:
#     strix neon (cortex-a53), dotprod (neoverse-n1), i8mm (max), scalar (cortex-a53);
#     tract fp32 aarch64 (neoverse-n1, TRACT_CPU_AARCH64_KIND=neoverse);
#     strix armv7neon and scalar, tract fp32 armv7 (cortex-a7, TRACT_CPU_ARM32_NEON=1).
#   Instructions per inference = (count(N runs) - count(0 runs)) / N; both
#   processes do one warm-up inference, so loading, first-run set-up and exit
#   cancel out. Prints a table and writes $OUT/arm-icount.json.
#
#   Usage: scripts/icount.sh models [MODEL...]   (default: all of
#            mobilenet_v2 yolov8n fastestdet ultraface-rfb kws vww)
#          A MODEL ending in .strix is counted as it is (no conversion, no
#          tract column): e.g. an unpruned and a pruned build side by side,
#          `scripts/icount.sh models vww.strix vww-pruned.strix`.
#   Env:   ICOUNT_PATHS   comma-separated subset of the paths above, by label
#                         (default all: see PATHS below)
#          ICOUNT_RUNS    N for every model (default per model: 1 for yolov8n,
#                         2 for the ~0.3-0.6 GMAC models, 10-20 for the tiny ones)
#          STRIX_ICOUNT_OUT  work/output directory (default out/icount)
#          ICOUNT_NO_BUILD=1 use the binaries already built (no cargo)
#          CARGO_TARGET_DIR  host build (default target); cross builds go to
#                         STRIX_CROSS_TARGET_DIR (default target/cross)
#   Installs the cross tools when missing (scripts/lib/arm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
# shellcheck source=lib/arm.sh
source scripts/lib/arm.sh
arm_tools

# icount_plugin DIR: builds the counting plugin into DIR, prints its path. The
# plugin API version follows qemu's major version (README of qemu-icount).
icount_plugin() {
    local src=${QEMU_ICOUNT_SRC:-../shared/tools/qemu-icount/icount.c} qver api=1
    qver=$(qemu-aarch64 --version | sed -nE '1s/.*version ([0-9]+)\..*/\1/p')
    ((qver >= 9)) && api=2
    mkdir -p "$1"
    # (A failure exits the command substitution, and set -e the caller.)
    gcc -O2 -shared -fPIC -DAPI_VERSION=$api -o "$1/libicount.so" "$src" ||
        { echo "icount: cannot build the qemu plugin from $src (set QEMU_ICOUNT_SRC)" >&2; exit 1; }
    echo "$1/libicount.so"
}

mode_models() {
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
    ((${#labels[@]})) || { echo "icount models: ICOUNT_PATHS=$ICOUNT_PATHS selects no path" >&2; exit 2; }

    arches=()
    for p in "${PATHS[@]}"; do
        read -r label arch _ <<<"$p"
        if [[ " ${labels[*]} " == *" $label "* && " ${arches[*]} " != *" $arch "* ]]; then arches+=("$arch"); fi
    done

    # --- builds -------------------------------------------------------------------
    build() { [[ -n ${ICOUNT_NO_BUILD:-} ]] || cargo build --release -q "$@"; }
    echo "icount models: building (host strix, cross strix-icount)" >&2
    CARGO_TARGET_DIR=$HOST_TARGET build -p strix-tools --bin strix --bin strix-peers
    STRIX=$HOST_TARGET/release/strix
    for arch in "${arches[@]}"; do
        t=aarch64-unknown-linux-gnu
        [[ $arch == arm ]] && t=armv7-unknown-linux-gnueabihf
        CARGO_TARGET_DIR=$CROSS_TARGET build -p strix-icount --target "$t"
    done
    BIN_A64=$CROSS_TARGET/aarch64-unknown-linux-gnu/release/strix-icount
    BIN_A32=$CROSS_TARGET/armv7-unknown-linux-gnueabihf/release/strix-icount

    plugin=$(icount_plugin "$OUT")

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
        *.strix) [[ -f $1 ]] && echo "$1" || { echo "icount models: no such file $1" >&2; return 1; } ;;
        mobilenet_v2 | yolov8n) echo "$BENCH/$1.fp32.onnx" ;;
        fastestdet) echo models/fastestdet/FastestDet.onnx ;;
        ultraface-rfb) echo models/ultraface/version-RFB-320.onnx ;;
        kws) echo models/kws/kws_dscnn_f32.onnx ;;
        vww) echo models/vww/vww_96_float.onnx ;;
        *) echo "icount models: unknown model $1 (known: ${all_models[*]})" >&2; return 1 ;;
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
        echo "icount models: converting $m" >&2
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
            echo "icount models: FAILED: $env qemu-$arch -cpu $cpu strix-icount $engine $file $runs:" >&2
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
                echo "icount models: WARNING $m $label: checksums differ between 0 and $runs runs" >&2
            result[$m,$label]=$(((cn - c0) / runs))
            info[$m,$label]=$infon
            printf 'icount models: %-13s %-14s %14d instructions/inference  (%s; %d s)\n' \
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
            ((sums <= 1)) || echo "icount models: WARNING $m: Strix $arch paths give different outputs" >&2
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
    echo "icount models: $json; target dotprod/tract <= 0.5; total $((SECONDS - start)) s"
}

mode_gemm() {
    local iters=${1:-10}
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
    plugin=$(icount_plugin "$CARGO_TARGET_DIR/icount")
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
}

mode_ops() {
    iters=${1:-4}
    shift || true
    ops=("$@")
    ((${#ops[@]})) || ops=(dw_s2 dw_s1 dw_14 dw_7 vadd vmul requant maxpool avgpool)
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
    plugin=$(icount_plugin "$CARGO_TARGET_DIR/icount")
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
}

mode_sparse() {
    zero=${1:-80}
    iters=${2:-2}
    shift 2 || shift $#
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
    plugin=$(icount_plugin "$CARGO_TARGET_DIR/icount")
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
}

mode_profile() {
    local model=${1:-} isa=${2:-dotprod} sym=${3:-} cpu out runs=2
    [[ -f $model ]] || { echo "icount profile: give a .strix file (scripts/icount.sh models converts them into out/icount/)" >&2; exit 2; }
    case $isa in
    neon | scalar) cpu=cortex-a53 ;;
    dotprod) cpu=neoverse-n1 ;;
    i8mm) cpu=max ;;
    *) echo "icount profile: unknown ISA $isa (neon, dotprod, i8mm, scalar)" >&2; exit 2 ;;
    esac
    out=${STRIX_ICOUNT_OUT:-out/icount}
    mkdir -p "$out"
    CARGO_TARGET_DIR=${STRIX_CROSS_TARGET_DIR:-target/cross} cargo build --release -q -p strix-icount --target aarch64-unknown-linux-gnu
    local bin=${STRIX_CROSS_TARGET_DIR:-target/cross}/aarch64-unknown-linux-gnu/release/strix-icount
    local qver api=1
    qver=$(qemu-aarch64 --version | sed -nE '1s/.*version ([0-9]+)\..*/\1/p')
    ((qver >= 9)) && api=2
    gcc -O2 -shared -fPIC -DAPI_VERSION=$api -o "$out/libprofile.so" scripts/lib/qemu-profile.c
    local plugin=$out/libprofile.so
    [[ -n $sym ]] && plugin+=",pc=$sym"
    # runs + 1 inferences (one warm-up); loading is included, once.
    STRIX_ISA=$isa PROFILE_OUT="$out/profile.txt" timeout -k 10 "$QEMU_TIMEOUT" qemu-aarch64 -cpu "$cpu" \
        -L /usr/aarch64-linux-gnu -plugin "$plugin" "$bin" strix "$model" "$runs" >&2
    echo "instructions per inference by function ($isa on $cpu; loading counts once, divided as well):"
    grep -v ' 0x' "$out/profile.txt" | head -25 | awk -v r=$((runs + 1)) '{ printf "%10.2fM  %s\n", $1 / r / 1e6, $2 }'
    if [[ -n $sym ]]; then
        grep ' 0x' "$out/profile.txt" | sort -k2 >"$out/pcs.txt"
        local lo hi
        lo=$(head -1 "$out/pcs.txt" | awk '{print $2}')
        hi=$(tail -1 "$out/pcs.txt" | awk '{print $2}')
        echo "per instruction of *$sym* (thousands per inference):"
        aarch64-linux-gnu-objdump -d --no-show-raw-insn --start-address="$lo" --stop-address=$((hi + 4)) "$bin" |
            awk -v r=$((runs + 1)) 'NR == FNR { n[$2] = $1; next }
                /^ +[0-9a-f]+:/ { a = "0x" substr($1, 1, length($1) - 1); printf "%9.1fk %s\n", n[a] / r / 1e3, $0 }' "$out/pcs.txt" -
    fi
}

mode=${1:-}
shift || true
case $mode in
models | gemm | ops | sparse | profile) "mode_$mode" "$@" ;;
*)
    sed -n '2,23p' "$0" >&2
    echo "icount: give a mode: models, gemm, ops, sparse or profile" >&2
    exit 2
    ;;
esac
