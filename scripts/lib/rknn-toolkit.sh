# shellcheck shell=bash
# Installs Rockchip's rknn-toolkit2 (the NPU compiler and its x86 simulator) into a
# Python venv, idempotently, WITHOUT torch (sourced by scripts/test-npu.sh; or run
# directly: `scripts/lib/rknn-toolkit.sh [VENV_DIR]` prints the venv's python).
#
# Why no torch: rknn-toolkit2 2.5.0 declares torch<=2.4.0 (several GB with its CUDA
# wheels) but its ONNX path only *imports* torch (PyTorch front end, GDQ quantizer,
# one `@torch.no_grad()` at module level). `strix convert --board` puts an import-only
# stand-in first on PYTHONPATH (tools/src/npu/torch_stub.py): any real call into
# torch raises, so a toolkit path that needs torch fails loudly.
#
# Why these pins (measured on Python 3.11.7, Debian, Dec 2026):
#   rknn-toolkit2==2.5.0 --no-deps : cp311 manylinux x86_64 wheel, 38 MB
#   numpy==1.26.4, protobuf==4.25.4 : the toolkit's upper bounds
#   onnx==1.16.1                    : inside the toolkit's range
#   onnxruntime==1.20.1             : constant folding; 1.21+ wants protobuf 5+/numpy 2
#   opencv-python-headless==4.11.0.86 : imported at load (4.12 wants numpy 2)
#   scipy, tqdm                     : imported at load
# Not installed (not imported on the ONNX path): torch, psutil, ruamel.yaml, fast-histogram.
# The venv is about 700 MB on disk; a cold install takes about 30 s with a warm pip cache.

RKNN_TOOLKIT_PKGS=(numpy==1.26.4 protobuf==4.25.4 onnx==1.16.1 onnxruntime==1.20.1
    opencv-python-headless==4.11.0.86 'scipy<1.18' 'tqdm>=4.64.1')

# rknn_toolkit_install VENV_DIR: creates VENV_DIR with the toolkit unless it already
# imports there; prints nothing on success, the failing step on error.
rknn_toolkit_install() {
    local venv=$1 py
    py=$(command -v python3.11 || command -v python3 || true)
    if [[ -z $py ]]; then
        echo "rknn-toolkit: python3 is missing (apt-get install python3 python3-venv)" >&2
        return 1
    fi
    if [[ -x $venv/bin/python ]] && rknn_toolkit_check "$venv/bin/python"; then
        return 0
    fi
    local ver
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ $ver != 3.11 ]]; then
        echo "rknn-toolkit: rknn-toolkit2 2.5.0 ships cp311 wheels only; $py is Python $ver" >&2
        echo "rknn-toolkit: install Python 3.11 (e.g. 'uv python install 3.11') and put python3.11 on PATH" >&2
        return 1
    fi
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
        local SUDO=""
        [[ $(id -u) -eq 0 ]] || SUDO=sudo
        echo "rknn-toolkit: apt-get install python3-venv" >&2
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    "$py" -m venv "$venv" || return 1
    # Dependencies first, then the toolkit without its declared ones (torch).
    "$venv/bin/pip" install -q --disable-pip-version-check "${RKNN_TOOLKIT_PKGS[@]}" || return 1
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps rknn-toolkit2==2.5.0 || return 1
    rknn_toolkit_check "$venv/bin/python"
}

# rknn_toolkit_check PYTHON: the toolkit imports with the torch stand-in.
rknn_toolkit_check() {
    local stub
    stub=$(mktemp -d)
    mkdir -p "$stub/torch"
    cp "$(dirname "${BASH_SOURCE[0]}")/../../tools/src/npu/torch_stub.py" "$stub/torch/__init__.py"
    PYTHONPATH=$stub "$1" -c 'from rknn.api import RKNN' >/dev/null 2>&1
    local rc=$?
    rm -rf "$stub"
    return $rc
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    venv=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/strix/rknn-venv}
    rknn_toolkit_install "$venv"
    echo "$venv/bin/python"
fi
