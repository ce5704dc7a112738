#!/usr/bin/env python3
"""Writes a small int8 .tflite that exercises what the two real models do not:
MAX_POOL_2D, ADD, AVERAGE_POOL_2D with SAME padding (partial windows),
asymmetric SAME padding (stride 2 on an even size), dilation, a depth
multiplier of 2, per-tensor conv weights, and a RESHAPE that flattens an NHWC
tensor with H, W > 1 before FULLY_CONNECTED (the NHWC flatten order).

Built with the `flatbuffers` package (a dependency of ai-edge-litert) from
TFLite's schema field numbers; deterministic (fixed seed).

Usage: tflite-synthetic.py OUT.tflite
"""
import sys

import flatbuffers
import numpy as np

rng = np.random.default_rng(20261207)
B = flatbuffers.Builder(4096)

# Schema numbers (tensorflow/lite/schema/schema.fbs).
INT8, INT32 = 9, 2
CONV, DW, AVG, MAXP, ADD, RESHAPE, FC = 3, 4, 1, 17, 0, 22, 9
OPT_CONV, OPT_DW, OPT_POOL, OPT_FC, OPT_ADD, OPT_RESHAPE = 1, 2, 5, 8, 11, 17
SAME, VALID = 0, 1
NONE, RELU, RELU6 = 0, 1, 3

buffers = [b""]  # buffer 0: empty by convention
tensors = []  # (shape, type, buffer, name, scales, zps, qdim)


def tensor(shape, ttype, name, scales=None, zps=None, qdim=0, data=None):
    buf = 0
    if data is not None:
        buffers.append(data)
        buf = len(buffers) - 1
    tensors.append((shape, ttype, buf, name, scales, zps, qdim))
    return len(tensors) - 1


def act(shape, name, scale, zp):
    return tensor(shape, INT8, name, [scale], [zp])


def weights(shape, name, channels, qdim, per_channel=True):
    w = rng.integers(-127, 128, size=shape).astype(np.int8)
    if per_channel:
        s = rng.uniform(0.003, 0.02, size=channels).astype(np.float32)
    else:
        s = np.array([0.01], np.float32)
    t = tensor(shape, INT8, name, s.tolist(), [0] * len(s), qdim, w.tobytes())
    return t, s


def bias(name, in_scale, w_scales, channels, mag=2000):
    b = rng.integers(-mag, mag, size=channels).astype(np.int32)
    # One bias scale per weight scale (XNNPACK refuses a per-channel bias
    # beside per-tensor weights).
    s = (np.float64(in_scale) * np.asarray(w_scales, np.float64)).astype(np.float32)
    return tensor([channels], INT32, name, s.tolist(), [0] * len(s), 0, b.tobytes())


ops = []  # (code, inputs, outputs, options_type, options_fn)

# input [1, 8, 8, 3]
x = act([1, 8, 8, 3], "input", 0.02, -5)
# conv 3x3 stride 2 SAME (pads 0 before, 1 after), RELU6 -> [1, 4, 4, 6]
w0, s0 = weights([6, 3, 3, 3], "conv0/w", 6, 0)
b0 = bias("conv0/b", 0.02, s0, 6)
c0 = act([1, 4, 4, 6], "conv0", 0.03, -128)
ops.append((CONV, [x, w0, b0], [c0], OPT_CONV, (SAME, 2, 2, RELU6, 1, 1)))
# depthwise 3x3, multiplier 2, dilation 2, SAME, RELU -> [1, 4, 4, 12]
w1, s1 = weights([1, 3, 3, 12], "dw1/w", 12, 3)
b1 = bias("dw1/b", 0.03, s1, 12)
c1 = act([1, 4, 4, 12], "dw1", 0.03, -128)
ops.append((DW, [c0, w1, b1], [c1], OPT_DW, (SAME, 1, 1, 2, RELU, 2, 2)))
# max pool 2x2 stride 1 VALID -> [1, 3, 3, 12]
p2 = act([1, 3, 3, 12], "maxpool2", 0.03, -128)
ops.append((MAXP, [c1], [p2], OPT_POOL, (VALID, 1, 1, 2, 2, NONE)))
# two 1x1 convs (per-tensor weights; no activation / RELU) and their ADD
w3, s3 = weights([8, 1, 1, 12], "conv3/w", 8, 0, per_channel=False)
b3 = bias("conv3/b", 0.03, s3, 8)
c3 = act([1, 3, 3, 8], "conv3", 0.1, 3)
ops.append((CONV, [p2, w3, b3], [c3], OPT_CONV, (SAME, 1, 1, NONE, 1, 1)))
w4, s4 = weights([8, 1, 1, 12], "conv4/w", 8, 0)
b4 = bias("conv4/b", 0.03, s4, 8)
c4 = act([1, 3, 3, 8], "conv4", 0.025, -128)
ops.append((CONV, [p2, w4, b4], [c4], OPT_CONV, (SAME, 1, 1, RELU, 1, 1)))
a5 = act([1, 3, 3, 8], "add5", 0.08, -20)
ops.append((ADD, [c3, c4], [a5], OPT_ADD, (NONE,)))
# average pool 2x2 stride 1 SAME (the last row/column average fewer taps)
p6 = act([1, 3, 3, 8], "avgpool6", 0.08, -20)
ops.append((AVG, [a5], [p6], OPT_POOL, (SAME, 1, 1, 2, 2, NONE)))
# flatten NHWC [1, 3, 3, 8] -> [1, 72], then FULLY_CONNECTED -> [1, 5]
shape_t = tensor([2], INT32, "flatten/shape", data=np.array([1, 72], np.int32).tobytes())
r7 = act([1, 72], "flatten", 0.08, -20)
ops.append((RESHAPE, [p6, shape_t], [r7], OPT_RESHAPE, ([1, 72],)))
w8, s8 = weights([5, 72], "fc8/w", 5, 0, per_channel=False)
b8 = bias("fc8/b", 0.08, s8, 5, mag=5000)
y = act([1, 5], "output", 0.8, 2)
ops.append((FC, [r7, w8, b8], [y], OPT_FC, (NONE,)))


def ivec(v, dtype=np.int32):
    return B.CreateNumpyVector(np.array(v, dtype))


def table(slots):
    """slots: list of (method, slot, value, default)."""
    B.StartObject(max(s[1] for s in slots) + 1 if slots else 0)
    for meth, slot, value, default in slots:
        getattr(B, meth)(slot, value, default)
    return B.EndObject()


def offsets(offs):
    B.StartVector(4, len(offs), 4)
    for o in reversed(offs):
        B.PrependUOffsetTRelative(o)
    return B.EndVector()


def options(ty, a):
    if ty == OPT_CONV:
        pad, sw, sh, act_, dw, dh = a
        return table([("PrependInt8Slot", 0, pad, 0), ("PrependInt32Slot", 1, sw, 0),
                      ("PrependInt32Slot", 2, sh, 0), ("PrependInt8Slot", 3, act_, 0),
                      ("PrependInt32Slot", 4, dw, 1), ("PrependInt32Slot", 5, dh, 1)])
    if ty == OPT_DW:
        pad, sw, sh, mult, act_, dw, dh = a
        return table([("PrependInt8Slot", 0, pad, 0), ("PrependInt32Slot", 1, sw, 0),
                      ("PrependInt32Slot", 2, sh, 0), ("PrependInt32Slot", 3, mult, 0),
                      ("PrependInt8Slot", 4, act_, 0), ("PrependInt32Slot", 5, dw, 1),
                      ("PrependInt32Slot", 6, dh, 1)])
    if ty == OPT_POOL:
        pad, sw, sh, fw, fh, act_ = a
        return table([("PrependInt8Slot", 0, pad, 0), ("PrependInt32Slot", 1, sw, 0),
                      ("PrependInt32Slot", 2, sh, 0), ("PrependInt32Slot", 3, fw, 0),
                      ("PrependInt32Slot", 4, fh, 0), ("PrependInt8Slot", 5, act_, 0)])
    if ty == OPT_FC:
        return table([("PrependInt8Slot", 0, a[0], 0)])
    if ty == OPT_ADD:
        return table([("PrependInt8Slot", 0, a[0], 0)])
    if ty == OPT_RESHAPE:
        v = ivec(a[0])
        return table([("PrependUOffsetTRelativeSlot", 0, v, 0)])
    raise ValueError(ty)


# Bottom-up: every child before its parent.
buf_offs = []
for data in buffers:
    if data:
        B.StartVector(1, len(data), 16)
        B.head = B.head - len(data)
        B.Bytes[B.head:B.head + len(data)] = data
        B.vectorNumElems = len(data)
        v = B.EndVector()
        buf_offs.append(table([("PrependUOffsetTRelativeSlot", 0, v, 0)]))
    else:
        buf_offs.append(table([]))
tensor_offs = []
for shape, ttype, buf, name, scales, zps, qdim in tensors:
    sh = ivec(shape)
    nm = B.CreateString(name)
    q = 0
    if scales is not None:
        sv = B.CreateNumpyVector(np.array(scales, np.float32))
        zv = B.CreateNumpyVector(np.array(zps, np.int64))
        q = table([("PrependUOffsetTRelativeSlot", 2, sv, 0), ("PrependUOffsetTRelativeSlot", 3, zv, 0),
                   ("PrependInt32Slot", 6, qdim, 0)])
    slots = [("PrependUOffsetTRelativeSlot", 0, sh, 0), ("PrependInt8Slot", 1, ttype, 0),
             ("PrependUint32Slot", 2, buf, 0), ("PrependUOffsetTRelativeSlot", 3, nm, 0)]
    if q:
        slots.append(("PrependUOffsetTRelativeSlot", 4, q, 0))
    tensor_offs.append(table(slots))
codes = sorted({o[0] for o in ops})
versions = {CONV: 3, DW: 3, AVG: 2, MAXP: 2, ADD: 2, RESHAPE: 1, FC: 4}
code_offs = [table([("PrependInt8Slot", 0, c, 0), ("PrependInt32Slot", 2, versions[c], 1),
                    ("PrependInt32Slot", 3, c, 0)]) for c in codes]
op_offs = []
for code, ins, outs, ty, a in ops:
    iv, ov = ivec(ins), ivec(outs)
    opt = options(ty, a)
    op_offs.append(table([("PrependUint32Slot", 0, codes.index(code), 0),
                          ("PrependUOffsetTRelativeSlot", 1, iv, 0),
                          ("PrependUOffsetTRelativeSlot", 2, ov, 0),
                          ("PrependUint8Slot", 3, ty, 0),
                          ("PrependUOffsetTRelativeSlot", 4, opt, 0)]))
tv, opv = offsets(tensor_offs), offsets(op_offs)
giv, gov = ivec([x]), ivec([y])
sg_name = B.CreateString("main")
sg = table([("PrependUOffsetTRelativeSlot", 0, tv, 0), ("PrependUOffsetTRelativeSlot", 1, giv, 0),
            ("PrependUOffsetTRelativeSlot", 2, gov, 0), ("PrependUOffsetTRelativeSlot", 3, opv, 0),
            ("PrependUOffsetTRelativeSlot", 4, sg_name, 0)])
sgv, cv, bv = offsets([sg]), offsets(code_offs), offsets(buf_offs)
desc = B.CreateString("Strix synthetic test model (scripts/tflite-synthetic.py)")
model = table([("PrependUint32Slot", 0, 3, 0), ("PrependUOffsetTRelativeSlot", 1, cv, 0),
               ("PrependUOffsetTRelativeSlot", 2, sgv, 0), ("PrependUOffsetTRelativeSlot", 3, desc, 0),
               ("PrependUOffsetTRelativeSlot", 4, bv, 0)])
B.Finish(model, file_identifier=b"TFL3")
with open(sys.argv[1], "wb") as f:
    f.write(B.Output())
