#!/usr/bin/env bash
# Regenerates tools/tests/data/qdq/*.json (ONNX Runtime's outputs for the QDQ
# import test, tools/tests/qdq_import.rs): a venv with onnxruntime + onnx + numpy in
# the target dir (made only when missing), the inputs from Strix's own
# preprocessing (snapped to the model's input quantization), then
# scripts/qdq-reference.py. A dev tool: Strix never needs ONNX Runtime.
# The models: tools/tests/data/qdq/<key>.int8.onnx when kept there (FastestDet),
# else $STRIX_BENCH_MODELS (default /work/shared/models/bench); all made by
# scripts/quantize_for_ort.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=$target/ort-venv
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v python3 >/dev/null; then
    $sudo apt-get update && $sudo apt-get install -y python3 python3-venv
fi
if ! "$venv/bin/python" -c 'import onnxruntime, numpy, onnx' 2>/dev/null; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        $sudo apt-get update && $sudo apt-get install -y python3-venv
    fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet onnxruntime numpy onnx
fi
inputs=$target/qdq-ref-inputs
rm -rf "$inputs"; mkdir -p "$inputs"
(cd "$root" && STRIX_QDQ_REF_DIR=$inputs cargo test --release -p strix-tools \
    --test qdq_import -- --ignored write_reference_inputs)
"$venv/bin/python" "$root/scripts/qdq-reference.py" "$inputs" "$root/tools/tests/data/qdq"
