#!/usr/bin/env python3
"""Reference run of the detection decoders, to compare with Strix's Rust ones.

Runs the fp32 ONNX models with onnxruntime on the sample images and decodes
their outputs with a numpy port of runtime/src/postprocess.rs
(decode_fastestdet, decode_ultraface, nms), then prints the detections as
fractions of the image and in pixels, and checks the counts given in
/work/shared/models/README.md.

Preprocessing mirrors runtime/src/preprocess.rs (image_to_tensor, Stretch):
cv2 INTER_LINEAR geometry on float pixels, no rounding to uint8. Use
`--resize u8` for OpenCV's usual uint8 resize or `--resize area` for the
FastestDet authors' onnxruntime example (INTER_AREA).

`--dump DIR` writes each input tensor and raw output as .npy, so a Rust test
can feed the same tensors to its decoders.

Needs: numpy, onnxruntime, opencv-python-headless.
"""

import argparse
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort

MODELS = "/work/shared/models"

# image, expected detections (class name -> count), per README.md
FASTESTDET_CASES = [
    ("fastestdet_0.jpg", {"person": 4, "baseball bat": 1}),
    ("fastestdet_3.jpg", {"person": 4}),
]
ULTRAFACE_CASES = [
    ("faces_1.jpg", (44, 46)),
    ("faces_13.jpg", (2, 2)),
]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def iou(a, b):
    """IoU of two [x0, y0, x1, y1] boxes; inverted boxes are empty."""
    area = lambda d: max(d[2] - d[0], 0.0) * max(d[3] - d[1], 0.0)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def nms(dets, iou_threshold):
    """Greedy per-class NMS over dicts with box/score/cls; stable on ties;
    drops a box when IoU with a kept box of its class is > iou_threshold."""
    order = sorted(dets, key=lambda d: -d["score"])  # sorted() is stable
    kept = []
    for d in order:
        if not any(k["cls"] == d["cls"] and iou(k["box"], d["box"]) > iou_threshold for k in kept):
            kept.append(d)
    return kept


def decode_fastestdet(out, score_threshold=0.65, nms_iou=0.45):
    """out: [1, 5 + C, H, W]; see postprocess::decode_fastestdet."""
    n, c, h, w = out.shape
    assert n == 1 and c >= 6, out.shape
    m = out[0].astype(np.float32)
    obj = np.maximum(m[0], 0.0)
    cls = m[5:]
    best = cls.max(axis=0)
    arg = cls.argmax(axis=0)  # first max, as in Rust
    score = obj ** 0.6 * np.maximum(best, 0.0) ** 0.4
    dets = []
    for cy in range(h):
        for cx in range(w):
            s = float(score[cy, cx])
            if not s > score_threshold:
                continue
            bx = (cx + np.tanh(m[1, cy, cx])) / w
            by = (cy + np.tanh(m[2, cy, cx])) / h
            bw, bh = sigmoid(m[3, cy, cx]), sigmoid(m[4, cy, cx])
            box = [float(np.clip(v, 0.0, 1.0)) for v in
                   (bx - 0.5 * bw, by - 0.5 * bh, bx + 0.5 * bw, by + 0.5 * bh)]
            dets.append({"box": box, "score": s, "cls": int(arg[cy, cx])})
    return nms(dets, nms_iou)


def decode_ultraface(scores, boxes, score_threshold=0.7, nms_iou=0.3):
    """scores [1, N, 2], boxes [1, N, 4]; see postprocess::decode_ultraface."""
    assert scores.shape[0] == 1 and scores.shape[2] == 2, scores.shape
    assert boxes.shape == (1, scores.shape[1], 4), boxes.shape
    dets = []
    for s, b in zip(scores[0], boxes[0]):
        if s[1] > score_threshold:
            dets.append({"box": [float(np.clip(v, 0.0, 1.0)) for v in b],
                         "score": float(s[1]), "cls": 0})
    return nms(dets, nms_iou)


def resize(img, w, h, mode):
    if mode == "float":
        return cv2.resize(img.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    if mode == "u8":
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)


def session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # UltraFace lists its weights as inputs; ORT warns per weight
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def show(dets, names, iw, ih):
    for d in dets:
        x0, y0, x1, y1 = d["box"]
        print("  %-14s %.3f  frac [%.4f %.4f %.4f %.4f]  px [%4d %4d %4d %4d]" % (
            names[d["cls"]], d["score"], x0, y0, x1, y1,
            int(x0 * iw), int(y0 * ih), int(x1 * iw), int(y1 * ih)))


def dump(dir_, stem, **arrays):
    if dir_:
        os.makedirs(dir_, exist_ok=True)
        for k, v in arrays.items():
            np.save(os.path.join(dir_, "%s.%s.npy" % (stem, k)), v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--resize", choices=["float", "u8", "area"], default="float")
    ap.add_argument("--dump", metavar="DIR")
    args = ap.parse_args()
    images = os.path.join(args.models, "images")
    ok = True

    fd_dir = os.path.join(args.models, "detect", "fastestdet")
    with open(os.path.join(fd_dir, "coco.names")) as f:
        coco = [l.strip() for l in f if l.strip()]
    fd = session(os.path.join(fd_dir, "FastestDet.onnx"))
    print("FastestDet (352x352 BGR, pixel/255, %s resize; score > 0.65, NMS 0.45)" % args.resize)
    for name, want in FASTESTDET_CASES:
        bgr = cv2.imread(os.path.join(images, name), cv2.IMREAD_COLOR)
        ih, iw = bgr.shape[:2]
        x = (resize(bgr, 352, 352, args.resize) / 255.0).transpose(2, 0, 1)[None].astype(np.float32)
        (out,) = fd.run(None, {fd.get_inputs()[0].name: x})
        dets = decode_fastestdet(out)
        counts = {}
        for d in dets:
            counts[coco[d["cls"]]] = counts.get(coco[d["cls"]], 0) + 1
        good = counts == want
        ok &= good
        print("%s (%dx%d): %d detections %s, expected %s: %s" % (
            name, iw, ih, len(dets), counts, want, "OK" if good else "MISMATCH"))
        show(dets, coco, iw, ih)
        dump(args.dump, os.path.splitext(name)[0], input=x, output=out)

    uf = session(os.path.join(args.models, "detect", "ultraface", "version-RFB-320.onnx"))
    print("\nUltraFace RFB-320 (320x240 RGB, (p-127)/128, %s resize; score > 0.7, NMS 0.3)" % args.resize)
    for name, (lo, hi) in ULTRAFACE_CASES:
        bgr = cv2.imread(os.path.join(images, name), cv2.IMREAD_COLOR)
        ih, iw = bgr.shape[:2]
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        x = ((resize(rgb, 320, 240, args.resize) - 127.0) / 128.0).transpose(2, 0, 1)[None].astype(np.float32)
        outs = dict(zip([o.name for o in uf.get_outputs()], uf.run(None, {"input": x})))
        dets = decode_ultraface(outs["scores"], outs["boxes"])
        good = lo <= len(dets) <= hi
        ok &= good
        print("%s (%dx%d): %d faces, expected %s: %s" % (
            name, iw, ih, len(dets), lo if lo == hi else "%d-%d" % (lo, hi), "OK" if good else "MISMATCH"))
        show(dets, ["face"], iw, ih)
        dump(args.dump, os.path.splitext(name)[0], input=x, scores=outs["scores"], boxes=outs["boxes"])

    print("\nall counts as expected" if ok else "\nSOME COUNTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
