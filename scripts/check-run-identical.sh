#!/usr/bin/env bash
# Checks that two strix binaries run the same .strix files to the same bytes:
# the runtime refactor guard (a change of the executor must not change any
# output). The models are converted ONCE, with the first binary, so only the
# runtimes differ (scripts/check-convert-identical.sh checks the converter).
#
# Models: KWS (calibrated on models/kws/*.wav), VWW, FastestDet and UltraFace
# RFB-320 (on models/images/*), each as int8 and as --fp32 (the f32 ops); every model runs
# on every bundled sample of its kind (models/images/*.jpg|png|bmp,
# models/kws/*.wav), on the detected kernel path and with STRIX_ISA=scalar.
# Compared: the `strix run` JSON text and every output tensor written by
# `--dump` (.npy, byte for byte).
#
# Usage: scripts/check-run-identical.sh BEFORE_STRIX AFTER_STRIX
#   e.g. scripts/check-run-identical.sh /tmp/strix-before target/release/strix
# Env: KEEP=1 keeps the work directory (printed at the end).
set -euo pipefail
if (($# != 2)); then
    sed -n '2,/^set/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
before=$(realpath "$1") after=$(realpath "$2")
for b in "$before" "$after"; do
    [[ -x $b ]] || { echo "check-run-identical: $b is not an executable" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
work=$(mktemp -d)
if [[ ${KEEP:-0} == 1 ]]; then
    trap 'echo "check-run-identical: work directory $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi

shopt -s nullglob
images=(models/images/*.jpg models/images/*.png models/vww/*.bmp)
wavs=(models/kws/*.wav)
# name | onnx | calibration glob kind | samples kind
models=(
    "kws|models/kws/kws_dscnn_f32.onnx|wav"
    "vww|models/vww/vww_96_float.onnx|image"
    "fastestdet|models/fastestdet/FastestDet.onnx|image"
    "ultraface|models/ultraface/version-RFB-320.onnx|image"
)

fail=0 runs=0
for entry in "${models[@]}"; do
    IFS='|' read -r name onnx kind <<<"$entry"
    if [[ $kind == wav ]]; then samples=("${wavs[@]}"); else samples=("${images[@]}"); fi
    for prec in int8 fp32; do
        model=$work/$name-$prec.strix
        flags=()
        [[ $prec == fp32 ]] && flags=(--fp32)
        echo "check-run-identical: converting $name ($prec) with $before"
        "$before" convert "$onnx" --calib "${samples[@]}" "${flags[@]}" -o "$model" >"$work/convert.log" 2>&1 ||
            { cat "$work/convert.log" >&2; echo "check-run-identical: convert failed" >&2; exit 1; }
        for isa in detected scalar; do
            for s in "${samples[@]}"; do
                for side in before after; do
                    bin=$before
                    [[ $side == after ]] && bin=$after
                    out=$work/$name-$prec-$isa-$(basename "$s")-$side
                    mkdir -p "$out.dump"
                    if [[ $isa == scalar ]]; then
                        STRIX_ISA=scalar "$bin" run "$model" "$s" --dump "$out.dump" >"$out.json" 2>"$out.err" || true
                    else
                        "$bin" run "$model" "$s" --dump "$out.dump" >"$out.json" 2>"$out.err" || true
                    fi
                done
                base=$work/$name-$prec-$isa-$(basename "$s")
                runs=$((runs + 1))
                npys=("$base-before.dump"/*.npy)
                if ! [[ -s $base-before.json ]] || ((${#npys[@]} == 0)); then
                    echo "MISSING $name $prec $isa $s: the first binary printed or dumped nothing:" >&2
                    cat "$base-before.err" >&2
                    fail=1
                elif ! cmp -s "$base-before.json" "$base-after.json" ||
                    ! diff -r "$base-before.dump" "$base-after.dump" >/dev/null; then
                    echo "DIFFERENT $name $prec $isa $s" >&2
                    diff "$base-before.json" "$base-after.json" | head -10 >&2 || true
                    diff -r "$base-before.dump" "$base-after.dump" | head -5 >&2 || true
                    cat "$base-after.err" >&2
                    fail=1
                fi
            done
        done
    done
done
if ((fail)); then
    echo "check-run-identical: FAILED (see above)" >&2
    exit 1
fi
echo "check-run-identical: $runs runs identical (JSON text and dumped tensors)"
