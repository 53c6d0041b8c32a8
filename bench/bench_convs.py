"""Per-layer convolution throughput of the full-size networks, plain and narrow-blocked.

For every distinct conv of SynMR/SynCT (256 px, ngf 64) and of a D1
discriminator, times the forward pass, the input gradient and the weight
gradient as TensorFlow runs them (``tf.nn.conv2d`` and its two backprop ops),
and, for the layers ``NarrowConv2D`` handles (one or two channels on a side),
the same three through ``mrgan_tf.narrow_conv``. Prints GFLOP/s beside a
4096^2 float32 matmul timed in the same process. Shows which kernels run far
below the matmul rate (why NarrowConv2D exists).

    .venv/bin/python bench/bench_convs.py [--json out.json]
    .venv/bin/python bench/bench_convs.py --peak      # conv_peak(): the large convs' best, fp32 and bf16
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import matmul_peak  # noqa: E402  (also puts the repository on sys.path)

from mrgan_tf import narrow_conv  # noqa: E402

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
    flop = 2 * k * k * cin * cout * y.shape[1] * y.shape[2]
    out = {"gflop": flop / 1e9}
    for name, fn in (("forward", fwd), ("input_grad", dx), ("weight_grad", dw)):
        ms = best_ms(fn, reps)
        out[name] = {"ms": ms, "gflops": flop / ms / 1e6}
    return out


LARGE = [row for row in LAYERS if 2 * row[4] ** 2 * row[2] * row[3] * (row[1] // row[5]) ** 2 > 1e9]


def conv_peak(dtypes=("float32", "bfloat16"), reps: int = 3) -> dict:
    """The best GFLOP/s of the networks' own large convs (>1 GFLOP: forward, input and weight
    gradient each), per dtype: what the hardware gives this model's arithmetic, a ceiling that
    means the same on every CPU (a 4096^2 matmul can read below the convs themselves)."""
    out = {}
    for dtype in dtypes:
        best = {"gflops": 0.0}
        for name, h, cin, cout, k, s, pad in LARGE:
            r = measure(h, cin, cout, k, s, pad, False, reps, dtype)
            for kind in ("forward", "input_grad", "weight_grad"):
                if r[kind]["gflops"] > best["gflops"]:
                    best = {"gflops": r[kind]["gflops"], "layer": name, "pass": kind}
        out[dtype] = best
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--json")
    p.add_argument("--peak", action="store_true", help="only the conv peak per dtype (conv_peak)")
    a = p.parse_args(argv)
    if a.peak:
        res = conv_peak(reps=a.reps)
        for dtype, r in res.items():
            print(f"{dtype}: {r['gflops']:.0f} GFLOP/s ({r['layer']}, {r['pass']})")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        return 0
    peak = matmul_peak()["float32"]
    print(f"float32 4096^2 matmul: {peak:.0f} GFLOP/s")
    rows = []
    for name, h, cin, cout, k, s, pad in LAYERS:
        kinds = ["plain"] + (["narrow"] if min(cin, cout) <= narrow_conv.NARROW and s == 1 else [])
        for kind in kinds:
            r = {"layer": name, "kind": kind, **measure(h, cin, cout, k, s, pad, kind == "narrow", a.reps)}
            rows.append(r)
            print(f"{name:16s} {kind:6s} {r['gflop']:5.2f} GFLOP  " + "  ".join(
                f"{p_}: {r[p_]['ms']:6.2f} ms ({r[p_]['gflops']:5.0f} GFLOP/s)"
                for p_ in ("forward", "input_grad", "weight_grad")), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"matmul_gflops": peak, "layers": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
