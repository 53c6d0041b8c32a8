"""Image-similarity metrics for synthetic MR (and CT), on the paper's 0-255 scale.

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

Two conventions, never mixed in one table: the paper's (2-D fitted slices,
0-255 scale, ``patient_metrics``, here) and the SynthRAD challenges' (3-D
volumes on the patient's original grid, in HU, inside the mask,
``synthrad_metrics``); ``tables`` summarises and writes either.
"""
from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

# SynthRAD2023 CT evaluation window (HU) and its data range.
CT_HU_RANGE = (-1024.0, 3000.0)

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
