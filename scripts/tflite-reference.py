#!/usr/bin/env python3
"""LiteRT's outputs for the TFLite import test (tools/tests/tflite_import.rs).

Runs each int8 .tflite on the int8 inputs Strix computed (written by the
test's ignored `write_reference_inputs`: NHWC codes stored as float .npy, one
per sample, with the FNV-1a hash of the codes beside each), with LiteRT's
reference kernels (OpResolverType.BUILTIN_REF) and with its default resolver
(XNNPACK), and writes tools/tests/data/tflite/<key>.json: per sample the int8
output (softmax) and, for the reference kernels, the int8 logits (the
softmax's input, read with experimental_preserve_all_tensors, which turns
the default delegates off: hence none for XNNPACK).

Also the synthetic model of scripts/tflite-synthetic.py (written to
OUT_DIR/synthetic.tflite): four seeded random int8 inputs, stored in
synthetic.json with both resolvers' outputs.

Usage: scripts/tflite-reference.sh (makes the venv, the inputs, then this).
       tflite-reference.py INPUT_DIR OUT_DIR
"""
import json
import os
import re
import sys

import numpy as np
from ai_edge_litert import interpreter as litert

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CASES = {
    "vww": ("models/vww/vww_96_int8.tflite", ["person", "no_person"]),
    "kws": ("models/kws/kws_dscnn_int8_reference.tflite", ["yes", "no", "silence", "noise"]),
}


def write_json(path, doc):
    """Indented, with each list of numbers on one line."""
    text = json.dumps(doc, indent=1)
    text = re.sub(r"\[[-0-9.e,\s]*\]", lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text)
    with open(path, "w") as f:
        f.write(text + "\n")


def litert_version():
    from importlib.metadata import version

    return version("ai-edge-litert")


def run(model, x, resolver, preserve):
    """Output (int8, flat), logits (the SOFTMAX input, when `preserve`) and
    the output quantization."""
    it = litert.Interpreter(
        model_path=model,
        experimental_op_resolver_type=resolver,
        experimental_preserve_all_tensors=preserve,
    )
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    assert inp["dtype"] == np.int8, inp
    it.set_tensor(inp["index"], x.reshape(inp["shape"]))
    it.invoke()
    out = it.get_output_details()[0]
    y = it.get_tensor(out["index"]).reshape(-1)
    logits = None
    if preserve:
        ops = it._get_ops_details()
        sm = [o for o in ops if o["op_name"] == "SOFTMAX"]
        assert len(sm) == 1, ops
        logits = it.get_tensor(int(sm[0]["inputs"][0])).reshape(-1)
    q = out["quantization"]
    return y, logits, {"scale": float(q[0]), "zero_point": int(q[1])}


def intermediates(model, x):
    """Every int8 activation of the reference run, by tensor name (flat,
    TFLite's NHWC order)."""
    it = litert.Interpreter(
        model_path=model,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    out = {}
    for d in it.get_tensor_details():
        if d["dtype"] == np.int8 and "/" not in d["name"] and d["name"] != "input":
            out[d["name"]] = it.get_tensor(d["index"]).reshape(-1).tolist()
    return out


def synthetic(out_dir):
    import subprocess

    model = os.path.join(out_dir, "synthetic.tflite")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/tflite-synthetic.py"), model], check=True)
    it = litert.Interpreter(model_path=model)
    inp = it.get_input_details()[0]
    shape = [int(d) for d in inp["shape"]]
    cases = []
    for seed in range(4):
        x = np.random.default_rng(seed).integers(-128, 128, size=shape).astype(np.int8)
        ref_y, _, out_q = run(model, x, litert.OpResolverType.BUILTIN_REF, False)
        xnn_y, _, _ = run(model, x, litert.OpResolverType.AUTO, False)
        cases.append(
            {
                "name": f"seed{seed}",
                "input": x.reshape(-1).tolist(),
                "reference": {"output": ref_y.tolist(), "tensors": intermediates(model, x)},
                "xnnpack": {"output": xnn_y.tolist()},
            }
        )
        print(f"synthetic/seed{seed}: reference {ref_y.tolist()} xnnpack {xnn_y.tolist()}")
    q = inp["quantization"]
    doc = {
        "model": "tools/tests/data/tflite/synthetic.tflite",
        "generator": "scripts/tflite-reference.sh (scripts/tflite-synthetic.py, scripts/tflite-reference.py)",
        "litert": litert_version(),
        "input_shape_nhwc": shape,
        "input_quant": {"scale": float(q[0]), "zero_point": int(q[1])},
        "output_quant": out_q,
        "cases": cases,
    }
    write_json(os.path.join(out_dir, "synthetic.json"), doc)


def main():
    inputs, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    synthetic(out_dir)
    for key, (rel, names) in CASES.items():
        model = os.path.join(ROOT, rel)
        cases = []
        out_q = None
        for name in names:
            x = np.load(os.path.join(inputs, key, name + ".npy"))
            assert np.all(x == np.round(x)) and x.min() >= -128 and x.max() <= 127
            x = x.astype(np.int8)
            with open(os.path.join(inputs, key, name + ".fnv1a")) as f:
                h = f.read().strip()
            ref_y, ref_l, out_q = run(model, x, litert.OpResolverType.BUILTIN_REF, True)
            xnn_y, _, _ = run(model, x, litert.OpResolverType.AUTO, False)
            cases.append(
                {
                    "name": name,
                    "input_fnv1a": h,
                    "reference": {"logits": ref_l.tolist(), "output": ref_y.tolist()},
                    "xnnpack": {"logits": None, "output": xnn_y.tolist()},
                }
            )
            print(f"{key}/{name}: reference {ref_y.tolist()} xnnpack {xnn_y.tolist()}")
        doc = {
            "model": rel,
            "generator": "scripts/tflite-reference.sh (scripts/tflite-reference.py)",
            "litert": litert_version(),
            "output_quant": out_q,
            "cases": cases,
        }
        write_json(os.path.join(out_dir, key + ".json"), doc)


if __name__ == "__main__":
    main()
