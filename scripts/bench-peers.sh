#!/usr/bin/env bash
# Peer comparison (a benchmark, not a test): Strix int8 vs tract fp32 vs ONNX
# Runtime fp32/int8, interleaved in one run, at 1 and 2 threads.
#
#   scripts/bench-peers.sh [strix-peers options, e.g. --iters 60 --models kws,vww]
#
# Installs onnxruntime/onnx/numpy/pillow from PyPI when missing, points
# ORT_DYLIB_PATH at the wheel's libonnxruntime.so, writes the ORT int8 QDQ
# models to out/peers/ (scripts/quantize_for_ort.py, calibrated on the tensors
# Strix calibrates on), then builds and runs strix-peers in release.
# Results: the table on stdout and out/peers/peers.json.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${STRIX_PEERS_OUT:-out/peers}

if ! "$PY" -c 'import onnxruntime, onnx, numpy, PIL' 2>/dev/null; then
    echo "installing onnxruntime onnx numpy pillow (pip)" >&2
    "$PY" -m pip install --quiet onnxruntime onnx numpy pillow
fi

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    capi=$("$PY" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
    lib=$(ls "$capi"/libonnxruntime.so* 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$lib" ]; then
        echo "no libonnxruntime.so* in $capi: ORT columns will be skipped" >&2
    else
        export ORT_DYLIB_PATH="$lib"
    fi
fi
echo "ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-<unset>} (onnxruntime $("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)'))" >&2

cargo build --release -q -p strix-tools --bin strix-peers
BIN=${CARGO_TARGET_DIR:-target}/release/strix-peers

# The exact tensors Strix calibrates on (incl. KWS MFCCs), for ORT's quantizer.
# (The same options: --bench-dir and --models choose what is dumped too.)
"$BIN" --out "$OUT" --dump-calib "$@"
"$PY" scripts/quantize_for_ort.py --out "$OUT" --calib "$OUT/calib"

"$BIN" --out "$OUT" --json "$OUT/peers.json" "$@"
