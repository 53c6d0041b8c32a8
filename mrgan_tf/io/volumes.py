"""One Volume type for every image format, so geometry travels with the pixels.

Readers for each format live beside this module and are dispatched by
``read_volume``; all of them return RAS+ affines (nibabel's convention).
"""
from __future__ import annotations

import dataclasses

import numpy as np


class VolumeError(ValueError):
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
        return Volume(data, self.affine if affine is None else affine, self.source)
