#!/usr/bin/env bash
# Converts every bundled model (and the benchmark-only models when present)
# with two `strix` binaries and compares the .strix files byte for byte: a
# refactoring of the compiler must not change a single output byte.
#
#   scripts/check-convert-identical.sh BEFORE_STRIX AFTER_STRIX [BENCH_DIR]
#
# BENCH_DIR holds mobilenet_v2.fp32.onnx and yolov8n.fp32.onnx (default:
# ../shared/models/bench beside the repository; skipped when absent); they
# are calibrated on fixed pseudo-random .npy tensors, as strix-peers does.
# Each model is converted int8 (default), and also --fp32; a few also with
# --no-sparse, --f16-weights, --method minmax, --no-cle,
# --keep-dead-channels and --prune, so every path of the compiler is covered.
# Exits 1 on the first difference (both files are kept in the work dir).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    echo "usage: $0 BEFORE_STRIX AFTER_STRIX [BENCH_DIR]" >&2
    exit 2
fi
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
BENCH=${3:-../shared/models/bench}
WORK=${STRIX_CHECK_DIR:-$(mktemp -d /tmp/strix-identical.XXXXXX)}
mkdir -p "$WORK"
echo "work dir: $WORK" >&2

M=models
IMAGES=("$M/images/fastestdet_0.jpg" "$M/images/fastestdet_3.jpg" "$M/images/astronaut.png"
        "$M/images/camera.png" "$M/images/faces_1.jpg" "$M/images/faces_13.jpg")
WAVS=("$M/kws/yes_1000ms.wav" "$M/kws/no_1000ms.wav" "$M/kws/silence_1000ms.wav"
      "$M/kws/noise_1000ms.wav")

fails=0
n=0
# check TAG [ENV=VALUE ...] -- STRIX-CONVERT-ARGS...: converts with both
# binaries (same arguments, same environment) and compares.
check() {
    local tag=$1
    shift
    local envs=()
    while [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    shift
    local a="$WORK/$tag.before.strix" b="$WORK/$tag.after.strix"
    env "${envs[@]}" "$BEFORE" convert "$@" -o "$a" >"$WORK/$tag.before.log" 2>&1 ||
        { echo "FAIL $tag: the before binary failed (see $WORK/$tag.before.log)"; fails=$((fails + 1)); return; }
    env "${envs[@]}" "$AFTER" convert "$@" -o "$b" >"$WORK/$tag.after.log" 2>&1 ||
        { echo "FAIL $tag: the after binary failed (see $WORK/$tag.after.log)"; fails=$((fails + 1)); return; }
    n=$((n + 1))
    if cmp -s "$a" "$b"; then
        echo "same $tag ($(stat -c %s "$a") bytes)"
    else
        echo "DIFF $tag: $a $b"
        fails=$((fails + 1))
    fi
}

# Fixed pseudo-random tensors in [0, 1) of `shape` as .npy (stdlib only).
npy() {
    python3 - "$@" <<'EOF'
import random, struct, sys
path, seed, shape = sys.argv[1], int(sys.argv[2]), [int(d) for d in sys.argv[3:]]
n = 1
for d in shape:
    n *= d
rng = random.Random(seed)
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % "".join(f"{d}, " for d in shape)
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<%df" % n, *(rng.random() for _ in range(n))))
EOF
}

for spec in "fastestdet fastestdet/FastestDet.onnx img" \
            "ultraface-rfb ultraface/version-RFB-320.onnx img" \
            "ultraface-slim ultraface/version-slim-320.onnx img" \
            "vww vww/vww_96_float.onnx img" \
            "kws kws/kws_dscnn_f32.onnx wav"; do
    read -r name onnx kind <<<"$spec"
    if [ "$kind" = img ]; then calib=("${IMAGES[@]}"); else calib=("${WAVS[@]}"); fi
    check "$name" -- "$M/$onnx" --calib "${calib[@]}"
    check "$name-fp32" -- "$M/$onnx" --fp32
done
check vad-fp32 -- "$M/vad/silero_vad_16k_static.onnx" --fp32
check vad-fp32-f16 -- "$M/vad/silero_vad_16k_static.onnx" --fp32 --f16-weights
check fastestdet-minmax -- "$M/fastestdet/FastestDet.onnx" --calib "${IMAGES[@]}" --method minmax
check fastestdet-nosparse -- "$M/fastestdet/FastestDet.onnx" --calib "${IMAGES[@]}" --no-sparse
check vww-f16 -- "$M/vww/vww_96_float.onnx" --calib "${IMAGES[@]}" --f16-weights
check vww-nocle -- "$M/vww/vww_96_float.onnx" --calib "${IMAGES[@]}" --no-cle
check vww-keepdead -- "$M/vww/vww_96_float.onnx" --calib "${IMAGES[@]}" --keep-dead-channels
check kws-prune -- "$M/kws/kws_dscnn_f32.onnx" --calib "${WAVS[@]}" \
    --prune --prune-budget top1=0.25 --prune-ratios 0.25,0.5 --prune-block 0.6
# Concats, channel shuffles, splits and residual adds on the way of the pruning.
check fastestdet-prune -- "$M/fastestdet/FastestDet.onnx" --calib "${IMAGES[@]}" \
    --prune --prune-budget map50=0.5 --prune-ratios 0.25

if [ -d "$BENCH" ]; then
    for spec in "mobilenet_v2 1 3 224 224" "yolov8n 1 3 320 320"; do
        read -r name shape <<<"$spec"
        files=()
        for i in 0 1; do
            f="$WORK/$name.random_$i.npy"
            [ -f "$f" ] || npy "$f" "$i" $shape
            files+=("$f")
        done
        check "$name" -- "$BENCH/$name.fp32.onnx" --calib "${files[@]}"
        check "$name-fp32" -- "$BENCH/$name.fp32.onnx" --fp32
    done
else
    echo "no $BENCH: mobilenet_v2 and yolov8n skipped" >&2
fi

echo "$n conversions compared, $fails failed"
[ "$fails" -eq 0 ]
