"""The test patients an evaluation scores: from records (``paired_test``) or a dataset root.

Prepared exactly as make_records prepares them, so a model sees what it was trained on.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from absl import logging

from mrgan_tf.errors import UserError
from mrgan_tf.preprocess import PreprocessConfig, dequantise
from mrgan_tf.preprocess.context import centre_slice


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
