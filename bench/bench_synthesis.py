"""Synthesis on every core: float32 (today's path) against bf16, interleaved in one process.

    .venv/bin/python bench/bench_synthesis.py --json /tmp/bench_synthesis.json \
        [--effect_model EXPORT --effect_ct ct.nii.gz --effect_mr mr.nii.gz]

A full-size SynMR (ngf 64, 9 blocks, 256 px, random weights) is exported once in float32
and loaded twice: in float32 (what ``synthesize`` does by default, today's path unchanged)
and in bfloat16 (``synthesize --precision=bfloat16``). The float32 predictor's output is
checked bit for bit after a bf16 call. ``peaks.conv_peak()`` is measured first, in the
same process, before any bf16 graph has run.

Then, in ``--rounds`` rounds, each copy in turn: one call of ``--batch`` slices (wall,
process CPU, CPU/wall, and per worker thread its time on a core and its time waiting for
one, from /proc/self/task/*/schedstat: the share of wall time the load of other processes
took), and a synthetic 150-slice head through ``synthesis.synthesize_volume`` with and
without ``--tta=flip``. The slice's conv FLOPs over its wall time, against the conv peak of
its dtype, is the peak fraction.

Output effect of bf16: the full-size random-weight output on the 0-255 scale, and, with
``--effect_model``, a trained export's synthetic MR (0-255, ct2mr on ``--effect_ct``) and
synthetic CT (HU, mr2ct on ``--effect_mr``), everywhere and inside the body.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_inference import _head_ct, cpu_name, finish  # noqa: E402


def schedstat() -> dict[str, tuple[float, float]]:
    """{thread id: (seconds on a core, seconds runnable but waiting for one)} of this process."""
    out = {}
    for task in glob.glob("/proc/self/task/*"):
        try:
            with open(os.path.join(task, "schedstat")) as f:
                run, wait, _ = f.read().split()
        except (OSError, ValueError):
            continue
        out[os.path.basename(task)] = (int(run) / 1e9, int(wait) / 1e9)
    return out


def measured(fn) -> dict:
    """``fn()``'s wall and process CPU seconds, and the busy threads' run and run-queue wait."""
    s0, w0, c0 = schedstat(), time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu, s1 = time.perf_counter() - w0, time.process_time() - c0, schedstat()
    threads = sorted(((s1[t][0] - s0.get(t, (0, 0))[0], s1[t][1] - s0.get(t, (0, 0))[1]) for t in s1),
                     reverse=True)
    busy = [(r, w) for r, w in threads if r > 0.05 * cpu]
    return {"wall_s": wall, "cpu_s": cpu, "cpu_per_wall": cpu / wall, "result": result,
            "threads": [{"run_s": round(r, 3), "runqueue_wait_s": round(w, 3)} for r, w in busy],
            "runqueue_share": statistics.mean(w / wall for _, w in busy) if busy else 0.0}


def differences(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    out = {"max": float(d.max()), "mean": float(d.mean()), "p99": float(np.percentile(d, 99))}
    if mask is not None and mask.any():
        out.update(body_max=float(d[mask].max()), body_mean=float(d[mask].mean()),
                   body_p99=float(np.percentile(d[mask], 99)))
    return out


def effect_on_trained(args) -> dict:
    """fp32 vs bf16 of a trained export on real-size volumes, in output units, everywhere and inside the
    body (``mask.nii.gz`` beside the input, else CT > -500 HU)."""
    from mrgan_tf.inference import predictors, synthesis
    from mrgan_tf.io.readers import read_volume

    out = {"model": args.effect_model}
    jobs = [(n, path) for n, path in (("ct2mr", args.effect_ct), ("mr2ct", args.effect_mr)) if path]
    syn = {}
    for p in ("float32", "bfloat16"):
        for name, path in jobs:
            pred = predictors.load_predictor(args.effect_model, name, p)
            syn[name, p] = synthesis.synthesize_volume(pred, read_volume(path))[0]
    for name, path in jobs:
        mask_path = os.path.join(os.path.dirname(path), "mask.nii.gz")
        body = (read_volume(mask_path).data > 0 if os.path.exists(mask_path)
                else read_volume(path).data > -500)
        out[name] = {"input": path, "units": "0-255" if name == "ct2mr" else "HU",
                     **differences(syn[name, "float32"].data, syn[name, "bfloat16"].data, body)}
        real_ct = os.path.join(os.path.dirname(path), "ct.nii.gz")
        if name == "mr2ct" and os.path.exists(real_ct):   # the error the model makes, for scale
            ct = read_volume(real_ct).data.astype(np.float64)
            out[name]["body_mae_vs_real_ct"] = {p: float(np.abs(syn[name, p].data - ct)[body].mean())
                                                for p in ("float32", "bfloat16")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="slices per call (synthesize's --batch_size default)")
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--tta", default="flip", help="the augmentation timed beside the plain volume ('' for none)")
    ap.add_argument("--peak_reps", type=int, default=5)
    ap.add_argument("--effect_model", default=None, help="a trained export dir holding ct2mr and mr2ct")
    ap.add_argument("--effect_ct", default=None)
    ap.add_argument("--effect_mr", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import keras
    import tensorflow as tf
    from flops import generator_flops
    from peaks import conv_peak

    from mrgan_tf.inference import predictors, synthesis
    from mrgan_tf.inference.tta import TTAConfig
    from mrgan_tf.io.volumes import Volume
    from mrgan_tf.modeling import networks
    from mrgan_tf.preprocess import PreprocessConfig
    from mrgan_tf.serving import export

    t_start = time.perf_counter()
    res = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "tensorflow": tf.__version__,
                       "load_before": os.getloadavg()}, "args": vars(args)}
    res["conv_peak"] = conv_peak(reps=args.peak_reps)
    print("conv peak:", {k: round(v["gflops"]) for k, v in res["conv_peak"].items()}, flush=True)
    keras.utils.set_random_seed(0)
    gen = networks.build_generator(64, 9, 256, name="syn_mr")
    gflop = generator_flops(gen).forward / 1e9
    x = np.random.default_rng(1).uniform(-1, 1, (args.batch, 256, 256, 1)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench_synthesis_") as tmp:
        version_dir = export.export_generator(gen, "mr", PreprocessConfig(image_size=256), tmp)
        copies = {}
        for precision in ("float32", "bfloat16"):
            pred = predictors.load_predictor(version_dir, "ct2mr", precision)
            copies[precision] = pred, np.asarray(pred.fn(x), np.float32)
        again = np.asarray(copies["float32"][0].fn(x), np.float32)
        assert np.array_equal(again, copies["float32"][1]), "the float32 predictor changed after a bf16 call"
        res["random_weights_bf16_vs_fp32_0_255"] = differences(copies["float32"][1] * 127.5,
                                                               copies["bfloat16"][1] * 127.5)
        print("bf16 vs fp32, random weights, 0-255:", res["random_weights_bf16_vs_fp32_0_255"], flush=True)
        vol = Volume(_head_ct((230, 230, args.slices)), np.eye(4), "synthetic")
        tta = TTAConfig(tuple(a for a in args.tta.split(",") if a))
        rows = []
        for r in range(args.rounds):
            for precision, (pred, _) in copies.items():
                m = measured(lambda: pred.fn(x))
                m.pop("result")
                s = m["wall_s"] / args.batch
                rows.append({"round": r, "precision": precision, "what": f"batch of {args.batch}", **m,
                             "wall_s_per_slice": s, "cpu_s_per_slice": m["cpu_s"] / args.batch,
                             "gflops": gflop / s, "peak_fraction": gflop / s / res["conv_peak"][
                                 "float32" if precision == "float32" else "bfloat16"]["gflops"]})
                runs = [("head", pred)] + ([(f"head --tta={args.tta}", predictors.Fusion((pred,), "median", tta))]
                                           if tta.augment else [])
                for what, model in runs:
                    m = measured(lambda: synthesis.synthesize_volume(model, vol, batch_size=args.batch)[1])
                    info = m.pop("result")
                    rows.append({"round": r, "precision": precision, "what": what, **m,
                                 **{k: info[k] for k in ("slices", "prepare_s", "model_s", "restack_s")}})
                for row in rows[-1 - len(runs):]:
                    print(f"round {r} {precision:9s} {row['what']:18s} wall {row['wall_s']:7.2f} s  CPU "
                          f"{row['cpu_s']:7.2f} s  CPU/wall {row['cpu_per_wall']:.2f}  run-queue share "
                          f"{row['runqueue_share']:.2f}" + (f"  {row['gflops']:.0f} GFLOP/s = "
                                                            f"{100 * row['peak_fraction']:.0f} % of peak"
                                                            if "gflops" in row else ""), flush=True)
        res["rows"] = rows
    if args.effect_model:
        res["trained_bf16_vs_fp32"] = effect_on_trained(args)
        print("bf16 vs fp32, trained model:", json.dumps(res["trained_bf16_vs_fp32"], indent=1), flush=True)
    res["machine"]["load_after"] = os.getloadavg()
    res["gflop_per_slice"] = gflop
    res["wall_s"] = time.perf_counter() - t_start
    summary = {}
    for what in dict.fromkeys(r["what"] for r in rows):
        med = {p: statistics.median(r["wall_s"] for r in rows if r["what"] == what and r["precision"] == p)
               for p in copies}
        summary[what] = {**{f"{p}_wall_s": v for p, v in med.items()}, "float32/bfloat16": med["float32"] /
                         med["bfloat16"]}
    res["summary"] = summary
    print(json.dumps(summary, indent=1))
    finish(res, args.json)


if __name__ == "__main__":
    main()
