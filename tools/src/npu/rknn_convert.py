"""Compile the NPU part of a model with rknn-toolkit2 (run by `strix convert --board`).

Usage: python rknn_convert.py JOB.json
JOB: {"onnx", "board", "inputs": [names], "input_shapes": [[...]], "outputs": [names] | null,
      "dataset": "list.txt", "rknn": "out.rknn", "simulate": [[npy per input], ...], "sim_dir"}
Writes the .rknn blob; with "simulate", runs the toolkit's x86 simulator on each sample
and saves sim_<sample>_<output>.npy (float32) into sim_dir. Prints one JSON line
{"ok": true, "outputs": [[shape], ...]} on success; exits 1 with a message otherwise.
"""
import json
import sys

import numpy as np


def fail(msg):
    sys.stderr.write("rknn_convert: %s\n" % msg)
    sys.exit(1)


job = json.load(open(sys.argv[1]))

# rknn-toolkit2 2.5.0 folds Pad into Conv by writing into weight arrays that
# onnx.numpy_helper returns read-only ("assignment destination is read-only"
# on FastestDet): hand it writable copies.
import onnx.numpy_helper as _nh  # noqa: E402

_to_array = _nh.to_array
_nh.to_array = lambda *a, **k: np.array(_to_array(*a, **k))

from rknn.api import RKNN  # noqa: E402

r = RKNN(verbose=False)
channels = [s[1] if len(s) == 4 else 1 for s in job["input_shapes"]]
# Strix feeds its own preprocessed float32 tensor: no mean/std in the NPU model.
r.config(
    mean_values=[[0.0] * c for c in channels],
    std_values=[[1.0] * c for c in channels],
    target_platform=job["board"],
)
if r.load_onnx(
    model=job["onnx"],
    inputs=job["inputs"],
    input_size_list=job["input_shapes"],
    outputs=job.get("outputs"),
) != 0:
    fail("load_onnx failed for %s" % job["onnx"])
if r.build(do_quantization=True, dataset=job["dataset"]) != 0:
    fail("build (quantization + compilation for %s) failed" % job["board"])
if r.export_rknn(job["rknn"]) != 0:
    fail("export_rknn failed")
shapes = []
sims = job.get("simulate") or []
if sims:
    if r.init_runtime() != 0:
        fail("the simulator did not start")
    for i, sample in enumerate(sims):
        outs = r.inference(inputs=[np.load(p) for p in sample], data_format="nchw")
        if outs is None:
            fail("simulator inference failed on sample %d" % i)
        for j, o in enumerate(outs):
            np.save("%s/sim_%d_%d.npy" % (job["sim_dir"], i, j), np.asarray(o, dtype=np.float32))
        shapes = [list(np.shape(o)) for o in outs]
r.release()
print(json.dumps({"ok": True, "outputs": shapes}))
