"""What this CPU gives: the networks' own large convs (``conv_peak``) and a square matmul (``matmul_peak``).

Shared by ``bench_convs.py`` (per-layer throughput) and ``bench_train.py`` (an iteration's
fraction of the peak), so neither imports the other.
"""
from __future__ import annotations

import os
import sys
import time

import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mrgan_tf.modeling.fast import narrow_conv, split_conv  # noqa: E402

# name, input size (after any reflection padding), Cin, Cout, kernel, stride, padding
LAYERS = [
    ("G c7s1", 262, 1, 64, 7, 1, "VALID"),
    ("G down0", 256, 64, 128, 3, 2, "SAME"),
    ("G down1", 128, 128, 256, 3, 2, "SAME"),
    ("G residual conv", 66, 256, 256, 3, 1, "VALID"),
    ("G out_conv", 262, 64, 1, 7, 1, "VALID"),
    ("D unpaired head", 259, 1, 64, 4, 1, "VALID"),
    ("D paired head", 259, 2, 64, 4, 1, "VALID"),
    ("D body0", 256, 64, 64, 4, 2, "SAME"),
    ("D body1", 128, 64, 128, 4, 2, "SAME"),
    ("D body2", 64, 128, 256, 4, 2, "SAME"),
    ("D body3", 32, 256, 512, 4, 2, "SAME"),
    ("D tail0", 19, 512, 512, 4, 1, "VALID"),
]


def best_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for r in tf.nest.flatten(fn()):
            r.numpy()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def measure(h, cin, cout, k, s, pad, narrow: bool, reps: int, dtype: str = "float32") -> dict:
    x = tf.cast(tf.random.normal([1, h, h, cin]), dtype)
    w = tf.cast(tf.random.normal([k, k, cin, cout]) * 0.05, dtype)
    y = tf.nn.conv2d(x, w, s, pad)
    dy = tf.cast(tf.random.normal(y.shape), dtype)
    strides = [1, s, s, 1]
    if narrow:
        def grads():
            with tf.GradientTape(persistent=True) as tape:
                tape.watch([x, w])
                out = narrow_conv.conv2d_valid(x, w)
            return tape.gradient(out, x, output_gradients=dy), tape.gradient(out, w, output_gradients=dy)
        fwd = tf.function(lambda: narrow_conv.conv2d_valid(x, w))
        dx = tf.function(lambda: grads()[0])
        dw = tf.function(lambda: grads()[1])
    else:
        fwd = tf.function(lambda: tf.nn.conv2d(x, w, s, pad))
        dx = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=w, out_backprop=dy,
                                                                strides=strides, padding=pad))
        dw = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=w.shape, out_backprop=dy,
                                                                 strides=strides, padding=pad))
    passes = [("forward", fwd), ("input_grad", dx), ("weight_grad", dw)]
    if not narrow and s == 1 and pad == "VALID":    # the model's per-CPU cuts of this conv, where it has one
        cut_fwd, cut_dw = split_conv.cuts(x.shape, w.shape, x.dtype)
        if cut_fwd != split_conv.WHOLE:
            passes.append(("forward_cut", tf.function(lambda: split_conv.forward(x, w, cut_fwd))))
        if cut_fwd.along == "winograd":
            passes.append(("input_grad_cut", tf.function(lambda: split_conv.input_grad(x, w, dy, cut_fwd))))
        if cut_dw != split_conv.WHOLE:
            passes.append(("weight_grad_cut", tf.function(lambda: split_conv.filter_grad(x, dy, w.shape, cut_dw))))
    flop = 2 * k * k * cin * cout * y.shape[1] * y.shape[2]
    out = {"gflop": flop / 1e9}
    for name, fn in passes:
        ms = best_ms(fn, reps)
        out[name] = {"ms": ms, "gflops": flop / ms / 1e6}
    return out


LARGE = [row for row in LAYERS if 2 * row[4] ** 2 * row[2] * row[3] * (row[1] // row[5]) ** 2 > 1e9]


def conv_peak(dtypes=("float32", "bfloat16"), reps: int = 3) -> dict:
    """The best GFLOP/s of the networks' own large convs (>1 GFLOP: forward, input and weight
    gradient each, whole and as the model cuts them on this CPU), per dtype: what the hardware gives this model's arithmetic, a ceiling that
    means the same on every CPU (a 4096^2 matmul can read below the convs themselves)."""
    out = {}
    for dtype in dtypes:
        best = {"gflops": 0.0}
        for name, h, cin, cout, k, s, pad in LARGE:
            r = measure(h, cin, cout, k, s, pad, False, reps, dtype)
            for kind in r.keys() - {"gflop"}:
                if r[kind]["gflops"] > best["gflops"]:
                    best = {"gflops": r[kind]["gflops"], "layer": name, "pass": kind}
        out[dtype] = best
    return out


def matmul_peak(n: int = 4096, reps: int = 5) -> dict:
    """Best-of-``reps`` GFLOP/s of an n x n matmul in float32 and bfloat16."""
    out = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.random.normal([n, n], dtype=tf.float32)
        a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
        mm = tf.function(lambda x, y: tf.linalg.matmul(x, y)[0, 0])
        mm(a, b).numpy()
        best = best_ms(lambda: mm(a, b), reps) / 1e3
        out[dtype.name] = 2.0 * n ** 3 / best / 1e9
    return out
