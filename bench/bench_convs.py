"""Per-layer convolution throughput of the full-size networks, plain and narrow-blocked.

For every distinct conv of SynMR/SynCT (256 px, ngf 64) and of a D1
discriminator, times the forward pass, the input gradient and the weight
gradient as TensorFlow runs them (``tf.nn.conv2d`` and its two backprop ops),
and, for the layers ``NarrowConv2D`` handles (one or two channels on a side),
the same three through ``mrgan_tf.modeling.fast.narrow_conv``. Prints GFLOP/s beside a
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peaks import LAYERS, conv_peak, matmul_peak, measure  # noqa: E402

from mrgan_tf.modeling.fast import narrow_conv  # noqa: E402


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
