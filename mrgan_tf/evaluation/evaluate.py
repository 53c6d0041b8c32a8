"""Evaluate one or more models on the paired test patients: Table I metrics, Figs. 5-7, latency.

    python -m mrgan_tf.evaluate --model=runs/mrgan --dataset=records/ --out=eval/
    python -m mrgan_tf.evaluate --model=paired=runs/p --model=unpaired=runs/u --model=mrgan=runs/m \
        --dataset=records/ --out=eval/

``--dataset`` is a records directory (its ``paired_test`` slices are used as
stored) or a dataset root (``<root>/<patient>/{ct,mr[,mask]}``: every patient
with a CT and an MR is prepared exactly as make_records would, and its kept
slices are scored). Models are run dirs or SavedModel exports (see synthesize).

Two conventions, never mixed in one table:

* The paper's (``metrics.md`` "Paper conventions", ``metrics.csv``), on the
  model's fitted S x S slices: ``mae``, ``psnr`` (10 log10(255^2 / MSE), MSE
  pooled over the patient's slices), ``psnr_paper`` (the authors' code: 48.13 dB
  higher), ``ssim``; all on the paper's 0-255 scale over the whole image, and
  ``*_masked`` inside the body. Predictions are compared as floats.
* SynthRAD's (``metrics.md`` "SynthRAD conventions", ``metrics_synthrad.csv``),
  on each test patient's original grid: every slice of the patient's own CT
  (MR) goes through the generator and back onto that grid with synthesize's
  code (``synthesize_volume``), and is scored inside the patient's mask against
  the original reference volume read from the dataset root: ``sct_*`` (HU;
  MAE, PSNR in [-1024, 3000] with range 4024, 3-D SSIM after the +1024 shift,
  SynthRAD2025's MS-SSIM) and ``smr_*`` (the same on MR in the reference's units,
  clip and data range = the reference's range inside the mask). A records
  directory names its dataset root (``source_root`` in dataset.json); ``--root``
  overrides it. A patient without a mask file is scored inside the body mask
  computed from its CT (``preprocess.body_mask_from_ct``), and the report says so.

A ``--model`` of several comma-separated paths, or any model with ``--tta``, is scored on its
fused predictions; on the original grid its spread (their per-voxel standard deviation, what
synthesize writes beside the output) is scored against the absolute error inside the mask:
``*_unc_spearman`` (Spearman correlation), ``*_unc_mae_top10`` and ``*_unc_mae_rest`` (MAE in
the 10 % of mask voxels with the largest spread, and in the rest).

With ``--dose``, every model with an MR -> CT generator also gets a dose check of its synthetic CT on
each test patient (``--dose_patients``: the first N), as the ``dose`` command makes it: per patient a
photon and a proton plan optimised on the reference CT, recomputed on each model's synthetic CT with
the same beams and weights (``evaluation.dose``). Its figures (``mae_target``, gamma pass rates, the
target's D98 and D2 differences) are their own tables in metrics.md, ``dose`` in metrics.json and
``metrics_dose.csv``; each patient's and model's dose report folder goes to ``dose/<patient>/<model>``.
The plan's numbers are the ``dose`` command's flags (``--resolution_mm`` and the others of ``DoseConfig``).

Avg±sd in metrics.md and metrics.json is over patients with a population sd
(ddof=0), as the paper's Table I. Nothing is written until every number is
computed; output files are written atomically.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Mapping

from absl import app, flags

from mrgan_tf import cli
from mrgan_tf.evaluation import tables as metric_tables
from mrgan_tf.evaluation.dose import models as dose_models
from mrgan_tf.evaluation.dose.config import FLAGS as DOSE_FLAGS
from mrgan_tf.evaluation.dose.config import DoseConfig
from mrgan_tf.evaluation.grid import check_preprocessing, evaluate_on_grid, original_files, scored_metrics, source_root
from mrgan_tf.evaluation.paper import ALL_METRICS, DDOF, evaluate_predictors
from mrgan_tf.evaluation.patients import EvaluationError, _is_records, load_records_patients, load_root_patients
from mrgan_tf.evaluation.report import report_markdown, write_figures
from mrgan_tf.inference.outputs import define_ensemble_flags
from mrgan_tf.inference.predictors import Fusion, Predictor, load_predictors
from mrgan_tf.inference.tta import TTAConfig, tta_from_flags
from tfrecords_tools.atomic import atomic_folder, atomic_write_text


def load_model(path: str, tta: TTAConfig = TTAConfig(), fusion: str | None = None
               ) -> dict[str, Predictor | Fusion]:
    """{direction: predictor} of one ``--model``: a path, or comma-separated paths fused as one model (its
    members, e.g. runs of several seeds), each with ``tta``'s augmented copies."""
    paths = [p for p in path.split(",") if p]
    loaded = [load_predictors(p) for p in paths]
    if len(paths) == 1 and not tta.augment and not fusion:
        return loaded[0]
    for p, preds in zip(paths[1:], loaded[1:]):
        if set(preds) != set(loaded[0]):
            raise EvaluationError(f"{p}: has the {'/'.join(preds)} model(s), {paths[0]} has {'/'.join(loaded[0])}; "
                                  "the members of one --model must have the same directions")
    return {d: Fusion(tuple(preds[d] for preds in loaded), fusion or "median", tta) for d in loaded[0]}


def evaluate(models: Mapping[str, str], dataset: str, out_dir: str, batch_size: int = 16,
             skip_missing: bool = False, fig_slices: int = 3, progress: bool = False, root: str | None = None,
             grid_metrics: bool = True, tta: TTAConfig = TTAConfig(), fusion: str | None = None,
             dose: DoseConfig | None = None, dose_patients: int | None = None) -> dict:
    """Evaluate ``{name: run dir or export}`` on ``dataset``; writes the report to ``out_dir``.

    Returns ``{"per_patient": {model: {patient: metrics}}, "summary", "latency", "files", "markdown"}``
    (the paper's conventions) and, with ``grid_metrics``, ``"synthrad": {"per_patient", "summary",
    "mask_source", "notes", "root"}`` (SynthRAD's, on the original grid; original volumes from ``root``
    or, for records, the dataset root they were made from) and, with ``dose``, ``"dose": {"per_patient",
    "summary", ...}`` (the dose check of each model's synthetic CT; ``dose_models.DoseEvaluation.to_json``).

    Args:
        models: ``{name: path}`` of run directories or SavedModel exports, compared side by side; a path
            of several comma-separated ones is one model of their fused predictions (``load_model``).
        dataset: a records directory (its paired_test set) or a dataset root.
        out_dir: where metrics.md/.csv/.json and the figures go.
        batch_size: slices per model call.
        skip_missing: in a dataset root, skip patients without a reference MR (default: an error).
        fig_slices: slices per patient in Figs. 5 and 7.
        progress: show progress bars.
        root: the dataset root holding the test patients' original volumes (SynthRAD's metrics).
        grid_metrics: also score SynthRAD's metrics on each patient's original grid.
        tta: test-time augmented copies every model also predicts, fused with its own prediction.
        fusion: how several predictions of a model are fused (default median).
        dose: also check each MR -> CT model's synthetic CT by dose, with these plans (``DoseConfig``).
        dose_patients: the dose check on the first this many test patients only (default: all).

    A model of several predictions (comma-separated paths, or ``tta``) is scored on their fused
    volume, and its spread against the error on the original grid (``uncertainty``).
    """
    if not models:
        raise EvaluationError("no model to evaluate")
    if not os.path.isdir(dataset):
        raise EvaluationError(f"{dataset}: dataset is not a directory")
    loaded = {name: load_model(path, tta, fusion) for name, path in models.items()}
    for name, preds in loaded.items():
        if "ct2mr" not in preds and not grid_metrics:
            raise EvaluationError(f"{models[name]}: model {name!r} has no CT->MR generator (only a synthetic-CT "
                                  "model: its scores are the SynthRAD ones, drop --nogrid_metrics)")
    # The paper's tables score CT -> MR; an MR -> CT-only model (the synthetic-CT paired baseline)
    # appears in the SynthRAD tables only.
    paper = {name: preds for name, preds in loaded.items() if "ct2mr" in preds}
    records = _is_records(dataset)
    if records:
        from mrgan_tf.records.spec import SPEC_NAME

        patients, cfg = load_records_patients(dataset)
        check_preprocessing(models, loaded, cfg, os.path.join(dataset, SPEC_NAME))
    else:
        cfg = next(iter(next(iter(loaded.values())).values())).preprocess
        check_preprocessing(models, loaded, cfg, f"the first model ({next(iter(models.values()))})")
        patients = load_root_patients(dataset, cfg, skip_missing)
    if dose is not None:
        dose_models.check_models(models, loaded, cfg)
    originals = source_root(dataset, records, root) if grid_metrics or dose else None  # fail before the slow part
    if dose is not None:
        dose_files = original_files(originals, patients)
    results = {name: evaluate_predictors(preds, patients, cfg, batch_size, progress)
               for name, preds in paper.items()}
    grid = evaluate_on_grid(loaded, patients, cfg, originals, batch_size, progress) if grid_metrics else None
    dosed = None
    if dose is not None:   # the last numbers: its report folders are filled as it goes, put in place when done
        made, dose_dir = not os.path.exists(out_dir), os.path.join(out_dir, dose_models.FOLDER)
        try:
            with atomic_folder(dose_dir) as dose_tmp:
                dosed = dose_models.evaluate_dose(models, loaded, patients, dose_files, dose_tmp, dose,
                                                  dose_patients, batch_size, progress)
        except BaseException:
            if made:   # leave no empty output folder behind
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
    per_patient = {name: res.rows for name, res in results.items()}
    latency = {name: res.latency for name, res in results.items()}
    sources = {name: loaded[name]["ct2mr"].source for name in paper}
    os.makedirs(out_dir, exist_ok=True)
    files = write_figures(out_dir, patients, results, fig_slices)
    md = report_markdown(per_patient, latency, sources, dataset, grid, dosed)
    doc = json.loads(metric_tables.table_json(per_patient, ALL_METRICS, ddof=DDOF))
    doc.update({"dataset": os.path.abspath(dataset), "dataset_kind": "records" if records else "root",
                "models": {n: ",".join(os.path.abspath(m) for m in p.split(",") if m) for n, p in models.items()},
                "fusion": {n: p.describe() for n, preds in loaded.items() for p in list(preds.values())[:1]
                           if isinstance(p, Fusion)},
                "sources": {n: os.path.abspath(s) for n, s in sources.items()}, "latency": latency,
                "scale": "0-255 (paper); psnr_paper = authors' convention (+48.13 dB)"})
    texts = [("metrics.md", md), ("metrics.csv", metric_tables.table_csv(per_patient, ALL_METRICS))]
    synthrad = None
    if grid is not None:
        metrics = scored_metrics(grid.rows)
        synthrad = json.loads(metric_tables.table_json(grid.rows, metrics, ddof=DDOF))
        synthrad.update({"root": os.path.abspath(grid.root), "mask_source": grid.mask_source, "notes": grid.notes,
                         "ct_range_hu": list(grid.ct_range), "ct_windowed": grid.ct_windowed,
                         "smr_range": {pid: list(r) if r else None for pid, r in grid.mr_range.items()},
                         "conventions": "SynthRAD2023 MAE/PSNR/SSIM, SynthRAD2025 MS-SSIM; 3-D, original grid, "
                                        "inside the mask; sct_* in HU, smr_* in the reference MR's units"})
        doc["synthrad"] = synthrad
        texts.append(("metrics_synthrad.csv", metric_tables.table_csv(grid.rows, metrics)))
    if dosed is not None:
        doc["dose"] = {**json.loads(metric_tables.table_json(dosed.rows, dosed.metrics, ddof=DDOF)),
                       **dosed.to_json()}
        texts.append(("metrics_dose.csv", metric_tables.table_csv(dosed.rows, dosed.metrics)))
        files.append(os.path.join(out_dir, dose_models.FOLDER))
    texts.append(("metrics.json", json.dumps(doc, indent=2, allow_nan=False) + "\n"))
    for name, text in texts:
        atomic_write_text(os.path.join(out_dir, name), text)
        files.append(os.path.join(out_dir, name))
    out = {"per_patient": per_patient, "summary": doc["summary"], "latency": latency, "files": files,
           "markdown": md}
    if synthrad is not None:
        out["synthrad"] = {"per_patient": grid.rows, **{k: v for k, v in synthrad.items() if k != "per_patient"}}
    if dosed is not None:
        out["dose"] = {"per_patient": dosed.rows, **{k: v for k, v in doc["dose"].items() if k != "per_patient"}}
    return out


def parse_models(values: list[str]) -> dict[str, str]:
    """``["name=path", "path"]`` -> {name: path}; a bare path is named after its folder."""
    return cli.named_paths(values, "model", lambda v: os.path.basename(os.path.normpath(v)) or "model",
                           EvaluationError)


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (importers' flags never collide)."""
    flags.DEFINE_multi_string("model", None, "PATH or NAME=PATH of a run dir or SavedModel export; repeat to "
                              "compare models side by side. NAME=PATH1,PATH2,... is one model of several fused "
                              "predictions (e.g. runs of three seeds), scored with its spread.", flag_values=fv)
    define_ensemble_flags(fv)
    flags.DEFINE_string("dataset", None, "Records dir (uses paired_test) or dataset root.", flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder for metrics.md/.csv/.json and figures.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Slices per model call.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("fig_slices", 3, "Slices per patient in Figs. 5 and 7.", lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("skip_missing", False, "Dataset root: skip patients without a reference MR "
                      "(default: error).", flag_values=fv)
    flags.DEFINE_bool("progress", False, "Progress bars.", flag_values=fv)
    flags.DEFINE_string("root", None, "Dataset root holding the test patients' original volumes for the SynthRAD "
                        "metrics (default: the records' source_root in dataset.json, or --dataset when it is a "
                        "root).", flag_values=fv)
    flags.DEFINE_bool("grid_metrics", True, "SynthRAD's metrics on each test patient's original grid "
                      "(--nogrid_metrics: the paper's 2-D tables only).", flag_values=fv)
    flags.DEFINE_bool("dose", False, "Also check each MR->CT model's synthetic CT by dose on the test patients: a "
                      "photon and a proton plan on the reference CT, recomputed on the synthetic CT (needs the "
                      "'dose' extra; minutes per patient). The plan's flags are the dose command's.", flag_values=fv)
    flags.DEFINE_integer("dose_patients", None, "--dose on the first N test patients only (default: all).",
                         lower_bound=1, flag_values=fv)
    cli.define_field_flags(fv, DoseConfig, DOSE_FLAGS)


def main(argv):
    fv = flags.FLAGS
    cli.require_flags(fv, "model", "dataset", "out")
    import tensorflow as tf  # noqa: F401  (its OpError counts as a user error: a SavedModel that does not load)

    dose_flags = ["dose_patients", *(f.name or k for k, f in DOSE_FLAGS.items())]
    if not fv.dose and any(fv[name].present for name in dose_flags):
        raise app.UsageError(f"--{next(n for n in dose_flags if fv[n].present)} is a --dose flag; add --dose")
    with cli.user_errors("evaluate"):
        dose = DoseConfig(**cli.field_values(fv, DOSE_FLAGS, DoseConfig)) if fv.dose else None
        result = evaluate(parse_models(fv.model), fv.dataset, fv.out, fv.batch_size, fv.skip_missing,
                          fv.fig_slices, fv.progress, root=fv.root, grid_metrics=fv.grid_metrics,
                          tta=tta_from_flags(fv), fusion=fv.fusion, dose=dose, dose_patients=fv.dose_patients)
    print(result["markdown"])
    print(f"wrote {len(result['files'])} files to {fv.out}")
    return 0


run = cli.entry_point(define_flags, main)
