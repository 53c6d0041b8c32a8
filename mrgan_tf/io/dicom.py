"""Read one DICOM series into a RAS+ Volume: a folder of single-frame slices, or
enhanced (multi-frame) CT/MR images whose frames carry their own geometry.

Geometry comes only from ImageOrientationPatient, ImagePositionPatient and
PixelSpacing (for a multi-frame image: per frame, from the per-frame or shared
functional groups); slices are ordered by their position along the slice
normal, never by file name, InstanceNumber or frame number. Anything that would
make the stacked volume geometrically wrong (several series, mixed
orientations, gaps, duplicate positions, differing pixel grids) is refused with
a VolumeError, for frames exactly as for files.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import struct
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from mrgan_tf.io.volumes import Volume, VolumeError, checked_volume, lps_to_ras

ORIENTATION_TOL = 1e-4
# A step more than GAP_FACTOR x the median step is a missing slice; any step
# further than UNIFORM_TOL (relative) from the median is non-uniform spacing.
GAP_FACTOR = 1.5
UNIFORM_TOL = 0.10
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def _sop_class(ds) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else "") or "")


def _dcmread(path: Path):
    """Parse one file; None when it is not DICOM at all.

    Files without the 128-byte preamble + 'DICM' (old ACR-NEMA style) are
    re-read with force=True and kept only if they look like an image slice.
    """
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    except (OSError, EOFError, ValueError, KeyError, TypeError, struct.error):
        return None
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:  # forced parsing of arbitrary bytes can fail in any way
        return None
    if "PixelData" not in ds or "ImagePositionPatient" not in ds:
        return None
    if "TransferSyntaxUID" not in ds.file_meta:  # needed to decode pixels; take what parsing found
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _read_images(folder: Path):
    """Image datasets directly in `folder`, plus the DICOM files that hold no pixels.

    Non-DICOM files (README, thumbnails) are skipped; files without pixel data
    (DICOMDIR, reports, or images cut short) are returned separately so that
    a truncated slice of the chosen series is reported instead of dropped.
    """
    images, pixelless = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on every odd element
            ds = _dcmread(path)
        if ds is None:
            continue
        if "PixelData" in ds and _sop_class(ds) != DICOMDIR_SOP_CLASS:
            images.append((path, ds))
        else:
            pixelless.append((path, ds))
    return images, pixelless


def _pick_series(folder: Path, images, series_uid):
    """The images of one series: the only one, or the one ``series_uid`` (a UID or several) names."""
    by_series = collections.defaultdict(list)
    for path, ds in images:
        by_series[str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>"))].append((path, ds))
    listing = "; ".join(
        f"{uid} ({len(members)} images, {members[0][1].get('SeriesDescription', '')!s})"
        for uid, members in sorted(by_series.items())
    )
    if isinstance(series_uid, str):   # one UID asked for: it must be here
        if series_uid not in by_series:
            raise VolumeError(folder, f"series {series_uid} not found; present: {listing}")
        return by_series[series_uid]
    if len(by_series) == 1:           # a list (make_records --series_uid) matters only where there is a choice
        return next(iter(by_series.values()))
    wanted = list(series_uid or ())
    chosen = [uid for uid in wanted if uid in by_series]
    if len(chosen) == 1:
        return by_series[chosen[0]]
    if chosen:
        raise VolumeError(folder, f"--series_uid names {len(chosen)} series of this folder ({', '.join(chosen)}); "
                                  f"name one: {listing}")
    what = "--series_uid names none of them; " if wanted else ""
    raise VolumeError(folder, f"{len(by_series)} series in one folder; {what}choose one with --series_uid=UID "
                              f"(make_records) or move each series into a folder of its own: {listing}")


@dataclasses.dataclass
class _Frame:
    """One 2-D image of a series: a single-frame file or one frame of a multi-frame file."""

    label: str                          # names it in messages: "IM0003" or "ct.dcm frame 7"
    orientation: np.ndarray             # ImageOrientationPatient (6,)
    position: np.ndarray                # ImagePositionPatient (3,)
    grid: tuple                         # (Rows, Columns, row spacing, column spacing)
    pixels: Callable[[], np.ndarray]    # -> float32 modality values [row, column]


def _vector(source: Path, where: str, value, keyword: str, length: int) -> np.ndarray:
    if value is None or len(value) != length:
        raise VolumeError(source, f"{where}: missing or malformed {keyword} (not a cross-sectional image?)")
    return np.array([float(v) for v in value], dtype=np.float64)


def _required(folder: Path, path: Path, ds, keyword: str, length: int) -> np.ndarray:
    return _vector(folder, path.name, ds.get(keyword), keyword, length)


def _check_spacing(folder: Path, labels: list[str], heights: np.ndarray) -> None:
    """Refuse duplicate positions, gaps and non-uniform steps along the normal."""
    steps = np.diff(heights)
    median = float(np.median(steps))
    if np.any(steps < 1e-3):
        i = int(np.argmin(steps))
        raise VolumeError(
            folder,
            f"{labels[i]} and {labels[i + 1]} share slice position {heights[i]:.3f} mm "
            "(several echoes, phases or acquisitions in one series?)",
        )
    for i, step in enumerate(steps):
        if step > GAP_FACTOR * median or abs(step - median) > UNIFORM_TOL * median:
            kind = "gap in the series" if step > GAP_FACTOR * median else "non-uniform slice spacing"
            raise VolumeError(
                folder,
                f"{kind}: {step:.3f} mm between slices at {heights[i]:.3f} mm ({labels[i]}) "
                f"and {heights[i + 1]:.3f} mm ({labels[i + 1]}); median step {median:.3f} mm",
            )


def _decoded(folder: Path, path: Path, ds) -> np.ndarray:
    """All stored values of one file ([row, column], or [frame, row, column] when multi-frame)."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise VolumeError(folder, f"{path.name}: colour image ({ds.get('PhotometricInterpretation')}), expected greyscale")
    try:
        return ds.pixel_array
    except Exception as exc:  # decoders raise many types (missing plugin, corrupt data)
        syntax = ds.file_meta.get("TransferSyntaxUID", "?")
        raise VolumeError(folder, f"{path.name}: cannot decode pixel data ({syntax}): {exc}") from exc


def _rescaled(pixels: np.ndarray, slope, intercept) -> np.ndarray:
    """Stored values -> float32 modality values (RescaleSlope/Intercept, e.g. HU)."""
    slope = float(slope if slope not in (None, "") else 1) or 1.0
    intercept = float(intercept if intercept not in (None, "") else 0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _grid(folder: Path, where: str, ds, spacing) -> tuple:
    return (int(ds.Rows), int(ds.Columns), *_vector(folder, where, spacing, "PixelSpacing", 2))


def _single_frame(folder: Path, path: Path, ds) -> _Frame:
    return _Frame(
        path.name,
        _required(folder, path, ds, "ImageOrientationPatient", 6),
        _required(folder, path, ds, "ImagePositionPatient", 3),
        _grid(folder, path.name, ds, ds.get("PixelSpacing")),
        lambda: _rescaled(_decoded(folder, path, ds), ds.get("RescaleSlope"), ds.get("RescaleIntercept")),
    )


def _functional_group(ds, frame: int, sequence: str):
    """The item of functional-group ``sequence`` that applies to ``frame``: per-frame first, then shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is not None and len(items) > index and sequence in items[index]:
            inner = items[index].get(sequence)
            if len(inner):
                return inner[0]
    return None


def _frame_value(ds, frame: int, sequence: str, keyword: str):
    item = _functional_group(ds, frame, sequence)
    return None if item is None else item.get(keyword)


def _multi_frame(folder: Path, path: Path, ds) -> list[_Frame]:
    """The frames of an enhanced (multi-frame) image, each with its own plane position and orientation."""
    n = int(ds.NumberOfFrames)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None:
        raise VolumeError(folder, f"{path.name}: multi-frame image without PerFrameFunctionalGroupsSequence "
                                  "(no per-frame geometry; not an enhanced CT/MR image?)")
    if len(per_frame) != n:
        raise VolumeError(folder, f"{path.name}: PerFrameFunctionalGroupsSequence has {len(per_frame)} items "
                                  f"for NumberOfFrames {n}")
    decoded = {}

    def frame_pixels(f: int):
        def load():
            if "all" not in decoded:
                decoded["all"] = _decoded(folder, path, ds).reshape(n, int(ds.Rows), int(ds.Columns))
            slope = _frame_value(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _frame_value(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
            if slope is None and intercept is None:
                slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
            return _rescaled(decoded["all"][f], slope, intercept)
        return load

    frames = []
    for f in range(n):
        where = f"{path.name} frame {f + 1}"
        frames.append(_Frame(
            where,
            _vector(folder, where, _frame_value(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient"),
                    "ImageOrientationPatient (PlaneOrientationSequence)", 6),
            _vector(folder, where, _frame_value(ds, f, "PlanePositionSequence", "ImagePositionPatient"),
                    "ImagePositionPatient (PlanePositionSequence)", 3),
            _grid(folder, where, ds, _frame_value(ds, f, "PixelMeasuresSequence", "PixelSpacing")),
            frame_pixels(f),
        ))
    return frames


def _frames(folder: Path, path: Path, ds) -> list[_Frame]:
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return _multi_frame(folder, path, ds)
    return [_single_frame(folder, path, ds)]


def _header(ds):
    """The dataset without pixels or functional groups: the study, patient and series a derived image keeps."""
    skip = {"PixelData", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"}
    header = pydicom.Dataset()
    for elem in ds:
        if elem.keyword not in skip:
            header.add(elem)
    return header


def _stack(source: Path, frames: list[_Frame], header) -> Volume:
    """Check the frames form one regular 3-D grid and stack them into a Volume.

    data[i, j, k] is column i, row j of the k-th slice along the slice normal
    (row direction x column direction), so the affine maps indices exactly as
    the DICOM geometry says.
    """
    if len(frames) == 1:
        raise VolumeError(source, "only 1 slice, need a 3-D series")
    orientations = np.array([f.orientation for f in frames])
    if np.max(np.abs(orientations - orientations[0])) > ORIENTATION_TOL:
        distinct = np.unique(orientations.round(4), axis=0)
        raise VolumeError(
            source,
            f"mixed orientations in one series ({len(distinct)} distinct ImageOrientationPatient: "
            f"{[o.tolist() for o in distinct]}); localizers or several stacks?",
        )
    row_dir, col_dir = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise VolumeError(source, f"ImageOrientationPatient {orientations[0].tolist()} is not two orthonormal vectors")

    positions = np.array([f.position for f in frames])
    order = np.argsort(positions @ normal, kind="stable")
    frames = [frames[i] for i in order]
    positions = positions[order]
    _check_spacing(source, [f.label for f in frames], positions @ normal)

    grids = {f.grid for f in frames}
    if len(grids) > 1:
        raise VolumeError(source, f"slices differ in size or PixelSpacing: {sorted(grids)}")
    row_spacing, col_spacing = next(iter(grids))[2:]

    # pixels are [row, column]; transpose so that i runs along a row.
    data = np.stack([f.pixels().T for f in frames], axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # i: next column, moves along the row direction
    lps[:3, 1] = col_dir * row_spacing  # j: next row, moves along the column direction
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(frames) - 1)  # keeps gantry tilt exact
    lps[:3, 3] = positions[0]
    return checked_volume(data, lps_to_ras(lps), source, header)


def read_dicom_series(folder, series_uid: str | None = None) -> Volume:
    """Stack the slices (or frames) of one series in `folder` into a Volume (float32, RAS+ affine)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeError(folder, "not a directory (expected a folder of DICOM slices)")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise VolumeError(folder, "folder is not readable")
    images, pixelless = _read_images(folder)
    if not images:
        raise VolumeError(folder, "no DICOM images in this folder")
    series = _pick_series(folder, images, series_uid)
    classes = {_sop_class(ds) for _, ds in series}
    broken = [p.name for p, ds in pixelless if _sop_class(ds) in classes]
    if broken:
        raise VolumeError(folder, f"image file(s) without pixel data, truncated? {', '.join(broken)}")
    frames = [frame for path, ds in series for frame in _frames(folder, path, ds)]
    return _stack(folder, frames, _header(series[0][1]))


def read_dicom_file(path) -> Volume:
    """One enhanced (multi-frame) CT/MR file as a Volume; a single-frame file is one slice, not a volume."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _dcmread(path)
    if ds is None:
        raise VolumeError(path, "not a DICOM file (or unreadable)")
    if "PixelData" not in ds:
        raise VolumeError(path, "DICOM file without pixel data (truncated, or not an image)")
    if int(ds.get("NumberOfFrames", 1) or 1) <= 1:
        raise VolumeError(path, "a single-frame DICOM file is one slice; give the folder of its series instead")
    return _stack(path, _multi_frame(path, path, ds), _header(ds))
