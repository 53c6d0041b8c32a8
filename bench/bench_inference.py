"""Inference latency of the full-size generator: SavedModel vs raw Keras, fp32 vs bf16, whole volume.

    .venv/bin/python bench/bench_inference.py --json /tmp/bench_inference.json

For each precision (float32, then the mixed_bfloat16 policy) a full-size SynMR
(ngf 64, 9 blocks, 256 x 256, random weights) is exported with
``mrgan_tf.serving.export.export_generator`` and timed per 256 x 256 slice at batch 1, 8
and 32 through three paths:

* ``saved_model``: the SavedModel's ``normalised`` signature (what synthesize uses);
* ``keras_function``: the Keras generator in a ``tf.function`` (synthesize from a run dir);
* ``keras_eager``: ``generator(x, training=False)`` called eagerly.

Paths are interleaved call by call, so load from other processes hits them
alike; one warm-up call per path (tracing) is discarded; the median of the timed
calls is reported with the process CPU time per call. ``keras_eager`` is timed at
the smallest batch only (it runs the same kernels plus per-op Python overhead).
Then one 150-slice CT volume (230 x 230 x 150 at 1 mm, a synthetic head) goes
through ``synthesis.synthesize_volume`` with the SavedModel (read excluded;
preprocessing, model and restacking included).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def cpu_name() -> str:
    """/proc/cpuinfo's model name (the processor string, or unknown, elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _timed(fn, x) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    np.asarray(fn(x))
    return time.perf_counter() - w, time.process_time() - c


def _head_ct(shape) -> np.ndarray:
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g ** 2 for g in grid))
    ct = np.where(r < 0.85, 35.0, -1000.0) + np.where((r > 0.72) & (r < 0.85), 1000.0, 0.0)
    return (ct + np.random.default_rng(0).normal(0, 8, shape)).astype(np.float32)


def bench_precision(precision: str, batch_sizes, reps: int, args, tmp: str) -> dict:
    import keras
    import tensorflow as tf

    from mrgan_tf.inference import predictors, synthesis
    from mrgan_tf.modeling import networks
    from mrgan_tf.preprocess import PreprocessConfig
    from mrgan_tf.serving import export

    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        gen = networks.build_generator(args.ngf, args.n_blocks, args.image_size, name="syn_mr")
        cfg = PreprocessConfig(image_size=args.image_size)
        t0 = time.perf_counter()
        version_dir = export.export_generator(gen, "mr", cfg, os.path.join(tmp, precision))
        export_s = time.perf_counter() - t0
        predictor = predictors.load_predictor(version_dir, "ct2mr")
        s = args.image_size
        fn = tf.function(lambda x: gen(x, training=False),
                         input_signature=[tf.TensorSpec([None, s, s, 1], tf.float32)])
        paths = {
            "saved_model": predictor.fn,
            "keras_function": lambda x: fn(tf.constant(x)).numpy(),
            "keras_eager": lambda x: gen(tf.constant(x), training=False).numpy(),
        }
        rows = []
        rng = np.random.default_rng(1)
        for b in batch_sizes:
            x = rng.uniform(-1, 1, (b, s, s, 1)).astype(np.float32)
            # Eager calls run the same kernels plus Python overhead per op: batch 1 shows the overhead.
            active = {n: f for n, f in paths.items() if n != "keras_eager" or b == batch_sizes[0]}
            if b == batch_sizes[0]:   # warm-up (tracing; the graphs are shape-agnostic) + output check
                outs = {name: np.asarray(f(x), np.float32) for name, f in active.items()}
                max_diff = max(float(np.abs(outs[n] - outs["keras_eager"]).max()) for n in outs)
            times = {name: [] for name in active}
            for _ in range(reps.get(b, 1)):
                for name, f in active.items():
                    times[name].append(_timed(f, x))
            for name, t in times.items():
                wall = statistics.median(w for w, _ in t)
                cpu = statistics.median(c for _, c in t)
                rows.append({"precision": precision, "path": name, "batch": b, "calls": len(t),
                             "ms_per_slice": 1000 * wall / b, "cpu_ms_per_slice": 1000 * cpu / b,
                             "max_abs_diff_vs_eager": max_diff})
                print(f"{precision:15s} {name:15s} batch {b:3d}: {1000 * wall / b:8.1f} ms/slice "
                      f"(CPU {1000 * cpu / b:8.1f} ms, {len(t)} calls)", flush=True)
        volume = None
        if precision in args.volume_precisions:
            from mrgan_tf.io.volumes import Volume
            vol = Volume(_head_ct((230, 230, args.slices)), np.eye(4), "synthetic")
            c0 = time.process_time()
            out, timing = synthesis.synthesize_volume(predictor, vol, batch_size=args.volume_batch)
            volume = {"shape": list(vol.shape), "batch_size": args.volume_batch,
                      "cpu_s": time.process_time() - c0, **timing}
            assert out.shape == vol.shape
            print(f"{precision:15s} volume {vol.shape}: {timing['total_s']:.1f} s "
                  f"(prepare {timing['prepare_s']:.1f}, model {timing['model_s']:.1f}, "
                  f"restack {timing['restack_s']:.1f})", flush=True)
        return {"rows": rows, "export_s": export_s, "volume": volume}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _cell(r: dict | None) -> str:
    return "—" if r is None else f"{r['ms_per_slice']:.0f} ms (CPU {r['cpu_ms_per_slice']:.0f})"


def markdown(results: dict) -> str:
    lines = ["| precision | batch | SavedModel `normalised` | Keras tf.function | Keras eager "
             "| SavedModel / Keras fn |",
             "|---|---:|---:|---:|---:|---:|"]
    for precision, res in results["precisions"].items():
        by = {(r["path"], r["batch"]): r for r in res["rows"]}
        for b in results["batch_sizes"]:
            sm, kf, ke = (by.get((p, b)) for p in ("saved_model", "keras_function", "keras_eager"))
            lines.append(f"| {precision} | {b} | {_cell(sm)} | {_cell(kf)} | {_cell(ke)} | "
                         f"{sm['ms_per_slice'] / kf['ms_per_slice']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch_sizes", default="1,8,32")
    ap.add_argument("--reps", default="1:3,8:2,32:1", help="timed calls per path, per batch size (batch:calls)")
    ap.add_argument("--precisions", default="float32,mixed_bfloat16")
    ap.add_argument("--volume_precisions", default="float32")
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--volume_batch", type=int, default=16)
    ap.add_argument("--image_size", type=int, default=256)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--n_blocks", type=int, default=9)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    args.volume_precisions = args.volume_precisions.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    import tensorflow as tf

    t0 = time.perf_counter()
    results = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "tensorflow": tf.__version__,
                           "load_before": os.getloadavg()},
               "batch_sizes": batch_sizes, "args": vars(args), "precisions": {}}
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        for precision in args.precisions.split(","):
            reps = dict((int(b), int(n)) for b, n in (item.split(":") for item in args.reps.split(",")))
            results["precisions"][precision] = bench_precision(precision, batch_sizes, reps, args, tmp)
    results["machine"]["load_after"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - t0
    print(markdown(results))
    finish(results, args.json)


def finish(results: dict, json_path: str | None) -> None:
    """The run's total time and machine load, and its JSON where asked (shared with bench_synthesis)."""
    print(f"total {results['wall_s']:.0f} s, load average {results['machine']['load_before']} -> "
          f"{results['machine']['load_after']}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
