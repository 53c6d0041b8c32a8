"""Axial slices of a canonical volume and the canvas: fit to S x S (and back), body box, kept slices.

``axial_image``/``axial_stack`` and their inverse are the only place that says
how a slice is oriented (docs/DESIGN.md); ``fit_to_size`` and ``unfit`` are each
other's inverse through the stored ``Placement``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from mrgan_tf.io.volumes import Volume
from mrgan_tf.preprocess.config import FIT_MODES


def _data(vol_or_array) -> np.ndarray:
    return vol_or_array.data if isinstance(vol_or_array, Volume) else np.asarray(vol_or_array)


def axial_image(data3d, k: int) -> np.ndarray:
    """Axial slice k of a canonical volume as an image: rows anterior->posterior, columns left->right (x)."""
    return np.flipud(_data(data3d)[:, :, k].T)


def axial_stack(data3d) -> np.ndarray:
    """All axial images: (X, Y, Z) -> (Z, H=Y, W=X); stack[k] == axial_image(data3d, k).
    A strided view (no copy): ``fit_to_size`` copies it once anyway."""
    return _data(data3d).transpose(2, 1, 0)[:, ::-1, :]


def volume_from_axial_stack(stack) -> np.ndarray:
    """Inverse of ``axial_stack``: (Z, H, W) -> (X, Y, Z)."""
    return np.ascontiguousarray(np.asarray(stack)[:, ::-1, :].transpose(2, 1, 0))


@dataclasses.dataclass
class Placement:
    """Where an (height, width) image sits in the fitted square: scaled by ``scale``
    (rounded per axis), then its top-left corner put at (row_offset, col_offset);
    negative offsets mean it was cropped."""

    height: int
    width: int
    row_offset: int
    col_offset: int
    scale: float = 1.0

    def scaled_shape(self) -> tuple[int, int]:
        if self.scale == 1.0:
            return int(self.height), int(self.width)
        return max(1, int(round(self.height * self.scale))), max(1, int(round(self.width * self.scale)))

    def to_list(self) -> list[float]:
        return [float(self.height), float(self.width), float(self.row_offset), float(self.col_offset),
                float(self.scale)]

    @classmethod
    def from_list(cls, values) -> "Placement":
        v = [float(x) for x in np.asarray(values).ravel()]
        if len(v) != 5:
            raise ValueError(f"placement needs 5 values (H, W, row offset, col offset, scale), got {len(v)}")
        return cls(int(round(v[0])), int(round(v[1])), int(round(v[2])), int(round(v[3])), v[4])


def _resize_2d(stack: np.ndarray, out_hw: tuple[int, int], order: int) -> np.ndarray:
    """Resize the last two axes (pixel-box convention: the image edges map onto each other)."""
    in_hw = np.array(stack.shape[-2:], np.float64)
    step = in_hw / np.array(out_hw, np.float64)
    src = stack
    if order > 0 and np.any(step > 1.5):  # anti-alias before a real shrink
        sigma = [0.0] * (stack.ndim - 2) + list(np.maximum(0.0, (step - 1) / 2))
        src = ndimage.gaussian_filter(stack.astype(np.float32), sigma, mode="nearest")
    lead = stack.ndim - 2
    matrix = np.concatenate([np.ones(lead), step])
    offset = np.concatenate([np.zeros(lead), step / 2 - 0.5])
    out_dtype = stack.dtype if order == 0 else np.float32
    return ndimage.affine_transform(src, matrix, offset=offset, output_shape=stack.shape[:-2] + tuple(out_hw),
                                    order=order, mode="nearest", output=out_dtype)


def _paste(src: np.ndarray, out: np.ndarray, row: int, col: int) -> None:
    """Copy src into out with its top-left at (row, col), clipping whatever falls outside."""
    h, w = src.shape[-2:]
    H, W = out.shape[-2:]
    r0, c0 = max(0, row), max(0, col)
    r1, c1 = min(H, row + h), min(W, col + w)
    if r1 > r0 and c1 > c0:
        out[..., r0:r1, c0:c1] = src[..., r0 - row:r1 - row, c0 - col:c1 - col]


def _crop_offset(length: int, size: int, keep: tuple[int, int] | None) -> int:
    """Offset of a ``length`` axis on a ``size`` canvas: centred, or, when it must be cropped
    and ``keep`` = (first, last + 1) is given, centred on that span and kept inside the image."""
    if length <= size or keep is None:
        return (size - length) // 2
    centre = (keep[0] + keep[1]) / 2
    return int(np.clip(np.floor(size / 2 - centre), size - length, 0))


def fit_to_size(img, size: int, mode: str = "pad", pad_value: float | None = None,
                order: int = 1, keep_box: tuple[tuple[int, int], tuple[int, int]] | None = None
                ) -> tuple[np.ndarray, Placement]:
    """Bring a (H, W) image or (Z, H, W) stack to (size, size).

    "pad": pad/crop at the same pixel size, centred; an axis longer than ``size`` is
    cropped about ``keep_box`` ((row0, row1), (col0, col1), e.g. the body's bounding box)
    when given, else about its centre. "resize": scale the longer side to ``size``
    (aspect preserved), then centre-pad. Padding uses ``pad_value`` (default: the image minimum).
    """
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8)
    if img.ndim not in (2, 3):
        raise ValueError(f"fit_to_size expects a 2-D image or a 3-D stack, got shape {img.shape}")
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode must be one of {FIT_MODES}, got {mode!r}")
    h, w = img.shape[-2:]
    scale = 1.0 if mode == "pad" else size / max(h, w)
    placement = Placement(h, w, 0, 0, scale)
    sh, sw = placement.scaled_shape()
    rows, cols = keep_box if (keep_box is not None and mode == "pad") else (None, None)
    placement.row_offset, placement.col_offset = _crop_offset(sh, size, rows), _crop_offset(sw, size, cols)
    src = img if (sh, sw) == (h, w) else _resize_2d(img, (sh, sw), order)
    if pad_value is None:
        pad_value = img.min() if img.size else 0
    out = np.full(img.shape[:-2] + (size, size), pad_value, dtype=src.dtype)
    _paste(src, out, placement.row_offset, placement.col_offset)
    return out, placement


def unfit(out, placement: Placement, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Inverse of ``fit_to_size``: back to (H, W) (or (Z, H, W)); cropped-away pixels -> ``fill``."""
    out = np.asarray(out)
    sh, sw = placement.scaled_shape()
    dtype = out.dtype if np.issubdtype(out.dtype, np.floating) else np.float32
    region = np.full(out.shape[:-2] + (sh, sw), fill, dtype=dtype)
    _paste(out, region, -placement.row_offset, -placement.col_offset)
    if (sh, sw) == (placement.height, placement.width):
        return region
    return _resize_2d(region, (placement.height, placement.width), order)


# TF twins of fit_to_size / unfit, for the serving graphs (TensorFlow is imported only here).


def _place_tf(x, row, col, out_h, out_w, fill):
    """Put [N, h, w, 1] ``x`` with its top-left at (row, col) on a ``fill`` canvas of out_h x out_w.

    TF twin of ``_paste`` (negative offsets crop).
    """
    import tensorflow as tf

    h, w = tf.shape(x)[1], tf.shape(x)[2]
    pads = [[0, 0], [tf.maximum(0, row), tf.maximum(0, out_h - h - row)],
            [tf.maximum(0, col), tf.maximum(0, out_w - w - col)], [0, 0]]
    padded = tf.pad(x, pads, constant_values=fill)
    r0, c0 = tf.maximum(0, -row), tf.maximum(0, -col)
    return padded[:, r0:r0 + out_h, c0:c0 + out_w, :]


def _scaled_hw(h, w, size: int, mode: str):
    """(scaled h, scaled w) as ``Placement.scaled_shape`` computes them (round half to even, >= 1)."""
    import tensorflow as tf

    if mode == "pad":
        return h, w
    scale = size / tf.cast(tf.maximum(h, w), tf.float64)
    sh = tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32))
    sw = tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32))
    return sh, sw


def fit_tf(x, size: int, mode: str):
    """TF twin of ``fit_to_size`` for [N, H, W, 1] on the 0..1 scale (padding 0).

    "pad" is exact; "resize" uses tf.image's antialiased bilinear resize, which
    differs from the numpy path by interpolation details only.
    """
    import tensorflow as tf

    h, w = tf.shape(x)[1], tf.shape(x)[2]
    sh, sw = _scaled_hw(h, w, size, mode)
    if mode == "resize":
        x = tf.image.resize(x, tf.stack([sh, sw]), method="bilinear", antialias=True)
    return tf.ensure_shape(_place_tf(x, (size - sh) // 2, (size - sw) // 2, size, size, 0.0),
                           [None, size, size, 1])


def unfit_tf(y, h, w, size: int, mode: str, fill: float = 0.0):
    """TF twin of ``unfit``: [N, S, S, 1] back to [N, h, w, 1]."""
    import tensorflow as tf

    sh, sw = _scaled_hw(h, w, size, mode)
    region = _place_tf(y, -((size - sh) // 2), -((size - sw) // 2), sh, sw, fill)
    if mode == "resize":
        region = tf.image.resize(region, tf.stack([h, w]), method="bilinear", antialias=True)
    return region


def body_box(mask_stack: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """In-plane bounding box ((row0, row1), (col0, col1)) of a (Z, H, W) body stack; None if empty."""
    rows = np.flatnonzero(mask_stack.any(axis=(0, 2)))
    cols = np.flatnonzero(mask_stack.any(axis=(0, 1)))
    if rows.size == 0:
        return None
    return (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)


def keep_slices(mask_stack: np.ndarray, min_fraction: float) -> np.ndarray:
    """Slices whose body area is at least ``min_fraction`` of the largest body slice's area."""
    area = mask_stack.reshape(mask_stack.shape[0], -1).sum(axis=1, dtype=np.int64)
    largest = area.max() if area.size else 0
    if largest == 0:
        return np.zeros(area.shape, bool)
    return area >= min_fraction * largest
