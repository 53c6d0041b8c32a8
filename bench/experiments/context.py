"""Volumetric context at CPU scale (issue 13): 2-D vs 2.5D vs three-plane fusion, several seeds, 3-D metrics.

    .venv/bin/python bench/experiments/context.py [--steps N] [--seeds 0,1,2] [--arms ...] [--results docs/results]

Arms, all MR-GAN mode with one flagfile (bench/experiments/configs/table1.cfg) and the
same iterations: ``2d`` (axial, today), ``k1`` and ``k2`` (axial 2.5D,
``--context_slices`` 1 and 2), ``fused_2d`` (voxel-wise median of axial, coronal and
sagittal 2-D models), ``fused_k1`` (the same with k = 1 models); ``coronal_2d`` and
``sagittal_2d`` score the fused arm's other planes alone (no extra training).

1. the demo data and its axial records, as table1.py builds them (``<root>/data``,
   ``<root>/records``), then one records folder per other (plane, k) a chosen arm needs,
   ``<root>/records_<plane>_k<k>``: make_records with the demo's preprocessing plus
   ``slice_axis`` / ``context_slices`` and the demo's split (reused while its spec matches);
2. ``<root>/<name>/<plane>_k<k>/seed<s>``: training through table1.py's ``Grid``
   (resumable: a finished run is skipped, an unfinished one resumes, one made with other
   settings is redone; each session's commit is kept in ``experiment.json``);
3. ``<root>/<name>/eval/seed<s>/context_eval.json``: each arm synthesizes the paired test
   patients' CTs on their original grids (``synthesize.Fusion`` for the fused arms) and its
   SynMR is scored against the reference MR on the MR's grid, inside the mask: MAE, PSNR,
   SSIM (``evaluate.grid_rows``, SynthRAD definitions, the reference's units) and slice
   consistency, ``synthrad_metrics.gradient_mae`` along the superior-inferior axis (reused while no
   export changed);
4. ``<results>/context.{md,json}``: mean ± sd over seeds (population sd) of the patient
   means, every arm against 2-D (difference, combined sd, whether it exceeds it), the
   training wall time per arm, and ``context_reformat.png``: sagittal and coronal mid-planes
   of the first seed's first test patient, the reference and every arm side by side.

The default --steps=600 keeps the whole grid (7 trained models x 3 seeds at ~3 it/s,
plus records and evaluation) within about 2 hours on 2 cores.
"""
from __future__ import annotations

import dataclasses
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
from table1 import ExperimentError, _read_json, say, _stats, _write_json  # noqa: E402

# trained model -> (slice_axis, context_slices)
MODELS = {f"{axis}_k{k}": (axis, k) for k in (0, 1, 2) for axis in ("axial", "coronal", "sagittal")}
ARMS = {
    "2d": ("axial_k0",),
    "k1": ("axial_k1",),
    "k2": ("axial_k2",),
    "fused_2d": ("axial_k0", "coronal_k0", "sagittal_k0"),
    "fused_k1": ("axial_k1", "coronal_k1", "sagittal_k1"),
    "coronal_2d": ("coronal_k0",),      # the fused arms' single planes, to tell why fusion helps or not
    "sagittal_2d": ("sagittal_k0",),
}
LABELS = {"2d": "2-D (axial)", "k1": "2.5D k=1", "k2": "2.5D k=2", "fused_2d": "3-plane fusion, 2-D",
          "fused_k1": "3-plane fusion, 2.5D k=1", "coronal_2d": "2-D (coronal)", "sagittal_2d": "2-D (sagittal)"}
METRICS = ("smr_mae", "smr_psnr", "smr_ssim", "smr_slice_grad_mae")
METRIC_LABELS = {"smr_mae": "MAE", "smr_psnr": "PSNR (dB)", "smr_ssim": "SSIM",
                 "smr_slice_grad_mae": "slice-gradient MAE"}
LOWER_IS_BETTER = {"smr_mae", "smr_slice_grad_mae"}
BASELINE = "2d"

FLAGS = flags.FLAGS
# table1.py's flags (--root, --config, --seeds, --train_flag, --results, --aggregate_only, --workers, ...)
# with this experiment's defaults; --modes is table1's only and unused here.
for _name, _default in (("name", "context"), ("steps", 600)):
    FLAGS.set_default(_name, _default)
flags.DEFINE_list("arms", list(ARMS), f"Arms: {', '.join(ARMS)}.")


class ContextGrid(table1.Grid):
    """table1's Grid with one records folder per (plane, k); every run trains MR-GAN mode."""

    def records_for(self, run: str) -> str:
        axis, k = MODELS[run]
        return self.records if (axis, k) == ("axial", 0) else os.path.join(self.root, f"records_{axis}_k{k}")

    def train_mode(self, run: str) -> str:
        return "mrgan"


def needed_models(arms: Sequence[str]) -> list[str]:
    return sorted({m for a in arms for m in ARMS[a]}, key=list(MODELS).index)


def build_records(grid: ContextGrid, models: Sequence[str], workers: int) -> None:
    """The records of every (plane, k) the models need, from the demo data with the demo's preprocessing."""
    from mrgan_tf.records.summary import format_summary
    from mrgan_tf.records.make_records import make_records
    from mrgan_tf.records.spec import DatasetSpec

    base = DatasetSpec.load(grid.records).preprocess
    data = os.path.join(grid.root, "data")
    for run in models:
        out = grid.records_for(run)
        axis, k = MODELS[run]
        cfg = dataclasses.replace(base, slice_axis=axis, context_slices=k)
        spec = _read_json(os.path.join(out, "dataset.json"))
        if spec.get("preprocess") == cfg.to_dict():
            say(f"[records {run}] reusing {out}")
            continue
        say(f"[records {run}] python -m mrgan_tf.make_records --root={data} --out={out} "
             f"--manifest={os.path.join(data, 'demo_manifest.csv')} --slice_axis={axis} --context_slices={k} ...")
        summary = make_records(data, out, cfg, manifest=os.path.join(data, "demo_manifest.csv"), overwrite=True,
                               workers=workers)
        say(format_summary(summary))


def superior_axis(affine: np.ndarray) -> int:
    """The voxel axis that runs closest to the world's superior-inferior (z) direction."""
    return int(np.argmax(np.abs(np.asarray(affine)[2, :3]) / np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)))


def evaluate_seed(grid: ContextGrid, seed: int, arms: Sequence[str], png: str | None = None) -> dict:
    """Every arm's 3-D scores on the test patients' original grids (reused while no export changed)."""
    from mrgan_tf.evaluation import synthrad_metrics
    from mrgan_tf.evaluation.grid import grid_rows, original_files, source_root
    from mrgan_tf.evaluation.patients import load_records_patients
    from mrgan_tf.inference.predictors import Fusion, load_predictor
    from mrgan_tf.serving.export import resolve_version_dir

    models = needed_models(arms)
    exports = {m: os.path.join(grid.run_dir(m, seed), "export") for m in models}
    key = {"arms": list(arms), "models": {m: resolve_version_dir(p, "ct2mr") for m, p in exports.items()}}
    out = os.path.join(grid.dir, "eval", f"seed{seed}")
    path = os.path.join(out, "context_eval.json")
    done = _read_json(path)
    if done.get("key") == key and (png is None or os.path.isfile(png)):
        return done
    patients, cfg = load_records_patients(grid.records)
    files = original_files(source_root(grid.records, True), patients)
    predictors = {m: load_predictor(p, "ct2mr") for m, p in exports.items()}
    loaded = {a: {"ct2mr": predictors[ARMS[a][0]] if len(ARMS[a]) == 1
                  else Fusion(tuple(predictors[m] for m in ARMS[a]))} for a in arms}
    rows: dict = {a: {} for a in arms}
    notes: list[str] = []
    for i, (pid, p) in enumerate(patients.items()):
        say(f"[eval seed {seed}] patient {pid}: {', '.join(arms)}")
        volumes: dict = {}
        scored, _, _ = grid_rows(loaded, pid, files[pid], p, cfg, notes, volumes=volumes)
        axis = superior_axis(volumes["grid"].affine)
        for a in arms:
            scored[a]["smr_slice_grad_mae"] = synthrad_metrics.gradient_mae(volumes["reference"], volumes[a],
                                                                   volumes["mask"], axis)
            rows[a][pid] = scored[a]
        if i == 0 and png:
            reformat_png(png, volumes, arms, f"seed {seed}, patient {pid}")
    doc = {"key": key, "rows": rows, "notes": notes, "code": table1.code_version()}
    os.makedirs(out, exist_ok=True)
    _write_json(path, doc)
    return doc


def reformat_png(path: str, volumes: Mapping, arms: Sequence[str], title: str) -> str:
    """Sagittal and coronal mid-planes (canonical orientation) of the reference and every arm, side by side."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from mrgan_tf.evaluation import figures
    from mrgan_tf.io.volumes import Volume
    from mrgan_tf.preprocess import axial_image, to_canonical, to_plane

    grid = volumes["grid"]
    names = ["reference", *arms]
    canon = {n: to_canonical(Volume(np.asarray(volumes[n], np.float32), grid.affine)) for n in names}
    lo, hi = np.percentile(canon["reference"].data[to_canonical(Volume(volumes["mask"].astype(np.float32),
                                                                       grid.affine)).data > 0], (1, 99))
    fig = Figure(figsize=(2.4 * len(names), 5.0))
    axes = fig.subplots(2, len(names), squeeze=False)
    for col, n in enumerate(names):
        for row, plane in enumerate(("sagittal", "coronal")):
            turned = to_plane(canon[n], plane)
            img = axial_image(turned.data, turned.shape[2] // 2)
            sp = turned.spacing      # rows run along the turned volume's second axis, columns its first
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=sp[1] / sp[0])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("Reference MR" if n == "reference" else LABELS[n], fontsize=8)
            if col == 0:
                ax.set_ylabel(plane, fontsize=8)
    fig.suptitle(f"Reformats of SynMR ({title})", fontsize=9)
    return figures.save_png(fig, path)


def aggregate(per_seed: Mapping[int, Mapping], arms: Sequence[str]) -> dict:
    """Patient means per seed -> mean ± sd over seeds per arm, and every arm against 2-D."""
    seeds = sorted(per_seed)
    values = {a: {k: [] for k in METRICS} for a in arms}
    for s in seeds:
        for a in arms:
            rows = per_seed[s]["rows"][a].values()
            for k in METRICS:
                v = [r[k] for r in rows if r.get(k) is not None]
                values[a][k].append(float(np.mean(v)) if v else None)
    stats = {a: {k: {**_stats(v), "per_seed": v} for k, v in ks.items()} for a, ks in values.items()}
    diffs: dict = {}
    for a in arms:
        if a == BASELINE or BASELINE not in stats:
            continue
        for k in METRICS:
            va, vb = stats[a][k], stats[BASELINE][k]
            if va["mean"] is None or vb["mean"] is None:
                continue
            diffs.setdefault(a, {})[k] = table1.difference(va, vb, k in LOWER_IS_BETTER)
    return {"seeds": seeds, "arms": list(arms), "stats": stats, "differences": diffs}


def _cell(s: Mapping, k: str) -> str:
    n = 3 if k == "smr_ssim" else 2
    return "-" if s["mean"] is None else f"{s['mean']:.{n}f} ± {s['sd']:.{n}f}"


def results_markdown(agg: Mapping, wall: Mapping[str, float], steps: int, partial: bool) -> str:
    seeds = ", ".join(map(str, agg["seeds"]))
    lines = ["# Volumetric context at CPU scale" + (" (PARTIAL)" if partial else ""), "",
             f"MR-GAN mode, {steps} iterations per model, seeds {seeds}; SynMR against the reference MR on the "
             "MR's original grid, inside the mask, in the reference's units (SynthRAD definitions); cells are "
             "mean ± sd over seeds (population sd) of the patient means. Slice-gradient MAE: MAE between the "
             "superior-inferior neighbour differences of SynMR and of the reference.", "",
             "| Arm | " + " | ".join(METRIC_LABELS[k] for k in METRICS) + " | training wall time |",
             "|---|" + "---:|" * (len(METRICS) + 1)]
    for a in agg["arms"]:
        lines.append(f"| {LABELS[a]} | " + " | ".join(_cell(agg["stats"][a][k], k) for k in METRICS)
                     + f" | {wall.get(a, 0.0):.0f} s |")
    lines += ["", f"Against {LABELS[BASELINE]} (difference of means; combined sd = sqrt(sd_a² + sd_b²)):", "",
              "| Arm | Metric | Difference | Combined sd | Better than 2-D | Beyond the seed spread |",
              "|---|---|---:|---:|---|---|"]
    for a, per in agg["differences"].items():
        for k, d in per.items():
            beyond = {True: "yes", False: "no", None: "n/a (1 seed)"}[d["exceeds_combined_sd"]]
            lines.append(f"| {LABELS[a]} | {METRIC_LABELS[k]} | {d['difference']:+.3f} | {d['combined_sd']:.3f} | "
                         f"{'yes' if d['a_better'] else 'no'} | {beyond} |")
    return "\n".join(lines) + "\n"


def run_experiment() -> int:
    seeds = [int(s) for s in FLAGS.seeds]
    arms = table1.check_choices("arms", FLAGS.arms, ARMS)
    if FLAGS.modes != list(table1.MODES):
        raise ExperimentError("--modes is table1.py's; every model here trains MR-GAN mode (choose --arms)")
    table1.check_flagfile(FLAGS.config)
    root = os.path.abspath(FLAGS.root)
    t0 = time.perf_counter()
    grid = ContextGrid(root, FLAGS.name, FLAGS.config, FLAGS.steps, FLAGS.train_flag)
    models = needed_models(arms)
    if not FLAGS.aggregate_only:
        table1.build_inputs(root, FLAGS.config, FLAGS.steps, FLAGS.workers)
        build_records(grid, models, FLAGS.workers)
    os.makedirs(FLAGS.results, exist_ok=True)
    png = os.path.join(FLAGS.results, "context_reformat.png")
    per_seed = grid.train_and_evaluate(
        seeds, models, FLAGS.aggregate_only,
        lambda s: evaluate_seed(grid, s, arms, png if s == seeds[0] else None), "context_eval.json")
    if not per_seed:
        raise ExperimentError(f"{grid.dir}: no seed has every model of {', '.join(arms)} trained and evaluated")
    agg = aggregate(per_seed, arms)
    wall = {a: float(np.mean([sum((grid.state(m, s).get("finished") or {}).get("seconds", 0.0) for m in ARMS[a])
                              for s in per_seed])) for a in arms}
    partial = sorted(per_seed) != sorted(seeds)
    md = results_markdown(agg, wall, FLAGS.steps, partial)
    doc = {**agg, "partial": partial, "expected_seeds": seeds, "steps": FLAGS.steps, "wall_seconds": wall,
           "config": os.path.relpath(grid.config, REPO), "train_flags": grid.train_flags,
           "total_seconds_this_call": time.perf_counter() - t0,
           "commands": {f"{m}/seed{s}": table1.runs.cmd_text(grid.command(m, s)) for m in models for s in seeds},
           "code": {f"{m}/seed{s}": [x.get("code") for x in grid.state(m, s).get("sessions", [])]
                    for m in models for s in seeds}}
    table1.atomic_write_text(os.path.join(FLAGS.results, "context.md"), md)
    _write_json(os.path.join(FLAGS.results, "context.json"), doc)
    say(md)
    say(f"wrote context.md, context.json and {os.path.basename(png)} to {FLAGS.results} "
         f"in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv):
    from mrgan_tf.inference.predictors import SynthesisError
    return table1.experiment_main(argv, run_experiment, "context", (SynthesisError,))


if __name__ == "__main__":
    app.run(main)
