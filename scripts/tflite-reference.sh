#!/usr/bin/env bash
# Regenerates tools/tests/data/tflite/*.json (LiteRT's outputs for the TFLite
# import test): a venv with ai-edge-litert + numpy in the target dir (made
# only when missing), the int8 inputs from Strix's own preprocessing, then
# scripts/tflite-reference.py. A dev tool: Strix never needs LiteRT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=$target/litert-venv
if ! command -v python3 >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update && $sudo apt-get install -y python3 python3-venv
fi
if ! "$venv/bin/python" -c 'import ai_edge_litert, numpy' 2>/dev/null; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update && $sudo apt-get install -y python3-venv
    fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet ai-edge-litert numpy
fi
inputs=$target/tflite-ref-inputs
rm -rf "$inputs"; mkdir -p "$inputs"
(cd "$root" && STRIX_TFLITE_REF_DIR=$inputs cargo test --release -p strix-tools \
    --test tflite_import -- --ignored write_reference_inputs)
"$venv/bin/python" "$root/scripts/tflite-reference.py" "$inputs" "$root/tools/tests/data/tflite"
