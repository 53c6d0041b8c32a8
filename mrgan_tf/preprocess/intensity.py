"""Intensity steps, each numpy function beside its TensorFlow twin.

Records, training, synthesis (numpy) and the serving graphs (TensorFlow) call
these and nothing else, so the two sides cannot drift apart; tests check every
pair for parity. The CT mapping is a clipped linear map of an HU interval onto
[0, 1]: the paper's display window (center 40, width 80 HU) or a full range
such as SynthRAD's [-1024, 3000] HU (``PreprocessConfig.ct_range``), whichever
the dataset spec names (``PreprocessConfig.ct_hu_range``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _tf():
    import tensorflow as tf

    return tf


# --------------------------------------------------------------------------- CT: HU <-> [0, 1]


def hu_to_unit(hu, lo: float, hi: float) -> np.ndarray:
    """HU -> [0, 1]: ``lo`` HU maps to 0, ``hi`` to 1, values outside are clipped."""
    hu = np.asarray(hu, np.float32)
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def unit_to_hu(q01, lo: float, hi: float) -> np.ndarray:
    """[0, 1] -> HU (inverse of ``hu_to_unit`` inside [lo, hi])."""
    return (np.asarray(q01, np.float32) * (hi - lo) + lo).astype(np.float32)


def hu_to_unit_tf(hu, lo: float, hi: float):
    """TensorFlow twin of ``hu_to_unit``."""
    tf = _tf()
    return tf.clip_by_value((tf.cast(hu, tf.float32) - lo) / (hi - lo), 0.0, 1.0)


def unit_to_hu_tf(q01, lo: float, hi: float):
    """TensorFlow twin of ``unit_to_hu``."""
    tf = _tf()
    return tf.cast(q01, tf.float32) * (hi - lo) + lo


def ct_to_unit(hu, cfg) -> np.ndarray:
    """HU -> [0, 1] with the dataset's CT mapping (``cfg``: a PreprocessConfig)."""
    return hu_to_unit(hu, *cfg.ct_hu_range)


def ct_from_unit(q01, cfg) -> np.ndarray:
    """[0, 1] -> HU with the dataset's CT mapping."""
    return unit_to_hu(q01, *cfg.ct_hu_range)


def ct_to_unit_tf(hu, cfg):
    """TensorFlow twin of ``ct_to_unit``."""
    return hu_to_unit_tf(hu, *cfg.ct_hu_range)


def ct_from_unit_tf(q01, cfg):
    """TensorFlow twin of ``ct_from_unit``."""
    return unit_to_hu_tf(q01, *cfg.ct_hu_range)


def window_ct(hu, center: float = 40.0, width: float = 80.0) -> np.ndarray:
    """HU -> [0, 1] through a display window (paper: center 40, width 80)."""
    return hu_to_unit(hu, center - width / 2, center + width / 2)


def unwindow_ct(q01, center: float = 40.0, width: float = 80.0) -> np.ndarray:
    """[0, 1] -> HU (inverse of ``window_ct`` inside the window)."""
    return unit_to_hu(q01, center - width / 2, center + width / 2)


def window_ct_tf(hu, center: float = 40.0, width: float = 80.0):
    """TensorFlow twin of ``window_ct``."""
    return hu_to_unit_tf(hu, center - width / 2, center + width / 2)


def unwindow_ct_tf(q01, center: float = 40.0, width: float = 80.0):
    """TensorFlow twin of ``unwindow_ct``."""
    return unit_to_hu_tf(q01, center - width / 2, center + width / 2)


# --------------------------------------------------------------------------- MR: robust range <-> [0, 1]


def mr_range(mr, mask=None, percentiles: Sequence[float] = (0.5, 99.5)) -> tuple[float, float]:
    """Robust (lo, hi) of the MR intensities inside ``mask`` (all voxels if empty/None)."""
    mr = np.asarray(mr)
    values = mr[np.asarray(mask, bool)] if mask is not None and np.any(mask) else mr.ravel()
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if not hi > lo:  # constant image: keep a unit range so normalisation stays finite
        hi = lo + 1.0
    return lo, hi


def normalise_mr(mr, lo: float, hi: float) -> np.ndarray:
    """MR intensity -> [0, 1] with the per-volume robust range."""
    return np.clip((np.asarray(mr, np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def denormalise_mr(q01, lo: float, hi: float) -> np.ndarray:
    """[0, 1] -> MR intensity in the units whose robust range was (lo, hi)."""
    return (np.asarray(q01, np.float32) * (hi - lo) + lo).astype(np.float32)


def _percentile_tf(values, p: float):
    """numpy.percentile (linear interpolation) of a 1-D tensor."""
    tf = _tf()
    v = tf.sort(values)
    pos = p / 100.0 * tf.cast(tf.size(v) - 1, tf.float32)
    i0 = tf.cast(tf.floor(pos), tf.int32)
    i1 = tf.minimum(i0 + 1, tf.size(v) - 1)
    frac = pos - tf.floor(pos)
    return tf.gather(v, i0) * (1.0 - frac) + tf.gather(v, i1) * frac


def request_mr_range(mr, percentiles):
    """(lo, hi) of a request: percentiles of the values above the request's minimum (all if none)."""
    tf = _tf()
    flat = tf.reshape(tf.cast(mr, tf.float32), [-1])
    above = tf.boolean_mask(flat, flat > tf.reduce_min(flat))
    values = tf.cond(tf.size(above) > 0, lambda: above, lambda: flat)
    lo = _percentile_tf(values, percentiles[0])
    hi = _percentile_tf(values, percentiles[1])
    hi = tf.where(hi > lo, hi, lo + 1.0)  # constant request: unit range, as preprocess.mr_range
    return tf.stack([lo, hi])


def normalise_mr_tf(mr, lo, hi):
    """TensorFlow twin of ``normalise_mr`` (lo, hi may be tensors)."""
    tf = _tf()
    return tf.clip_by_value((tf.cast(mr, tf.float32) - lo) / (hi - lo), 0.0, 1.0)


# --------------------------------------------------------------------------- quantisation and model range


def qmax(bits: int) -> int:
    """Integer that stands for 1.0 at ``bits`` (255 or 65535)."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    return (1 << bits) - 1


def quantise(q01, bits: int = 8) -> np.ndarray:
    """[0, 1] -> uint8 (x255) or uint16 (x65535), rounded to nearest."""
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.round(np.clip(np.asarray(q01, np.float32), 0.0, 1.0) * qmax(bits)).astype(dtype)


def dequantise(q, bits: int = 8) -> np.ndarray:
    """uint8/uint16 -> [0, 1]."""
    return (np.asarray(q, np.float32) / qmax(bits)).astype(np.float32)


def quantised_tf(q01, bits: int):
    """TensorFlow twin of ``dequantise(quantise(q01))``: what the records would have held."""
    tf = _tf()
    m = float(qmax(bits))
    return tf.round(tf.clip_by_value(q01, 0.0, 1.0) * m) / m


def to_model_range(q01):
    """[0, 1] -> [-1, 1] (the generator's tanh range). Works on numpy and TF tensors."""
    return 2.0 * q01 - 1.0


def from_model_range(x):
    """[-1, 1] -> [0, 1]. Works on numpy and TF tensors."""
    return (x + 1.0) / 2.0
