"""Training-iteration benchmarks: time, memory, FLOP/s, precision and input pipeline.

    .venv/bin/python bench/bench_train.py all --out /tmp/bench_train     # everything, ~15 min idle

Subcommands (``all`` runs each in its own process, after waiting for a quiet machine):

* ``iteration --size full|demo --precision float32|mixed_bfloat16 [--xla] [--context_slices k]``: builds
  MRGAN (mode mrgan, batch 1), compiles it as train.py does and runs Keras' own
  train function on a fixed batch: the first call (tracing), ``--warmup`` more, then
  ``--iters`` timed ones (wall and process CPU time each). Then, in the same
  process, the peak: the best GFLOP/s of the networks' own large convs in the run's
  dtype (bench_convs.conv_peak), peak RSS (``getrusage``), and FLOP/s from bench/flops.py.
* ``census``: traces ``train_step`` and counts generator forward passes (Tanh ops
  under the generators' name scopes), against what Algorithm 1 needs.
* ``trace --size full|demo``: ops in the traced ``train_step`` (total and per type) and the
  Python tracing time.
* ``pipeline --size N``: batches/s of ``data.training_dataset`` alone (tiny records).
* ``context --size full|demo``: ``iteration`` with 2-D images and with 2.5D stacks
  (``--context_slices 1``: 3 channels per image), alternating, each in its own
  process; reports the per-iteration ratio (issue 13's target: at most 1.15x).
* ``curves``: trains the demo config 200 steps in float32 and mixed_bfloat16 on the
  same records and seed, compares the smoothed L1 / cycle terms, writes a PNG overlay.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))          # flops
sys.path.insert(0, os.path.join(ROOT, "tests"))                          # records_factory

SIZES = {   # the paper's model, and configs/demo.cfg's at 128 px
    "full": dict(image_size=256, ngf=64, n_blocks=9, ndf_scale=1.0),
    "demo": dict(image_size=128, ngf=16, n_blocks=3, ndf_scale=0.25),
}


# ---------------------------------------------------------------- machine load
def _cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as f:
        v = [float(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def busy_cores(seconds: float = 5.0) -> float:
    """Cores kept busy by everything on the machine over ``seconds`` (call while idle yourself)."""
    b0, t0 = _cpu_times()
    time.sleep(seconds)
    b1, t1 = _cpu_times()
    return (os.cpu_count() or 1) * (b1 - b0) / max(t1 - t0, 1e-9)


def wait_for_quiet(max_busy: float, poll_s: float, timeout_s: float) -> dict:
    """Waits until other processes use < ``max_busy`` cores (or gives up); returns what it saw."""
    t0 = time.time()
    while True:
        busy = busy_cores()
        waited = time.time() - t0
        if busy < max_busy or waited >= timeout_s:
            return {"others_busy_cores": round(busy, 2), "loadavg_1m": os.getloadavg()[0],
                    "waited_s": round(waited), "quiet": busy < max_busy}
        print(f"  others use {busy:.2f} cores (load {os.getloadavg()[0]:.2f}); waiting", flush=True)
        time.sleep(poll_s)


# ---------------------------------------------------------------- peak FLOP/s
def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


# ---------------------------------------------------------------- model
BASELINES = {
    "none": "the shipped networks",
    "groupnorm": "instance norm as keras GroupNormalization(groups=-1)",
    "plain_convs": "one- and two-channel convs as plain keras Conv2D",
    "plain": "both of the above: the networks before the speed-ups",
}


def build_model(size: str, precision: str, xla: bool, baseline: str = "none", augment: bool = True,
                context_slices: int = 0):
    """MRGAN as train.py builds it; ``baseline`` swaps speed-ups back out for comparison (BASELINES);
    ``context_slices`` k > 0 builds the 2.5D model (stacks of 2k+1 slices)."""
    import keras

    from mrgan_tf.modeling import networks
    from mrgan_tf.modeling.fast import shared_update
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig, make_optimizers
    if baseline in ("groupnorm", "plain"):
        networks.instance_norm = lambda name=None: keras.layers.GroupNormalization(groups=-1, epsilon=1e-5,
                                                                                   name=name)
    if baseline in ("plain_convs", "plain"):
        networks.NarrowConv2D = keras.layers.Conv2D
    from mrgan_tf.modeling.augment import AugmentConfig
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    aug = AugmentConfig() if augment else AugmentConfig(flip=False, crop_margin=0, max_rotation_deg=0)
    config = MRGANConfig(mode="mrgan", augment=aug, context_slices=context_slices, **SIZES[size])
    model = MRGAN(config)
    model.compile(make_optimizers(config), jit_compile=xla)
    shared_update.attach(model)
    return model


def _batch(size: int, channels: int = 1):
    import numpy as np
    import tensorflow as tf
    return tf.constant(np.random.default_rng(0).integers(0, 256, (1, size, size, 4 * channels)).astype("float32"))


def run_iteration(a) -> dict:
    import tensorflow as tf
    from flops import iteration_flops
    model = build_model(a.size, a.precision, a.xla, a.baseline, context_slices=a.context_slices)
    it = iter(tf.data.Dataset.from_tensors(_batch(model.config.image_size, model.config.channels)).repeat())
    model.make_train_function()

    def step():
        out = model.train_function(it)
        logs = out.get_value() if hasattr(out, "get_value") else out
        return float(logs["paired/syn_mr_l1"].numpy())

    first_s, _ = _timed(step)
    for _ in range(a.warmup):
        step()
    load0 = os.getloadavg()[0]
    times = [_timed(step) for _ in range(a.iters)]
    loss = step()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall = [t[0] for t in times]
    cpu = [t[1] for t in times]
    from peaks import conv_peak
    key = "bfloat16" if a.precision == "mixed_bfloat16" else "float32"
    peak = {k: v["gflops"] for k, v in conv_peak((key,), reps=a.reps).items()}
    flops = iteration_flops(model)["total"]
    return {"size": a.size, "precision": a.precision, "xla": a.xla, "baseline": a.baseline,
            "context_slices": a.context_slices,
            "augment": not model.config.augment.is_identity, "jit_compile": model.jit_compile,
            "first_step_s": first_s, "iters": a.iters, "s_per_iter_median": statistics.median(wall),
            "s_per_iter_min": min(wall), "cpu_s_per_iter_median": statistics.median(cpu),
            "peak_rss_mb": rss_mb, "gflop_per_iter": flops / 1e9,
            "s_per_iter_all": wall, "gflops_achieved": flops / min(wall) / 1e9, "conv_peak_gflops": peak,
            "fraction_of_peak": flops / min(wall) / 1e9 / peak[key],
            "fraction_of_peak_median": flops / statistics.median(wall) / 1e9 / peak[key],
            "loadavg_during": [load0, os.getloadavg()[0]], "final_l1": loss}


# ---------------------------------------------------------------- generator census
def run_census(a) -> dict:
    """Counts generator forward passes in the traced train_step (Tanh = a generator's output)."""
    import tensorflow as tf
    model = build_model("demo", "float32", False)
    model.update_runner = None  # every update inline, so each forward pass is an op of this one graph
    s = model.config.image_size
    graph = tf.function(model.train_step).get_concrete_function(tf.TensorSpec([1, s, s, 4], tf.float32)).graph
    ops = [op for op in graph.get_operations() if op.type == "Tanh"]
    counts = {g: sum(g in op.name for op in ops) for g in ("syn_mr", "syn_ct")}
    from flops import iteration_flops
    return {"tanh_ops": len(ops), "per_generator": counts,
            "needed_by_algorithm_1": iteration_flops(model)["generator_forwards"],
            "op_names": sorted(op.name for op in ops)}


# ---------------------------------------------------------------- traced step size
def run_trace(a) -> dict:
    """Ops in the traced train_step (all, per type, the optimizers' share) and the time to trace it."""
    import collections

    import tensorflow as tf
    model = build_model(a.size, "float32", False)
    if a.inline:         # every update built in the step, as before shared_update.py
        model.update_runner = None
    s = model.config.image_size
    step = model.train_step
    if a.autograph:      # the step as it was traced before do_not_convert
        step = type(model).train_step.__wrapped__.__get__(model)
    w, c = time.perf_counter(), time.process_time()
    graph = tf.function(step).get_concrete_function(tf.TensorSpec([1, s, s, 4], tf.float32)).graph
    trace_s, trace_cpu_s = time.perf_counter() - w, time.process_time() - c

    def count(g) -> collections.Counter:      # ops of the graph and of the functions it calls
        c = collections.Counter(op.type for op in g.get_operations())
        for f in g._functions.values():
            c.update(count(f.graph) if hasattr(f, "graph") else {})
        return c
    types = count(graph)
    return {"size": a.size, "autograph": a.autograph, "inline": a.inline, "ops": sum(types.values()),
            "trace_s": trace_s, "trace_cpu_s": trace_cpu_s, "top_types": types.most_common(15)}


# ---------------------------------------------------------------- input pipeline
def run_pipeline(a) -> dict:
    from records_factory import write_tiny_records

    from mrgan_tf.training import data
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_tiny_records(tmp, size=a.image_size, per_set=40)
        ds = data.training_dataset(spec, "mrgan", 1, seed=0)
        it = iter(ds)
        for _ in range(50):
            next(it)
        w, c = _timed(lambda: [next(it) for _ in range(a.batches)])
    return {"image_size": a.image_size, "batches": a.batches, "batches_per_s": a.batches / w,
            "cpu_ms_per_batch": 1e3 * c / a.batches}


# ---------------------------------------------------------------- precision curves
CURVE_TERMS = ("paired/syn_mr_l1", "paired/syn_ct_l1", "paired/syn_mr_cycle", "paired/syn_ct_cycle",
               "unpaired/syn_mr_cycle", "unpaired/syn_ct_cycle")


def _history(path: str) -> dict:
    import numpy as np
    with open(path) as f:
        head = f.readline().strip().split(",")
        rows = [[float(v) for v in line.split(",")] for line in f if line.strip()]
    arr = np.array(rows)
    return {k: arr[:, i] for i, k in enumerate(head)}


def run_curves(a) -> dict:
    import numpy as np
    from records_factory import write_tiny_records

    from mrgan_tf.evaluation import figures
    os.makedirs(a.out, exist_ok=True)
    records = os.path.join(a.out, "records")
    if not os.path.exists(os.path.join(records, "dataset.json")):
        write_tiny_records(records, size=128, per_set=40)
    hist, secs = {}, {}
    for prec in ("float32", "mixed_bfloat16"):
        run = os.path.join(a.out, prec)
        if not os.path.exists(os.path.join(run, "history.csv")):
            cmd = [sys.executable, "-m", "mrgan_tf.train", f"--flagfile={ROOT}/configs/demo.cfg",
                   f"--records={records}", f"--out={run}", f"--steps={a.steps}", f"--precision={prec}",
                   "--log_every=1", "--image_every=100000", "--checkpoint_every=100000", "--noexport",
                   "--verbose=0"]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            secs[prec] = time.perf_counter() - t0
        hist[prec] = _history(os.path.join(run, "history.csv"))
    n = min(len(h["iteration"]) for h in hist.values())
    result, curves = {"steps": n, "train_wall_s": secs, "terms": {}}, {}
    for term in CURVE_TERMS:
        fp, bf = (figures.ema(hist[p][term][:n], 0.9) for p in ("float32", "mixed_bfloat16"))
        rel = np.abs(bf - fp) / np.maximum(np.abs(fp), 1e-8)
        result["terms"][term] = {"mean_rel_diff": float(np.mean(rel)), "max_rel_diff": float(np.max(rel)),
                                 "fp32_first_last": [float(fp[0]), float(fp[-1])],
                                 "bf16_first_last": [float(bf[0]), float(bf[-1])]}
        for p, tag in (("float32", "fp32"), ("mixed_bfloat16", "bf16")):
            curves[f"{term} {tag}"] = (hist[p]["iteration"][:n], hist[p][term][:n])
    result["png"] = figures.loss_curves(os.path.join(a.out, "precision_curves.png"), curves,
                                        title=f"demo model, {n} steps: float32 vs mixed_bfloat16",
                                        smooth=0.9, max_per_axes=4)
    return result


# ---------------------------------------------------------------- 2.5D cost
def run_context(a) -> dict:
    """Seconds per iteration of the 2-D and the k = 1 model, alternating runs (each its own process)."""
    from bench_inference import cpu_name
    os.makedirs(a.out, exist_ok=True)
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(a.rounds):
        for k in (0, 1):
            out = os.path.join(a.out, f"context_{a.size}_k{k}_round{r}.json")
            subprocess.run([sys.executable, __file__, "iteration", "--size", a.size, "--context_slices", str(k),
                            "--iters", str(a.iters), "--warmup", str(a.warmup), "--reps", "1", "--json", out],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            with open(out) as f:
                times[k].append(json.load(f)["s_per_iter_median"])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"size": a.size, "rounds": a.rounds, "iters": a.iters, "s_per_iter": times,
            "s_per_iter_median": med, "ratio_k1_over_2d": med[1] / med[0], "target": 1.15,
            "cpu": cpu_name(), "loadavg": os.getloadavg()[0]}


# ---------------------------------------------------------------- driver
def run_all(a) -> dict:
    """Each measurement in its own process, each after waiting for a quiet machine."""
    os.makedirs(a.out, exist_ok=True)
    jobs = [(f"{size}_{prec}{'_xla' if xla else ''}",
             ["iteration", "--size", size, "--precision", prec, *(["--xla"] if xla else []),
              "--iters", str(5 if size == "full" else 30), "--warmup", "3"])
            for size in ("demo", "full") for prec, xla in (("float32", False), ("mixed_bfloat16", False),
                                                          ("float32", True))]
    jobs += [(f"full_float32_{b}", ["iteration", "--size", "full", "--baseline", b, "--iters", "5", "--warmup", "3"])
             for b in BASELINES if b != "none"]
    jobs += [("census", ["census"]), ("pipeline_128", ["pipeline", "--image_size", "128"]),
             ("pipeline_256", ["pipeline", "--image_size", "256"]),
             ("curves", ["curves", "--out", os.path.join(a.out, "curves")])]
    results = {}
    for name, args in jobs:
        if a.only and name not in a.only.split(","):
            continue
        load = wait_for_quiet(a.max_busy, 30, a.max_wait_s)
        print(f"{name}: {load}", flush=True)
        out = os.path.join(a.out, f"{name}.json")
        proc = subprocess.run([sys.executable, __file__, *args, "--json", out], cwd=ROOT)
        if proc.returncode:
            results[name] = {"error": f"exit {proc.returncode}", "load_before": load}
            continue
        with open(out) as f:
            results[name] = {**json.load(f), "load_before": load}
        print(json.dumps(results[name])[:400], flush=True)
    with open(os.path.join(a.out, "all.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(markdown_table(results))
    return results


def markdown_table(results: dict) -> str:
    rows = ["| setting | s/iteration (median, min) | CPU s/iteration | first step | peak RSS | "
            "GFLOP/iter | GFLOP/s (median, best) | of the large convs' peak, median (best) (peak GFLOP/s) | "
            "others' load before |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "s_per_iter_median" not in r:
            continue
        pk = next(iter(r["conv_peak_gflops"].values()))
        rows.append(f"| {name} | {r['s_per_iter_median']:.3f}, {r['s_per_iter_min']:.3f} | "
                    f"{r['cpu_s_per_iter_median']:.3f} | {r['first_step_s']:.1f} s | {r['peak_rss_mb']:.0f} MB | "
                    f"{r['gflop_per_iter']:.1f} | {r['gflop_per_iter'] / r['s_per_iter_median']:.0f}, "
                    f"{r['gflops_achieved']:.0f} | {100 * r['fraction_of_peak_median']:.0f}% "
                    f"({100 * r['fraction_of_peak']:.0f}%) ({pk:.0f}) | "
                    f"{r['load_before']['others_busy_cores']} cores |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    it = sub.add_parser("iteration")
    it.add_argument("--size", choices=sorted(SIZES), default="demo")
    it.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    it.add_argument("--xla", action="store_true")
    it.add_argument("--baseline", choices=sorted(BASELINES), default="none",
                    help="; ".join(f"{k}: {v}" for k, v in BASELINES.items()))
    it.add_argument("--warmup", type=int, default=3)
    it.add_argument("--iters", type=int, default=5)
    it.add_argument("--reps", type=int, default=3, help="conv peak repetitions per pass (best-of)")
    it.add_argument("--context_slices", type=int, default=0, help="2.5D: k neighbours each side (2k+1 channels)")
    cx = sub.add_parser("context")
    cx.add_argument("--size", choices=sorted(SIZES), default="full")
    cx.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "bench_context"))
    cx.add_argument("--rounds", type=int, default=2, help="alternating (2-D, k=1) process pairs")
    cx.add_argument("--iters", type=int, default=5)
    cx.add_argument("--warmup", type=int, default=2)
    sub.add_parser("census")
    tr = sub.add_parser("trace")
    tr.add_argument("--size", choices=sorted(SIZES), default="demo")
    tr.add_argument("--autograph", action="store_true", help="trace train_step through autograph (as before)")
    tr.add_argument("--inline", action="store_true", help="build every update in the step (no shared updates)")
    pl = sub.add_parser("pipeline")
    pl.add_argument("--image_size", type=int, default=128)
    pl.add_argument("--batches", type=int, default=2000)
    cu = sub.add_parser("curves")
    cu.add_argument("--out", required=True)
    cu.add_argument("--steps", type=int, default=200)
    al = sub.add_parser("all")
    al.add_argument("--out", required=True)
    al.add_argument("--only", default="", help="comma-separated job names")
    al.add_argument("--max_busy", type=float, default=1.5, help="wait while others use this many cores")
    al.add_argument("--max_wait_s", type=float, default=600)
    for sp in (it, sub.choices["census"], tr, pl, cu, cx):
        sp.add_argument("--json", help="write the result here")
    a = p.parse_args(argv)
    if a.cmd == "all":
        run_all(a)
        return 0
    result = {"iteration": run_iteration, "census": run_census, "trace": run_trace, "pipeline": run_pipeline,
              "curves": run_curves, "context": run_context}[a.cmd](a)
    text = json.dumps(result, indent=1)
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, a.json)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
