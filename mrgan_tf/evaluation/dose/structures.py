"""The regions a plan is made for and scored on: body, target, organs at risk, on the planning grid.

Masks come from files (NIfTI, .mha, DICOM: resampled from their own grid by nearest neighbour)
or from ROIs of an RT Structure Set on the reference CT. Without a target, a synthetic one is
placed (``synthetic_target``): a comparison target for scoring synthetic CTs, not a clinical one.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np

from mrgan_tf import cli
from mrgan_tf.evaluation.dose.errors import DoseError
from mrgan_tf.io.volumes import Volume
from mrgan_tf.preprocess import body_mask_from_ct, overlap_fraction, resample_like

# The synthetic target's centre: the body's centroid within this distance of its top (the cranium
# of a head scan, whatever neck or shoulders lie below), then the sphere must lie this deep in the body.
CRANIUM_MM = 120.0
MIN_DEPTH_MM = 10.0
TARGET_INSIDE_BODY = 0.95   # a target with less of itself inside the body is refused
SYNTHETIC_TARGET = "synthetic sphere"


@dataclasses.dataclass
class Structures:
    """Masks on the planning grid, and where each came from."""

    body: np.ndarray
    target: np.ndarray
    oars: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    target_name: str = "target"

    @property
    def synthetic_target(self) -> bool:
        return self.sources.get(self.target_name) == SYNTHETIC_TARGET

    def regions(self) -> dict[str, np.ndarray]:
        """Target first, then the organs at risk, then the body: the rows of the DVH table."""
        return {self.target_name: self.target, **self.oars, "body": self.body}


def mask_on_grid(mask: Volume, grid: Volume) -> np.ndarray:
    """``mask`` (> 0.5 inside) resampled onto ``grid`` by nearest neighbour; refused when it misses the grid."""
    if overlap_fraction(grid, mask) <= 0.0:
        raise DoseError(f"{mask.source}: does not overlap the reference CT's field of view")
    return resample_like(mask.with_data(np.asarray(mask.data) > 0.5), grid, order=0, fill=0).data > 0


def synthetic_target(body: np.ndarray, grid: Volume, radius_mm: float) -> np.ndarray:
    """A sphere of ``radius_mm`` at the centroid of the body's top ``CRANIUM_MM`` (canonical grid: k is superior).

    Reproducible from the body mask alone; refused when it does not fit ``MIN_DEPTH_MM`` inside the body."""
    from scipy import ndimage

    spacing = grid.spacing
    ks = np.nonzero(body.any(axis=(0, 1)))[0]
    if ks.size == 0:
        raise DoseError(f"{grid.source}: the body mask is empty: no place for a target")
    top = body.copy()
    top[:, :, :max(0, int(ks[-1] - round(CRANIUM_MM / spacing[2])) + 1)] = False
    centre = np.array(ndimage.center_of_mass(top))
    idx = np.indices(body.shape, np.float32)
    dist = np.sqrt(sum(((idx[a] - centre[a]) * spacing[a]) ** 2 for a in range(3)))
    sphere = dist <= radius_mm
    depth = ndimage.distance_transform_edt(np.pad(body, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]   # edge = outside
    if not sphere.any() or depth[sphere].min() < MIN_DEPTH_MM:
        raise DoseError(f"{grid.source}: a {radius_mm:g} mm synthetic target does not fit {MIN_DEPTH_MM:g} mm inside "
                        "the body at the top of the body mask; give --target, a smaller --target_radius_mm, or a "
                        "--mask of the body")
    return sphere


def check_target(target: np.ndarray, body: np.ndarray, source: str) -> None:
    """Refuse an empty target and one mostly outside the body."""
    n = int(target.sum())
    if n == 0:
        raise DoseError(f"{source}: the target is empty on the planning grid")
    inside = float((target & body).sum()) / n
    if inside < TARGET_INSIDE_BODY:
        raise DoseError(f"{source}: only {inside:.0%} of the target lies inside the body ({n} voxels); a target "
                        "outside the patient cannot be planned")


def build_structures(grid: Volume, body: Volume | None = None, target: Volume | None = None,
                     oars: Mapping[str, Volume] | None = None, target_radius_mm: float = 15.0) -> Structures:
    """Every region on the planning grid ``grid`` (the reference CT in HU); missing body: from the CT's HU."""
    sources = {}
    if body is None:
        body_mask, sources["body"] = body_mask_from_ct(grid.data), "CT above -500 HU"
    else:
        body_mask, sources["body"] = mask_on_grid(body, grid), body.source
    if not body_mask.any():
        raise DoseError(f"{sources['body']}: the body mask is empty on the planning grid")
    if target is None:
        target_mask, sources["target"] = synthetic_target(body_mask, grid, target_radius_mm), SYNTHETIC_TARGET
    else:
        target_mask, sources["target"] = mask_on_grid(target, grid), target.source
        check_target(target_mask, body_mask, target.source)
    oar_masks = {}
    for name, vol in (oars or {}).items():
        if name in ("target", "body"):
            raise DoseError(f"--oar {name}={vol.source}: the names 'target' and 'body' are taken")
        oar_masks[name] = mask_on_grid(vol, grid)
        if not oar_masks[name].any():
            raise DoseError(f"{vol.source}: organ at risk {name!r} is empty on the planning grid")
        sources[name] = vol.source
    return Structures(body_mask, target_mask, oar_masks, sources)


def parse_oars(values) -> dict[str, str]:
    """``["NAME=PATH", "PATH"]`` -> {name: path}; a bare path is named after its file (or ROI)."""
    return cli.named_paths(values, "oar", lambda v: os.path.basename(os.path.normpath(v)).split(".")[0], DoseError)
