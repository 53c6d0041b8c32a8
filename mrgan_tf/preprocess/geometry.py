"""Geometry steps: canonical orientation, the slice plane, resampling to a spacing or onto another grid, overlap."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from mrgan_tf.io.volumes import Volume


def to_canonical(vol: Volume) -> Volume:
    """Reorder/flip axes so the affine is closest to RAS+ (nibabel.as_closest_canonical)."""
    from nibabel import orientations

    ornt = orientations.io_orientation(vol.affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return vol
    data = np.ascontiguousarray(orientations.apply_orientation(vol.data, ornt))
    affine = vol.affine @ orientations.inv_ornt_aff(ornt, vol.shape)
    return Volume(data, affine, vol.source)


# The canonical volume's axes, reordered so that a plane's slices run along the last axis; the
# image of slice k is then ``axial_image`` of the reordered volume (rows = its second axis,
# flipped; columns = its first). Axial: rows anterior->posterior, columns left->right;
# coronal: rows superior->inferior, columns left->right; sagittal: rows superior->inferior,
# columns posterior->anterior.
PLANE_AXES = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


def to_plane_array(data: np.ndarray, axis: str) -> np.ndarray:
    """A canonical (X, Y, Z) array with ``axis``'s slices on its last axis (a view)."""
    return np.asarray(data).transpose(PLANE_AXES[axis])


def from_plane_array(data: np.ndarray, axis: str) -> np.ndarray:
    """Inverse of ``to_plane_array``."""
    return np.asarray(data).transpose(np.argsort(PLANE_AXES[axis]))


def _permuted_affine(affine: np.ndarray, order) -> np.ndarray:
    """The affine of an array transposed by ``order``: new voxel axis j is old axis order[j]."""
    p = np.zeros((4, 4))
    p[list(order) + [3], list(range(3)) + [3]] = 1.0
    return np.asarray(affine, np.float64) @ p


def to_plane(vol: Volume, axis: str) -> Volume:
    """A canonical volume with ``axis``'s slices on its last axis: same voxels, same world positions."""
    if axis == "axial":
        return vol
    return Volume(np.ascontiguousarray(to_plane_array(vol.data, axis)),
                  _permuted_affine(vol.affine, PLANE_AXES[axis]), vol.source)


def from_plane(vol: Volume, axis: str) -> Volume:
    """Inverse of ``to_plane``: back to the canonical axis order."""
    if axis == "axial":
        return vol
    return Volume(np.ascontiguousarray(from_plane_array(vol.data, axis)),
                  _permuted_affine(vol.affine, np.argsort(PLANE_AXES[axis])), vol.source)


def _voxel_to_voxel(out_affine: np.ndarray, in_affine: np.ndarray, transform: np.ndarray | None = None):
    """Matrix mapping output voxel indices to input voxel indices through world space."""
    world = out_affine if transform is None else np.asarray(transform, np.float64) @ out_affine
    return np.linalg.solve(in_affine, world)


def _apply_voxel_map(data, m: np.ndarray, out_shape, order: int, fill: float | None) -> np.ndarray:
    """Resample ``data`` at ``m @ out_index``; points outside the input's field of
    view (its voxel boxes, i.e. beyond half a voxel past the edge centres) get ``fill``.
    ``fill=None`` extends the edge values instead."""
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    out_dtype = data.dtype if (order == 0 and data.dtype != np.float64) else np.float32
    if tuple(out_shape) == data.shape and np.allclose(m, np.eye(4), rtol=0, atol=1e-6):
        return data.astype(out_dtype)  # same grid (e.g. SynthRAD pairs): interpolation would be the identity
    diag = np.allclose(m[:3, :3], np.diag(np.diag(m[:3, :3])))
    matrix = np.diag(m[:3, :3]) if diag else m[:3, :3]
    out = ndimage.affine_transform(data, matrix, offset=m[:3, 3], output_shape=tuple(out_shape),
                                   order=order, mode="nearest", output=out_dtype)
    if fill is None:
        return out
    # The output box maps to the convex hull of its corners: skip the mask when all are inside.
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in out_shape], indexing="ij")).reshape(3, -1)
    mapped = m[:3, :3] @ corners + m[:3, 3:4]
    size = np.array(data.shape)[:, None]
    if np.all(mapped >= -0.5) and np.all(mapped <= size - 0.5):
        return out
    ones = np.pad(np.ones(data.shape, np.uint8), 1)  # zero border = outside the field of view
    inside = ndimage.affine_transform(ones, matrix, offset=m[:3, 3] + 1, output_shape=tuple(out_shape),
                                      order=0, mode="constant", cval=0, output=np.uint8)
    out[inside == 0] = fill
    return out


def resample_to_spacing(vol: Volume, spacing_mm: float | Sequence[float], order: int = 1) -> Volume:
    """Resample to the given voxel size, keeping axis directions and the field of view.

    New shape = ceil(extent / spacing): the new grid is centred on the old field of view
    (voxel-centre convention as nibabel), so world positions are preserved, and it covers
    every old voxel (rounding down would lose the outer ring of voxels finer than half the
    new spacing; the few new voxels past the old edge repeat the edge values).
    """
    new_sp = np.broadcast_to(np.asarray(spacing_mm, np.float64), (3,))
    old_sp = vol.spacing
    if np.allclose(new_sp, old_sp, rtol=0, atol=1e-6):
        return vol
    shape = np.array(vol.shape, np.float64)
    new_shape = np.maximum(1, np.ceil(shape * old_sp / new_sp - 1e-6)).astype(int)
    step = new_sp / old_sp  # old voxels per new voxel
    start = (shape - new_shape * step) / 2 - 0.5 + step / 2  # old index of new voxel 0's centre
    vox = np.eye(4)
    vox[:3, :3] = np.diag(step)
    vox[:3, 3] = start
    data = _apply_voxel_map(vol.data, vox, new_shape, order, fill=None)
    return Volume(data, vol.affine @ vox, vol.source)


def resample_like(moving: Volume, reference: Volume, order: int = 1, transform: np.ndarray | None = None,
                  fill: float = 0.0) -> Volume:
    """Resample ``moving`` onto ``reference``'s grid through world coordinates.

    ``transform`` (4x4, world -> world, RAS+) maps reference points to moving points,
    as returned by ``registration.register_affine``. Outside moving's field of view -> ``fill``.
    """
    m = _voxel_to_voxel(reference.affine, moving.affine, transform)
    if moving.shape == reference.shape and np.allclose(m, np.eye(4), atol=1e-6):
        data = moving.data  # same grid (e.g. SynthRAD's pre-registered pairs): nothing to interpolate
    else:
        data = _apply_voxel_map(moving.data, m, reference.shape, order, fill)
    return Volume(data, reference.affine.copy(), moving.source)


def _fov_points(vol: Volume, n: int = 16) -> np.ndarray:
    """(3, n^3) voxel coordinates spread evenly through the voxel boxes of ``vol``."""
    axes = [(np.arange(n) + 0.5) / n * s - 0.5 for s in vol.shape]
    return np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)


def overlap_fraction(a: Volume, b: Volume) -> float:
    """Fraction of a's field-of-view box (world space) that lies inside b's."""
    pts = _fov_points(a)
    m = _voxel_to_voxel(a.affine, b.affine)
    mapped = m[:3, :3] @ pts + m[:3, 3:4]
    size = np.array(b.shape)[:, None]
    inside = np.all((mapped >= -0.5) & (mapped <= size - 0.5), axis=0)
    return float(inside.mean())
