#!/usr/bin/env python3
"""Reference (numpy, float64) implementation of the Strix KWS MFCC front end.

This is the MLPerf Tiny keyword-spotting recipe (mlcommons/tiny,
benchmark/training/keyword_spotting/get_dataset.py), written out with numpy so
that the Rust front end (runtime/src/audio.rs, `KwsMfcc`) can be checked
against it without TensorFlow:

  * 16 kHz, exactly 16000 samples (shorter input zero-padded, longer truncated)
  * the clip divided by its maximum sample value (`wav / tf.reduce_max(wav)`
    in get_dataset.py; skipped when that maximum is 0). This step is part of
    the training recipe: without it the fp32 model calls silence_1000ms.wav
    `_unknown_` and gives no_1000ms.wav "go" 0.74 instead of 0.95.
  * tf.signal.stft(frame_length=480, frame_step=320, fft_length=None -> 512,
    window_fn=tf.signal.hann_window (periodic), pad_end=False) -> 49 frames
  * magnitude |STFT| (not power)
  * tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0):
    HTK mel scale (1127 * ln(1 + f/700)), triangles evaluated in mel space on
    the 257 linear bins, DC bin row forced to zero
  * log(mel + 1e-6)
  * tf.signal.mfccs_from_log_mel_spectrograms: unnormalised DCT-II times
    1/sqrt(2 * 40) -- note this is *not* exactly the orthonormal DCT-II: TF
    scales every coefficient, c0 included, by sqrt(2/N), so c0 is sqrt(2)
    larger than with norm="ortho". `--dct ortho` exists only to show that the
    model was trained with the TF variant.
  * first 10 coefficients, frame-major [49][10]

Sub-commands:
  features WAV [--out FILE.f32]   print (or dump as raw little-endian f32) features
  classify WAV...                 run the fp32 ONNX model on each WAV
  eval DIR                        accuracy of the fp32 model on DIR/<label>/*.wav
                                  (the layout written by gen_kws_clips.sh)
  constants WAV                   print a few coefficients as Rust constants

Only 8/16/24/32-bit integer PCM WAVs are read (stdlib `wave`); multi-channel
files are averaged to mono. The sample rate must be 16 kHz.
"""
import argparse
import os
import sys
import wave

import numpy as np

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
FRAME_LEN = 480
FRAME_STEP = 320
FFT_LEN = 512
NUM_BINS = FFT_LEN // 2 + 1
NUM_MEL = 40
LOWER_HZ = 20.0
UPPER_HZ = 4000.0
LOG_OFFSET = 1e-6
NUM_COEFFS = 10
NUM_FRAMES = 1 + (CLIP_SAMPLES - FRAME_LEN) // FRAME_STEP  # 49

LABELS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
          "_silence_", "_unknown_"]
DEFAULT_MODEL = "/work/shared/models/speech/kws/kws_dscnn_f32.onnx"


def read_wav(path):
    """Return float64 samples in [-1, 1] (int PCM / 2^(bits-1)), mono, 16 kHz."""
    with wave.open(path, "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if rate != SAMPLE_RATE:
        raise SystemExit(f"{path}: sample rate {rate}, the reference needs {SAMPLE_RATE}")
    if width == 1:  # 8-bit WAV is unsigned
        x = np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64)
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float64)
    else:
        raise SystemExit(f"{path}: unsupported sample width {width}")
    x = x / float(1 << (8 * width - 1))
    return x.reshape(-1, ch).mean(axis=1)


def hertz_to_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix():
    """[257, 40] like tf.signal.linear_to_mel_weight_matrix."""
    lin_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, NUM_BINS)[1:]  # DC bin excluded
    spec_mel = hertz_to_mel(lin_hz)[:, None]
    edges = np.linspace(hertz_to_mel(LOWER_HZ), hertz_to_mel(UPPER_HZ), NUM_MEL + 2)
    lower, center, upper = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    lower_slopes = (spec_mel - lower) / (center - lower)
    upper_slopes = (upper - spec_mel) / (upper - center)
    w = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    return np.pad(w, [[1, 0], [0, 0]])


def dct_matrix(kind="tf"):
    """[NUM_MEL, NUM_COEFFS]: out[k] = sum_n x[n] * D[n, k]."""
    n = np.arange(NUM_MEL)[:, None]
    k = np.arange(NUM_COEFFS)[None, :]
    d = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2.0 * NUM_MEL))  # scipy/TF DCT-II, norm=None
    if kind == "tf":
        return d / np.sqrt(2.0 * NUM_MEL)
    if kind == "ortho":
        d = d * np.sqrt(1.0 / (2.0 * NUM_MEL))
        d[:, 0] *= np.sqrt(0.5)
        return d
    raise ValueError(kind)


def mfcc(samples, dct="tf", peak_norm=True):
    x = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    s = np.asarray(samples, dtype=np.float64)[:CLIP_SAMPLES]
    if peak_norm and len(s) and s.max() != 0.0:
        s = s / s.max()
    x[: len(s)] = s
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(FRAME_LEN) / FRAME_LEN)  # periodic Hann
    idx = np.arange(NUM_FRAMES)[:, None] * FRAME_STEP + np.arange(FRAME_LEN)[None, :]
    frames = x[idx] * window
    mag = np.abs(np.fft.rfft(frames, n=FFT_LEN, axis=1))  # [49, 257]
    mel = mag @ mel_matrix()  # [49, 40]
    log_mel = np.log(mel + LOG_OFFSET)
    return log_mel @ dct_matrix(dct)  # [49, 10]


def session(model):
    import onnxruntime as ort

    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def predict(sess, feats):
    inp = feats.astype(np.float32).reshape(1, 1, NUM_FRAMES, NUM_COEFFS)
    return sess.run(None, {sess.get_inputs()[0].name: inp})[0][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dct", choices=["tf", "ortho"], default="tf")
    ap.add_argument("--no-peak-norm", dest="peak_norm", action="store_false")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("features")
    p.add_argument("wav")
    p.add_argument("--out")
    p = sub.add_parser("classify")
    p.add_argument("wavs", nargs="+")
    p = sub.add_parser("eval")
    p.add_argument("dir")
    p = sub.add_parser("constants")
    p.add_argument("wav")
    a = ap.parse_args()

    if a.cmd == "features":
        f = mfcc(read_wav(a.wav), a.dct, a.peak_norm)
        if a.out:
            f.astype("<f4").tofile(a.out)
        else:
            np.set_printoptions(precision=6, suppress=True, linewidth=160)
            print(f)
    elif a.cmd == "constants":
        f = mfcc(read_wav(a.wav), a.dct, a.peak_norm)
        for fr, c in [(0, 0), (0, 1), (10, 0), (20, 0), (20, 3), (25, 1), (30, 5), (48, 9)]:
            print(f"({fr}, {c}, {f[fr, c]:.6f}),")
    elif a.cmd == "classify":
        sess = session(a.model)
        for path in a.wavs:
            p = predict(sess, mfcc(read_wav(path), a.dct, a.peak_norm))
            order = np.argsort(-p)
            top = ", ".join(f"{LABELS[i]} {p[i]:.3f}" for i in order[:3])
            print(f"{os.path.basename(path)}: {LABELS[order[0]]} (index {order[0]}) [{top}]")
    elif a.cmd == "eval":
        sess = session(a.model)
        per = {}
        for label in sorted(os.listdir(a.dir)):
            d = os.path.join(a.dir, label)
            if label not in LABELS or not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                if name.endswith(".wav"):
                    p = predict(sess, mfcc(read_wav(os.path.join(d, name)), a.dct, a.peak_norm))
                    ok, n = per.get(label, (0, 0))
                    per[label] = (ok + int(LABELS[int(np.argmax(p))] == label), n + 1)
        if not per:
            raise SystemExit(f"no labelled clips under {a.dir}")
        for label in LABELS:
            if label in per:
                ok, n = per[label]
                print(f"{label:>10}: {ok:3d}/{n:3d} = {ok / n:.2f}")
        kw = [per[l] for l in LABELS[:10] if l in per]
        ok, n = sum(k[0] for k in kw), sum(k[1] for k in kw)
        if n:
            print(f"keywords: {ok}/{n} = {ok / n:.3f}")
        ok, n = sum(v[0] for v in per.values()), sum(v[1] for v in per.values())
        print(f"all: {ok}/{n} = {ok / n:.3f}")


if __name__ == "__main__":
    sys.exit(main())
