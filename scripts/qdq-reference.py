#!/usr/bin/env python3
"""ONNX Runtime's int8 outputs for tools/tests/qdq_import.rs (run by scripts/qdq-reference.sh).

Usage: qdq-reference.py INPUTS OUT

INPUTS/<key>/model.txt names the QDQ model; INPUTS/<key>/<sample>.npy are the
f32 NCHW inputs Strix computed (already on the model's input grid, so ORT's
QuantizeLinear makes the same codes) and <sample>.fnv1a their codes' hash.
Writes OUT/<key>.json: per sample the output's uint8 codes (every `stride`-th
element, hex, two digits each) of ORT's CPU provider with its default graph
optimizations (QDQ nodes fused into QLinearConv & co., as deployed).
"""

import glob
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

# Every stride-th output element is kept: YOLOv8n's 1x84x2100 output would
# make a large file.
STRIDES = {"mobilenet_v2": 1, "yolov8n": 42, "fastestdet": 1}
# One early layer per model whose codes are kept too (every 97th, first two
# samples), for a per-layer check before rounding differences compound.
LAYERS = {"mobilenet_v2": "/features/features.0/features.0.2/Clip_output_0"}
LAYER_STRIDE = 97


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    ort.set_default_logger_severity(3)
    for d in sorted(glob.glob(os.path.join(src, "*"))):
        key = os.path.basename(d)
        model = open(os.path.join(d, "model.txt")).read().strip()
        layer = LAYERS.get(key)
        lm = onnx.load(model)
        if layer:
            lm.graph.output.append(
                onnx.helper.make_tensor_value_info(layer + "_QuantizeLinear_Output", onnx.TensorProto.UINT8, None)
            )
        sess = ort.InferenceSession(lm.SerializeToString(), providers=["CPUExecutionProvider"])
        fp32_path = model.replace(".int8.", ".fp32.")
        fp32 = (
            ort.InferenceSession(fp32_path, providers=["CPUExecutionProvider"])
            if fp32_path != model and os.path.exists(fp32_path)
            else None
        )
        m = onnx.load(model)
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        out_name = sess.get_outputs()[0].name
        # The output's quantization: the final DequantizeLinear's.
        dq = next(n for n in m.graph.node if n.output[0] == out_name)
        assert dq.op_type == "DequantizeLinear", dq.op_type
        scale = float(inits[dq.input[1]])
        zp = int(inits[dq.input[2]])
        stride = STRIDES.get(key, 1)
        cases = []
        for p in sorted(glob.glob(os.path.join(d, "*.npy"))):
            name = os.path.splitext(os.path.basename(p))[0]
            x = np.load(p).astype(np.float32)
            outs = sess.run(None, {sess.get_inputs()[0].name: x})
            y = outs[0].reshape(-1)
            codes = np.clip(np.rint(y / scale) + zp, 0, 255).astype(np.uint8)
            assert np.allclose((codes.astype(np.float32) - zp) * scale, y, atol=scale * 1e-3)
            case = {
                "name": name,
                "input_fnv1a": open(p[:-4] + ".fnv1a").read().strip(),
                "len": int(y.size),
                "codes_hex": codes[::stride].tobytes().hex(),
            }
            if fp32 is not None:
                # The fp32 model's output on the same grid, unclipped (int16).
                f = fp32.run(None, {fp32.get_inputs()[0].name: x})[0].reshape(-1)
                f = np.clip(np.rint(f / scale) + zp, -32768, 32767).astype(">i2")
                case["fp32_codes_i16_hex"] = f[::stride].tobytes().hex()
            if layer and len(cases) < 2:
                case["layer"] = {
                    "name": layer,
                    "stride": LAYER_STRIDE,
                    "codes_hex": outs[1].reshape(-1)[::LAYER_STRIDE].tobytes().hex(),
                }
            cases.append(case)
        doc = {
            "model": os.path.basename(model),
            "generator": "scripts/qdq-reference.sh (scripts/qdq-reference.py)",
            "onnxruntime": ort.__version__,
            "output": out_name,
            "output_quant_uint8": {"scale": scale, "zero_point": zp},
            "stride": stride,
            "cases": cases,
        }
        with open(os.path.join(out, f"{key}.json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"  {key}: {len(cases)} samples -> {os.path.join(out, key + '.json')}")


if __name__ == "__main__":
    main()
