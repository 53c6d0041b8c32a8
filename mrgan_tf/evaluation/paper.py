"""The paper's conventions: Table I metrics on the model's fitted slices, on the 0-255 scale.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np

from mrgan_tf.evaluation import synthrad_metrics
from mrgan_tf.evaluation.patients import TestPatient
from mrgan_tf.inference.predictors import Predictor
from mrgan_tf.preprocess import PreprocessConfig

DDOF = 0  # the paper's Table I sd
TABLES = {  # the paper's conventions: 2-D fitted slices, 0-255
    "Table I (0-255 scale, whole image)": ("mae", "psnr", "psnr_paper", "ssim"),
    "Inside the body mask (0-255 scale)": ("mae_masked", "psnr_masked", "ssim_masked"),
}
ALL_METRICS = tuple(k for keys in TABLES.values() for k in keys)

# --------------------------------------------------------------------------- metrics


def patient_row(p: TestPatient, syn_mr01: np.ndarray) -> dict[str, float]:
    """The paper's metrics of one patient on its fitted slices (keys of ``ALL_METRICS``)."""
    mask = p.mask if p.mask.any() else None
    return synthrad_metrics.patient_metrics(p.mr01 * 255.0, syn_mr01 * 255.0, mask)


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
