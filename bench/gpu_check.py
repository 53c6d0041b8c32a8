"""The GPU check behind bench/gpu_check.sh: iteration times, a Mirrored equality check, inference.

Each part runs in its own process (``part NAME``; the logical-device split must
happen before TensorFlow starts, and a crash or hang in one part must not lose
the others) under its own time limit; the driver merges their JSON into one
file, rewritten atomically after every part, so a run cut short still leaves
what it measured.

Parts (full size = 256 px, ngf 64, 9 blocks, D1, batch 1, mode mrgan):

* ``iter_float32``, ``iter_mixed_float16`` (loss-scaled Adam), ``iter_float32_xla``:
  Keras' own train function on a fixed batch; first step (tracing), warm-up, then
  median and best wall time of the timed iterations, synchronised on a loss value.
* ``mirrored``: one GPU carved into two logical GPUs; one Algorithm-1 iteration
  (demo-size model, seeded, deterministic ops, SGD, TF32 off) under MirroredStrategy
  against one device; the largest weight difference must stay within 1e-5.
* ``inference``: the full-size generator in a tf.function, ms per slice at batch 1 and 16.

``--dry_run`` runs every part at a tiny size on whatever device there is
(CPU: two logical CPUs for the Mirrored part), to check the script, not the GPU.

    python bench/gpu_check.py --out /tmp/gpu_check.json [--dry_run] [--budget_s 470]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

FULL = dict(image_size=256, ngf=64, n_blocks=9, ndf_scale=1.0)
MIRRORED = dict(image_size=128, ngf=16, n_blocks=3, ndf_scale=0.25)       # configs/demo.cfg's model
TINY = dict(image_size=32, ngf=4, n_blocks=1, ndf_scale=0.125)
# name: (seconds allowed on a GPU, arguments)
PARTS = {
    "iter_float32": (100, ["--precision", "float32"]),
    "iter_mixed_float16": (100, ["--precision", "mixed_float16"]),
    "iter_float32_xla": (130, ["--precision", "float32", "--xla"]),
    "mirrored": (70, []),
    "inference": (60, []),
}
TARGETS = {"iteration_ms": 25.0, "inference_ms_per_slice": 3.0, "mirrored_max_diff": 1e-5}


def _devices():
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    info = {"tensorflow": tf.__version__, "gpus": [g.name for g in gpus],
            "built_with_cuda": tf.test.is_built_with_cuda()}
    if gpus:
        try:
            d = tf.config.experimental.get_device_details(gpus[0])
            info["gpu_name"], info["compute_capability"] = d.get("device_name"), d.get("compute_capability")
        except Exception as e:  # noqa: BLE001  (details are informative only)
            info["gpu_name"] = f"unknown ({e})"
    return info


def _sync(x) -> float:
    return float(x.numpy())


def part_iteration(a) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from mrgan_tf.modeling.augment import AugmentConfig
    from mrgan_tf.modeling.fast import shared_update
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig, make_optimizers
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(a.precision)
    size = TINY if a.dry_run else FULL
    config = MRGANConfig(mode="mrgan", augment=AugmentConfig(), **size)
    model = MRGAN(config)
    model.compile(make_optimizers(config, loss_scale=a.precision == "mixed_float16"), jit_compile=a.xla)
    shared_update.attach(model)
    s = config.image_size
    batch = tf.constant(np.random.default_rng(0).integers(0, 256, (1, s, s, 4)).astype("float32"))
    it = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    step = lambda: _sync(model.train_function(it)["paired/syn_mr_l1"])  # noqa: E731
    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"precision": a.precision, "xla": a.xla, "size": size, "first_step_s": first,
            "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
            "ms_per_iter_median": 1e3 * statistics.median(times), "ms_per_iter_min": 1e3 * min(times),
            "iters": a.iters, "target_ms": TARGETS["iteration_ms"],
            "met": (not a.dry_run) and statistics.median(times) * 1e3 <= TARGETS["iteration_ms"]}


def part_mirrored(a) -> dict:
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        half = tf.config.LogicalDeviceConfiguration(memory_limit=16384)      # MB; two of them on one GPU
        tf.config.set_logical_device_configuration(gpus[0], [half, half])
        names = ["/gpu:0", "/gpu:1"]
    else:
        from mrgan_tf.training.distribute import split_cpu
        split_cpu(2)
        names = ["/cpu:0", "/cpu:1"]
    import keras
    import numpy as np

    from mrgan_tf.modeling.augment import AugmentConfig
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig
    tf.config.experimental.enable_tensor_float_32_execution(False)
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    size = TINY if a.dry_run else MIRRORED
    cfg = MRGANConfig(mode="mrgan", augment=AugmentConfig(flip=False, crop_margin=0, max_rotation_deg=0), **size)
    s = cfg.image_size
    batch = tf.constant(np.random.default_rng(0).integers(0, 256, (2, s, s, 4)).astype("float32"))
    ds = tf.data.Dataset.from_tensors(batch)
    sgd = lambda: {n: keras.optimizers.SGD(1e-4) for n in ("syn_mr", "syn_ct", "dis_mr", "dis_ct")}  # noqa: E731
    with tf.device(names[0]):
        single = MRGAN(cfg)
        single.compile(sgd())
    start = [w.copy() for w in single.get_weights()]
    strategy = tf.distribute.MirroredStrategy(names)
    with strategy.scope():
        mirrored = MRGAN(cfg)
        mirrored.compile(sgd())
    mirrored.set_weights(start)
    with tf.device(names[0]):
        single.fit(ds, epochs=1, verbose=0)
    mirrored.fit(ds, epochs=1, verbose=0)
    trainable = {id(v) for v in single.trainable_variables}
    idx = [i for i, v in enumerate(single.weights) if id(v) in trainable]
    x, y = single.get_weights(), mirrored.get_weights()
    diff = max(float(np.max(np.abs(x[i] - y[i]))) for i in idx)
    return {"logical_devices": names, "replicas": strategy.num_replicas_in_sync, "size": size, "batch": 2,
            "max_weight_diff": diff, "max_weight_change": max(float(np.max(np.abs(x[i] - start[i]))) for i in idx),
            "tolerance": TARGETS["mirrored_max_diff"], "met": diff <= TARGETS["mirrored_max_diff"]}


def part_inference(a) -> dict:
    import numpy as np
    import tensorflow as tf

    from mrgan_tf.modeling.networks import build_generator
    size = TINY if a.dry_run else FULL
    s = size["image_size"]
    gen = build_generator(size["ngf"], size["n_blocks"], s)
    fn = tf.function(lambda x: gen(x, training=False), input_signature=[tf.TensorSpec([None, s, s, 1], tf.float32)])
    out = {"size": size, "target_ms_per_slice": TARGETS["inference_ms_per_slice"]}
    for batch in (1, 16):
        x = tf.constant(np.random.default_rng(batch).uniform(-1, 1, (batch, s, s, 1)).astype("float32"))
        fn(x).numpy()
        times = []
        for _ in range(a.iters):
            t = time.perf_counter()
            fn(x).numpy()
            times.append(time.perf_counter() - t)
        ms = 1e3 * statistics.median(times) / batch
        out[f"batch_{batch}"] = {"ms_per_slice_median": ms, "ms_per_slice_min": 1e3 * min(times) / batch,
                                 "met": (not a.dry_run) and ms <= TARGETS["inference_ms_per_slice"]}
    return out


def run_part(a) -> int:
    fn = {"mirrored": part_mirrored, "inference": part_inference}.get(a.part, part_iteration)
    result = {**fn(a), "devices": _devices()}
    with open(a.out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    return 0


def _write(path: str, obj: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def drive(a) -> int:
    """Runs the parts one after another within ``budget_s``; returns non-zero if any part failed."""
    t0 = time.perf_counter()
    result = {"dry_run": a.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "budget_s": a.budget_s,
              "targets": TARGETS, "parts": {}}
    failed = False
    for name, (limit, args) in PARTS.items():
        if a.only and name not in a.only.split(","):
            continue
        left = a.budget_s - (time.perf_counter() - t0)
        timeout = min(limit * (3 if a.dry_run else 1), left)
        if timeout < 10:
            result["parts"][name] = {"error": "skipped: the time budget is spent"}
            failed = True
            continue
        part_json = f"{a.out}.{name}.json"
        cmd = [sys.executable, __file__, "part", name, "--out", part_json, "--iters", str(a.iters),
               "--warmup", str(a.warmup), *args, *(["--dry_run"] if a.dry_run else [])]
        print(f"[{time.perf_counter() - t0:5.0f} s] {name} (limit {timeout:.0f} s)", flush=True)
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}")
            with open(part_json) as f:
                result["parts"][name] = json.load(f)
            os.remove(part_json)
        except subprocess.TimeoutExpired:
            result["parts"][name] = {"error": f"timed out after {timeout:.0f} s"}
            failed = True
        except (RuntimeError, OSError, ValueError) as e:
            result["parts"][name] = {"error": str(e)}
            failed = True
        result["parts"][name]["wall_s"] = time.perf_counter() - t
        print(f"        {json.dumps(result['parts'][name])[:300]}", flush=True)
        result["total_s"] = time.perf_counter() - t0
        _write(a.out, result)
    result["total_s"] = time.perf_counter() - t0
    _write(a.out, result)
    print(f"wrote {a.out} ({result['total_s']:.0f} s)")
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="drive", choices=["drive", "part"])
    p.add_argument("part", nargs="?", choices=sorted(PARTS), help="(part) which one")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--dry_run", action="store_true", help="tiny sizes on any device: checks the script only")
    p.add_argument("--budget_s", type=float, default=470.0, help="all parts together (the check must fit 8 min)")
    p.add_argument("--only", default="", help="comma-separated part names")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_float16"])
    p.add_argument("--xla", action="store_true")
    a = p.parse_args(argv)
    out_dir = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(out_dir):
        print(f"gpu_check: {out_dir}: no such directory", file=sys.stderr)
        return 2
    if a.mode == "part":
        if not a.part:
            p.error("part needs a part name")
        return run_part(a)
    bad = set(filter(None, a.only.split(","))) - set(PARTS)
    if bad:
        p.error(f"--only: unknown parts {sorted(bad)}; choose from {sorted(PARTS)}")
    return drive(a)


if __name__ == "__main__":
    sys.exit(main())
