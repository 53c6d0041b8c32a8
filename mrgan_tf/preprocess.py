"""Preprocessing: volumes on disk -> quantised, fixed-size axial slices, and back.

Small composable steps (geometry, intensity, masks, slices) plus two high-level
functions: ``prepare_patient`` (used by make_records and synthesize) and its
inverse ``restack_to_grid``. Conventions (orientation, windows, quantisation)
are those of docs/DESIGN.md; this module is the only place that implements them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from mrgan_tf.intensity import (  # noqa: F401  (re-exported: the intensity steps of this pipeline)
    ct_from_unit, ct_to_unit, denormalise_mr, dequantise, from_model_range, mr_range, normalise_mr, quantise,
    to_model_range, unwindow_ct, unwindow_ct_tf, window_ct, window_ct_tf)
from mrgan_tf.io.volumes import Volume, VolumeError

FIT_MODES = ("pad", "resize")


# --------------------------------------------------------------------------- config


@dataclasses.dataclass
class PreprocessConfig:
    """Every preprocessing parameter; stored in dataset.json and read back by all stages."""

    spacing_mm: float = 1.0
    image_size: int = 256
    fit: str = "pad"
    ct_window_center: float = 40.0
    ct_window_width: float = 80.0
    # HU interval stored as [0, 1] instead of the window, e.g. (-1024, 3000) for a synthetic CT in
    # real HU (SynthRAD's clip); None keeps the paper's window. Needs bits=16.
    ct_range: tuple[float, float] | None = None
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    bits: int = 8
    # Keep a slice when its body area is at least this fraction of the patient's largest body
    # slice (independent of the canvas size, so a larger image_size keeps the same slices).
    min_foreground: float = 0.15
    # Largest fraction of a patient's body voxels that may fall outside the canvas (pad fit).
    max_body_loss: float = 0.005
    body_threshold_hu: float = -500.0
    register: bool = False
    register_skull_hu: float = 300.0
    register_model: str = "rigid"  # or "affine" (the paper); see registration.register_affine

    def __post_init__(self):
        self.mr_percentiles = tuple(float(p) for p in self.mr_percentiles)
        problems = []
        if self.ct_range is not None:
            self.ct_range = tuple(float(v) for v in self.ct_range)
            if len(self.ct_range) != 2 or not np.all(np.isfinite(self.ct_range)) \
                    or not self.ct_range[0] < self.ct_range[1]:
                problems.append(f"ct_range must be two finite HU values lo,hi with lo < hi, got {self.ct_range}")
            elif self.bits != 16:
                step = (self.ct_range[1] - self.ct_range[0]) / 255
                problems.append(f"ct_range {self.ct_range[0]:g},{self.ct_range[1]:g} at bits=8 would store CT in "
                                f"{step:.1f} HU steps; use bits=16 (--bits=16)")
        if not self.spacing_mm > 0:
            problems.append(f"spacing_mm must be > 0, got {self.spacing_mm}")
        if int(self.image_size) != self.image_size or self.image_size < 8:
            problems.append(f"image_size must be an integer >= 8, got {self.image_size}")
        if self.fit not in FIT_MODES:
            problems.append(f"fit must be one of {FIT_MODES}, got {self.fit!r}")
        if not self.ct_window_width > 0:
            problems.append(f"ct_window_width must be > 0, got {self.ct_window_width}")
        lo, hi = self.mr_percentiles if len(self.mr_percentiles) == 2 else (None, None)
        if lo is None or not 0 <= lo < hi <= 100:
            problems.append(f"mr_percentiles must be (lo, hi) with 0 <= lo < hi <= 100, got {self.mr_percentiles}")
        if self.bits not in (8, 16):
            problems.append(f"bits must be 8 or 16, got {self.bits}")
        if self.register_model not in ("rigid", "affine"):
            problems.append(f"register_model must be 'rigid' or 'affine', got {self.register_model!r}")
        if not 0 <= self.min_foreground <= 1:
            problems.append(f"min_foreground must be in [0, 1], got {self.min_foreground}")
        if not 0 <= self.max_body_loss <= 1:
            problems.append(f"max_body_loss must be in [0, 1], got {self.max_body_loss}")
        if problems:
            raise ValueError("invalid PreprocessConfig: " + "; ".join(problems))
        self.image_size = int(self.image_size)

    @property
    def ct_hu_range(self) -> tuple[float, float]:
        """The HU interval that the stored CT's [0, 1] spans (``ct_range`` or the window)."""
        if self.ct_range is not None:
            return self.ct_range
        return (self.ct_window_center - self.ct_window_width / 2, self.ct_window_center + self.ct_window_width / 2)

    @property
    def ct_full_range(self) -> bool:
        """True when CT is stored over a full HU range rather than the paper's display window."""
        return self.ct_range is not None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mr_percentiles"] = list(self.mr_percentiles)
        d["ct_range"] = None if self.ct_range is None else list(self.ct_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        """Missing keys take defaults (older specs); unknown keys are an error (typos)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PreprocessConfig keys: {unknown}")
        return cls(**d)


# --------------------------------------------------------------------------- geometry


def to_canonical(vol: Volume) -> Volume:
    """Reorder/flip axes so the affine is closest to RAS+ (nibabel.as_closest_canonical)."""
    from nibabel import orientations

    ornt = orientations.io_orientation(vol.affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return vol
    data = np.ascontiguousarray(orientations.apply_orientation(vol.data, ornt))
    affine = vol.affine @ orientations.inv_ornt_aff(ornt, vol.shape)
    return Volume(data, affine, vol.source)


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


# --------------------------------------------------------------------------- intensities
# The intensity steps and their TensorFlow twins live in mrgan_tf.intensity (imported above).


# --------------------------------------------------------------------------- masks


def _largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3-D connected component, then fill holes slice by slice (axial)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(mask.shape, bool)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    else:
        mask = labels > 0
    if mask.ndim != 3:
        return ndimage.binary_fill_holes(mask)
    # Holes per axial slice: background regions (in-plane connectivity) not touching the slice edge.
    # One labelling pass; much faster than binary_fill_holes' iterated dilation on big volumes.
    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(~mask, structure=structure)
    border = np.zeros(n + 1, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        border[edge] = True
    border[0] = True  # label 0 = the mask itself
    return mask | ~border[labels]


def body_mask_from_ct(hu, threshold: float = -500.0) -> np.ndarray:
    """Body = largest connected region above ``threshold`` HU, holes filled (drops table/headrest)."""
    return _largest_component_filled(np.asarray(hu) > threshold)


def body_mask_from_mr(mr) -> np.ndarray:
    """Body from MR: Otsu threshold, then largest component with holes filled."""
    from skimage.filters import threshold_otsu

    mr = np.asarray(mr, np.float32)
    sample = mr.ravel()[:: max(1, mr.size // 2_000_000)]  # Otsu on a subsample: same threshold, faster
    if sample.min() == sample.max():
        return np.zeros(mr.shape, bool)
    return _largest_component_filled(mr > threshold_otsu(sample))


# --------------------------------------------------------------------------- slices


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


# --------------------------------------------------------------------------- patients


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


def _register_mr_to_ct(ct_c: Volume, mr: Volume, body: np.ndarray, cfg: PreprocessConfig) -> dict:
    from mrgan_tf import registration

    fixed_mask = body & (ct_c.data < cfg.register_skull_hu)
    result = registration.register_affine(ct_c, mr, fixed_mask=fixed_mask, model=cfg.register_model)
    return {"metric": result.metric, "transform": result.transform.tolist(),
            "iterations": result.iterations, "stop_reason": result.stop_reason}


def prepare_patient(ct: Volume | None, mr: Volume | None, mask: Volume | None,
                    cfg: PreprocessConfig) -> PreparedPatient:
    """Canonical, resampled, aligned, masked, windowed, fitted and quantised slices of one patient.

    The CT grid (after ``to_canonical`` + ``resample_to_spacing``) is the reference;
    MR-only patients use the MR grid. MR is put on the CT grid by world coordinates,
    or by affine MI registration when ``cfg.register``.
    """
    if ct is None and mr is None:
        raise ValueError("prepare_patient needs a CT or an MR volume")
    ref_in = ct if ct is not None else mr
    ref = resample_to_spacing(to_canonical(ref_in), cfg.spacing_mm, order=1)

    if mask is not None:
        body = resample_like(mask, ref, order=0, fill=0).data > 0.5
    elif ct is not None:
        body = body_mask_from_ct(ref.data, cfg.body_threshold_hu)
    else:
        body = None  # from MR below

    reg = None
    mr_on = None
    if mr is not None and ct is not None:
        mr = to_canonical(mr)  # cheap axis reorder; often lands exactly on the CT grid
        mr_fill = float(np.min(mr.data))
        if cfg.register:
            reg = _register_mr_to_ct(ref, mr, body, cfg)
            mr_on = resample_like(mr, ref, order=1, transform=np.array(reg["transform"]), fill=mr_fill)
        else:
            frac = overlap_fraction(mr, ref)
            if frac < 0.5:
                raise VolumeError(mr.source, f"does not overlap {ct.source}: only {frac:.0%} of the MR field "
                                             "of view lies inside the CT's (use --register or check the pair)")
            mr_on = resample_like(mr, ref, order=1, fill=mr_fill)
    elif mr is not None:
        mr_on = ref
    if body is None:
        body = body_mask_from_mr(mr_on.data)

    size, mode = cfg.image_size, cfg.fit
    box = body_box(axial_stack(body))

    def fitted(q01_volume: np.ndarray, order: int) -> tuple[np.ndarray, Placement]:
        return fit_to_size(axial_stack(q01_volume), size, mode, pad_value=0, order=order, keep_box=box)

    mask_stack, placement = fitted(body.astype(np.uint8), order=0)
    body_voxels = int(np.count_nonzero(body))
    outside = max(0, body_voxels - int(np.count_nonzero(mask_stack))) if mode == "pad" else 0
    keep = keep_slices(mask_stack, cfg.min_foreground)
    ct_q = mr_q = rng = None
    if ct is not None:
        ct_q = quantise(fitted(ct_to_unit(ref.data, cfg), 1)[0], cfg.bits)
    if mr_on is not None:
        rng = mr_range(mr_on.data, body, cfg.mr_percentiles)
        mr_q = quantise(fitted(normalise_mr(mr_on.data, *rng), 1)[0], cfg.bits)
    return PreparedPatient(ct=ct_q, mr=mr_q, mask=mask_stack.astype(np.uint8), keep=keep, placement=placement,
                           affine=ref.affine.copy(), shape=tuple(int(s) for s in ref.shape), mr_range=rng,
                           registration=reg, body_voxels=body_voxels, body_voxels_outside=outside)


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
