"""Table I at CPU scale: MR-GAN vs. paired vs. unpaired training, several seeds, same data and evaluation.

    .venv/bin/python bench/experiments/table1.py [--steps N] [--seeds 0,1,2] [--results docs/results]

Why a separate runner (and not the demo): the paper's claim is an ordering of three
training modes, so each mode needs several seeds and an uncertainty, and the
whole grid must be resumable (it runs for about an hour on 2 cores).

1. demo data and records, built once and reused, by the demo's own stages
   (``mrgan_tf.demo.pipeline``: ``<root>/data``, ``<root>/records``; 128 x 128 slices);
2. ``<root>/<name>/<mode>/seed<k>``: ``python -m mrgan_tf.train`` with the flagfile
   (default ``bench/experiments/configs/table1.cfg``), every mode at the same
   ``--steps``; the learning-rate schedule keeps the paper's proportions (constant
   for the first third, linear decay to zero over the rest). Seed-major order, so an
   interrupted grid still has whole seeds. A finished run (``experiment.json`` with
   ``finished`` and the same settings) is skipped; an unfinished one resumes from its
   checkpoint; one made with other settings is removed and redone;
3. ``<root>/<name>/eval/seed<k>``: ``mrgan_tf.evaluation.evaluate`` of the three models on the
   ``paired_test`` patients (reused when its models did not change);
4. aggregation over seeds into ``<results>/table1.{md,csv,json}``, Fig. 5/6 images of
   the first seed and a loss-curve PNG per mode.

sd over seeds is the population sd (ddof 0, the paper's convention); the JSON also
holds the sample sd (ddof 1).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere in the checkout

from mrgan_tf.demo import pipeline as demo  # noqa: E402
from mrgan_tf.demo import report, runs  # noqa: E402
from tfrecords_tools.writer import atomic_write_text  # noqa: E402

MODES = ("mrgan", "paired", "unpaired")
TABLE_ORDER = ("paired", "unpaired", "mrgan")       # the paper's column order (Ours last)
LABELS = {"paired": "Paired", "unpaired": "Unpaired", "mrgan": "MR-GAN"}
METRICS = ("mae", "psnr", "psnr_paper", "ssim", "mae_masked", "psnr_masked", "ssim_masked")
METRIC_LABELS = {"mae": "MAE", "psnr": "PSNR (dB)", "psnr_paper": "PSNR, paper conv. (dB)", "ssim": "SSIM",
                 "mae_masked": "MAE in body", "psnr_masked": "PSNR in body (dB)", "ssim_masked": "SSIM in body"}
LOWER_IS_BETTER = {"mae", "mae_masked"}
DDOF = 0
DEFAULT_CONFIG = REPO / "bench" / "experiments" / "configs" / "table1.cfg"

FLAGS = flags.FLAGS
flags.DEFINE_string("root", str(REPO / "runs" / "experiments"), "Shared folder: data/, records/, logs/, <name>/.")
flags.DEFINE_string("name", "table1", "Experiment folder under --root (runs and evaluations).")
flags.DEFINE_string("config", str(DEFAULT_CONFIG), "Train flagfile shared by the three modes.")
flags.DEFINE_integer("steps", None, "Iterations per run (default: the flagfile's --steps).", lower_bound=1)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (the data are always built with seed 0).")
flags.DEFINE_list("modes", list(MODES), "Training modes.")
flags.DEFINE_multi_string("train_flag", [], "Extra train flag after the flagfile, e.g. --train_flag=--ngf=8.")
flags.DEFINE_string("results", str(REPO / "docs" / "results"), "Where table1.{md,csv,json} and PNGs go.")
flags.DEFINE_bool("aggregate_only", False, "Only aggregate what is finished (no data, training or evaluation).")
flags.DEFINE_integer("workers", 2, "make_records worker processes.")


class ExperimentError(RuntimeError):
    """A stage failed; the message names the run and its log."""


def check_choices(flag: str, given, known) -> list:
    """``given`` values of a list flag, refused (naming them and the choices) when empty or unknown."""
    bad = [g for g in given if g not in known]
    if bad or not given:
        raise ExperimentError(f"--{flag}: unknown {bad or 'none'}; choose from {', '.join(known)}")
    return list(given)


def check_flagfile(path: str) -> None:
    if not os.path.isfile(path):
        raise ExperimentError(f"{path}: train flagfile not found")


def say(msg: str) -> None:
    print(msg, flush=True)


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_json(path: str, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def schedule(steps: int) -> tuple[int, int]:
    """(decay_start, decay_steps) in the paper's proportions: 1e5 constant + 2e5 decay of 3e5."""
    return steps // 3, steps - steps // 3


# --------------------------------------------------------------------------- data


def build_inputs(root: str, config: str, steps: int, workers: int) -> str:
    """Demo data + records via the demo's stages (reused when present); returns the records dir."""
    opts = demo.DemoOptions(out=root, config=config, steps=steps, workers=workers).resolved()
    d = demo.Demo(opts)
    for stage in (d.stage_data, d.stage_records):
        status, commands = stage()
        say(f"{status}: {'; '.join(commands)}")
    return d.records


# --------------------------------------------------------------------------- training


class Grid:
    """The runs of one experiment: where they live, their commands, and whether they are done."""

    def __init__(self, root: str, name: str, config: str, steps: int, train_flags: Sequence[str]):
        self.root, self.dir = root, os.path.join(root, name)
        self.records = os.path.join(root, "records")
        self.logs = os.path.join(self.dir, "logs")
        self.config, self.steps, self.train_flags = os.path.abspath(config), steps, list(train_flags)
        lines = Path(self.config).read_text().splitlines()
        self.config_lines = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith(("#", "--steps"))]

    def run_dir(self, mode: str, seed: int) -> str:
        return os.path.join(self.dir, mode, f"seed{seed}")

    def records_for(self, run: str) -> str:
        """The records a run trains on (one set here; other experiments give each run its own)."""
        return self.records

    def train_mode(self, run: str) -> str:
        """The training mode of a run (here the run's name is its mode)."""
        return run

    def command(self, mode: str, seed: int) -> list[str]:
        start, decay = schedule(self.steps)
        return [sys.executable, "-m", "mrgan_tf.train", f"--flagfile={self.config}", f"--mode={self.train_mode(mode)}",
                f"--records={self.records_for(mode)}", f"--out={self.run_dir(mode, seed)}", f"--steps={self.steps}",
                f"--decay_start={start}", f"--decay_steps={decay}", f"--seed={seed}", *self.train_flags]

    def settings(self, mode: str, seed: int) -> dict:
        """What decides a run's result (a change means the run is redone)."""
        spec = _read_json(os.path.join(self.records_for(mode), "dataset.json"))
        return {"mode": mode, "seed": seed, "steps": self.steps, "config": self.config_lines,
                "train_flags": self.train_flags, "preprocess": spec.get("preprocess")}

    def state(self, mode: str, seed: int) -> dict:
        return _read_json(os.path.join(self.run_dir(mode, seed), "experiment.json"))

    def finished(self, mode: str, seed: int) -> bool:
        s = self.state(mode, seed)
        return "finished" in s and s.get("settings") == json.loads(json.dumps(self.settings(mode, seed)))

    def train(self, mode: str, seed: int) -> None:
        """Train (or resume) one run; records its wall time in ``experiment.json``."""
        run = self.run_dir(mode, seed)
        settings = json.loads(json.dumps(self.settings(mode, seed)))
        state = self.state(mode, seed)
        if state and state.get("settings") != settings:
            say(f"[{mode} seed {seed}] settings changed: removing {run}")
            shutil.rmtree(run)
            state = {}
        os.makedirs(run, exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)
        state = {"settings": settings, "command": runs.cmd_text(self.command(mode, seed)),
                 "sessions": state.get("sessions", [])}
        _write_json(os.path.join(run, "experiment.json"), state)
        log = os.path.join(self.logs, f"{mode}_seed{seed}.log")
        say(f"[{mode} seed {seed}] {state['command']}  (log {log})")
        version = code_version()
        t0 = time.perf_counter()
        child = runs.Child(f"{mode}/{seed}", self.command(mode, seed), log)
        next_report = t0 + 60.0
        while child.proc.poll() is None:
            try:
                child.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
            if time.perf_counter() >= next_report:
                next_report += 60.0
                p = runs.history_progress(run)
                if p:
                    say(f"  [{mode} seed {seed}] iteration {p[0]}/{self.steps} ({p[1]:.2f} it/s, "
                         f"{time.perf_counter() - t0:.0f} s)")
        rc = child.finish()
        seconds = time.perf_counter() - t0
        state["sessions"].append({"seconds": seconds, "exit": rc, "ended": time.strftime("%Y-%m-%d %H:%M:%S"),
                                  "code": version})
        if rc != 0:
            _write_json(os.path.join(run, "experiment.json"), state)
            raise ExperimentError(f"training {mode} seed {seed} failed (exit {rc}); log {log}\n{child.tail()}")
        state["finished"] = {"seconds": sum(s["seconds"] for s in state["sessions"]),
                             "iterations_per_second": _steady_rate(run)}
        _write_json(os.path.join(run, "experiment.json"), state)
        say(f"[{mode} seed {seed}] done in {seconds:.0f} s")

    def train_and_evaluate(self, seeds: Sequence[int], runs: Sequence[str], aggregate_only: bool, evaluate,
                           eval_file: str) -> dict:
        """Seed-major (an interrupted grid still has whole seeds): train or skip every run of a seed, then
        ``evaluate(seed)`` once all are finished; with ``aggregate_only`` only seeds already evaluated
        (``eval/seed<k>/<eval_file>``). Returns {seed: evaluation}."""
        per_seed = {}
        for seed in seeds:
            for run in runs:
                if self.finished(run, seed):
                    say(f"[{run} seed {seed}] finished earlier: skipped")
                elif not aggregate_only:
                    self.train(run, seed)
            if all(self.finished(r, seed) for r in runs):
                if aggregate_only and not os.path.isfile(os.path.join(self.dir, "eval", f"seed{seed}", eval_file)):
                    continue
                per_seed[seed] = evaluate(seed)
        return per_seed


def code_version() -> dict:
    """The checkout a run used (the code may change between runs of a long grid)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "modified": git("status", "--porcelain", "--", "mrgan_tf").split("\n")
            if git("status", "--porcelain", "--", "mrgan_tf") else []}


def _steady_rate(run: str) -> float | None:
    """Median iterations/s over history.csv rows after the first (the first includes tracing)."""
    path = os.path.join(run, "history.csv")
    try:
        with open(path, newline="") as f:
            rates = [float(r["iterations_per_second"]) for r in csv.DictReader(f)][1:]
    except (OSError, KeyError, ValueError):
        return None
    return float(np.median(rates)) if rates else None


# --------------------------------------------------------------------------- evaluation


def evaluate_seed(grid: Grid, seed: int, modes: Sequence[str]) -> dict | None:
    """Evaluate one seed's models side by side (reused when the exports are unchanged)."""
    from mrgan_tf.evaluation.evaluate import evaluate
    from mrgan_tf.serving.export import resolve_version_dir

    models = {m: os.path.join(grid.run_dir(m, seed), "export") for m in modes}
    key = {m: resolve_version_dir(p, "ct2mr") for m, p in models.items()}
    out = os.path.join(grid.dir, "eval", f"seed{seed}")
    done = _read_json(os.path.join(out, "experiment_eval.json"))
    if done.get("models") == key and os.path.isfile(os.path.join(out, "metrics.json")):
        return _read_json(os.path.join(out, "metrics.json"))
    say(f"[eval seed {seed}] python -m mrgan_tf.evaluate "
         + " ".join(f"--model={m}={p}" for m, p in models.items()) + f" --dataset={grid.records} --out={out}")
    evaluate(models, grid.records, out)
    _write_json(os.path.join(out, "experiment_eval.json"), {"models": key})
    return _read_json(os.path.join(out, "metrics.json"))


# --------------------------------------------------------------------------- aggregation


def _stats(values: Sequence[float]) -> dict:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if not arr.size:
        return {"mean": None, "sd": None, "sd_sample": None, "n": 0}
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=DDOF)),
            "sd_sample": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def difference(va: Mapping, vb: Mapping, lower_is_better: bool) -> dict:
    """a - b of one metric's mean over seeds, against the combined sd sqrt(sd_a² + sd_b²), and per seed."""
    d = va["mean"] - vb["mean"]
    combined = float(np.hypot(va["sd"], vb["sd"]))
    return {"difference": d, "combined_sd": combined, "a_better": bool(d < 0 if lower_is_better else d > 0),
            "exceeds_combined_sd": bool(abs(d) > combined) if min(va["n"], vb["n"]) > 1 else None,
            "per_seed": [None if x is None or y is None else x - y for x, y in zip(va["per_seed"], vb["per_seed"])]}


def aggregate(per_seed: Mapping[int, Mapping]) -> dict:
    """``{seed: metrics.json}`` -> per patient and patient-average stats over seeds, and mode differences.

    ``avg`` of a seed is the mean over its test patients (the paper's "Avg"); its
    stats over seeds measure how much the ranking depends on the seed.
    """
    seeds = sorted(per_seed)
    modes = [m for m in TABLE_ORDER if all(m in per_seed[s]["per_patient"] for s in seeds)]
    patients = list(per_seed[seeds[0]]["per_patient"][modes[0]]) if modes else []
    values: dict = {m: {p: {k: [] for k in METRICS} for p in [*patients, "avg"]} for m in modes}
    for s in seeds:
        for m in modes:
            rows = per_seed[s]["per_patient"][m]
            for k in METRICS:
                vals = [rows[p].get(k) for p in patients]
                for p, v in zip(patients, vals):
                    values[m][p][k].append(v)
                ok = [v for v in vals if v is not None]
                values[m]["avg"][k].append(float(np.mean(ok)) if ok else None)
    stats = {m: {p: {k: {**_stats(v), "per_seed": v} for k, v in ks.items()} for p, ks in ps.items()}
             for m, ps in values.items()}
    diffs = {}
    for a, b in (("mrgan", "paired"), ("mrgan", "unpaired"), ("paired", "unpaired")):
        if a not in stats or b not in stats:
            continue
        for k in METRICS:
            va, vb = stats[a]["avg"][k], stats[b]["avg"][k]
            if va["mean"] is None or vb["mean"] is None:
                continue
            diffs.setdefault(f"{a}-{b}", {})[k] = difference(va, vb, k in LOWER_IS_BETTER)
    return {"seeds": seeds, "modes": modes, "patients": patients, "ddof": DDOF, "stats": stats,
            "differences": diffs}


def _fmt(s: Mapping, digits: int) -> str:
    return "-" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def _digits(k: str) -> int:
    return 3 if k.startswith("ssim") else 2


def table_markdown(agg: Mapping, groups: Sequence[Sequence[str]]) -> str:
    """Table I layout: a row per test patient + Avg, a column per (metric, mode); cells mean ± sd over seeds."""
    modes, out = agg["modes"], []
    for keys in groups:
        head = [f"{METRIC_LABELS[k]}: {LABELS[m]}" for k in keys for m in modes]
        out += ["| Patient | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
        for p in [*agg["patients"], "avg"]:
            name = "**Avg over patients**" if p == "avg" else p
            cells = [_fmt(agg["stats"][m][p][k], _digits(k)) for k in keys for m in modes]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def differences_markdown(agg: Mapping) -> str:
    lines = ["| Comparison | Metric | Difference of means | Combined sd | Better | Exceeds sd? | Per seed |",
             "|---|---|---:|---:|---|---|---|"]
    for pair, per_metric in agg["differences"].items():
        a, b = pair.split("-")
        for k in ("mae", "psnr", "ssim", "mae_masked", "psnr_masked"):
            if k not in per_metric:
                continue
            d = per_metric[k]
            n = _digits(k)
            lines.append(f"| {LABELS[a]} − {LABELS[b]} | {METRIC_LABELS[k]} | {d['difference']:+.{n}f} | "
                         f"{d['combined_sd']:.{n}f} | {LABELS[a] if d['a_better'] else LABELS[b]} | "
                         f"{ {True: 'yes', False: 'no', None: 'n/a (1 seed)'}[d['exceeds_combined_sd']]} | "
                         + ", ".join(f"{x:+.{n}f}" for x in d["per_seed"]) + " |")
    return "\n".join(lines) + "\n"


def table_csv(agg: Mapping) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    seeds = agg["seeds"]
    w.writerow(["model", "patient", "metric", "mean", "sd_pop", "sd_sample", "n_seeds",
                *[f"seed{s}" for s in seeds]])
    for m in agg["modes"]:
        for p, ks in agg["stats"][m].items():
            for k, s in ks.items():
                w.writerow([m, p, k, *("" if s[x] is None else f"{s[x]:.6g}" for x in ("mean", "sd", "sd_sample")),
                            s["n"], *("" if v is None else f"{v:.6g}" for v in s["per_seed"])])
    return buf.getvalue()


def write_results(grid: Grid, agg: Mapping, results: str, expected_seeds: Sequence[int],
                  modes: Sequence[str]) -> list[str]:
    """table1.{md,csv,json}; Fig. 6 and the first test patient's Fig. 5 per mode, and loss curves, of the first seed."""
    from mrgan_tf.evaluation import figures

    os.makedirs(results, exist_ok=True)
    partial = sorted(agg["seeds"]) != sorted(expected_seeds)
    timings = {m: {s: grid.state(m, s).get("finished") for s in expected_seeds} for m in modes}
    doc = {**agg, "partial": partial, "expected_seeds": list(expected_seeds), "steps": grid.steps,
           "config": os.path.relpath(grid.config, REPO), "config_lines": grid.config_lines,
           "train_flags": grid.train_flags, "schedule": dict(zip(("decay_start", "decay_steps"), schedule(grid.steps))),
           "timings": timings, "commands": {f"{m}/seed{s}": runs.cmd_text(grid.command(m, s))
                                            for m in modes for s in expected_seeds}}
    title = "# Table I at CPU scale" + (" (PARTIAL: seeds " + ", ".join(map(str, agg["seeds"])) + " of "
                                       + ", ".join(map(str, expected_seeds)) + ")" if partial else "")
    md = [title, "",
          f"{grid.steps} iterations per run, seeds {', '.join(map(str, agg['seeds']))}; "
          f"cells are mean ± sd over seeds (population sd, ddof {DDOF}). Metrics on the 0-255 scale; "
          "PSNR = 10 log10(255² / MSE); \"paper conv.\" = the authors' formula (+48.13 dB).", "",
          table_markdown(agg, [("mae", "psnr", "psnr_paper")]), table_markdown(agg, [("ssim",)]),
          "Inside the body mask:", "", table_markdown(agg, [("mae_masked", "psnr_masked", "ssim_masked")]),
          "Differences of the patient averages (combined sd = sqrt(sd_a² + sd_b²), over seeds):", "",
          differences_markdown(agg)]
    files = []
    for name, text in (("table1.md", "\n".join(md)), ("table1.csv", table_csv(agg)),
                       ("table1.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")):
        atomic_write_text(os.path.join(results, name), text)
        files.append(os.path.join(results, name))
    first = agg["seeds"][0]
    eval_dir = os.path.join(grid.dir, "eval", f"seed{first}")
    for png in sorted(os.listdir(eval_dir)):
        if png == "fig6.png" or (png.startswith("fig5_") and png.endswith(f"_{agg['patients'][0]}.png")):
            dst = os.path.join(results, f"table1_{png}")
            shutil.copyfile(os.path.join(eval_dir, png), dst + ".tmp")
            os.replace(dst + ".tmp", dst)
            files.append(dst)
    for m in agg["modes"]:
        curves = report.read_history(os.path.join(grid.run_dir(m, first), "history.csv"))
        if curves:
            files.append(figures.loss_curves(os.path.join(results, f"table1_loss_{m}.png"), curves,
                                             title=f"{LABELS[m]} (seed {first}): training losses", smooth=0.8))
    return files


# --------------------------------------------------------------------------- main


def run_experiment() -> int:
    seeds = [int(s) for s in FLAGS.seeds]
    modes = check_choices("modes", FLAGS.modes, MODES)
    check_flagfile(FLAGS.config)
    steps = FLAGS.steps or demo._flagfile_int(FLAGS.config, "steps")
    if not steps:
        raise ExperimentError(f"{FLAGS.config}: no --steps in the flagfile and none given")
    root = os.path.abspath(FLAGS.root)
    t0 = time.perf_counter()
    if not FLAGS.aggregate_only:
        build_inputs(root, FLAGS.config, steps, FLAGS.workers)
    grid = Grid(root, FLAGS.name, FLAGS.config, steps, FLAGS.train_flag)
    per_seed = grid.train_and_evaluate(seeds, modes, FLAGS.aggregate_only, lambda s: evaluate_seed(grid, s, modes),
                                       "metrics.json")
    if not per_seed:
        raise ExperimentError(f"{grid.dir}: no seed has all of {', '.join(modes)} trained and evaluated")
    agg = aggregate(per_seed)
    files = write_results(grid, agg, FLAGS.results, seeds, modes)
    say(Path(files[0]).read_text())
    say(f"wrote {len(files)} files to {FLAGS.results} in {time.perf_counter() - t0:.0f} s")
    return 0


def experiment_main(argv, run, name: str, extra_errors: tuple = ()) -> int:
    """An experiment's main: ``run()``, with every stage's user error as one line naming the experiment."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from mrgan_tf.demo.data import DemoDataError
    from mrgan_tf.evaluation.patients import EvaluationError
    from mrgan_tf.records.make_records import MakeRecordsError
    from mrgan_tf.serving.export import ExportError
    try:
        return run()
    except (ExperimentError, demo.DemoError, DemoDataError, MakeRecordsError, ExportError, EvaluationError,
            *extra_errors) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1


def main(argv):
    return experiment_main(argv, run_experiment, "table1")


if __name__ == "__main__":
    app.run(main)
