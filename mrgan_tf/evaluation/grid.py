"""SynthRAD's conventions: each test patient's whole volume synthesized onto its original grid and
scored inside its mask (HU for a synthetic CT), against the reference read from the dataset root.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np
from absl import logging

from mrgan_tf.evaluation import synthrad_metrics, uncertainty
from mrgan_tf.evaluation.patients import EvaluationError, TestPatient
from mrgan_tf.inference.predictors import Predictor
from mrgan_tf.inference.synthesis import AIR_HU
from mrgan_tf.preprocess import PreprocessConfig, denormalise_mr

GRID_TABLES = {  # SynthRAD's conventions: 3-D, the patient's original grid, inside the mask
    "SynCT from the reference MR, HU": ("sct_mae", "sct_psnr", "sct_ssim", "sct_ms_ssim"),
    "SynMR from the reference CT, MR units": ("smr_mae", "smr_psnr", "smr_ssim", "smr_ms_ssim"),
}
GRID_METRICS = tuple(k for keys in GRID_TABLES.values() for k in keys)
UNCERTAINTY_TABLES = {  # models of several predictions only: their spread against the error, on the same grid
    "SynCT uncertainty: spread against |error|, HU": tuple(f"sct_{k}" for k in uncertainty.METRICS),
    "SynMR uncertainty: spread against |error|, MR units": tuple(f"smr_{k}" for k in uncertainty.METRICS),
}
UNCERTAINTY_METRICS = tuple(k for keys in UNCERTAINTY_TABLES.values() for k in keys)


def scored_metrics(rows: Mapping[str, Mapping[str, Mapping[str, float]]]) -> tuple[str, ...]:
    """``GRID_METRICS``, and the uncertainty metrics when a model of several predictions was scored."""
    return GRID_METRICS + tuple(k for k in UNCERTAINTY_METRICS
                                if any(k in row for by_patient in rows.values() for row in by_patient.values()))
# Preprocessing fields that choose or align test slices but do not change what a model sees.

SELECTION_ONLY = ("min_foreground", "max_body_loss", "register", "register_skull_hu", "register_model")



# --------------------------------------------------------------------------- SynthRAD metrics on the original grid


@dataclasses.dataclass
class GridResult:
    """SynthRAD-convention rows of every model, and what the report must say about them."""

    rows: dict[str, dict[str, dict[str, float]]]   # model -> patient -> metric
    mask_source: dict[str, str]                     # patient -> "file" | "computed"
    notes: list[str]                                # metrics left out, and why
    root: str
    mr_range: dict[str, tuple[float, float] | None]  # patient -> clip / data range of the smr_* metrics
    ct_range: tuple[float, float] = (-1024.0, 3000.0)   # the HU the models' synthetic CT can take
    ct_windowed: bool = False                        # that range misses air or bone (no CT to plan on)


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
    the records normalised it with); SynCT(MR), in HU, on the CT's grid. A model of
    several predictions (``Fusion``) also has its spread, put on the same grid, scored
    against the absolute error (``uncertainty``).
    Returns ({model: row}, mask source, the MR clip range or None when the reference MR is constant).
    ``volumes``, when given, receives what was scored on the MR's grid (further measures,
    figures): ``reference``, ``mask``, ``grid`` (the MR Volume) and each model's SynMR by name.
    """
    from mrgan_tf.inference.synthesis import synthesize_with_spread
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
    sm = synthrad_metrics
    ct_fns = {"mae": sm.synthrad_mae, "psnr": sm.synthrad_psnr, "ssim": sm.synthrad_ssim,
              "ms_ssim": sm.synthrad_ms_ssim}
    mr_fns = {"mae": sm.synthrad_mae}
    try:
        mr_rng = sm.mr_value_range(ref_mr, mr_mask)
        mr_fns.update(psnr=lambda r, q, m: sm.synthrad_psnr(r, q, m, mr_rng),
                      ssim=lambda r, q, m: sm.synthrad_ssim(r, q, m, mr_rng),
                      ms_ssim=lambda r, q, m: sm.synthrad_ms_ssim(r, q, m, mr_rng))
    except ValueError as e:
        mr_rng = None
        notes.append(f"patient {pid}: smr_psnr, smr_ssim, smr_ms_ssim left out: {e}")
        logging.warning("%s", notes[-1])
    rows = {}
    for name, preds in loaded.items():
        row = {}
        if "ct2mr" in preds:
            syn_mr, spread, _ = synthesize_with_spread(preds["ct2mr"], ct, batch_size, progress)  # 0-255, CT grid
            syn_mr_units = _onto(denormalise_mr(syn_mr.data / 255.0, lo, hi), ct, mr, 1, lo, mr_to_ct)
            row = _scores("smr", mr_fns, ref_mr, syn_mr_units, mr_mask, pid, notes)
            if spread is not None:   # a spread of 0-255 values, in MR units: the same scale factor
                on_mr = _onto(spread.data * ((hi - lo) / 255.0), ct, mr, 1, 0.0, mr_to_ct)
                row.update(_scores("smr", uncertainty.metric_fns(on_mr), ref_mr, syn_mr_units, mr_mask, pid, notes))
            if volumes is not None:
                volumes.update({"reference": ref_mr, "mask": mr_mask, "grid": mr, name: syn_mr_units})
        if "mr2ct" in preds:
            syn_ct, spread, _ = synthesize_with_spread(preds["mr2ct"], mr, batch_size, progress)  # HU, MR grid
            on_ct = _onto(syn_ct.data, mr, ct, 1, AIR_HU, p.ct_to_mr)
            row.update(_scores("sct", ct_fns, ct.data, on_ct, ct_mask, pid, notes))
            if spread is not None:
                spread_on_ct = _onto(spread.data, mr, ct, 1, 0.0, p.ct_to_mr)
                row.update(_scores("sct", uncertainty.metric_fns(spread_on_ct), ct.data, on_ct, ct_mask, pid, notes))
        rows[name] = row
    return rows, source, mr_rng


def evaluate_on_grid(loaded: Mapping[str, Mapping[str, Predictor]], patients: Mapping[str, TestPatient],
                     cfg: PreprocessConfig, root: str, batch_size: int = 16, progress: bool = False) -> GridResult:
    """SynthRAD metrics of every model on every test patient's original grid (volumes read from ``root``)."""
    from tqdm import tqdm

    files = original_files(root, patients)
    result = GridResult({name: {} for name in loaded}, {}, [], root, {}, cfg.ct_hu_range, cfg.ct_windowed)
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
