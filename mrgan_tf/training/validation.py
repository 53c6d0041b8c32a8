"""Validation during training: scores on held-out paired patients, for choosing a checkpoint.

make_records ``--val_patients`` writes the ``paired_val`` shard set (patients
disjoint from the training and test ones); ``train --val_every`` scores the
generators on it and keeps the best checkpoint by validation MAE. Scores are
computed on the records' slices inside the body mask, in output units: HU
through the dataset's CT mapping for SynCT, the paper's 0-255 for SynMR. They
rank checkpoints; they are not the evaluation numbers (``evaluate`` scores the
test patients on their own grids).
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from mrgan_tf.evaluation import metrics
from mrgan_tf.preprocess.context import centre_slice
from mrgan_tf.preprocess.intensity import ct_from_unit, from_model_range, to_model_range
from mrgan_tf.records.spec import VAL_SET, DatasetSpec, SpecError
from tfrecords_tools import reader

# Generator direction (model.trained_directions) -> the score name prefix.
PREFIX = {"mr": "ct2mr", "ct": "mr2ct"}
SELECT = ("auto", "ct2mr", "mr2ct")


def selection_key(spec: DatasetSpec, select: str = "auto") -> str:
    """The score that ranks checkpoints: SynCT's HU MAE for full-range CT records
    (the synthetic-CT use), else SynMR's MAE (the paper's direction)."""
    if select not in SELECT:
        raise ValueError(f"--val_select must be one of {SELECT}, got {select!r}")
    if select == "auto":
        select = "mr2ct" if spec.preprocess.ct_full_range else "ct2mr"
    return f"{select}_mae"


@dataclasses.dataclass
class _Patient:
    ct01: np.ndarray    # (Z, S, S, C) in [0, 1]: each record's stack (C = 1 for 2-D)
    mr01: np.ndarray
    mask: np.ndarray    # (Z, S, S) bool


def check_disjoint(spec: DatasetSpec) -> None:
    """Selecting a checkpoint on test patients is leakage: refuse a spec that would do it."""
    val, test = set(spec.split.get("val", [])), set(spec.split.get("test", []))
    if val & test:
        raise SpecError(f"{spec.root}: patients {sorted(val & test)} are both validation and test patients; "
                        "selecting a checkpoint on test patients is leakage")


class ValidationSet:
    """The ``paired_val`` slices of a records directory, grouped by patient, held in memory."""

    def __init__(self, spec: DatasetSpec):
        if spec.count(VAL_SET) == 0:
            raise SpecError(f"{spec.root}: no validation patients (shard set {VAL_SET!r} is missing or empty); "
                            "make the records with make_records --val_patients=N to use --val_every")
        check_disjoint(spec)
        self.spec = spec
        slices = collections.defaultdict(list)
        for ex in reader.iterate(spec.root, VAL_SET):
            slices[str(ex["patient_id"])].append(ex)
        scale = 1.0 / spec.input_max
        self.patients = {}
        for pid, exs in sorted(slices.items()):
            exs.sort(key=lambda e: int(e["slice_index"]))
            self.patients[pid] = _Patient(*(np.stack([e[k] for e in exs]).astype(np.float32) * scale
                                            for k in ("ct", "mr")),
                                          np.stack([e["mask"][..., 0] for e in exs]) > 0)

    def scores(self, model, directions=None, batch_size: int = 16) -> dict[str, float]:
        """Mean over patients of MAE, PSNR and SSIM (inside the mask) for each trained direction."""
        cfg = self.spec.preprocess
        lo, hi = cfg.ct_hu_range
        per = collections.defaultdict(list)
        for p in self.patients.values():
            for d in directions or model.trained_directions:
                gen, src, ref01 = (model.syn_mr, p.ct01, p.mr01) if d == "mr" else (model.syn_ct, p.mr01, p.ct01)
                pred01 = _predict01(gen, src, batch_size)
                ref01 = centre_slice(ref01)[..., 0]
                if d == "mr":
                    ref, pred, data_range = ref01 * 255.0, pred01 * 255.0, 255.0
                else:
                    ref, pred, data_range = ct_from_unit(ref01, cfg), ct_from_unit(pred01, cfg), hi - lo
                name = PREFIX[d]
                per[f"{name}_mae"].append(metrics.mae(ref, pred, p.mask))
                per[f"{name}_psnr"].append(metrics.psnr(ref, pred, data_range, p.mask))
                if min(ref.shape[-2:]) >= 11:
                    per[f"{name}_ssim"].append(metrics.ssim(ref, pred, data_range, p.mask))
        return {k: float(np.mean(v)) for k, v in sorted(per.items())}


def _predict01(generator, stacks01: np.ndarray, batch_size: int) -> np.ndarray:
    """(Z, S, S, C) record stacks -> (Z, S, S): each stack's prediction of its own (centre) slice."""
    out = []
    for i in range(0, len(stacks01), batch_size):
        y = np.asarray(generator(to_model_range(stacks01[i:i + batch_size]), training=False), np.float32)
        out.append(from_model_range(centre_slice(y)[..., 0]))
    return np.concatenate(out) if out else np.zeros(stacks01.shape[:-1], np.float32)
