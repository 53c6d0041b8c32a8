"""Evaluate one or more models on the paired test patients: Table I metrics, Figs. 5-7, latency.

    python -m mrgan_tf.evaluate --model=runs/mrgan --dataset=records/ --out=eval/
    python -m mrgan_tf.evaluate --model=paired=runs/p --model=unpaired=runs/u --model=mrgan=runs/m \
        --dataset=records/ --out=eval/

``--dataset`` is a records directory (its ``paired_test`` slices are used as
stored) or a dataset root (``<root>/<patient>/{ct,mr[,mask]}``: every patient
with a CT and an MR is prepared exactly as make_records would, and its kept
slices are scored). Models are run dirs or SavedModel exports (see synthesize).

Per patient, on the model's S x S slices:

* ``mae``, ``psnr`` (10 log10(255^2 / MSE), MSE pooled over the patient's
  slices), ``psnr_paper`` (the authors' code: 48.13 dB higher), ``ssim``; all on
  the paper's 0-255 scale over the whole image, and ``*_masked`` inside the body.
  Predictions are compared as floats (not re-quantised to 8 bits).
* ``mr_*_phys``: MR in scanner units (0..1 mapped back with the slice's
  ``mr_range``), inside the body mask (``metrics.physical_mr_metrics``).
* ``ct_*_hu`` (models with an MR->CT generator): SynCT(reference MR) against the
  CT in HU with SynthRAD2023's conventions (``metrics.physical_ct_metrics``).
  Both are limited to the CT window the records were made with.

Avg±sd in metrics.md and metrics.json is over patients with a population sd
(ddof=0), as the paper's Table I. Output files are written atomically.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Mapping

import numpy as np
from absl import app, flags, logging

from mrgan_tf import figures, metrics
from mrgan_tf.preprocess import PreprocessConfig, denormalise_mr, dequantise, unwindow_ct
from mrgan_tf.synthesize import Predictor, load_predictors
from tfrecords_tools.atomic import atomic_write_text

DDOF = 0  # the paper's Table I sd
TABLES = {
    "Table I (0-255 scale, whole image)": ("mae", "psnr", "psnr_paper", "ssim"),
    "Inside the body mask (0-255 scale)": ("mae_masked", "psnr_masked", "ssim_masked"),
    "MR in scanner units, inside the body mask": ("mr_mae_phys", "mr_psnr_phys", "mr_ssim_phys"),
    "SynCT from the reference MR, HU (SynthRAD2023 conventions)": ("ct_mae_hu", "ct_psnr_hu", "ct_ssim_hu"),
}
ALL_METRICS = tuple(k for keys in TABLES.values() for k in keys)


class EvaluationError(ValueError):
    """Bad dataset or model for evaluation; the message names the path or patient."""


@dataclasses.dataclass
class TestPatient:
    """One paired test patient's fitted slices on 0..1, as stored in records."""

    patient_id: str
    ct01: np.ndarray        # (Z, S, S)
    mr01: np.ndarray        # (Z, S, S)
    mask: np.ndarray        # (Z, S, S) bool
    mr_range: np.ndarray    # (Z, 2): (lo, hi) of each slice's MR normalisation
    slice_index: np.ndarray  # (Z,)


# --------------------------------------------------------------------------- test data


def _is_records(path: str) -> bool:
    from mrgan_tf.spec import SPEC_NAME

    return os.path.isfile(os.path.join(path, SPEC_NAME))


def load_records_patients(records_dir: str) -> tuple[dict[str, TestPatient], PreprocessConfig]:
    """The ``paired_test`` shard set grouped by patient, slices in order."""
    from mrgan_tf.spec import DatasetSpec, SpecError
    from tfrecords_tools import reader

    spec = DatasetSpec.load(records_dir)
    try:
        spec.require("paired_test")
    except SpecError as e:
        raise EvaluationError(f"empty test set: {e}") from None
    bits = spec.preprocess.bits
    grouped: dict[str, list[dict]] = {}
    for ex in reader.iterate(records_dir, "paired_test"):
        grouped.setdefault(str(ex["patient_id"]), []).append(ex)
    if not grouped:
        raise EvaluationError(f"{records_dir}: empty test set (paired_test has no records)")
    out = {}
    for pid, exs in grouped.items():
        exs.sort(key=lambda e: int(e["slice_index"]))
        stack = lambda key: np.stack([np.asarray(e[key])[..., 0] for e in exs])  # noqa: E731
        out[pid] = TestPatient(pid, dequantise(stack("ct"), bits), dequantise(stack("mr"), bits),
                               stack("mask") > 0, np.stack([np.asarray(e["mr_range"], np.float64) for e in exs]),
                               np.array([int(e["slice_index"]) for e in exs]))
    return out, spec.preprocess


def load_root_patients(root: str, cfg: PreprocessConfig, skip_missing: bool = False) -> dict[str, TestPatient]:
    """Every patient of a dataset root with a CT and an MR, prepared as make_records does (kept slices)."""
    from mrgan_tf.io.readers import read_volume
    from mrgan_tf.make_records import MakeRecordsError, discover_patients
    from mrgan_tf.preprocess import prepare_patient

    try:
        found = discover_patients(root)
    except MakeRecordsError as e:
        raise EvaluationError(str(e)) from None
    out = {}
    for pid, f in found.items():
        if f.error:
            raise EvaluationError(f"patient {pid}: {f.error}")
        if f.files.get("ct") is None:
            logging.info("patient %s has no CT: not evaluated", pid)
            continue
        if f.files.get("mr") is None:
            if skip_missing:
                logging.warning("patient %s has no reference MR: skipped", pid)
                continue
            raise EvaluationError(f"patient {pid} ({f.folder}) has no reference MR to compare with "
                                  "(use --skip_missing to leave such patients out)")
        mask = f.files.get("mask")
        prep = prepare_patient(read_volume(f.files["ct"]), read_volume(f.files["mr"]),
                               read_volume(mask) if mask is not None else None, cfg)
        keep = np.flatnonzero(prep.keep)
        if keep.size == 0:
            raise EvaluationError(f"patient {pid}: no slice has enough body in it "
                                  f"(min_foreground {cfg.min_foreground})")
        out[pid] = TestPatient(pid, dequantise(prep.ct[keep], cfg.bits), dequantise(prep.mr[keep], cfg.bits),
                               prep.mask[keep] > 0, np.tile(np.asarray(prep.mr_range, np.float64), (keep.size, 1)),
                               keep)
    if not out:
        raise EvaluationError(f"{root}: empty test set (no patient has both a CT and an MR)")
    return out


# --------------------------------------------------------------------------- metrics


def _or_none(fn, *args) -> dict | None:
    """A metrics dict, or None when it is undefined (e.g. empty mask, constant reference)."""
    try:
        return fn(*args)
    except ValueError as e:
        logging.warning("metric skipped: %s", e)
        return None


def patient_row(p: TestPatient, syn_mr01: np.ndarray, syn_ct01: np.ndarray | None,
                cfg: PreprocessConfig) -> dict[str, float]:
    """All metrics of one patient (keys of ``ALL_METRICS``; missing ones are left out)."""
    mask = p.mask if p.mask.any() else None
    row = metrics.patient_metrics(p.mr01 * 255.0, syn_mr01 * 255.0, mask)
    lo, hi = p.mr_range[:, 0, None, None], p.mr_range[:, 1, None, None]
    if mask is not None and np.all(hi > lo):
        phys = _or_none(metrics.physical_mr_metrics, denormalise_mr(p.mr01, lo, hi),
                        denormalise_mr(syn_mr01, lo, hi), mask)
        row.update({f"mr_{k}_phys": v for k, v in (phys or {}).items()})
    if syn_ct01 is not None and mask is not None:
        c, w = cfg.ct_window_center, cfg.ct_window_width
        hu = _or_none(metrics.physical_ct_metrics, unwindow_ct(p.ct01, c, w), unwindow_ct(syn_ct01, c, w), mask)
        row.update({f"ct_{k}_hu": v for k, v in (hu or {}).items()})
    return row


@dataclasses.dataclass
class ModelResult:
    rows: dict[str, dict[str, float]]
    syn_mr: dict[str, np.ndarray]            # patient -> (Z, S, S) 0..1
    rec_ct: dict[str, np.ndarray]            # patient -> SynCT(SynMR(CT)), when mr2ct exists
    latency: dict[str, float]


def evaluate_predictors(predictors: Mapping[str, Predictor], patients: Mapping[str, TestPatient],
                        cfg: PreprocessConfig, batch_size: int = 16, progress: bool = False) -> ModelResult:
    """Run one model (its ct2mr and, if present, mr2ct) over every test patient."""
    to_mr, to_ct = predictors["ct2mr"], predictors.get("mr2ct")
    first = next(iter(patients.values()))
    to_mr.predict01(first.ct01[:1])  # warm-up: tracing is not inference latency
    rows, syn, rec, seconds = {}, {}, {}, []
    for pid, p in patients.items():
        t0 = time.perf_counter()
        syn[pid] = to_mr.predict01(p.ct01, batch_size, progress)
        seconds.append(time.perf_counter() - t0)
        syn_ct = None
        if to_ct is not None:
            syn_ct = to_ct.predict01(p.mr01, batch_size)
            rec[pid] = to_ct.predict01(syn[pid], batch_size)
        rows[pid] = patient_row(p, syn[pid], syn_ct, cfg)
    n_slices = sum(len(p.ct01) for p in patients.values())
    latency = {"slices": n_slices, "patients": len(patients), "batch_size": batch_size,
               "ms_per_slice": 1000.0 * sum(seconds) / n_slices,
               "s_per_volume": float(np.mean(seconds)), "slices_per_volume": n_slices / len(patients)}
    return ModelResult(rows, syn, rec, latency)


# --------------------------------------------------------------------------- figures and report


def _figure_slices(p: TestPatient, n: int) -> np.ndarray:
    """Up to n slices spread through the patient (the middle one first when n = 1)."""
    z = len(p.ct01)
    if n <= 1:
        return np.array([z // 2])
    return np.unique(np.linspace(0, z - 1, n + 2)[1:-1].round().astype(int))


def write_figures(out_dir: str, patients: Mapping[str, TestPatient], results: Mapping[str, ModelResult],
                  n_slices: int = 3) -> list[str]:
    """fig5_/fig7_ per patient (model name added with several models) and fig6.png for several models."""
    paths = []
    several = len(results) > 1
    fig6_rows, fig6_titles = [], []
    for pid, p in patients.items():
        idx = _figure_slices(p, n_slices)
        titles = [f"{pid} slice {p.slice_index[i]}" for i in idx]
        for name, res in results.items():
            tag = f"{name}_{pid}" if several else pid
            paths.append(figures.montage_fig5(os.path.join(out_dir, f"fig5_{tag}.png"),
                                              [(p.ct01[i] * 255, res.syn_mr[pid][i] * 255, p.mr01[i] * 255)
                                               for i in idx], titles))
            if pid in res.rec_ct:
                paths.append(figures.cycle_fig7(os.path.join(out_dir, f"fig7_{tag}.png"),
                                                [(p.ct01[i] * 255, res.syn_mr[pid][i] * 255, res.rec_ct[pid][i] * 255)
                                                 for i in idx], titles))
        mid = _figure_slices(p, 1)[0]
        fig6_rows.append({"Input CT": p.ct01[mid] * 255,
                          **{name: res.syn_mr[pid][mid] * 255 for name, res in results.items()},
                          "Reference MR": p.mr01[mid] * 255})
        fig6_titles.append(f"{pid} slice {p.slice_index[mid]}")
    if several:
        columns = ["Input CT", *results, "Reference MR"]
        paths.append(figures.comparison_fig6(os.path.join(out_dir, "fig6.png"), fig6_rows, columns, fig6_titles))
    return paths


def _latency_markdown(latency: Mapping[str, Mapping], sources: Mapping[str, str]) -> str:
    lines = ["| Model | Source | Slices | Batch | ms / slice | s / volume (avg slices) |",
             "|---|---|---:|---:|---:|---:|"]
    for name, lat in latency.items():
        lines.append(f"| {name} | `{sources[name]}` | {lat['slices']} | {lat['batch_size']} | "
                     f"{lat['ms_per_slice']:.1f} | {lat['s_per_volume']:.2f} ({lat['slices_per_volume']:.0f}) |")
    return "\n".join(lines) + "\n"


def report_markdown(per_patient: Mapping[str, Mapping], latency: Mapping[str, Mapping],
                    sources: Mapping[str, str], dataset: str) -> str:
    parts = [f"# Evaluation on `{dataset}`\n",
             "Scores on the model's fitted slices. PSNR = 10 log10(255^2 / MSE), MSE pooled over each "
             "patient's slices; \"PSNR (paper conv.)\" is the authors' published formula, 48.13 dB higher, "
             "for comparison with the paper's Table I only. Avg±sd: mean over patients, population sd "
             f"(ddof={DDOF}) as in the paper.\n"]
    for title, keys in TABLES.items():
        if not any(k in row for rows in per_patient.values() for row in rows.values() for k in keys):
            continue
        parts.append(f"## {title}\n")
        parts.append(metrics.table_markdown(per_patient, keys, ddof=DDOF))
    parts.append("## Inference latency\n")
    parts.append("CT -> MR generator only, after one warm-up call; a volume = one test patient's slices.\n")
    parts.append(_latency_markdown(latency, sources))
    return "\n".join(parts)


# --------------------------------------------------------------------------- entry points


def evaluate(models: Mapping[str, str], dataset: str, out_dir: str, batch_size: int = 16,
             skip_missing: bool = False, fig_slices: int = 3, progress: bool = False) -> dict:
    """Evaluate ``{name: run dir or export}`` on ``dataset``; writes the report to ``out_dir``.

    Returns ``{"per_patient": {model: {patient: metrics}}, "summary", "latency", "files"}``.
    """
    if not models:
        raise EvaluationError("no model to evaluate")
    if not os.path.isdir(dataset):
        raise EvaluationError(f"{dataset}: dataset is not a directory")
    loaded = {name: load_predictors(path) for name, path in models.items()}
    for name, preds in loaded.items():
        if "ct2mr" not in preds:
            raise EvaluationError(f"{models[name]}: model {name!r} has no CT->MR generator")
    records = _is_records(dataset)
    if records:
        patients, cfg = load_records_patients(dataset)
    else:
        cfg = next(iter(loaded.values()))["ct2mr"].preprocess
        patients = load_root_patients(dataset, cfg, skip_missing)
    for name, preds in loaded.items():
        m = preds["ct2mr"].preprocess
        if (m.image_size, m.fit, m.bits) != (cfg.image_size, cfg.fit, cfg.bits) or \
                (m.ct_window_center, m.ct_window_width) != (cfg.ct_window_center, cfg.ct_window_width):
            raise EvaluationError(f"{models[name]}: model {name!r} was trained with other preprocessing "
                                  f"(image_size {m.image_size}, fit {m.fit}, bits {m.bits}, CT window "
                                  f"{m.ct_window_center}/{m.ct_window_width}) than {dataset}")
    results = {name: evaluate_predictors(preds, patients, cfg, batch_size, progress)
               for name, preds in loaded.items()}
    per_patient = {name: res.rows for name, res in results.items()}
    latency = {name: res.latency for name, res in results.items()}
    sources = {name: loaded[name]["ct2mr"].source for name in loaded}
    os.makedirs(out_dir, exist_ok=True)
    files = write_figures(out_dir, patients, results, fig_slices)
    md = report_markdown(per_patient, latency, sources, dataset)
    doc = json.loads(metrics.table_json(per_patient, ALL_METRICS, ddof=DDOF))
    doc.update({"dataset": os.path.abspath(dataset), "dataset_kind": "records" if records else "root",
                "models": {n: os.path.abspath(p) for n, p in models.items()},
                "sources": {n: os.path.abspath(s) for n, s in sources.items()}, "latency": latency,
                "scale": "0-255 (paper); psnr_paper = authors' convention (+48.13 dB)"})
    for name, text in (("metrics.md", md), ("metrics.csv", metrics.table_csv(per_patient, ALL_METRICS)),
                       ("metrics.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")):
        atomic_write_text(os.path.join(out_dir, name), text)
        files.append(os.path.join(out_dir, name))
    return {"per_patient": per_patient, "summary": doc["summary"], "latency": latency, "files": files,
            "markdown": md}


def parse_models(values: list[str]) -> dict[str, str]:
    """``["name=path", "path"]`` -> {name: path}; a bare path is named after its folder."""
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            path = v
            name = os.path.basename(os.path.normpath(v)) or "model"
        if not name or not path:
            raise EvaluationError(f"--model {v!r}: expected PATH or NAME=PATH")
        if name in out:
            raise EvaluationError(f"--model: name {name!r} given twice")
        out[name] = path
    return out


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (importers' flags never collide)."""
    flags.DEFINE_multi_string("model", None, "PATH or NAME=PATH of a run dir or SavedModel export; repeat to "
                              "compare models side by side.", flag_values=fv)
    flags.DEFINE_string("dataset", None, "Records dir (uses paired_test) or dataset root.", flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder for metrics.md/.csv/.json and figures.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Slices per model call.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("fig_slices", 3, "Slices per patient in Figs. 5 and 7.", lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("skip_missing", False, "Dataset root: skip patients without a reference MR "
                      "(default: error).", flag_values=fv)
    flags.DEFINE_bool("progress", False, "Progress bars.", flag_values=fv)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    fv = flags.FLAGS
    for name in ("model", "dataset", "out"):
        if not fv[name].value:
            raise app.UsageError(f"--{name} is required")
    import tensorflow as tf

    from mrgan_tf.export import ExportError
    from mrgan_tf.io.volumes import VolumeError
    from mrgan_tf.spec import SpecError
    from mrgan_tf.synthesize import SynthesisError
    from tfrecords_tools.reader import CorruptRecordError
    try:
        result = evaluate(parse_models(fv.model), fv.dataset, fv.out, fv.batch_size, fv.skip_missing,
                          fv.fig_slices, fv.progress)
    except (EvaluationError, SynthesisError, ExportError, SpecError, VolumeError, CorruptRecordError,
            FileNotFoundError, tf.errors.OpError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 1
    print(result["markdown"])
    print(f"wrote {len(result['files'])} files to {fv.out}")
    return 0


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
