"""Is the spread worth anything? How well the per-voxel spread of fused predictions ranks the error.

A spread that is worth showing a physicist is high where the synthetic image is wrong: its
Spearman rank correlation with the absolute error inside the mask is positive, and the voxels
it ranks most uncertain have a larger error than the rest. Both are computed here per patient,
in the image's units (HU for a synthetic CT).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

TOP_FRACTION = 0.10      # "the most uncertain 10 % of the mask's voxels"
METRICS = ("unc_spearman", "unc_mae_top10", "unc_mae_rest")


def _inside(ref, pred, spread, mask) -> tuple[np.ndarray, np.ndarray]:
    """(spread, |error|) of the mask's voxels, as float64."""
    mask = np.asarray(mask, bool)
    shapes = {np.shape(ref), np.shape(pred), np.shape(spread), mask.shape}
    if len(shapes) != 1:
        raise ValueError(f"reference, prediction, spread and mask differ in shape: {sorted(shapes)}")
    if mask.sum() < 2:
        raise ValueError("the mask has fewer than two voxels")
    error = np.abs(np.asarray(ref, np.float64)[mask] - np.asarray(pred, np.float64)[mask])
    return np.asarray(spread, np.float64)[mask], error


def spread_error_spearman(ref, pred, spread, mask) -> float:
    """Spearman correlation of the spread and |pred - ref| over the mask's voxels (ties get average ranks).

    A ValueError when it is undefined: the spread (or the error) is the same in every voxel."""
    from scipy import stats

    s, e = _inside(ref, pred, spread, mask)
    for name, v in (("spread", s), ("absolute error", e)):
        if np.ptp(v) == 0:
            raise ValueError(f"the {name} is the same in every mask voxel ({v[0]:g}): no ranking to correlate")
    return float(stats.spearmanr(s, e).statistic)


def mae_by_spread(ref, pred, spread, mask, top: float = TOP_FRACTION) -> tuple[float, float]:
    """(MAE in the ``top`` share of mask voxels with the largest spread, MAE in the rest).

    The share is a count, ceil(top x voxels); voxels of equal spread at the cut are taken in
    array order (a stable sort), so a spread with large ties still splits the voxels 10/90."""
    s, e = _inside(ref, pred, spread, mask)
    k = min(len(s) - 1, max(1, math.ceil(top * len(s))))
    order = np.argsort(-s, kind="stable")
    return float(e[order[:k]].mean()), float(e[order[k:]].mean())


def metric_fns(spread) -> dict[str, Callable]:
    """``METRICS`` as functions of (reference, prediction, mask) with this spread, for ``grid``'s scoring."""
    return {"unc_spearman": lambda ref, pred, mask: spread_error_spearman(ref, pred, spread, mask),
            "unc_mae_top10": lambda ref, pred, mask: mae_by_spread(ref, pred, spread, mask)[0],
            "unc_mae_rest": lambda ref, pred, mask: mae_by_spread(ref, pred, spread, mask)[1]}
