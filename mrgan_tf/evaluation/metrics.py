"""Image-similarity metrics for synthetic MR (and CT), plus Table I-style reports.

Pure numpy/scikit-image, no TensorFlow, so evaluation and tests run anywhere.

Conventions (paper Sec. III.B, docs/DESIGN.md "Intensities"):

* Arrays are one slice ``(H, W)`` or one patient's stack ``(N, H, W)``; ``ref``
  and ``pred`` must have the same shape. The paper's scale is 0-255
  (``q01 * 255``).
* MAE, MSE and PSNR are *pooled* per patient: one mean over every pixel of every
  slice (Eq. 7-9), not a mean of per-slice values. PSNR is then averaged over
  patients by the caller (``summarise``).
* An optional ``mask`` (same shape as the image, or ``(H, W)`` broadcast over a
  stack) restricts a metric to the pixels where it is true.
* PSNR of identical images is ``float('inf')`` (MSE = 0).

Two conventions live here and are never mixed in one table: the paper's
(2-D fitted slices, 0-255 scale, ``patient_metrics``) and the SynthRAD
challenges' (3-D volumes on the patient's original grid, in HU, inside the
mask, ``synthrad_ct_metrics`` / ``synthrad_mr_metrics``).
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage, signal
from skimage.metrics import structural_similarity
from skimage.util import crop

# SynthRAD2023 CT evaluation window (HU) and its data range.
CT_HU_RANGE = (-1024.0, 3000.0)
SYNTHRAD2023_HU_RANGE = CT_HU_RANGE  # PSNR and SSIM (repo SynthRAD2023/metrics, image_metrics.py)
SYNTHRAD2025_HU_RANGE = (-1024.0, 3071.0)  # MS-SSIM (repo SynthRAD2025/evaluation, image_metrics.py)
# SynthRAD2025's MS-SSIM: per-level weights (Wang et al. 2003, Eq. 7), smallest padded size, box window.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIZE = 97
SSIM_WIN = 7  # skimage's default box window, used by both challenges' SSIM

# How each metric is printed in tables: (column label, decimals).
_DISPLAY = {
    "mae": ("MAE", 2),
    "mse": ("MSE", 2),
    "psnr": ("PSNR", 2),
    "psnr_paper": ("PSNR (paper conv.)", 2),
    "ssim": ("SSIM", 4),
    "mae_masked": ("MAE (mask)", 2),
    "psnr_masked": ("PSNR (mask)", 2),
    "ssim_masked": ("SSIM (mask)", 4),
    "mr_mae_phys": ("MAE (MR units)", 2),
    "mr_psnr_phys": ("PSNR (MR units)", 2),
    "mr_ssim_phys": ("SSIM (MR units)", 4),
    "ct_mae_hu": ("MAE (HU)", 1),
    "ct_psnr_hu": ("PSNR (HU)", 2),
    "ct_ssim_hu": ("SSIM (HU)", 4),
    "sct_mae": ("MAE HU", 1),
    "sct_psnr": ("PSNR dB", 2),
    "sct_ssim": ("SSIM 3-D", 4),
    "sct_ms_ssim": ("MS-SSIM 3-D", 4),
    "smr_mae": ("MAE (MR units)", 2),
    "smr_psnr": ("PSNR dB", 2),
    "smr_ssim": ("SSIM 3-D", 4),
    "smr_ms_ssim": ("MS-SSIM 3-D", 4),
}
MISSING = "—"


# ----------------------------------------------------------------------------
# input checks

def _pair(ref, pred) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 of one shape, 2-D or 3-D."""
    ref = np.asarray(ref, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} != prediction shape {pred.shape}")
    if ref.ndim not in (2, 3):
        raise ValueError(f"expected one slice (H, W) or a stack (N, H, W), got shape {ref.shape}")
    if ref.size == 0:
        raise ValueError("empty images")
    return ref, pred


def _mask(mask, shape: tuple[int, ...]) -> np.ndarray | None:
    """Boolean mask broadcast to ``shape``; an empty mask is an error (no pixels to score)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    try:
        m = np.broadcast_to(m != 0, shape)
    except ValueError:
        raise ValueError(f"mask shape {m.shape} does not fit image shape {shape}") from None
    if not m.any():
        raise ValueError("mask is empty: no pixels to evaluate")
    return m


def _diff(ref, pred, mask) -> np.ndarray:
    ref, pred = _pair(ref, pred)
    m = _mask(mask, ref.shape)
    d = pred - ref
    return d[m] if m is not None else d.ravel()


def _stack(x: np.ndarray) -> np.ndarray:
    return x[None] if x.ndim == 2 else x


# ----------------------------------------------------------------------------
# 0-255 (or any fixed range) metrics

def mae(ref, pred, mask=None) -> float:
    """Mean absolute error pooled over all (masked) pixels of all slices (Eq. 7)."""
    return float(np.mean(np.abs(_diff(ref, pred, mask))))


def mse(ref, pred, mask=None) -> float:
    """Mean squared error pooled over all (masked) pixels of all slices (Eq. 9)."""
    return float(np.mean(np.square(_diff(ref, pred, mask))))


def _psnr_from_mse(err: float, data_range: float) -> float:
    if err == 0.0:
        return float("inf")
    return 10.0 * math.log10(data_range ** 2 / err)


def psnr(ref, pred, data_range: float = 255.0, mask=None) -> float:
    """PSNR = 10 log10(data_range^2 / MSE) with MSE pooled over the patient (Eq. 8-9).

    Pooling matters: the mean of per-slice PSNRs is not this number. Returns
    ``float('inf')`` when the images are identical (MSE = 0).
    """
    return _psnr_from_mse(mse(ref, pred, mask), float(data_range))


def psnr_paper_convention(ref, pred) -> float:
    """PSNR as the authors' published code computed it, for comparison with Table I.

    Their code sets ``MAX = 65025`` (255^2) and then takes ``20 log10(MAX)``, i.e.
    ``20 log10(255^2) - 10 log10(MSE)``, which is ``psnr(ref, pred) + 20 log10(255)``:
    every value is 48.13 dB too high. Only use it to put our numbers next to the
    paper's; ``psnr`` is the correct metric. ``inf`` for identical images.
    """
    err = mse(ref, pred)
    if err == 0.0:
        return float("inf")
    max_value = 65025.0  # the authors' MAX, already squared
    return 20.0 * math.log10(max_value) - 10.0 * math.log10(err)


def _ssim_slices(ref: np.ndarray, pred: np.ndarray, data_range: float, full: bool):
    """Per-slice SSIM (gaussian 11x11 window, sigma 1.5, population covariance)."""
    h, w = ref.shape[-2:]
    if min(h, w) < 11:
        raise ValueError(f"SSIM needs slices of at least 11x11 pixels, got {h}x{w}")
    out = []
    for r, p in zip(_stack(ref), _stack(pred)):
        out.append(structural_similarity(
            r, p, data_range=float(data_range), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, full=full))
    return out


def ssim(ref, pred, data_range: float = 255.0, mask=None) -> float:
    """Structural similarity, the usual settings (gaussian sigma 1.5, no sample covariance).

    Without a mask: the mean over slices of scikit-image's per-slice SSIM (which
    ignores a 5-pixel border). With a mask: the SSIM map of every slice is
    computed on the whole slice and averaged over all masked pixels of the stack.
    """
    ref, pred = _pair(ref, pred)
    m = _mask(mask, ref.shape)
    if m is None:
        return float(np.mean(_ssim_slices(ref, pred, data_range, full=False)))
    maps = np.stack([s_map for _, s_map in _ssim_slices(ref, pred, data_range, full=True)])
    return float(np.mean(maps[_stack(m)]))


# ----------------------------------------------------------------------------
# physical-unit metrics (SynthRAD2023 conventions)

def physical_ct_metrics(ref_hu, pred_hu, mask) -> dict[str, float]:
    """A slice-wise (2-D) approximation of SynthRAD2023's CT metrics in HU, inside ``mask``.

    Not the challenge's definition (that is ``synthrad_ct_metrics``, in 3-D on
    the original grid); kept for 2-D stacks. MAE is on the raw HU values. PSNR and SSIM use both images clipped to
    [-1024, 3000] HU with data range 4024. For SSIM, pixels outside the mask are
    set to -1024 (as SynthRAD2023 does) before the SSIM map is computed and
    averaged inside the mask. Deviation from their code: our SSIM window is the
    2-D gaussian one used by ``ssim`` (slice-wise), not their 3-D 7x7x7 box.
    """
    ref, pred = _pair(ref_hu, pred_hu)
    m = _mask(mask, ref.shape)
    lo, hi = CT_HU_RANGE
    ref_c, pred_c = np.clip(ref, lo, hi), np.clip(pred, lo, hi)
    data_range = hi - lo
    return {
        "mae": mae(ref, pred, m),
        "psnr": psnr(ref_c, pred_c, data_range, m),
        "ssim": ssim(np.where(m, ref_c, lo), np.where(m, pred_c, lo), data_range, m),
    }


def physical_mr_metrics(ref, pred, mask) -> dict[str, float]:
    """MR metrics in scanner units inside ``mask``; data range = ref's range inside the mask.

    MR has no absolute scale, so the dynamic range is taken from the reference
    (as SynthRAD2023 does for MR when no population range exists).
    """
    ref, pred = _pair(ref, pred)
    m = _mask(mask, ref.shape)
    inside = ref[m]
    data_range = float(inside.max() - inside.min())
    if data_range == 0.0:
        raise ValueError("reference is constant inside the mask: PSNR/SSIM data range is 0")
    return {
        "mae": mae(ref, pred, m),
        "psnr": psnr(ref, pred, data_range, m),
        "ssim": ssim(ref, pred, data_range, m),
    }


# ----------------------------------------------------------------------------
# SynthRAD challenge metrics: 3-D volumes on the patient's grid, inside the mask
#
# Re-stated from the challenges' public evaluation code (SynthRAD2023/metrics
# functions/image_metrics.py; SynthRAD2025/evaluation image_metrics.py), so
# numbers can be put beside the published ones. Volumes are cast to float32 as
# their loaders do. Every step works axis by axis in the same way, so the result
# does not depend on the axis order ((i, j, k) here, (k, j, i) in SimpleITK).


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


# ----------------------------------------------------------------------------
# summaries and tables

def _num(v) -> float | None:
    """``v`` as a float, or None when missing/NaN/not a number."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _value(row: Mapping | None, key: str) -> float | None:
    """A metric value of a row, or None when the row or value is missing."""
    return None if row is None else _num(row.get(key))


def summarise(rows: Sequence[Mapping], keys: Iterable[str], ddof: int = 1) -> dict[str, dict]:
    """Mean and sample sd (``ddof=1``; 0 for a single row) of each key over rows.

    Rows missing a key (or holding NaN/None) are skipped for that key; ``n`` says
    how many counted. With no values, mean and sd are None. The paper's Table I
    sds are mostly population sds: pass ``ddof=0`` to compare with them.
    """
    out = {}
    for key in keys:
        vals = [v for v in (_value(r, key) for r in rows) if v is not None]
        if not vals:
            out[key] = {"mean": None, "sd": None, "n": 0}
            continue
        arr = np.asarray(vals, dtype=np.float64)
        with np.errstate(invalid="ignore"):  # inf values give a NaN sd, not a warning
            sd = float(np.std(arr, ddof=ddof)) if arr.size > ddof else 0.0
        out[key] = {"mean": float(np.mean(arr)), "sd": sd, "n": int(arr.size)}
    return out


def _patients(per_patient: Mapping[str, Mapping[str, Mapping]]) -> list[str]:
    """Union of patient ids over models, in order of first appearance."""
    seen: dict[str, None] = {}
    for rows in per_patient.values():
        for pid in rows:
            seen.setdefault(pid, None)
    return list(seen)


def _fmt(v: float | None, decimals: int) -> str:
    if v is None:
        return MISSING
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{decimals}f}"


def table_markdown(per_patient: Mapping[str, Mapping[str, Mapping]],
                   metrics: Sequence[str] = ("mae", "psnr", "psnr_paper", "ssim"),
                   ddof: int = 1) -> str:
    """Table I-style Markdown: one row per patient, columns metric x model, last row Avg±sd.

    ``per_patient[model][patient]`` is a metrics dict (e.g. from ``patient_metrics``).
    Missing values print as "—"; summaries skip them. ``ddof`` as in ``summarise``.
    """
    models = list(per_patient)
    patients = _patients(per_patient)
    header = ["Patient"] + [f"{_DISPLAY.get(k, (k, 2))[0]} {m}" for k in metrics for m in models]
    rule = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for pid in patients:
        cells = [pid]
        for k in metrics:
            dec = _DISPLAY.get(k, (k, 2))[1]
            cells += [_fmt(_value(per_patient[m].get(pid), k), dec) for m in models]
        lines.append("| " + " | ".join(cells) + " |")
    summary = {m: summarise(list(per_patient[m].values()), metrics, ddof) for m in models}
    cells = ["Avg±sd"]
    for k in metrics:
        dec = _DISPLAY.get(k, (k, 2))[1]
        for m in models:
            s = summary[m][k]
            cells.append(MISSING if s["mean"] is None
                         else f"{_fmt(s['mean'], dec)}±{_fmt(s['sd'], dec)}")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(per_patient: Mapping[str, Mapping[str, Mapping]],
              metrics: Sequence[str] = ("mae", "psnr", "psnr_paper", "ssim")) -> str:
    """Long-format CSV ``model,patient,metric,value`` (empty value when missing)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "patient", "metric", "value"])
    for model, rows in per_patient.items():
        for pid, row in rows.items():
            for k in metrics:
                v = _value(row, k)
                w.writerow([model, pid, k, "" if v is None else repr(v)])
    return buf.getvalue()


def table_json(per_patient: Mapping[str, Mapping[str, Mapping]],
               metrics: Sequence[str] = ("mae", "psnr", "psnr_paper", "ssim"),
               ddof: int = 1) -> str:
    """Strict JSON ``{metrics, ddof, per_patient, summary}``; missing/non-finite values are null."""
    def clean(v):
        v = _num(v)
        return None if v is None or math.isinf(v) else v

    doc = {
        "metrics": list(metrics),
        "ddof": ddof,
        "per_patient": {m: {pid: {k: clean((row or {}).get(k)) for k in metrics}
                            for pid, row in rows.items()}
                        for m, rows in per_patient.items()},
        "summary": {m: {k: {kk: (clean(vv) if kk != "n" else vv) for kk, vv in s.items()}
                        for k, s in summarise(list(rows.values()), metrics, ddof).items()}
                    for m, rows in per_patient.items()},
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
