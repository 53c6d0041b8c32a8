"""Does test-time augmentation help, and is its spread worth anything? Runs scored with and without it.

    .venv/bin/python bench/experiments/tta_effect.py --runs=NAME=RUN_DIR,... --records=DIR [--tta=flip]

Each run (an MR-GAN training: both generators) is scored by ``evaluate`` on the records'
test patients, on their own grids inside their masks (SynthRAD's conventions), once as it
is and once with ``--tta`` (the copies' median is the prediction): the synthetic CT's and
the synthetic MR's MAE and SSIM both ways, and, with TTA, the spread's Spearman correlation
with |error| and the MAE where the spread is in its top 10 % against the rest. Runs named
``<arm>/seed<k>`` are summarised per arm over seeds. Writes ``<results>/tta_effect.{md,json}``.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mrgan_tf.evaluation.evaluate import evaluate  # noqa: E402
from mrgan_tf.inference.tta import TTAConfig  # noqa: E402
from tfrecords_tools.atomic import atomic_write_text  # noqa: E402

flags.DEFINE_list("runs", [], "NAME=RUN_DIR of MR-GAN runs; NAME arm/seedK groups seeds of one arm.")
flags.DEFINE_string("records", None, "Records whose paired_test patients are scored.")
flags.DEFINE_list("tta", ["flip"], "Test-time augmentation (synthesize --tta).")
flags.DEFINE_string("results", str(REPO / "docs" / "results"), "Where tta_effect.md/.json go.")
FLAGS = flags.FLAGS

SHOWN = ("mae", "ssim")
SPREAD = ("unc_spearman", "unc_mae_top10", "unc_mae_rest")


def score(run_dir: str, records: str, tta: TTAConfig) -> dict:
    """{patient: metrics} of one run, scored as evaluate scores it."""
    with tempfile.TemporaryDirectory() as out:
        result = evaluate({"m": run_dir}, records, out, tta=tta)
    return result["synthrad"]["per_patient"]["m"]


def mean_over_patients(rows: dict) -> dict:
    keys = set.intersection(*(set(r) for r in rows.values()))
    return {k: float(np.mean([r[k] for r in rows.values()])) for k in sorted(keys)}


def table(per_run: dict, tta: str) -> str:
    lines = [f"| Run | Direction | MAE | MAE, {tta} TTA | SSIM | SSIM, {tta} TTA | spread~error (Spearman) | "
             "MAE, top-10 % spread | MAE, other 90 % |", "|---|---|" + "---:|" * 7]
    arms = collections.defaultdict(list)
    for name, r in per_run.items():
        arms[name.split("/")[0]].append(r)
        for d, label in (("sct", "MR -> CT (HU)"), ("smr", "CT -> MR (MR units)")):
            lines.append(_row(name, label, d, r["plain"], r["tta"]))
    for arm, rs in arms.items():
        if len(rs) > 1:
            for d, label in (("sct", "MR -> CT (HU)"), ("smr", "CT -> MR (MR units)")):
                plain = {k: float(np.mean([r["plain"][k] for r in rs])) for k in rs[0]["plain"]}
                aug = {k: float(np.mean([r["tta"][k] for r in rs])) for k in rs[0]["tta"]}
                lines.append(_row(f"**{arm}, mean of {len(rs)} seeds**", label, d, plain, aug))
    return "\n".join(lines) + "\n"


def _row(name, label, d, plain, aug) -> str:
    def f(v, k):
        return f"{v:.3f}" if "ssim" in k or "spearman" in k else f"{v:.1f}"
    cells = [f(plain[f"{d}_mae"], "mae"), f(aug[f"{d}_mae"], "mae"), f(plain[f"{d}_ssim"], "ssim"),
             f(aug[f"{d}_ssim"], "ssim")] + [f(aug[f"{d}_{k}"], k) for k in SPREAD]
    return f"| {name} | {label} | " + " | ".join(cells) + " |"


def main(argv):
    del argv
    tta = TTAConfig(augment=tuple(FLAGS.tta))
    runs = dict(r.split("=", 1) for r in FLAGS.runs)
    per_run, t0 = {}, time.perf_counter()
    for name, run_dir in runs.items():
        load = os.getloadavg()[0]
        plain, aug = score(run_dir, FLAGS.records, TTAConfig()), score(run_dir, FLAGS.records, tta)
        per_run[name] = {"run": run_dir, "plain": mean_over_patients(plain), "tta": mean_over_patients(aug),
                         "per_patient": {"plain": plain, "tta": aug}, "load_before": load}
        print(name, {k: round(v, 3) for k, v in per_run[name]["tta"].items()}, flush=True)
    md = (f"Each run scored by `evaluate` on `{FLAGS.records}`'s test patients without and with "
          f"`--tta={','.join(tta.augment)}` (mean of the patients; SynthRAD's conventions on each patient's own "
          "grid inside the mask).\n\n" + table(per_run, "+".join(tta.augment)))
    os.makedirs(FLAGS.results, exist_ok=True)
    atomic_write_text(os.path.join(FLAGS.results, "tta_effect.md"), md)
    atomic_write_text(os.path.join(FLAGS.results, "tta_effect.json"), json.dumps(
        {"tta": list(tta.augment), "records": FLAGS.records, "runs": per_run,
         "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    print(md)


if __name__ == "__main__":
    app.run(main)
