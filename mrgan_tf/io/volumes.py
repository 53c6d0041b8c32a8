"""One Volume type for every image format, so geometry travels with the pixels.

Readers for each format live beside this module and are dispatched by
``read_volume``; all of them return RAS+ affines (nibabel's convention).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mrgan_tf.errors import UserError


class VolumeError(UserError, ValueError):
    """Bad input volume. The message starts with the offending path."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclasses.dataclass
class Volume:
    """A 3-D image: voxels in the file's (i, j, k) order plus a voxel->RAS+ mm affine."""

    data: np.ndarray
    affine: np.ndarray
    source: str = "<memory>"
    # The source's own header (a DICOM series: its first image's dataset without pixels),
    # so that a derived series can keep the study, frame of reference and patient.
    header: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.data = np.asarray(self.data)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise VolumeError(self.source, f"affine has shape {self.affine.shape}, expected (4, 4)")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def with_data(self, data: np.ndarray, affine: np.ndarray | None = None) -> "Volume":
        return Volume(data, self.affine if affine is None else affine, self.source, self.header)


# DICOM and ITK/SimpleITK world coordinates are LPS; the project's affines are RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Voxel->LPS affine to voxel->RAS+ affine (negate the first two world axes)."""
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def checked_volume(data: np.ndarray, affine: np.ndarray, source, header: Any = None) -> Volume:
    """Validate freshly read voxels + affine and return a float32 Volume.

    Every reader funnels through here so that all formats reject the same
    things with the same wording: not 3-D, empty, NaN/inf, singular affine.
    A trailing singleton 4th (or higher) dimension is squeezed away.
    """
    source = str(source)
    data = np.asarray(data)
    if data.size == 0:
        raise VolumeError(source, f"image is empty (shape {data.shape})")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(source, f"image is {data.ndim}-D (shape {data.shape}), expected 3-D")
    if min(data.shape) == 1:
        raise VolumeError(source, f"image is a single slice (shape {data.shape}), expected a 3-D volume")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise VolumeError(source, f"voxel type {data.dtype} is not a real scalar")
    data = data.astype(np.float32, copy=False)
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise VolumeError(source, f"{bad} voxel(s) are NaN or infinite")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise VolumeError(source, f"affine has shape {affine.shape}, expected (4, 4)")
    if not np.all(np.isfinite(affine)) or not np.allclose(affine[3], [0, 0, 0, 1]):
        raise VolumeError(source, f"affine is not a finite homogeneous transform:\n{affine}")
    cols = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(cols == 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-6 * np.prod(cols):
        raise VolumeError(source, f"affine is not invertible (voxel sizes {cols.round(4).tolist()})")
    return Volume(data, affine, source, header)
