#!/usr/bin/env python3
"""Quantize the bundled fp32 models for ONNX Runtime (the int8 peer of strix-peers).

For FastestDet, UltraFace RFB-320, KWS DS-CNN and VWW this writes
`OUT/<name>.fp32.onnx` (the original less initializers listed as graph inputs,
which would stop ORT's constant folding) and `OUT/<name>.int8.onnx`: onnxruntime.quantization.quantize_static, QDQ format,
per-channel int8 weights, uint8 activations with reduce_range (the settings of
the shipped bench/*.int8.onnx, so all ORT int8 models are quantized alike),
MinMax calibration.

Calibration inputs, in order of preference:
  1. `CALIB/<name>/*.npy`, written by `strix-peers --dump-calib CALIB`: exactly
     the tensors Strix calibrates on (images preprocessed by the model TOML,
     KWS MFCCs computed from models/kws/*.wav by Strix's front end);
  2. otherwise the repo's models/images/* preprocessed here as the TOML beside
     the model says (PIL bilinear resize, so close to, not bit-equal with,
     Strix's resize); for KWS, random-normal tensors scaled like MFCCs (said so
     on stdout).

Usage: scripts/quantize_for_ort.py [--out out/peers] [--calib out/peers/calib] [--force]
"""

import argparse
import glob
import os
import sys
import tomllib

import numpy as np
import onnx
import onnxruntime
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
IMAGES = [
    "fastestdet_0.jpg",
    "fastestdet_3.jpg",
    "astronaut.png",
    "camera.png",
    "faces_1.jpg",
    "faces_13.jpg",
]
MODELS = {
    "fastestdet": "models/fastestdet/FastestDet.onnx",
    "ultraface-rfb": "models/ultraface/version-RFB-320.onnx",
    "kws": "models/kws/kws_dscnn_f32.onnx",
    "vww": "models/vww/vww_96_float.onnx",
}


def drop_initializer_inputs(model):
    """Initializers listed as graph inputs (old exporters, UltraFace) stop ORT's
    constant folding; remove them so ORT gets the model in its best form."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return model


def input_info(model):
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if len(ins) != 1:
        sys.exit(f"expected one input, found {len(ins)}")
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in ins[0].type.tensor_type.shape.dim]
    return ins[0].name, dims


def preprocess_image(path, spec, shape):
    from PIL import Image

    _, c, h, w = shape
    img = Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)  # HWC, RGB
    color = spec.get("color", "rgb")
    if color == "bgr":
        x = x[:, :, ::-1]
    elif color == "gray":
        x = (0.299 * x[:, :, 0] + 0.587 * x[:, :, 1] + 0.114 * x[:, :, 2])[:, :, None]
    mean = np.array(spec.get("mean", [0.0] * c), dtype=np.float32)[:c]
    scale = np.array(spec.get("scale", [1.0] * c), dtype=np.float32)[:c]
    x = (x - mean) * scale
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)


def calibration_samples(name, onnx_path, shape, calib_dir):
    npys = sorted(glob.glob(os.path.join(calib_dir, name, "*.npy"))) if calib_dir else []
    if npys:
        print(f"  {name}: calibrating on {len(npys)} tensors from {os.path.join(calib_dir, name)}")
        return [np.load(p).astype(np.float32).reshape(shape) for p in npys]
    toml_path = os.path.splitext(onnx_path)[0] + ".toml"
    with open(toml_path, "rb") as f:
        spec = tomllib.load(f).get("input", {})
    if spec.get("kind") == "image":
        paths = [os.path.join(ROOT, "models/images", n) for n in IMAGES]
        print(f"  {name}: calibrating on {len(paths)} repo images preprocessed here per {toml_path}")
        return [preprocess_image(p, spec, shape) for p in paths]
    # KWS without Strix's MFCCs: random-normal inputs at an MFCC-like scale.
    rng = np.random.default_rng(0)
    print(f"  {name}: NOTE calibrating on 8 random-normal tensors scaled like MFCCs (no .npy features found)")
    out = []
    for _ in range(8):
        x = rng.standard_normal(shape).astype(np.float32) * 10.0
        x[..., 0] = x[..., 0] * 5.0 - 200.0  # c0 (log energy) is large and negative
        out.append(x)
    return out


class Reader(CalibrationDataReader):
    def __init__(self, name, samples):
        self.it = iter([{name: s} for s in samples])

    def get_next(self):
        return next(self.it, None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "out/peers"))
    ap.add_argument("--calib", default=None, help="directory of per-model .npy calibration tensors")
    ap.add_argument("--force", action="store_true", help="re-quantize even if the output exists")
    ap.add_argument("models", nargs="*", default=list(MODELS), help="subset of " + ", ".join(MODELS))
    a = ap.parse_args()
    calib_dir = a.calib or os.path.join(a.out, "calib")
    os.makedirs(a.out, exist_ok=True)
    onnxruntime.set_default_logger_severity(3)
    for name in a.models:
        src = os.path.join(ROOT, MODELS[name])
        dst = os.path.join(a.out, f"{name}.int8.onnx")
        fp32 = os.path.join(a.out, f"{name}.fp32.onnx")
        if (
            os.path.exists(dst)
            and os.path.exists(fp32)
            and not a.force
            and os.path.getmtime(dst) >= os.path.getmtime(src)
        ):
            print(f"  {name}: {dst} is up to date")
            continue
        model = drop_initializer_inputs(onnx.load(src))
        # The fp32 model ORT runs: the original, less initializers-as-inputs.
        onnx.save(model, fp32)
        # Per-channel QDQ needs opset >= 13: convert properly rather than let the
        # quantizer bump the version number alone (UltraFace is opset 9).
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 13:
            model = version_converter.convert_version(model, 13)
        tmp = os.path.join(a.out, f"{name}.fp32-opset13.onnx")
        onnx.save(model, tmp)
        in_name, shape = input_info(model)
        samples = calibration_samples(name, src, shape, calib_dir)
        quantize_static(
            tmp,
            dst,
            Reader(in_name, samples),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        os.remove(tmp)
        print(f"  {name}: wrote {dst} ({os.path.getsize(dst)} bytes, from opset {opset})")


if __name__ == "__main__":
    main()
