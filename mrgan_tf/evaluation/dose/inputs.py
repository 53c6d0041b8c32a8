"""The reference and synthetic CTs on one planning grid, with every filled or clipped voxel counted.

The planning grid is the reference's field of view in its canonical (RAS+) orientation at the plan's
voxel size. The synthetic CT is resampled onto it; where it does not cover the grid, air is filled in
and counted. HU beyond the engine's HU-to-density table ([-1024, 3000], pyRadPlan's default table) are
clipped to its ends, as the engine would, and counted.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mrgan_tf.evaluation.dose.errors import DoseError
from mrgan_tf.io.volumes import Volume
from mrgan_tf.preprocess import overlap_fraction, resample_like, resample_to_spacing, to_canonical
from mrgan_tf.preprocess.plausibility import check_volume, raise_or_warn

HLUT_RANGE_HU = (-1024.0, 3000.0)   # pyRadPlan 0.5.0's default HU-to-density table (ct/_hlut.py)
AIR_HU = HLUT_RANGE_HU[0]


@dataclasses.dataclass
class PlanningCTs:
    """Both CTs in HU on the planning grid (``reference.affine``), and what was changed to get there."""

    reference: Volume
    synthetic: Volume
    synthetic_covered: np.ndarray      # bool: planning voxels inside the synthetic CT's field of view
    clipped: dict[str, int]            # {"reference": n, "synthetic": n} voxels clipped to HLUT_RANGE_HU
    overlap: float                     # fraction of the reference's field of view inside the synthetic's


def check_ct(vol: Volume) -> None:
    """Refuse a volume that is not a CT in HU (an MR, a constant volume, unsigned HU)."""
    raise_or_warn(check_volume(vol, "ct"))


def clip_to_table(data: np.ndarray) -> tuple[np.ndarray, int]:
    """``data`` clipped to the HU-to-density table's range, and how many voxels that changed."""
    lo, hi = HLUT_RANGE_HU
    n = int(np.count_nonzero((data < lo) | (data > hi)))
    return np.clip(data, lo, hi).astype(np.float32), n


def reference_grid(reference: Volume, resolution_mm: float) -> tuple[Volume, int]:
    """The reference CT on its canonical grid at ``resolution_mm`` (clipped to the table), and the clipped count."""
    check_ct(reference)
    grid = resample_to_spacing(to_canonical(reference), resolution_mm, order=1)
    hu, clipped = clip_to_table(np.asarray(grid.data, np.float32))
    return Volume(hu, grid.affine, reference.source, reference.header), clipped


def check_overlap(synthetic: Volume, reference: Volume) -> float:
    """The fraction of the reference's field of view the synthetic CT covers; refused when nothing."""
    overlap = overlap_fraction(reference, synthetic)
    if overlap <= 0.0:
        raise DoseError(f"{synthetic.source}: does not overlap the reference CT {reference.source} in world "
                        "coordinates (different frames of reference or positions?): nothing to compare")
    return overlap


def planning_cts(grid: Volume, reference_clipped: int, synthetic: Volume) -> PlanningCTs:
    """The synthetic CT on the planning grid ``grid`` (the reference from ``reference_grid``), air outside it."""
    check_ct(synthetic)
    overlap = check_overlap(synthetic, grid)
    syn = resample_like(synthetic, grid, order=1, fill=AIR_HU)
    covered = resample_like(synthetic.with_data(np.ones(synthetic.shape, np.uint8)), grid, order=0, fill=0).data > 0
    syn_hu, clipped = clip_to_table(np.asarray(syn.data, np.float32))
    return PlanningCTs(grid, Volume(syn_hu, grid.affine, synthetic.source, synthetic.header), covered,
                       {"reference": reference_clipped, "synthetic": clipped}, overlap)
