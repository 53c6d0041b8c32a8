"""Paper-fidelity grids at the Table I runner's CPU scale: optimizer coupling, Tables III and IV.

    .venv/bin/python bench/experiments/fidelity.py [--groups optimizers,table3,table4]
        [--seeds 0,1,2] [--table_seeds 0,1] [--results docs/results/fidelity]

Every arm is MR-GAN mode trained by ``table1.py``'s ``Grid`` with its flagfile
(``bench/experiments/configs/table1.cfg``), steps and schedule, plus the arm's own
train flags; each run lives in ``<root>/<arm>/mrgan/seed<k>`` and is skipped when
finished with the same settings, resumed when unfinished, and records the checkout
it used. Each arm and seed is evaluated alone (``<root>/<arm>/eval/seed<k>``) on the
``paired_test`` heads, as Table I is.

- ``optimizers``: one Adam per network shared by the unpaired and paired phases (the
  default) against one per network and phase (``--separate_phase_optimizers``, the
  authors' eight); ``--seeds``.
- ``table3``: least squares for every adversarial term (``--adversarial=lsgan``) with
  discriminators D1-D3; ``table4``: the paper's losses (LSGAN unpaired, NLL paired)
  with D1-D5 (D1 is the default arm the optimizer grid trains); ``--table_seeds``.

Order: the optimizer arms, then least squares on D1 for every table seed (against
the default arm it decides NLL vs least squares), then the rest seed-major, so an
interrupted grid still answers something. Differences between arms
are taken per seed (same seed = same initial weights, data order and
augmentation) and summarised by their mean and the combined population sd of the
two arms (as ``table1.py``); an arm "beats" another only if the mean difference
exceeds that sd and every seed agrees in sign.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import table1  # noqa: E402
from tfrecords_tools.atomic import atomic_write_text  # noqa: E402

# arm -> train flags after the flagfile (the default arm has none: it is Table I's MR-GAN run)
ARMS = {
    "optim_shared": (),
    "optim_separate": ("--separate_phase_optimizers",),
    **{f"ls_D{k}": ("--adversarial=lsgan", f"--discriminator=D{k}") for k in (1, 2, 3)},
    **{f"nll_D{k}": (f"--discriminator=D{k}",) for k in (2, 3, 4, 5)},
}
# group -> (column label, arm); the first column is the reference the others are compared with
GROUPS = {
    "optimizers": (("shared (default)", "optim_shared"), ("separate per phase", "optim_separate")),
    "table3": tuple((f"D{k}", f"ls_D{k}") for k in (1, 2, 3)),
    "table4": (("D1", "optim_shared"), *((f"D{k}", f"nll_D{k}") for k in (2, 3, 4, 5))),
}
TITLES = {"optimizers": "Optimizer coupling (MR-GAN mode)",
          "table3": "Table III: least squares for the paired discriminator too",
          "table4": "Table IV: negative log-likelihood for the paired discriminator (the paper's Eq. 2)"}
# The paper's Tables III and IV: MAE and PSNR (their formula) as mean ± sd over its 10 test patients.
PAPER = {"table3": {"D1": (21.07, 2.98, 65.25, 0.81), "D2": (42.95, 3.03, 61.31, 0.64),
                    "D3": (37.25, 2.58, 62.73, 0.77)},
         "table4": {"D1": (19.36, 2.73, 65.35, 0.86), "D2": (49.70, 3.10, 60.34, 0.60),
                    "D3": (59.06, 3.27, 59.23, 0.46), "D4": (19.35, 2.56, 65.24, 0.77),
                    "D5": (20.57, 2.82, 65.16, 0.85)}}
SHOWN = ("mae", "psnr_paper", "ssim", "mae_masked", "psnr_masked", "ssim_masked")
# Within a seed, the arms that decide a verdict come first.
ORDER = ("optim_shared", "optim_separate", "ls_D1", "nll_D4", "nll_D5", "ls_D2", "nll_D2", "ls_D3", "nll_D3")

FLAGS = flags.FLAGS  # the Table I runner's --root, --config, --steps, --seeds, --results, --aggregate_only, --workers
FLAGS.set_default("results", str(REPO / "docs" / "results" / "fidelity"))
flags.DEFINE_list("groups", list(GROUPS), f"Which comparisons: {', '.join(GROUPS)}.")
flags.DEFINE_list("table_seeds", ["0", "1"], "Seeds of Tables III and IV (--seeds: of the optimizer comparison).")


def plan(groups: Sequence[str], seeds: Sequence[int], table_seeds: Sequence[int]) -> list[tuple[str, int]]:
    """(arm, seed) in training order, each pair once: the optimizer arms (interleaved by seed), then
    least squares on D1 for every seed (with the default arm it decides NLL vs least squares), then the rest seed-major."""
    wanted = {}
    for g in groups:
        for _, arm in GROUPS[g]:
            for s in (seeds if g == "optimizers" else table_seeds):
                wanted[(arm, s)] = True

    def key(a):
        arm, seed = a
        return (0 if arm.startswith("optim") else 1 if arm == "ls_D1" else 2, seed, ORDER.index(arm))
    return sorted(wanted, key=key)


def arm_stats(per_seed: Mapping[int, Mapping]) -> dict:
    """``{seed: metrics.json}`` of one arm -> ``{metric: stats}`` of the patient averages over seeds."""
    return table1.aggregate(per_seed)["stats"]["mrgan"]["avg"]


def compare(a: Mapping, b: Mapping, metric: str) -> dict | None:
    """Arm a against arm b on one metric, paired by seed (only the seeds both have)."""
    pa, pb = dict(zip(a["seeds"], a["stats"][metric]["per_seed"])), dict(zip(b["seeds"], b["stats"][metric]["per_seed"]))
    common = sorted(set(pa) & set(pb))
    diffs = [pa[s] - pb[s] for s in common if pa[s] is not None and pb[s] is not None]
    if not diffs:
        return None
    sa, sb = np.std([pa[s] for s in common]), np.std([pb[s] for s in common])
    mean, combined = float(np.mean(diffs)), float(np.hypot(sa, sb))
    better = (lambda d: d < 0) if metric in table1.LOWER_IS_BETTER else (lambda d: d > 0)
    agree = all(better(d) for d in diffs) or all(not better(d) and d != 0 for d in diffs)
    return {"seeds": common, "per_seed": diffs, "difference": mean, "combined_sd": combined,
            "a_better": bool(better(mean)),
            "beats": bool(len(diffs) > 1 and abs(mean) > combined and agree)}


def verdict(label_a: str, label_b: str, c: Mapping | None, metric: str) -> str:
    if c is None:
        return f"{label_a} vs {label_b}: no seed has both"
    n = table1._digits(metric)
    if len(c["per_seed"]) < 2:
        word = "one seed only, no verdict"
    elif c["beats"]:
        word = f"{label_a if c['a_better'] else label_b} better, beyond the seed spread"
    else:
        word = "no difference beyond the seed spread"
    return (f"{label_a} − {label_b}, {table1.METRIC_LABELS[metric]}: {c['difference']:+.{n}f} "
            f"(combined sd {c['combined_sd']:.{n}f}; per seed "
            + ", ".join(f"{d:+.{n}f}" for d in c["per_seed"]) + f"): {word}")


def group_markdown(group: str, arms: Mapping[str, dict]) -> list[str]:
    cols = [(label, arm) for label, arm in GROUPS[group] if arm in arms]
    if not cols:
        return []
    out = [f"## {TITLES[group]}", "", "| Metric | " + " | ".join(
        f"{label} (n={len(arms[arm]['seeds'])})" for label, arm in cols) + " |", "|---|" + "---:|" * len(cols)]
    for k in SHOWN:
        out.append(f"| {table1.METRIC_LABELS[k]} | "
                   + " | ".join(table1._fmt(arms[arm]["stats"][k], table1._digits(k)) for _, arm in cols) + " |")
    if group in PAPER:
        paper = PAPER[group]
        out.append("| paper: MAE | " + " | ".join(f"{paper[c][0]:.2f} ± {paper[c][1]:.2f}" if c in paper else "-"
                                              for c, _ in cols) + " |")
        out.append("| paper: PSNR (dB, their formula) | " + " | ".join(
            f"{paper[c][2]:.2f} ± {paper[c][3]:.2f}" if c in paper else "-" for c, _ in cols) + " |")
    out.append("")
    (ref_label, ref), *others = cols
    for label, arm in others:
        for k in ("mae_masked", "psnr_masked", "ssim_masked"):
            out.append("- " + verdict(label, ref_label, compare(arms[arm], arms[ref], k), k))
    out.append("")
    return out


def loss_vs_heads_markdown(arms: Mapping[str, dict]) -> list[str]:
    """The paper's two claims: NLL beats least squares (same D); small heads/tails beat large ones."""
    out = ["## The paper's claims, here", ""]
    nll_arm, ls_arm = dict(GROUPS["table4"]), dict(GROUPS["table3"])
    for cell, ls in ls_arm.items():
        nll = nll_arm[cell]
        if nll in arms and ls in arms:
            out.append(f"- {cell}: " + verdict("NLL", "least squares", compare(arms[nll], arms[ls], "mae_masked"),
                                               "mae_masked"))
    small = [nll_arm[c] for c in ("D1", "D4", "D5") if nll_arm[c] in arms]
    large = [nll_arm[c] for c in ("D2", "D3") if nll_arm[c] in arms]
    if small and large:
        def mean_of(names):
            return float(np.mean([arms[a]["stats"]["mae_masked"]["mean"] for a in names]))
        out.append(f"- NLL, MAE in body: small heads/tails (D1, D4, D5 present: {len(small)}) "
                   f"{mean_of(small):.2f} against large (D2, D3 present: {len(large)}) {mean_of(large):.2f}; "
                   "per-arm sds in the table above")
    return out + [""]


def figure(path: str, arms: Mapping[str, dict], groups: Sequence[str]) -> str:
    """MAE in body per arm: each seed a line across the arms, mean ± sd in black, one panel per group."""
    from matplotlib.figure import Figure
    shown = [g for g in groups if any(a in arms for _, a in GROUPS[g])]
    fig = Figure(figsize=(4.2 * len(shown), 3.6))
    for i, g in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        cols = [(label, arm) for label, arm in GROUPS[g] if arm in arms]
        for seed in sorted({s for _, arm in cols for s in arms[arm]["seeds"]}):   # a line per seed across arms
            pts = [(x, dict(zip(arms[arm]["seeds"], arms[arm]["stats"]["mae_masked"]["per_seed"])).get(seed))
                   for x, (_, arm) in enumerate(cols)]
            pts = [(x, v) for x, v in pts if v is not None]
            ax.plot([x for x, _ in pts], [v for _, v in pts], "o-", alpha=0.5, lw=0.8, label=f"seed {seed}")
        for x, (_, arm) in enumerate(cols):
            s = arms[arm]["stats"]["mae_masked"]
            ax.errorbar([x], [s["mean"]], yerr=[s["sd"]], fmt="s", color="k", capsize=4)
        ax.legend(fontsize=7)
        ax.set_xticks(range(len(cols)), [label.split(" (")[0] for label, _ in cols], fontsize=8)
        ax.set_title(TITLES[g].split(":")[0], fontsize=9)
        ax.set_ylabel("MAE in body (0-255)")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)
    return path


def run_experiment() -> int:
    table1.check_choices("groups", FLAGS.groups, GROUPS)
    steps = FLAGS.steps or table1.demo._flagfile_int(FLAGS.config, "steps")
    root, t0 = os.path.abspath(FLAGS.root), time.perf_counter()
    todo = plan(FLAGS.groups, [int(s) for s in FLAGS.seeds], [int(s) for s in FLAGS.table_seeds])
    if not FLAGS.aggregate_only:
        table1.build_inputs(root, FLAGS.config, steps, FLAGS.workers)
    grids = {arm: table1.Grid(root, arm, FLAGS.config, steps, ARMS[arm]) for arm in {a for a, _ in todo}}
    per_arm: dict[str, dict] = {}
    for i, (arm, seed) in enumerate(todo):
        grid = grids[arm]
        table1.say(f"--- {i + 1}/{len(todo)}: {arm} seed {seed}")
        if not grid.finished("mrgan", seed) and not FLAGS.aggregate_only:
            grid.train("mrgan", seed)
        evaluated = os.path.isfile(os.path.join(grid.dir, "eval", f"seed{seed}", "metrics.json"))
        if grid.finished("mrgan", seed) and (evaluated or not FLAGS.aggregate_only):
            per_arm.setdefault(arm, {})[seed] = table1.evaluate_seed(grid, seed, ["mrgan"])
    arms = {arm: {"seeds": sorted(ps), "stats": arm_stats(ps), "train_flags": list(ARMS[arm]),
                  "timings": {s: grids[arm].state("mrgan", s).get("finished") for s in sorted(ps)},
                  "code": {s: [x.get("code") for x in grids[arm].state("mrgan", s).get("sessions", [])]
                           for s in sorted(ps)}}
            for arm, ps in per_arm.items()}
    if not arms:
        raise table1.ExperimentError(f"{root}: no arm is trained and evaluated yet")
    os.makedirs(FLAGS.results, exist_ok=True)
    partial = len([1 for arm, s in todo if s in arms.get(arm, {}).get("seeds", [])]) < len(todo)
    md = [f"# Paper-fidelity grids at CPU scale{' (PARTIAL)' if partial else ''}", "",
          f"MR-GAN mode, {steps} iterations per run, `{os.path.relpath(FLAGS.config, REPO)}` (as Table I); "
          "patient averages over the 2 paired test heads, cells mean ± sd over seeds (population sd). "
          "0-255 scale; \"paper conv.\" PSNR = the authors' formula (+48.13 dB over 10 log10(255² / MSE)).", ""]
    for g in FLAGS.groups:
        md += group_markdown(g, arms)
    if {"table3", "table4"} & set(FLAGS.groups):
        md += loss_vs_heads_markdown(arms)
    doc = {"steps": steps, "config": os.path.relpath(FLAGS.config, REPO), "partial": partial,
           "planned": [f"{a}/seed{s}" for a, s in todo], "arms": arms}
    atomic_write_text(os.path.join(FLAGS.results, "fidelity.md"), "\n".join(md))
    atomic_write_text(os.path.join(FLAGS.results, "fidelity.json"), json.dumps(doc, indent=2, allow_nan=False) + "\n")
    figure(os.path.join(FLAGS.results, "fidelity_mae.png"), arms, FLAGS.groups)
    table1.say("\n".join(md))
    table1.say(f"wrote {FLAGS.results} in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        return run_experiment()
    except table1.ExperimentError as e:
        print(f"fidelity: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    app.run(main)
