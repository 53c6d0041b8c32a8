"""The dose check's pictures: dose differences through the target, and DVHs of both CTs.

Object-API matplotlib with the project's atomic ``save_png``. Planes cut the canonical planning
grid through the target's centre, shown as radiologists do (``preprocess.axial_image`` after
``to_plane_array``); pixels are square only where the grid is isotropic (the default).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from mrgan_tf.evaluation.dose.metrics import dvh_curve
from mrgan_tf.evaluation.figures import save_png
from mrgan_tf.preprocess import axial_image, to_plane_array

PLANES = ("axial", "coronal", "sagittal")
MIN_RANGE_PERCENT = 2.0   # the colour scale spans at least +-2 % of the prescription


def plane_images(data: np.ndarray, centre) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal images of a canonical volume through voxel ``centre``."""
    index = {"axial": 2, "coronal": 1, "sagittal": 0}
    return {p: axial_image(to_plane_array(data, p), int(round(centre[index[p]]))) for p in PLANES}


def dose_difference_png(path, ct: np.ndarray, doses: Mapping[str, tuple[np.ndarray, np.ndarray]],
                        target: np.ndarray, prescription_gy: float, dpi: int = 100) -> str:
    """One row per modality: (synthetic - reference) dose in % of the prescription over the reference CT,
    with the target's outline, in three planes through the target's centre."""
    centre = np.argwhere(target).mean(axis=0)
    diffs = {m: 100.0 * (syn - ref) / prescription_gy for m, (ref, syn) in doses.items()}
    vmax = max([MIN_RANGE_PERCENT] + [float(np.percentile(np.abs(d), 99.9)) for d in diffs.values()])
    fig = Figure(figsize=(3 * 2.6 + 0.8, 2.6 * len(diffs) + 0.4))
    axes = fig.subplots(len(diffs), 3, squeeze=False)
    cts, outline = plane_images(ct, centre), plane_images(target.astype(np.float32), centre)
    for row, (modality, diff) in zip(axes, diffs.items()):
        images = plane_images(diff, centre)
        for ax, plane in zip(row, PLANES):
            ax.imshow(cts[plane], cmap="gray", vmin=-200, vmax=1200, interpolation="nearest")
            im = ax.imshow(np.ma.masked_where(np.abs(images[plane]) < 0.05 * vmax, images[plane]), cmap="RdBu_r",
                           vmin=-vmax, vmax=vmax, alpha=0.85, interpolation="nearest")
            ax.contour(outline[plane], levels=[0.5], colors="k", linewidths=0.8)
            ax.set_title(f"{modality}, {plane}", fontsize=9)
            ax.set_axis_off()
    cbar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    cbar.set_label("synthetic - reference dose (% of prescription)")
    return save_png(fig, path, dpi)


def dvh_png(path, doses: Mapping[str, tuple[np.ndarray, np.ndarray]], regions: Mapping[str, np.ndarray],
            prescription_gy: float, dpi: int = 100) -> str:
    """Cumulative DVHs, one panel per modality: reference solid, synthetic dashed, one colour per region."""
    top = max(float(max(ref.max(), syn.max())) for ref, syn in doses.values())
    bins = np.linspace(0.0, max(top, prescription_gy) * 1.05, 300)
    fig = Figure(figsize=(5.0 * len(doses), 4.0))
    axes = fig.subplots(1, len(doses), squeeze=False)[0]
    for ax, (modality, (ref, syn)) in zip(axes, doses.items()):
        for i, (name, mask) in enumerate(regions.items()):
            colour = f"C{i % 10}"
            ax.plot(bins, dvh_curve(ref, mask, bins), color=colour, label=f"{name} (reference CT)")
            ax.plot(bins, dvh_curve(syn, mask, bins), color=colour, linestyle="--", label=f"{name} (synthetic CT)")
        ax.set_title(f"{modality}: reference solid, synthetic dashed", fontsize=9)
        ax.set_xlabel("dose (Gy)")
        ax.set_ylabel("volume (%)")
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_png(fig, path, dpi)
