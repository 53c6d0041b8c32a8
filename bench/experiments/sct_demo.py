"""Synthetic CT in HU at demo scale: MR-GAN vs. paired vs. unpaired on full-range records.

    .venv/bin/python bench/experiments/sct_demo.py [--steps 600] [--seeds 0] [--results docs/results]

The demo data's records are made with the synthetic-CT setting (CT over
[-1024, 3000] HU at 16 bits, ``make_records --ct_range``); the three modes train
with the Table I runner's flagfile and schedule (the paired baseline in its MR -> CT
direction), and ``mrgan_tf.evaluation.evaluate`` scores the synthetic CTs as SynthRAD does:
on each test patient's own grid, inside the mask, MAE in HU, PSNR on
[-1024, 3000] (range 4024), 3-D SSIM after +1024, MS-SSIM. Resumable like
``table1.py`` (finished runs are skipped, unfinished ones resume), and every run
records the checkout it used. Demo-scale numbers are not SynthRAD results.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import table1  # noqa: E402

from mrgan_tf.demo import pipeline as demo  # noqa: E402
from mrgan_tf.demo import runs  # noqa: E402
from mrgan_tf.demo.sct import CT_RANGE, sct_figure, sct_table  # noqa: E402
from tfrecords_tools.atomic import atomic_write_text  # noqa: E402

FLAGS = flags.FLAGS  # the Table I runner's flags (--root, --config, --steps, --seeds, --results, --workers)
FLAGS.set_default("root", str(REPO / "runs" / "experiments" / "sct"))
FLAGS.set_default("steps", 600)
FLAGS.set_default("seeds", ["0"])


def run() -> int:
    seeds, modes = [int(s) for s in FLAGS.seeds], list(table1.MODES)
    root = os.path.abspath(FLAGS.root)
    t0 = time.perf_counter()
    opts = demo.DemoOptions(out=root, config=FLAGS.config, steps=FLAGS.steps, workers=FLAGS.workers,
                            ct_range=CT_RANGE).resolved()
    d = demo.Demo(opts)
    for stage in (d.stage_data, d.stage_records):
        status, commands = stage()
        table1.say(f"{status}: {'; '.join(commands)}")
    grid = table1.Grid(root, "sct", FLAGS.config, FLAGS.steps, ["--paired_baseline_direction=mr2ct"])
    from mrgan_tf.evaluation.evaluate import evaluate
    per_seed = {}
    for seed in seeds:
        for mode in modes:
            if not grid.finished(mode, seed):
                grid.train(mode, seed)
        out = os.path.join(grid.dir, "eval", f"seed{seed}")
        models = {m: os.path.join(grid.run_dir(m, seed), "export") for m in modes}
        table1.say(f"[eval seed {seed}] python -m mrgan_tf.evaluate "
                    + " ".join(f"--model={m}={p}" for m, p in models.items()) + f" --dataset={grid.records} "
                    f"--out={out}")
        t_eval = time.perf_counter()
        per_seed[seed] = {"synthrad": evaluate(models, grid.records, out)["synthrad"],
                          "eval_seconds": time.perf_counter() - t_eval}
    first = per_seed[seeds[0]]["synthrad"]
    patients = sorted(next(iter(first["per_patient"].values())))
    os.makedirs(FLAGS.results, exist_ok=True)
    from mrgan_tf.inference.predictors import load_predictor
    png = sct_figure(os.path.join(FLAGS.results, "sct_demo_bone_window.png"), os.path.join(root, "data"), patients,
                     {table1.LABELS[m]: load_predictor(os.path.join(grid.run_dir(m, seeds[0]), "export"), "mr2ct")
                      for m in table1.TABLE_ORDER})
    timings = {m: {s: grid.state(m, s).get("finished") for s in seeds} for m in modes}
    doc = {"steps": FLAGS.steps, "seeds": seeds, "ct_range": CT_RANGE, "config": os.path.relpath(grid.config, REPO),
           "train_flags": grid.train_flags, "timings": timings,
           "commands": {f"{m}/seed{s}": runs.cmd_text(grid.command(m, s)) for m in modes for s in seeds},
           "code": table1.code_version(),
           "per_seed": {s: v["synthrad"]["per_patient"] for s, v in per_seed.items()},
           "eval_seconds": {s: v["eval_seconds"] for s, v in per_seed.items()},
           "mask_source": first.get("mask_source"), "wall_seconds": time.perf_counter() - t0}
    md = "\n".join(f"Seed {s}:\n\n" + sct_table({table1.LABELS[m]: v["synthrad"]["per_patient"][m]
                                                 for m in table1.TABLE_ORDER}) for s, v in per_seed.items())
    atomic_write_text(os.path.join(FLAGS.results, "sct_demo.md"), md)
    atomic_write_text(os.path.join(FLAGS.results, "sct_demo.json"), json.dumps(doc, indent=2) + "\n")
    print(md)
    print(f"wrote {png} and sct_demo.{{md,json}} in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return run()


if __name__ == "__main__":
    app.run(main)
