#!/usr/bin/env python3
"""Writes the tiny ONNX seeds of the onnx_import fuzz target (no onnx package
needed: the protobuf is encoded by hand). Usage: tiny_onnx.py OUT_DIR"""
import struct
import sys


def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def key(field, wire):
    return varint(field << 3 | wire)


def f_int(field, v):
    return key(field, 0) + varint(v)


def f_bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return key(field, 2) + varint(len(b)) + b


def f_float(field, v):
    return key(field, 5) + struct.pack("<f", v)


FLOAT, INT64 = 1, 7


def tensor(name, dims, vals, dtype=FLOAT):
    body = b"".join(f_int(1, d) for d in dims) + f_int(2, dtype) + f_bytes(8, name)
    fmt = "<%d%s" % (len(vals), "f" if dtype == FLOAT else "q")
    return body + f_bytes(9, struct.pack(fmt, *vals))


def value_info(name, dims):
    shape = b"".join(f_bytes(1, f_int(1, d)) for d in dims)
    tt = f_int(1, FLOAT) + f_bytes(2, shape)
    return f_bytes(1, name) + f_bytes(2, f_bytes(1, tt))


def attr_ints(name, vals):
    return f_bytes(1, name) + f_int(20, 7) + b"".join(f_int(8, v) for v in vals)


def attr_int(name, v):
    return f_bytes(1, name) + f_int(20, 2) + f_int(3, v)


def attr_float(name, v):
    return f_bytes(1, name) + f_int(20, 1) + f_float(2, v)


def node(op, ins, outs, attrs=()):
    body = b"".join(f_bytes(1, i) for i in ins) + b"".join(f_bytes(2, o) for o in outs)
    body += f_bytes(3, op.lower() + "_" + outs[0]) + f_bytes(4, op)
    return body + b"".join(f_bytes(5, a) for a in attrs)


def model(nodes, inits, inputs, outputs, opset=13):
    g = b"".join(f_bytes(1, n) for n in nodes) + f_bytes(2, "g")
    g += b"".join(f_bytes(5, t) for t in inits)
    g += b"".join(f_bytes(11, value_info(*i)) for i in inputs)
    g += b"".join(f_bytes(12, value_info(*o)) for o in outputs)
    opset_id = f_bytes(1, "") + f_int(2, opset)
    return f_int(1, 7) + f_bytes(8, opset_id) + f_bytes(7, g)


def ramp(n, scale=0.1):
    return [((i * 7) % 11 - 5) * scale for i in range(n)]


def conv_net():
    """Conv(pad 1) + BatchNorm + Relu + MaxPool + Flatten-by-Reshape + Gemm + Softmax."""
    nodes = [
        node("Conv", ["x", "w", "b"], ["c"], [attr_ints("pads", [1, 1, 1, 1]),
                                              attr_ints("kernel_shape", [3, 3])]),
        node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"], [attr_float("epsilon", 1e-5)]),
        node("Relu", ["n"], ["r"]),
        node("MaxPool", ["r"], ["p"], [attr_ints("kernel_shape", [2, 2]), attr_ints("strides", [2, 2])]),
        node("Reshape", ["p", "shape"], ["f"]),
        node("Gemm", ["f", "fw", "fb"], ["y0"], [attr_int("transB", 1)]),
        node("Softmax", ["y0"], ["y"], [attr_int("axis", 1)]),
    ]
    inits = [
        tensor("w", [2, 1, 3, 3], ramp(18)),
        tensor("b", [2], [0.1, -0.1]),
        tensor("s", [2], [1.0, 0.5]),
        tensor("bb", [2], [0.0, 0.2]),
        tensor("m", [2], [0.1, 0.0]),
        tensor("v", [2], [1.0, 2.0]),
        tensor("shape", [2], [1, 32], INT64),
        tensor("fw", [4, 32], ramp(128, 0.05)),
        tensor("fb", [4], [0.0, 0.1, 0.2, 0.3]),
    ]
    return model(nodes, inits, [("x", [1, 1, 8, 8])], [("y", [1, 4])])


def elementwise_net():
    """Depthwise conv, GlobalAveragePool, Add/Mul/Sigmoid/Concat/Transpose/Slice/Resize."""
    nodes = [
        node("Conv", ["x", "dw"], ["d"], [attr_int("group", 3), attr_ints("strides", [2, 2]),
                                          attr_ints("pads", [1, 1, 1, 1])]),
        node("Sigmoid", ["d"], ["s"]),
        node("Mul", ["d", "s"], ["m"]),
        node("Add", ["m", "k"], ["a"]),
        node("GlobalAveragePool", ["a"], ["gp"]),
        node("Mul", ["a", "gp"], ["att"]),
        node("Concat", ["att", "a"], ["cat"], [attr_int("axis", 1)]),
        node("Resize", ["cat", "", "scales"], ["up"], [f_bytes(1, "mode") + f_int(20, 3) + f_bytes(4, "nearest")]),
        node("Slice", ["up", "st", "en", "ax"], ["sl"]),
        node("Transpose", ["sl"], ["y"], [attr_ints("perm", [0, 2, 3, 1])]),
    ]
    inits = [
        tensor("dw", [3, 1, 3, 3], ramp(27)),
        tensor("k", [1, 3, 1, 1], [0.5, -0.5, 0.25]),
        tensor("scales", [4], [1.0, 1.0, 2.0, 2.0]),
        tensor("st", [1], [1], INT64),
        tensor("en", [1], [5], INT64),
        tensor("ax", [1], [1], INT64),
    ]
    return model(nodes, inits, [("x", [1, 3, 6, 6])], [("y", [1, 6, 4, 4])])


def sequence_net():
    """LSTM, Reshape, MatMul, Split, Pad, ReduceMean, Tanh, Sub, Div."""
    h, n_in, seq = 2, 3, 4
    nodes = [
        node("LSTM", ["x", "W", "R", "B"], ["ys", "yh", "yc"], [attr_int("hidden_size", h)]),
        node("Reshape", ["ys", "shape"], ["flat"]),
        node("MatMul", ["flat", "mw"], ["mm"]),
        node("Split", ["mm"], ["s0", "s1"], [attr_int("axis", 1)]),
        node("Sub", ["s0", "s1"], ["d"]),
        node("Tanh", ["d"], ["t"]),
        node("Div", ["t", "two"], ["q"]),
        node("Pad", ["q", "pads"], ["pd"]),
        node("ReduceMean", ["pd"], ["y"], [attr_ints("axes", [1]), attr_int("keepdims", 1)]),
    ]
    inits = [
        tensor("W", [1, 4 * h, n_in], ramp(4 * h * n_in)),
        tensor("R", [1, 4 * h, h], ramp(4 * h * h, 0.07)),
        tensor("B", [1, 8 * h], ramp(8 * h, 0.02)),
        tensor("shape", [2], [seq, h], INT64),
        tensor("mw", [h, 4], ramp(h * 4, 0.3)),
        tensor("two", [1], [2.0]),
        tensor("pads", [4], [1, 0, 0, 1], INT64),
    ]
    return model(nodes, inits, [("x", [seq, 1, n_in])], [("y", [seq + 1, 1])])


if __name__ == "__main__":
    out = sys.argv[1]
    open(out + "/seed-tiny-conv.onnx", "wb").write(conv_net())
    open(out + "/seed-tiny-elementwise.onnx", "wb").write(elementwise_net())
    open(out + "/seed-tiny-sequence.onnx", "wb").write(sequence_net())
