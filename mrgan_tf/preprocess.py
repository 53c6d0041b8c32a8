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
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    bits: int = 8
    min_foreground: float = 0.05
    body_threshold_hu: float = -500.0
    register: bool = False
    register_skull_hu: float = 300.0
    register_model: str = "rigid"  # or "affine" (the paper); see registration.register_affine

    def __post_init__(self):
        self.mr_percentiles = tuple(float(p) for p in self.mr_percentiles)
        problems = []
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
        if problems:
            raise ValueError("invalid PreprocessConfig: " + "; ".join(problems))
        self.image_size = int(self.image_size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mr_percentiles"] = list(self.mr_percentiles)
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

    New shape = round(extent / spacing); the new grid is centred on the old field of
    view (voxel-centre convention as nibabel), so world positions are preserved.
    """
    new_sp = np.broadcast_to(np.asarray(spacing_mm, np.float64), (3,))
    old_sp = vol.spacing
    if np.allclose(new_sp, old_sp, rtol=0, atol=1e-6):
        return vol
    shape = np.array(vol.shape, np.float64)
    new_shape = np.maximum(1, np.round(shape * old_sp / new_sp)).astype(int)
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


def window_ct(hu, center: float = 40.0, width: float = 80.0) -> np.ndarray:
    """HU -> [0, 1] through the display window (paper: center 40, width 80)."""
    hu = np.asarray(hu, np.float32)
    return np.clip((hu - (center - width / 2)) / width, 0.0, 1.0).astype(np.float32)


def unwindow_ct(q01, center: float = 40.0, width: float = 80.0) -> np.ndarray:
    """[0, 1] -> HU (inverse of ``window_ct`` inside the window)."""
    return (np.asarray(q01, np.float32) * width + (center - width / 2)).astype(np.float32)


def window_ct_tf(hu, center: float = 40.0, width: float = 80.0):
    """TensorFlow twin of ``window_ct`` for serving graphs."""
    import tensorflow as tf

    hu = tf.cast(hu, tf.float32)
    return tf.clip_by_value((hu - (center - width / 2)) / width, 0.0, 1.0)


def unwindow_ct_tf(q01, center: float = 40.0, width: float = 80.0):
    """TensorFlow twin of ``unwindow_ct``."""
    import tensorflow as tf

    return tf.cast(q01, tf.float32) * width + (center - width / 2)


def mr_range(mr, mask=None, percentiles: Sequence[float] = (0.5, 99.5)) -> tuple[float, float]:
    """Robust (lo, hi) of the MR intensities inside ``mask`` (all voxels if empty/None)."""
    mr = np.asarray(mr)
    values = mr[np.asarray(mask, bool)] if mask is not None and np.any(mask) else mr.ravel()
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if not hi > lo:  # constant image: keep a unit range so normalisation stays finite
        hi = lo + 1.0
    return lo, hi


def normalise_mr(mr, lo: float, hi: float) -> np.ndarray:
    """MR intensity -> [0, 1] with the per-volume robust range."""
    return np.clip((np.asarray(mr, np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def denormalise_mr(q01, lo: float, hi: float) -> np.ndarray:
    return (np.asarray(q01, np.float32) * (hi - lo) + lo).astype(np.float32)


def _qmax(bits: int) -> int:
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    return (1 << bits) - 1


def quantise(q01, bits: int = 8) -> np.ndarray:
    """[0, 1] -> uint8 (x255) or uint16 (x65535), rounded to nearest."""
    dtype = np.uint8 if bits == 8 else np.uint16
    qmax = _qmax(bits)
    return np.round(np.clip(np.asarray(q01, np.float32), 0.0, 1.0) * qmax).astype(dtype)


def dequantise(q, bits: int = 8) -> np.ndarray:
    return (np.asarray(q, np.float32) / _qmax(bits)).astype(np.float32)


def to_model_range(q01):
    """[0, 1] -> [-1, 1] (the generator's tanh range). Works on numpy and TF tensors."""
    return 2.0 * q01 - 1.0


def from_model_range(x):
    return (x + 1.0) / 2.0


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


def fit_to_size(img, size: int, mode: str = "pad", pad_value: float | None = None,
                order: int = 1) -> tuple[np.ndarray, Placement]:
    """Bring a (H, W) image or (Z, H, W) stack to (size, size).

    "pad": centred pad/crop at the same pixel size. "resize": scale the longer side
    to ``size`` (aspect preserved), then centre-pad. Padding uses ``pad_value``
    (default: the image minimum).
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
    placement.row_offset, placement.col_offset = (size - sh) // 2, (size - sw) // 2
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

    @property
    def geometry(self) -> SliceGeometry:
        return SliceGeometry(self.affine, self.shape, self.placement)


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

    def fitted(q01_volume: np.ndarray, order: int) -> tuple[np.ndarray, Placement]:
        return fit_to_size(axial_stack(q01_volume), size, mode, pad_value=0, order=order)

    mask_stack, placement = fitted(body.astype(np.uint8), order=0)
    keep = mask_stack.reshape(mask_stack.shape[0], -1).mean(axis=1) >= cfg.min_foreground
    ct_q = mr_q = rng = None
    if ct is not None:
        ct_q = quantise(fitted(window_ct(ref.data, cfg.ct_window_center, cfg.ct_window_width), 1)[0], cfg.bits)
    if mr_on is not None:
        rng = mr_range(mr_on.data, body, cfg.mr_percentiles)
        mr_q = quantise(fitted(normalise_mr(mr_on.data, *rng), 1)[0], cfg.bits)
    return PreparedPatient(ct=ct_q, mr=mr_q, mask=mask_stack.astype(np.uint8), keep=keep, placement=placement,
                           affine=ref.affine.copy(), shape=tuple(int(s) for s in ref.shape), mr_range=rng,
                           registration=reg)


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
