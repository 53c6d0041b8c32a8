"""Where an Algorithm-1 iteration spends its time, by TensorFlow op type.

Runs the same model and batch as ``bench_train.py iteration``, traces a few
iterations with ``tf.profiler``, reads the trace (XSpace protobuf) and sums
the op durations by op type. Two inter-op threads run ops side by side, so
the summed op time exceeds the wall time; the table gives each type's share
of the summed time, and the same share of the measured wall time.

    .venv/bin/python bench/profile_train.py --size full [--baseline plain] [--top 25]
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def op_times(logdir: str) -> collections.Counter:
    """Seconds per op type summed over the compute threads of the newest trace in ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    path = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    host = next(p for p in space.planes if p.name == "/host:CPU")
    totals = collections.Counter()
    for line in host.lines:
        if not line.name.startswith("tf_Compute"):
            continue
        for event in line.events:
            op_type = host.event_metadata[event.metadata_id].display_name
            if op_type:
                totals[op_type] += event.duration_ps * 1e-12
    return totals


def main(argv=None) -> int:
    import tensorflow as tf

    from bench_train import BASELINES, SIZES, _batch, build_model
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="demo")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    p.add_argument("--baseline", choices=sorted(BASELINES), default="none")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    model = build_model(a.size, a.precision, False, a.baseline)
    it = iter(tf.data.Dataset.from_tensors(_batch(model.config.image_size)).repeat())
    model.make_train_function()
    for _ in range(3):
        model.train_function(it)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        t = time.perf_counter()
        for _ in range(a.iters):
            model.train_function(it)["paired/syn_mr_l1"].numpy()
        wall = (time.perf_counter() - t) / a.iters
        tf.profiler.experimental.stop()
        totals = op_times(logdir)
    summed = sum(totals.values()) / a.iters
    print(f"{a.size} {a.precision} baseline={a.baseline}: {wall:.3f} s wall per iteration (traced), "
          f"{summed:.3f} s of op time summed over threads")
    print(f"{'op type':40s} {'summed s':>9s} {'share':>6s} {'~wall s':>8s}")
    for op_type, seconds in totals.most_common(a.top):
        s = seconds / a.iters
        print(f"{op_type:40s} {s:9.3f} {100 * s / summed:5.1f}% {wall * s / summed:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
