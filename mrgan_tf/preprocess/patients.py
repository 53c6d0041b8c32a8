"""One patient's volumes -> fitted, quantised slices (``prepare_patient``), and back (``restack_to_grid``).

``prepare_patient`` is a composition of the named steps of the other modules:
reference grid -> body mask -> MR onto the CT grid -> slices.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.preprocess.config import PreprocessConfig
from mrgan_tf.preprocess.geometry import (overlap_fraction, resample_like, resample_to_spacing, to_canonical, to_plane,
                                          to_plane_array)
from mrgan_tf.preprocess.intensity import ct_to_unit, mr_range, normalise_mr, quantise
from mrgan_tf.preprocess.masks import body_mask_from_ct, body_mask_from_mr
from mrgan_tf.preprocess.slices import (Placement, axial_stack, body_box, fit_to_size, keep_slices, unfit,
                                        volume_from_axial_stack)


@dataclasses.dataclass
class SliceGeometry:
    """What is needed to put fitted slices back on a grid (stored per record)."""

    affine: np.ndarray  # resampled canonical reference volume
    shape: tuple[int, int, int]
    placement: Placement

    @classmethod
    def from_record(cls, affine, volume_shape, placement) -> "SliceGeometry":
        return cls(np.asarray(affine, np.float64).reshape(4, 4), tuple(int(s) for s in np.ravel(volume_shape)),
                   placement if isinstance(placement, Placement) else Placement.from_list(placement))


@dataclasses.dataclass
class PreparedPatient:
    """One patient's slices, ready for records: quantised (Z, S, S) stacks plus geometry."""

    ct: np.ndarray | None
    mr: np.ndarray | None
    mask: np.ndarray
    keep: np.ndarray
    placement: Placement
    affine: np.ndarray
    shape: tuple[int, int, int]
    mr_range: tuple[float, float] | None
    registration: dict | None = None
    body_voxels: int = 0            # body voxels of the resampled reference volume
    body_voxels_outside: int = 0    # of those, how many fell outside the canvas (pad fit)

    @property
    def geometry(self) -> SliceGeometry:
        return SliceGeometry(self.affine, self.shape, self.placement)

    @property
    def body_lost_fraction(self) -> float:
        return self.body_voxels_outside / self.body_voxels if self.body_voxels else 0.0

    def body_loss_problem(self, cfg: PreprocessConfig, who: str) -> str | None:
        """The error text when more of the body than ``cfg.max_body_loss`` missed the canvas."""
        if self.body_lost_fraction <= cfg.max_body_loss:
            return None
        return (f"{who}: {self.body_lost_fraction:.2%} of the body ({self.body_voxels_outside} of "
                f"{self.body_voxels} voxels) lies outside the {cfg.image_size} x {cfg.image_size} canvas at "
                f"{cfg.spacing_mm:g} mm (limit --max_body_loss={cfg.max_body_loss:g}); use a larger "
                "--image_size or --fit=resize")


def _register_mr_to_ct(ct_c: Volume, mr: Volume, body: np.ndarray, cfg: PreprocessConfig) -> dict:
    from mrgan_tf.preprocess import registration

    fixed_mask = body & (ct_c.data < cfg.register_skull_hu)
    result = registration.register_affine(ct_c, mr, fixed_mask=fixed_mask, model=cfg.register_model)
    return {"metric": result.metric, "transform": result.transform.tolist(),
            "iterations": result.iterations, "stop_reason": result.stop_reason}


def reference_grid(ct: Volume | None, mr: Volume | None, cfg: PreprocessConfig) -> Volume:
    """The grid every image of the patient goes onto: the CT's (MR-only: the MR's), canonical, resampled."""
    return resample_to_spacing(to_canonical(ct if ct is not None else mr), cfg.spacing_mm, order=1)


def body_on_grid(ref: Volume, mask: Volume | None, from_ct: bool, cfg: PreprocessConfig) -> np.ndarray | None:
    """The body on the reference grid: the mask file, else the CT's threshold mask (MR-only: None, later)."""
    if mask is not None:
        return resample_like(mask, ref, order=0, fill=0).data > 0.5
    if from_ct:
        return body_mask_from_ct(ref.data, cfg.body_threshold_hu)
    return None


def mr_on_grid(mr: Volume, ct: Volume, ref: Volume, body: np.ndarray, cfg: PreprocessConfig
               ) -> tuple[Volume, dict | None]:
    """MR resampled onto the CT's reference grid, by world coordinates or by MI registration (``cfg.register``)."""
    mr = to_canonical(mr)  # cheap axis reorder; often lands exactly on the CT grid
    fill = float(np.min(mr.data))
    if cfg.register:
        reg = _register_mr_to_ct(ref, mr, body, cfg)
        return resample_like(mr, ref, order=1, transform=np.array(reg["transform"]), fill=fill), reg
    frac = overlap_fraction(mr, ref)
    if frac < 0.5:
        raise VolumeError(mr.source, f"does not overlap {ct.source}: only {frac:.0%} of the MR field "
                                     "of view lies inside the CT's (use --register or check the pair)")
    return resample_like(mr, ref, order=1, fill=fill), None


def to_slices(ref: Volume, ct_hu: np.ndarray | None, mr: np.ndarray | None, body: np.ndarray,
              cfg: PreprocessConfig, registration: dict | None = None) -> PreparedPatient:
    """Volumes on the reference grid -> fitted, quantised axial stacks, the kept slices and what was lost."""
    box = body_box(axial_stack(body))

    def fitted(volume01: np.ndarray, order: int) -> tuple[np.ndarray, Placement]:
        return fit_to_size(axial_stack(volume01), cfg.image_size, cfg.fit, pad_value=0, order=order, keep_box=box)

    mask_stack, placement = fitted(body.astype(np.uint8), order=0)
    body_voxels = int(np.count_nonzero(body))
    outside = max(0, body_voxels - int(np.count_nonzero(mask_stack))) if cfg.fit == "pad" else 0
    ct_q = mr_q = rng = None
    if ct_hu is not None:
        ct_q = quantise(fitted(ct_to_unit(ct_hu, cfg), 1)[0], cfg.bits)
    if mr is not None:
        rng = mr_range(mr, body, cfg.mr_percentiles)
        mr_q = quantise(fitted(normalise_mr(mr, *rng), 1)[0], cfg.bits)
    return PreparedPatient(ct=ct_q, mr=mr_q, mask=mask_stack.astype(np.uint8),
                           keep=keep_slices(mask_stack, cfg.min_foreground), placement=placement,
                           affine=ref.affine.copy(), shape=tuple(int(s) for s in ref.shape), mr_range=rng,
                           registration=registration, body_voxels=body_voxels, body_voxels_outside=outside)


def prepare_patient(ct: Volume | None, mr: Volume | None, mask: Volume | None,
                    cfg: PreprocessConfig) -> PreparedPatient:
    """Canonical, resampled, aligned, masked, mapped, fitted and quantised slices of one patient.

    The CT grid (after ``to_canonical`` + ``resample_to_spacing``) is the reference;
    MR-only patients use the MR grid; slices are cut in ``cfg.slice_axis`` (``to_plane``).
    MR is put on the CT grid by world coordinates, or by affine MI registration when ``cfg.register``.

    Args:
        ct: the patient's CT in HU (None for an MR-only patient).
        mr: the patient's MR (None for a CT-only patient).
        mask: a body mask, resampled onto the reference grid (None: thresholded from the CT, or from the MR).
        cfg: spacing, slice size and fit, intensity windows, mask and registration settings.
    """
    if ct is None and mr is None:
        raise ValueError("prepare_patient needs a CT or an MR volume")
    ref = reference_grid(ct, mr, cfg)
    body = body_on_grid(ref, mask, ct is not None, cfg)
    mr_on, reg = (ref, None) if ct is None else (None, None)
    if mr is not None and ct is not None:
        mr_on, reg = mr_on_grid(mr, ct, ref, body, cfg)
    if body is None:
        body = body_mask_from_mr(mr_on.data)
    # The body is found in the canonical orientation, so every plane slices the same mask.
    axis = cfg.slice_axis
    turn = lambda a: None if a is None else to_plane_array(a, axis)  # noqa: E731
    return to_slices(to_plane(ref, axis), turn(ref.data) if ct is not None else None,
                     turn(None if mr_on is None else mr_on.data), turn(body), cfg, reg)


def restack_to_grid(stack01, geometry, target: Volume, order: int = 1, fill: float = 0.0,
                    slice_indices: Sequence[int] | None = None) -> Volume:
    """Inverse of ``prepare_patient`` for synthesized slices.

    ``stack01`` (Z, S, S) is unfitted slice by slice, restacked into the resampled
    canonical volume described by ``geometry`` (``SliceGeometry`` or ``PreparedPatient``),
    then resampled onto ``target``'s original grid (its exact shape and affine).
    ``slice_indices`` places a partial stack; missing slices and anything outside the
    field of view get ``fill``. Values keep the units of ``stack01``.
    """
    stack01 = np.asarray(stack01, np.float32)
    shape = tuple(int(s) for s in geometry.shape)
    placement = geometry.placement
    if slice_indices is None:
        if stack01.shape[0] != shape[2]:
            raise ValueError(f"stack has {stack01.shape[0]} slices but the grid has {shape[2]}")
        full = unfit(stack01, placement, order=order, fill=fill)
    else:
        full = np.full((shape[2], placement.height, placement.width), fill, np.float32)
        full[np.asarray(slice_indices)] = unfit(stack01, placement, order=order, fill=fill)
    data = volume_from_axial_stack(full)
    if data.shape != shape:
        raise ValueError(f"unfitted slices give a volume of shape {data.shape}, expected {shape}")
    canonical = Volume(data, np.asarray(geometry.affine, np.float64).reshape(4, 4), target.source)
    out = resample_like(canonical, target, order=order, fill=fill)
    return Volume(out.data.astype(np.float32), target.affine.copy(), target.source)
