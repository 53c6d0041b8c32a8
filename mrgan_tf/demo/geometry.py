"""Volume geometry for the demo set: resampling, masks, smooth random fields and rigid transforms."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation


def resample_axes(data: np.ndarray, affine: np.ndarray, spacing: float, order: int):
    """Resample along the volume's own axes to `spacing` mm, Gaussian anti-aliasing first."""
    old = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factor = spacing / old
    if np.allclose(factor, 1.0):
        return data, affine
    shape = np.floor((np.array(data.shape) - 1) / factor).astype(int) + 1
    src = data.astype(np.float32)
    if order > 0:
        src = ndi.gaussian_filter(src, sigma=np.maximum(factor - 1, 0) / 2)  # as skimage.rescale
    out = ndi.affine_transform(src, factor, output_shape=tuple(shape), order=order, mode="nearest")
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * factor
    return out, new_affine


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    return lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """3-D fill plus a per-axial-slice fill, so airways open to the border count as body."""
    mask = ndi.binary_fill_holes(mask)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndi.binary_fill_holes(mask[:, :, k])
    return mask


def smooth_field(rng: np.random.Generator, shape, n_ctrl: int = 4) -> np.ndarray:
    """A smooth random field of roughly unit amplitude (cubic upsampling of a coarse grid)."""
    ctrl = rng.uniform(-1.0, 1.0, size=(n_ctrl,) * 3)
    # ndi.zoom of the 3-D grid, computed per axis: the cubic spline zoom is separable, so one small 1-D
    # operator per axis (the 1-D zoom of each basis vector) gives the same numbers ~80x faster.
    ops = [np.stack([ndi.zoom(e, s / n_ctrl, order=3, mode="nearest", grid_mode=True) for e in np.eye(n_ctrl)],
                    axis=1)[:s] for s in shape]
    return np.einsum("ai,bj,ck,ijk->abc", *ops, ctrl, optimize=True).astype(np.float32)


def random_rotation(rng: np.random.Generator, lo_deg: float, hi_deg: float) -> np.ndarray:
    """A 3x3 rotation by an angle in [lo, hi] degrees about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return Rotation.from_rotvec(np.deg2rad(rng.uniform(lo_deg, hi_deg)) * axis).as_matrix()


def random_direction(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v) * rng.uniform(lo, hi)


def about(center: np.ndarray, linear: np.ndarray, shift=np.zeros(3)) -> np.ndarray:
    """4x4 world transform x -> linear (x - center) + center + shift."""
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = center + shift - linear @ center
    return m


def crop_to_mask(arrays, mask: np.ndarray, affine: np.ndarray, margin_mm: float):
    """Crop every array to the mask's bounding box plus a margin; shift the affine to match."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    idx = np.argwhere(mask)
    margin = np.ceil(margin_mm / spacing).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    new_affine = affine.copy()
    new_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return [a[box] for a in arrays], new_affine


