"""The per-CPU kernel choices, measured: whole convs against split_conv's cuts, and instance norm's two views.

For each conv shape (a stride-1 3x3 "valid" conv, batch 1) it times the forward pass, the input
gradient and the weight gradient whole and under every cut (rows, channels, Winograd), and for each feature-map shape the instance norm's
fused batch norm over [1, H, W, C] and over [H*W, 1, 1, C] (forward, and forward + backward),
all interleaved in rounds, medians printed; then what the model chooses here
(``split_conv.cuts``, ``networks.pixels_as_batch``). Run it once as is and once with oneDNN
capped at AVX2 to see the other machine kind's kernels on the same CPU:

    .venv/bin/python bench/bench_cuts.py [--json F]
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python bench/bench_cuts.py [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

CONVS = [(32, 64, 64), (64, 128, 128), (32, 256, 256), (64, 256, 256)]   # output H=W, Cin, Cout
NORMS = [(32, 64), (64, 32), (128, 16), (64, 256), (128, 128), (256, 64)]  # H=W, C
CUTS = {"forward": [("channels", 2), ("rows", 4), ("rows", 8), ("winograd", 1)],
        "input_grad": [("winograd", 1)], "filter_grad": [("rows", 4), ("rows", 8), ("winograd", 1)]}


def _median_ms(fns: dict, rounds: int, calls: int) -> dict:
    for f in fns.values():
        f().numpy()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(calls):
                r = f()
            r.numpy()
            times[k].append((time.perf_counter() - t) / calls * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def conv_rows(rounds: int) -> list[dict]:
    import tensorflow as tf

    from mrgan_tf.modeling.fast import split_conv
    from mrgan_tf.modeling.fast.split_conv import Cut
    out = []
    for h, c, n in CONVS:
        x = tf.random.normal([1, h + 2, h + 2, c])
        w = tf.random.normal([3, 3, c, n]) * 0.05
        dy = tf.random.normal([1, h, h, n])
        passes = {"forward": lambda cut: split_conv.forward(x, w, cut),
                  "input_grad": lambda cut: split_conv.input_grad(x, w, dy, cut),
                  "filter_grad": lambda cut: split_conv.filter_grad(x, dy, w.shape, cut)}
        fns = {}
        for name, run in passes.items():
            for cut in [split_conv.WHOLE] + [Cut(*c) for c in CUTS[name]]:
                label = "whole" if cut == split_conv.WHOLE else f"{cut.along}/{cut.parts}"
                fns[f"{name} {label}"] = tf.function(lambda run=run, cut=cut: run(cut))
        calls = max(2, int(40 / (h * h * c * n / 64 ** 4 + 0.05)))
        ms = _median_ms(fns, rounds, min(calls, 100))
        fwd, grad_w = split_conv.cuts(x.shape, w.shape, tf.float32)
        out.append({"shape": f"{h}x{h} {c}->{n}", "ms": ms, "chosen": {"forward": fwd, "filter_grad": grad_w}})
    return out


def norm_rows(rounds: int) -> list[dict]:
    import tensorflow as tf
    out = []
    for h, c in NORMS:
        x = tf.random.normal([1, h, h, c])
        gamma, beta = tf.ones([c]), tf.zeros([c])

        def norm(shape):
            def f(x):
                y, _, _ = tf.compat.v1.nn.fused_batch_norm(tf.reshape(x, shape), gamma, beta, epsilon=1e-5,
                                                           is_training=True)
                return tf.reshape(y, [1, h, h, c])
            return f

        def both(f):
            def g():
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = f(x)
                return tape.gradient(y, x, output_gradients=y)
            return g
        fns = {}
        for view, shape in (("1,H,W,C", [1, h, h, c]), ("HW,1,1,C", [h * h, 1, 1, c])):
            fns[f"forward {view}"] = tf.function(lambda f=norm(shape): f(x))
            fns[f"forward+backward {view}"] = tf.function(both(norm(shape)))
        ms = _median_ms(fns, rounds, 30 if h * h * c > 2 ** 17 else 200)
        out.append({"shape": f"{h}x{h}x{c}", "ms": ms})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json")
    a = p.parse_args(argv)
    from mrgan_tf.modeling import networks
    from mrgan_tf.modeling.fast import device
    result = {"vector_isa": device.vector_isa(), "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
              "instance_norm_pixels_as_batch": networks.pixels_as_batch(),
              "convs": conv_rows(a.rounds), "norms": norm_rows(a.rounds)}
    print(f"oneDNN ISA here: {result['vector_isa']} (ONEDNN_MAX_CPU_ISA={result['ONEDNN_MAX_CPU_ISA'] or 'unset'})")
    for row in result["convs"]:
        chosen = ", ".join(f"{k} {v.along}/{v.parts}" for k, v in row["chosen"].items())
        print(f"conv {row['shape']:16s} " + "  ".join(f"{k} {v:.2f}" for k, v in row["ms"].items())
              + f"  ms | chosen: {chosen}")
    for row in result["norms"]:
        print(f"norm {row['shape']:12s} " + "  ".join(f"{k} {v:.3f}" for k, v in row["ms"].items()) + " ms")
    print(f"instance norm over [H*W, 1, 1, C] here: {result['instance_norm_pixels_as_batch']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1, default=lambda c: c._asdict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
