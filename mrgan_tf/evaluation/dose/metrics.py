"""The dose figures: SynthRAD2025's mae_target, gamma pass rates and DVH points.

``mae_target`` follows SynthRAD2025's evaluation code (SynthRAD2025/metrics,
``functions/dose_metrics.py``, ``DoseMetrics.mae_dose`` with ``threshold=0.9``): the mean of
|D_CT - D_sCT| / prescription over the voxels where D_CT >= 90 % of the prescription.
DVH points are matRad's quality indicators (which SynthRAD2025's DVH score reads): D_x is the
dose that x % of the region receives at least, interpolated linearly between the sorted voxel doses.
Gamma is pymedphys' global 3-D gamma (normalised to the reference's maximum) with scipy's
interpolation, so it runs without numba.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

MAE_TARGET_THRESHOLD = 0.9
DVH_POINTS = (98, 50, 2)        # D98, D50, D2 (% of the region's volume)
GAMMA_CRITERIA = ((2.0, 2.0), (1.0, 1.0))   # (% of the reference maximum, mm)
GAMMA_INTERP_FRACTION = 10   # pymedphys' default: the search steps 1/10 of the distance criterion


def mae_target(reference: np.ndarray, synthetic: np.ndarray, prescription_gy: float,
               threshold: float = MAE_TARGET_THRESHOLD) -> float:
    """Mean |reference - synthetic| / prescription where reference >= threshold x prescription; NaN if nowhere."""
    reference, synthetic = np.asarray(reference, np.float64), np.asarray(synthetic, np.float64)
    high = reference >= threshold * prescription_gy
    if not high.any():
        return float("nan")
    return float(np.mean(np.abs(reference[high] - synthetic[high])) / prescription_gy)


def dose_at_volume(dose: np.ndarray, percent: float) -> float:
    """D_x: the dose that ``percent`` % of ``dose``'s voxels receive at least (linear interpolation)."""
    return float(np.percentile(np.asarray(dose, np.float64), 100.0 - percent))


def dvh_points(dose: np.ndarray, mask: np.ndarray, points: Sequence[float] = DVH_POINTS) -> dict[str, float]:
    """{"D98": .., "D50": .., "D2": .., "Dmean": ..} of ``dose`` inside ``mask`` (Gy); NaNs for an empty mask."""
    values = np.asarray(dose)[np.asarray(mask, bool)]
    if values.size == 0:
        return {**{f"D{p:g}": float("nan") for p in points}, "Dmean": float("nan")}
    return {**{f"D{p:g}": dose_at_volume(values, p) for p in points}, "Dmean": float(values.mean())}


def dvh_curve(dose: np.ndarray, mask: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Cumulative DVH: % of the region receiving at least each dose in ``bins``."""
    values = np.sort(np.asarray(dose)[np.asarray(mask, bool)])
    if values.size == 0:
        return np.zeros(len(bins))
    return 100.0 * (values.size - np.searchsorted(values, bins, side="left")) / values.size


def gamma_pass_rate(reference: np.ndarray, synthetic: np.ndarray, spacing_mm: Sequence[float], dose_percent: float,
                    distance_mm: float, cutoff_percent: float = 10.0) -> float:
    """% of the reference's voxels above ``cutoff_percent`` of its maximum with global gamma <= 1; NaN if none."""
    import pymedphys

    reference, synthetic = np.asarray(reference, np.float64), np.asarray(synthetic, np.float64)
    if reference.max() <= 0:
        return float("nan")
    axes = tuple(np.arange(n) * float(s) for n, s in zip(reference.shape, spacing_mm))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # quiet= will go; until then it silences the prints
        gamma = pymedphys.gamma(axes, reference, axes, synthetic, dose_percent, distance_mm,
                                lower_percent_dose_cutoff=cutoff_percent, interp_fraction=GAMMA_INTERP_FRACTION,
                                max_gamma=1.1, skip_once_passed=True, quiet=True, interp_algo="scipy")
    valid = np.isfinite(gamma)
    if not valid.any():
        return float("nan")
    return float(100.0 * np.count_nonzero(gamma[valid] <= 1.0) / np.count_nonzero(valid))
