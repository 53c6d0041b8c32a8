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

Avg±sd in metrics.md and metrics.json is over patients with a population sd
(ddof=0), as the paper's Table I. Nothing is written until every number is
computed; output files are written atomically.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Mapping

import numpy as np
from absl import app, flags, logging

from mrgan_tf import cli
from mrgan_tf.errors import UserError
from mrgan_tf.evaluation import figures, metrics
from mrgan_tf.inference.predictors import Predictor, load_predictors
from mrgan_tf.inference.synthesis import AIR_HU
from mrgan_tf.preprocess import PreprocessConfig, denormalise_mr, dequantise
from mrgan_tf.preprocess.context import centre_slice
from tfrecords_tools.atomic import atomic_write_text

DDOF = 0  # the paper's Table I sd
TABLES = {  # the paper's conventions: 2-D fitted slices, 0-255
    "Table I (0-255 scale, whole image)": ("mae", "psnr", "psnr_paper", "ssim"),
    "Inside the body mask (0-255 scale)": ("mae_masked", "psnr_masked", "ssim_masked"),
}
ALL_METRICS = tuple(k for keys in TABLES.values() for k in keys)
GRID_TABLES = {  # SynthRAD's conventions: 3-D, the patient's original grid, inside the mask
    "SynCT from the reference MR, HU": ("sct_mae", "sct_psnr", "sct_ssim", "sct_ms_ssim"),
    "SynMR from the reference CT, MR units": ("smr_mae", "smr_psnr", "smr_ssim", "smr_ms_ssim"),
}
GRID_METRICS = tuple(k for keys in GRID_TABLES.values() for k in keys)
# Preprocessing fields that choose or align test slices but do not change what a model sees.
SELECTION_ONLY = ("min_foreground", "max_body_loss", "register", "register_skull_hu", "register_model")


class EvaluationError(UserError, ValueError):
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
    ct_to_mr: np.ndarray | None = None  # 4x4 world transform CT -> MR when the pair was registered


# --------------------------------------------------------------------------- test data


def _is_records(path: str) -> bool:
    from mrgan_tf.records.spec import SPEC_NAME

    return os.path.isfile(os.path.join(path, SPEC_NAME))


def load_records_patients(records_dir: str) -> tuple[dict[str, TestPatient], PreprocessConfig]:
    """The ``paired_test`` shard set grouped by patient, slices in order."""
    from mrgan_tf.records.spec import DatasetSpec, SpecError
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
        stack = lambda key: np.stack([centre_slice(np.asarray(e[key]))[..., 0] for e in exs])  # noqa: E731
        reg = (spec.patients.get(pid) or {}).get("registration") or {}
        out[pid] = TestPatient(pid, dequantise(stack("ct"), bits), dequantise(stack("mr"), bits),
                               stack("mask") > 0, np.stack([np.asarray(e["mr_range"], np.float64) for e in exs]),
                               np.array([int(e["slice_index"]) for e in exs]), _transform(reg.get("transform")))
    return out, spec.preprocess


def _transform(values) -> np.ndarray | None:
    return None if values is None else np.asarray(values, np.float64).reshape(4, 4)


def load_root_patients(root: str, cfg: PreprocessConfig, skip_missing: bool = False) -> dict[str, TestPatient]:
    """Every patient of a dataset root with a CT and an MR, prepared as make_records does (kept slices)."""
    from mrgan_tf.io.layout import LayoutError, discover_patients
    from mrgan_tf.io.readers import read_volume
    from mrgan_tf.preprocess import prepare_patient

    try:
        found = discover_patients(root)
    except LayoutError as e:
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
                               keep, _transform((prep.registration or {}).get("transform")))
    if not out:
        raise EvaluationError(f"{root}: empty test set (no patient has both a CT and an MR)")
    return out


# --------------------------------------------------------------------------- metrics


def patient_row(p: TestPatient, syn_mr01: np.ndarray) -> dict[str, float]:
    """The paper's metrics of one patient on its fitted slices (keys of ``ALL_METRICS``)."""
    mask = p.mask if p.mask.any() else None
    return metrics.patient_metrics(p.mr01 * 255.0, syn_mr01 * 255.0, mask)


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
        if to_ct is not None:
            rec[pid] = to_ct.predict01(syn[pid], batch_size)
        rows[pid] = patient_row(p, syn[pid])
    n_slices = sum(len(p.ct01) for p in patients.values())
    latency = {"slices": n_slices, "patients": len(patients), "batch_size": batch_size,
               "ms_per_slice": 1000.0 * sum(seconds) / n_slices,
               "s_per_volume": float(np.mean(seconds)), "slices_per_volume": n_slices / len(patients)}
    return ModelResult(rows, syn, rec, latency)


# --------------------------------------------------------------------------- SynthRAD metrics on the original grid


@dataclasses.dataclass
class GridResult:
    """SynthRAD-convention rows of every model, and what the report must say about them."""

    rows: dict[str, dict[str, dict[str, float]]]   # model -> patient -> metric
    mask_source: dict[str, str]                     # patient -> "file" | "computed"
    notes: list[str]                                # metrics left out, and why
    root: str
    mr_range: dict[str, tuple[float, float] | None]  # patient -> clip / data range of the smr_* metrics


def source_root(dataset: str, records: bool, root: str | None = None) -> str:
    """Where the test patients' original volumes are: ``root``, else the records' ``source_root``."""
    from mrgan_tf.records.spec import SPEC_NAME, DatasetSpec

    if root:
        if not os.path.isdir(root):
            raise EvaluationError(f"{root}: --root is not a directory")
        return root
    if not records:
        return dataset
    spec_path = os.path.join(dataset, SPEC_NAME)
    recorded = DatasetSpec.load(dataset).extra.get("source_root")
    if not recorded:
        raise EvaluationError(f"{spec_path}: does not record the dataset root the records were made from "
                              "(no source_root); pass --root=DATASET_ROOT for the SynthRAD metrics on the original "
                              "grid, or --nogrid_metrics for the paper's tables only")
    if not os.path.isdir(recorded):
        raise EvaluationError(f"{recorded}: the dataset root recorded in {spec_path} (source_root) is not a directory; "
                              "pass --root=DATASET_ROOT if the data moved")
    return recorded


def original_files(root: str, patient_ids) -> dict[str, dict[str, str | None]]:
    """{patient: {ct, mr, mask}} paths in the dataset root; every test patient needs a CT and an MR there."""
    from mrgan_tf.io.layout import LayoutError, discover_patients

    try:
        found = discover_patients(root)
    except LayoutError as e:
        raise EvaluationError(str(e)) from None
    out = {}
    for pid in patient_ids:
        f = found.get(pid)
        if f is None:
            raise EvaluationError(f"{os.path.join(root, pid)}: test patient {pid} has no folder in the dataset root "
                                  "(pass --root=DATASET_ROOT if the data moved)")
        if f.error:
            raise EvaluationError(f"patient {pid}: {f.error}")
        lacking = [m for m in ("ct", "mr") if f.files.get(m) is None]
        if lacking:
            raise EvaluationError(f"{f.folder}: test patient {pid} has no {' or '.join(lacking).upper()} file")
        out[pid] = {m: (str(f.files[m]) if f.files.get(m) is not None else None) for m in ("ct", "mr", "mask")}
    return out


def _same_grid(a, b) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-4)


def _onto(values: np.ndarray, grid, target, order: int, fill: float, transform: np.ndarray | None):
    """``values`` on ``grid``'s voxels resampled onto ``target``'s (``transform``: target world -> grid world)."""
    from mrgan_tf.io.volumes import Volume
    from mrgan_tf.preprocess import resample_like

    if transform is None and _same_grid(grid, target):
        return np.asarray(values)
    return resample_like(Volume(values, grid.affine), target, order=order, transform=transform, fill=fill).data


def reference_mask(ct, mask_path: str | None, cfg: PreprocessConfig) -> tuple[np.ndarray, str]:
    """The patient's mask on the CT's grid and where it came from: "file", or "computed" from the CT."""
    from mrgan_tf.io.readers import read_volume
    from mrgan_tf.preprocess import body_mask_from_ct

    if mask_path is None:
        return body_mask_from_ct(ct.data, cfg.body_threshold_hu), "computed"
    mask = read_volume(mask_path)
    on_ct = _onto(mask.data > 0, mask, ct, order=0, fill=0, transform=None) > 0
    if not on_ct.any():
        raise EvaluationError(f"{mask_path}: mask is empty on the CT's grid")
    return on_ct, "file"


def _scores(prefix: str, fns: Mapping, ref, pred, mask, pid: str, notes: list[str]) -> dict[str, float]:
    """``{prefix_name: fn(ref, pred, mask)}``; an undefined metric is left out and noted."""
    row = {}
    for name, fn in fns.items():
        try:
            row[f"{prefix}_{name}"] = float(fn(ref, pred, mask))
        except ValueError as e:
            notes.append(f"patient {pid}: {prefix}_{name} left out: {e}")
            logging.warning("%s", notes[-1])
    return row


def grid_rows(loaded: Mapping[str, Mapping[str, Predictor]], pid: str, files: Mapping[str, str | None],
              p: TestPatient, cfg: PreprocessConfig, notes: list[str], batch_size: int = 16,
              progress: bool = False, volumes: dict | None = None
              ) -> tuple[dict[str, dict[str, float]], str, tuple[float, float] | None]:
    """SynthRAD metrics of every model for one patient, on its original CT and MR grids.

    SynMR(CT) is put on the MR's grid in the reference's units (the MR range
    the records normalised it with); SynCT(MR), in HU, on the CT's grid.
    Returns ({model: row}, mask source, the MR clip range or None when the reference MR is constant).
    ``volumes``, when given, receives what was scored on the MR's grid (further measures,
    figures): ``reference``, ``mask``, ``grid`` (the MR Volume) and each model's SynMR by name.
    """
    from mrgan_tf.inference.synthesis import synthesize_volume
    from mrgan_tf.io.readers import read_volume

    ct, mr = read_volume(files["ct"]), read_volume(files["mr"])
    ct_mask, source = reference_mask(ct, files.get("mask"), cfg)
    if source == "computed":
        logging.warning("patient %s has no mask file: SynthRAD metrics inside the body mask computed from %s",
                        pid, files["ct"])
    mr_to_ct = None if p.ct_to_mr is None else np.linalg.inv(p.ct_to_mr)
    mr_mask = _onto(ct_mask.astype(np.uint8), ct, mr, order=0, fill=0, transform=mr_to_ct) > 0
    ref_mr = np.asarray(mr.data, np.float32)
    lo, hi = (float(v) for v in p.mr_range[0])
    ct_fns = {"mae": metrics.synthrad_mae, "psnr": metrics.synthrad_psnr, "ssim": metrics.synthrad_ssim,
              "ms_ssim": metrics.synthrad_ms_ssim}
    mr_fns = {"mae": metrics.synthrad_mae}
    try:
        mr_rng = metrics.mr_value_range(ref_mr, mr_mask)
        mr_fns.update(psnr=lambda r, q, m: metrics.synthrad_psnr(r, q, m, mr_rng),
                      ssim=lambda r, q, m: metrics.synthrad_ssim(r, q, m, mr_rng),
                      ms_ssim=lambda r, q, m: metrics.synthrad_ms_ssim(r, q, m, mr_rng))
    except ValueError as e:
        mr_rng = None
        notes.append(f"patient {pid}: smr_psnr, smr_ssim, smr_ms_ssim left out: {e}")
        logging.warning("%s", notes[-1])
    rows = {}
    for name, preds in loaded.items():
        row = {}
        if "ct2mr" in preds:
            syn_mr, _ = synthesize_volume(preds["ct2mr"], ct, batch_size, progress)   # 0-255 on the CT's grid
            syn_mr_units = _onto(denormalise_mr(syn_mr.data / 255.0, lo, hi), ct, mr, 1, lo, mr_to_ct)
            row = _scores("smr", mr_fns, ref_mr, syn_mr_units, mr_mask, pid, notes)
            if volumes is not None:
                volumes.update({"reference": ref_mr, "mask": mr_mask, "grid": mr, name: syn_mr_units})
        if "mr2ct" in preds:
            syn_ct, _ = synthesize_volume(preds["mr2ct"], mr, batch_size, progress)  # HU on the MR's grid
            on_ct = _onto(syn_ct.data, mr, ct, 1, AIR_HU, p.ct_to_mr)
            row.update(_scores("sct", ct_fns, ct.data, on_ct, ct_mask, pid, notes))
        rows[name] = row
    return rows, source, mr_rng


def evaluate_on_grid(loaded: Mapping[str, Mapping[str, Predictor]], patients: Mapping[str, TestPatient],
                     cfg: PreprocessConfig, root: str, batch_size: int = 16, progress: bool = False) -> GridResult:
    """SynthRAD metrics of every model on every test patient's original grid (volumes read from ``root``)."""
    from tqdm import tqdm

    files = original_files(root, patients)
    result = GridResult({name: {} for name in loaded}, {}, [], root, {})
    for pid in tqdm(patients, desc="original grid", unit="patient", disable=not progress, leave=False):
        rows, result.mask_source[pid], result.mr_range[pid] = grid_rows(
            loaded, pid, files[pid], patients[pid], cfg, result.notes, batch_size)
        for name, row in rows.items():
            result.rows[name][pid] = row
    return result


def check_preprocessing(models: Mapping[str, str], loaded: Mapping[str, Mapping[str, Predictor]],
                        cfg: PreprocessConfig, dataset: str) -> None:
    """Every model must have been trained with the test data's preprocessing; the error names both values."""
    want = cfg.to_dict(complete=True)
    for name, preds in loaded.items():
        have = next(iter(preds.values())).preprocess.to_dict(complete=True)
        diff = [f"{k} {have.get(k)!r} (model) vs {want.get(k)!r} (test data)"
                for k in sorted(set(want) | set(have)) if k not in SELECTION_ONLY and have.get(k) != want.get(k)]
        if diff:
            raise EvaluationError(f"{models[name]}: model {name!r} was trained with other preprocessing than "
                                  f"{dataset}: " + "; ".join(diff))


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


def _tables(per_patient: Mapping[str, Mapping], tables: Mapping[str, tuple], level: str) -> list[str]:
    parts = []
    for title, keys in tables.items():
        if not any(k in row for rows in per_patient.values() for row in rows.values() for k in keys):
            continue
        parts.append(f"{level} {title}\n")
        parts.append(metrics.table_markdown(per_patient, keys, ddof=DDOF))
    return parts


def grid_markdown(grid: GridResult) -> str:
    """The SynthRAD-convention section: how it was computed, which masks were computed, its tables."""
    computed = sorted(pid for pid, src in grid.mask_source.items() if src == "computed")
    parts = ["## SynthRAD conventions: 3-D, each patient's original grid, inside the mask\n",
             "Every slice of the test patient's own CT (MR) through the generator and back onto that volume's "
             "grid (synthesize's code), scored against the original reference volume from "
             f"`{grid.root}`. As SynthRAD2023's evaluation code: MAE inside the mask on unclipped values; PSNR "
             "over the mask's voxels with both images clipped to [-1024, 3000] HU, data range 4024; 3-D SSIM "
             "(scikit-image, 7x7x7 window, K1 0.01, K2 0.03) on the volumes clipped, set to -1024 outside the "
             "mask and shifted by +1024, averaged inside the mask. MS-SSIM as SynthRAD2025's code (clip "
             "[-1024, 3071] HU, 5 levels). SynMR is put in the reference MR's units with the range the MR was "
             "normalised with; its PSNR, SSIM and MS-SSIM clip to the reference's range inside the mask and use "
             "its width as data range (MR has no fixed scale like HU). Not comparable with the paper's tables "
             "above.\n"]
    if computed:
        parts.append(f"No mask file for {', '.join(computed)}: scored inside the body mask computed from the CT "
                     "(CT > body_threshold_hu, largest component, holes filled).\n")
    parts += _tables(grid.rows, GRID_TABLES, "###")
    if grid.notes:
        parts.append("Left out:\n\n" + "\n".join(f"- {n}" for n in grid.notes) + "\n")
    return "\n".join(parts)


def report_markdown(per_patient: Mapping[str, Mapping], latency: Mapping[str, Mapping],
                    sources: Mapping[str, str], dataset: str, grid: GridResult | None = None) -> str:
    parts = [f"# Evaluation on `{dataset}`\n",
             "Two conventions in separate tables: the paper's (2-D fitted slices, 0-255 scale) and "
             + ("SynthRAD's (3-D, original grid, HU, inside the mask)." if grid is not None else
                "SynthRAD's (not computed here: --nogrid_metrics).") + "\n",
             "## Paper conventions: 2-D fitted slices, 0-255 scale\n",
             "Scores on the model's fitted slices. PSNR = 10 log10(255^2 / MSE), MSE pooled over each "
             "patient's slices; \"PSNR (paper conv.)\" is the authors' published formula, 48.13 dB higher, "
             "for comparison with the paper's Table I only. Avg±sd: mean over patients, population sd "
             f"(ddof={DDOF}) as in the paper.\n"]
    parts += _tables(per_patient, TABLES, "###")
    if grid is not None:
        parts.append(grid_markdown(grid))
    parts.append("## Inference latency\n")
    parts.append("CT -> MR generator only, after one warm-up call; a volume = one test patient's slices.\n")
    parts.append(_latency_markdown(latency, sources))
    return "\n".join(parts)


# --------------------------------------------------------------------------- entry points


def evaluate(models: Mapping[str, str], dataset: str, out_dir: str, batch_size: int = 16,
             skip_missing: bool = False, fig_slices: int = 3, progress: bool = False, root: str | None = None,
             grid_metrics: bool = True) -> dict:
    """Evaluate ``{name: run dir or export}`` on ``dataset``; writes the report to ``out_dir``.

    Returns ``{"per_patient": {model: {patient: metrics}}, "summary", "latency", "files", "markdown"}``
    (the paper's conventions) and, with ``grid_metrics``, ``"synthrad": {"per_patient", "summary",
    "mask_source", "notes", "root"}`` (SynthRAD's, on the original grid; original volumes from ``root``
    or, for records, the dataset root they were made from).

    Args:
        models: ``{name: path}`` of run directories or SavedModel exports, compared side by side.
        dataset: a records directory (its paired_test set) or a dataset root.
        out_dir: where metrics.md/.csv/.json and the figures go.
        batch_size: slices per model call.
        skip_missing: in a dataset root, skip patients without a reference MR (default: an error).
        fig_slices: slices per patient in Figs. 5 and 7.
        progress: show progress bars.
        root: the dataset root holding the test patients' original volumes (SynthRAD's metrics).
        grid_metrics: also score SynthRAD's metrics on each patient's original grid.
    """
    if not models:
        raise EvaluationError("no model to evaluate")
    if not os.path.isdir(dataset):
        raise EvaluationError(f"{dataset}: dataset is not a directory")
    loaded = {name: load_predictors(path) for name, path in models.items()}
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
    originals = source_root(dataset, records, root) if grid_metrics else None  # fail before the slow part
    results = {name: evaluate_predictors(preds, patients, cfg, batch_size, progress)
               for name, preds in paper.items()}
    grid = evaluate_on_grid(loaded, patients, cfg, originals, batch_size, progress) if grid_metrics else None
    per_patient = {name: res.rows for name, res in results.items()}
    latency = {name: res.latency for name, res in results.items()}
    sources = {name: loaded[name]["ct2mr"].source for name in paper}
    os.makedirs(out_dir, exist_ok=True)
    files = write_figures(out_dir, patients, results, fig_slices)
    md = report_markdown(per_patient, latency, sources, dataset, grid)
    doc = json.loads(metrics.table_json(per_patient, ALL_METRICS, ddof=DDOF))
    doc.update({"dataset": os.path.abspath(dataset), "dataset_kind": "records" if records else "root",
                "models": {n: os.path.abspath(p) for n, p in models.items()},
                "sources": {n: os.path.abspath(s) for n, s in sources.items()}, "latency": latency,
                "scale": "0-255 (paper); psnr_paper = authors' convention (+48.13 dB)"})
    texts = [("metrics.md", md), ("metrics.csv", metrics.table_csv(per_patient, ALL_METRICS))]
    synthrad = None
    if grid is not None:
        synthrad = json.loads(metrics.table_json(grid.rows, GRID_METRICS, ddof=DDOF))
        synthrad.update({"root": os.path.abspath(grid.root), "mask_source": grid.mask_source, "notes": grid.notes,
                         "smr_range": {pid: list(r) if r else None for pid, r in grid.mr_range.items()},
                         "conventions": "SynthRAD2023 MAE/PSNR/SSIM, SynthRAD2025 MS-SSIM; 3-D, original grid, "
                                        "inside the mask; sct_* in HU, smr_* in the reference MR's units"})
        doc["synthrad"] = synthrad
        texts.append(("metrics_synthrad.csv", metrics.table_csv(grid.rows, GRID_METRICS)))
    texts.append(("metrics.json", json.dumps(doc, indent=2, allow_nan=False) + "\n"))
    for name, text in texts:
        atomic_write_text(os.path.join(out_dir, name), text)
        files.append(os.path.join(out_dir, name))
    out = {"per_patient": per_patient, "summary": doc["summary"], "latency": latency, "files": files,
           "markdown": md}
    if synthrad is not None:
        out["synthrad"] = {"per_patient": grid.rows, **{k: v for k, v in synthrad.items() if k != "per_patient"}}
    return out


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
    flags.DEFINE_string("root", None, "Dataset root holding the test patients' original volumes for the SynthRAD "
                        "metrics (default: the records' source_root in dataset.json, or --dataset when it is a "
                        "root).", flag_values=fv)
    flags.DEFINE_bool("grid_metrics", True, "SynthRAD's metrics on each test patient's original grid "
                      "(--nogrid_metrics: the paper's 2-D tables only).", flag_values=fv)


def main(argv):
    fv = flags.FLAGS
    for name in ("model", "dataset", "out"):
        if not fv[name].value:
            raise app.UsageError(f"--{name} is required")
    import tensorflow as tf  # noqa: F401  (its OpError counts as a user error: a SavedModel that does not load)

    with cli.user_errors("evaluate"):
        result = evaluate(parse_models(fv.model), fv.dataset, fv.out, fv.batch_size, fv.skip_missing,
                          fv.fig_slices, fv.progress, root=fv.root, grid_metrics=fv.grid_metrics)
    print(result["markdown"])
    print(f"wrote {len(result['files'])} files to {fv.out}")
    return 0


run = cli.entry_point(define_flags, main)
