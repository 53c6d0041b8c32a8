"""The SynthRAD challenges' image metrics: 3-D volumes on the patient's grid, inside the mask.

Re-stated from the challenges' public evaluation code (SynthRAD2023/metrics
functions/image_metrics.py; SynthRAD2025/evaluation image_metrics.py), so
numbers can be put beside the published ones. Volumes are cast to float32 as
their loaders do. Every step works axis by axis in the same way, so the result
does not depend on the axis order ((i, j, k) here, (k, j, i) in SimpleITK).
Pure numpy/scipy/scikit-image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage, signal
from skimage.metrics import structural_similarity
from skimage.util import crop

from mrgan_tf.evaluation.metrics import CT_HU_RANGE, _psnr_from_mse, mae, psnr, psnr_paper_convention, ssim

SYNTHRAD2023_HU_RANGE = CT_HU_RANGE  # PSNR and SSIM (repo SynthRAD2023/metrics, image_metrics.py)
SYNTHRAD2025_HU_RANGE = (-1024.0, 3071.0)  # MS-SSIM (repo SynthRAD2025/evaluation, image_metrics.py)
# SynthRAD2025's MS-SSIM: per-level weights (Wang et al. 2003, Eq. 7), smallest padded size, box window.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIZE = 97
SSIM_WIN = 7  # skimage's default box window, used by both challenges' SSIM


def _volume_pair(ref, pred, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 volumes and a boolean mask of one shape; an empty mask is an error."""
    ref = np.asarray(ref, dtype=np.float32)
    pred = np.asarray(pred, dtype=np.float32)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} != prediction shape {pred.shape}")
    if ref.ndim != 3:
        raise ValueError(f"SynthRAD metrics need 3-D volumes, got shape {ref.shape}")
    m = np.asarray(mask)
    if m.shape != ref.shape:
        raise ValueError(f"mask shape {m.shape} != volume shape {ref.shape}")
    m = m > 0  # they binarise with mask > 0
    if not m.any():
        raise ValueError("mask is empty: no voxels to evaluate")
    return ref, pred, m


def _value_range(value_range) -> tuple[float, float]:
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value range must be (lo, hi) with lo < hi, got {value_range}")
    return lo, hi


def synthrad_mae(ref, pred, mask) -> float:
    """Mean absolute error inside the mask, on the unclipped values (HU for CT)."""
    ref, pred, m = _volume_pair(ref, pred, mask)
    return float(np.mean(np.abs(ref[m] - pred[m]), dtype=np.float64))


def synthrad_psnr(ref, pred, mask, value_range=SYNTHRAD2023_HU_RANGE) -> float:
    """PSNR of the mask's voxels with both images clipped to ``value_range``; data range = its width.

    SynthRAD2023's ``use_population_range=True``: [-1024, 3000] HU, 4024.
    ``inf`` for identical voxels.
    """
    ref, pred, m = _volume_pair(ref, pred, mask)
    lo, hi = _value_range(value_range)
    diff = np.clip(ref[m], lo, hi).astype(np.float64) - np.clip(pred[m], lo, hi)
    return _psnr_from_mse(float(np.mean(np.square(diff))), hi - lo)


def _shifted_masked(ref, pred, m, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip to [lo, hi], set voxels outside the mask to lo, shift by -lo (non-negative): their SSIM input."""
    def prep(x):
        return np.where(m, np.clip(x, lo, hi), np.float32(lo)).astype(np.float32) - np.float32(lo)
    return prep(ref), prep(pred)


def _masked_map_mean(ssim_map: np.ndarray, m: np.ndarray, pad: int) -> float:
    """Mean of the SSIM map inside the mask, both cropped by ``pad`` (skimage's edge crop)."""
    inside = crop(m, pad)
    if not inside.any():
        raise ValueError(f"mask lies within {pad} voxels of the volume's edge: no SSIM values inside it")
    return float(crop(ssim_map, pad)[inside].mean(dtype=np.float64))


def synthrad_ssim(ref, pred, mask, value_range=SYNTHRAD2023_HU_RANGE) -> float:
    """SynthRAD2023's masked 3-D SSIM.

    Both volumes clipped to ``value_range``, voxels outside the mask set to its
    low end, shifted by -lo (so [-1024, 3000] HU becomes [0, 4024]); then
    scikit-image's ``structural_similarity`` on the whole volume with its
    defaults (7x7x7 box window, K1 0.01, K2 0.03, sample covariance) and data
    range hi - lo; the SSIM map, cropped by 3 voxels at the edges as skimage
    does, is averaged over the (equally cropped) mask. Every side must be >= 7.
    """
    ref, pred, m = _volume_pair(ref, pred, mask)
    lo, hi = _value_range(value_range)
    if min(ref.shape) < SSIM_WIN:
        raise ValueError(f"3-D SSIM needs at least {SSIM_WIN} voxels per side, got shape {ref.shape}")
    a, b = _shifted_masked(ref, pred, m, lo, hi)
    _, ssim_map = structural_similarity(a, b, data_range=hi - lo, full=True)
    return _masked_map_mean(ssim_map, m, (SSIM_WIN - 1) // 2)


def _ssim_terms_map(x: np.ndarray, y: np.ndarray, data_range: float, weight: float) -> np.ndarray:
    """SynthRAD2025's one-scale SSIM map: luminance, contrast and structure (each clipped at 0),
    each raised to ``weight``. Same window, constants and sample covariance as skimage's SSIM;
    with weight 1 and positively correlated images it equals skimage's SSIM map."""
    def box(v):
        return ndimage.uniform_filter(v, size=SSIM_WIN)

    n = SSIM_WIN ** x.ndim
    cov_norm = n / (n - 1)
    ux, uy = box(x), box(y)
    vx = cov_norm * (box(x * x) - ux * ux)
    vy = cov_norm * (box(y * y) - uy * uy)
    vxy = cov_norm * (box(x * y) - ux * uy)
    sx, sy = np.sqrt(np.clip(vx, 0, None)), np.sqrt(np.clip(vy, 0, None))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    c3 = c2 / 2
    luminance = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
    contrast = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
    structure = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
    return luminance ** weight * contrast ** weight * structure ** weight


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """Edge-pad every side shorter than ``size`` to ``size`` (extra voxel after, as they split it)."""
    widths = [(max(0, (size - n) // 2), max(0, size - n - (size - n) // 2)) for n in x.shape]
    return np.pad(x, widths, mode="edge")


def synthrad_ms_ssim(ref, pred, mask, value_range=SYNTHRAD2025_HU_RANGE,
                     weights: Sequence[float] = MS_SSIM_WEIGHTS) -> float:
    """SynthRAD2025's masked 3-D multi-scale SSIM.

    Input as for ``synthrad_ssim`` but with SynthRAD2025's clip [-1024, 3071] HU
    (data range 4095). Volumes (and the mask) are edge-padded to at least 97
    voxels per side. At each of the 5 levels the one-scale map
    (``_ssim_terms_map``; their code gives luminance the level's weight too) is
    averaged inside the mask after a 3-voxel edge crop; then images are smoothed
    with a 2x2x2 box (``fftconvolve``, mode "same") and images and mask keep
    every second voxel. The result is the product of the level means clipped to [0, 1].
    """
    ref, pred, m = _volume_pair(ref, pred, mask)
    lo, hi = _value_range(value_range)
    a, b = (_pad_to(v.astype(np.float64), MS_SSIM_MIN_SIZE) for v in _shifted_masked(ref, pred, m, lo, hi))
    m = _pad_to(m, MS_SSIM_MIN_SIZE)
    box = np.ones((2, 2, 2)) / 8.0
    levels = []
    for w in weights:
        levels.append(_masked_map_mean(_ssim_terms_map(a, b, hi - lo, float(w)), m, (SSIM_WIN - 1) // 2))
        a, b = (signal.fftconvolve(v, box, mode="same")[::2, ::2, ::2] for v in (a, b))
        m = m[::2, ::2, ::2]
    return float(np.prod(np.clip(levels, 0.0, 1.0)))


def synthrad_ct_metrics(ref_hu, pred_hu, mask) -> dict[str, float]:
    """Synthetic CT against the reference CT in HU, SynthRAD's way: mae, psnr, ssim (2023), ms_ssim (2025)."""
    return {"mae": synthrad_mae(ref_hu, pred_hu, mask), "psnr": synthrad_psnr(ref_hu, pred_hu, mask),
            "ssim": synthrad_ssim(ref_hu, pred_hu, mask), "ms_ssim": synthrad_ms_ssim(ref_hu, pred_hu, mask)}


def mr_value_range(ref, mask) -> tuple[float, float]:
    """The reference MR's (min, max) inside the mask: the clip and data range of the MR metrics.

    MR has no population-wide scale like HU; where no population range is set,
    SynthRAD's code takes the reference's own range (``gt.max() - gt.min()``)
    and clips the prediction into it. Taken inside the mask so air and
    artefacts outside the body do not set it.
    """
    ref = np.asarray(ref, dtype=np.float32)
    m = np.asarray(mask) > 0
    if m.shape != ref.shape or not m.any():
        raise ValueError(f"mask shape {m.shape} does not fit {ref.shape} or is empty")
    inside = ref[m]
    lo, hi = float(inside.min()), float(inside.max())
    if not hi > lo:
        raise ValueError("reference MR is constant inside the mask: data range is 0")
    return lo, hi


def synthrad_mr_metrics(ref, pred, mask) -> dict[str, float]:
    """Synthetic MR against the reference MR in its own units, with the CT metrics' definitions.

    The clip range and data range are ``mr_value_range`` (the reference's range
    inside the mask); it is returned as ``range_lo`` and ``range_hi``.
    """
    lo, hi = mr_value_range(ref, mask)
    rng = (lo, hi)
    return {"mae": synthrad_mae(ref, pred, mask), "psnr": synthrad_psnr(ref, pred, mask, rng),
            "ssim": synthrad_ssim(ref, pred, mask, rng), "ms_ssim": synthrad_ms_ssim(ref, pred, mask, rng),
            "range_lo": lo, "range_hi": hi}


def gradient_mae(ref, pred, mask, axis: int) -> float:
    """Slice consistency: MAE between the intensity differences of neighbouring slices along ``axis``
    of the reference and of the prediction, over neighbour pairs both inside ``mask``.

    A slice-by-slice synthesis that flickers between slices has through-plane differences
    the reference does not; this is zero only when the prediction's steps match the reference's.
    """
    ref, pred, m = _volume_pair(ref, pred, mask)
    both = np.logical_and(np.take(m, range(1, m.shape[axis]), axis), np.take(m, range(m.shape[axis] - 1), axis))
    if not both.any():
        raise ValueError(f"no neighbouring voxel pair along axis {axis} lies inside the mask")
    return float(np.mean(np.abs(np.diff(ref, axis=axis) - np.diff(pred, axis=axis))[both]))


def patient_metrics(ref_255, pred_255, mask=None) -> dict[str, float]:
    """All 0-255 metrics of one patient: mae, psnr, psnr_paper, ssim (+ *_masked with a mask)."""
    out = {
        "mae": mae(ref_255, pred_255),
        "psnr": psnr(ref_255, pred_255),
        "psnr_paper": psnr_paper_convention(ref_255, pred_255),
        "ssim": ssim(ref_255, pred_255),
    }
    if mask is not None:
        out["mae_masked"] = mae(ref_255, pred_255, mask)
        out["psnr_masked"] = psnr(ref_255, pred_255, mask=mask)
        out["ssim_masked"] = ssim(ref_255, pred_255, mask=mask)
    return out
