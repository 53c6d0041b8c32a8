"""Read InVesalius 3 project files (``.inv3``) as a Volume.

An ``.inv3`` file is a gzipped tar of plist files plus raw arrays. The main
plist (``main.plist``) names the image file (``matrix.dat``), its numpy dtype
and shape ``(z, y, x)``, and the spacing ``(x, y, z)`` in mm. Everything is
read in memory; nothing is extracted to disk.

Orientation (InVesalius stores no direction cosines, so it is decided here and
checked by eye on Debian's ``Cranium.inv3`` head CT):

- z (slice) index runs inferior -> superior: slice 0 is at the skull base,
  the last slice at the vertex (sagittal and coronal views);
- y (row) index runs posterior -> anterior: the headrest arc is at row 0 and
  the frontal sinuses and nose at high rows (InVesalius flips DICOM rows,
  which run anterior -> posterior, into VTK's bottom-up order);
- x (column) index keeps DICOM's column order, patient right -> left
  (not visible in a symmetric head; it follows from only rows being flipped).

The returned Volume has voxel order (i, j, k) = (x, y, z), so its affine maps
i -> -x (towards L), j -> +y (A), k -> +z (S) in RAS+ mm: an LAS voxel order,
which ``preprocess.to_canonical`` turns into RAS like any other file.
"""
from __future__ import annotations

import plistlib
import tarfile
from pathlib import Path

import numpy as np

from mrgan_tf.io.volumes import Volume, VolumeError

MAIN_PLIST = "main.plist"
# Voxel axis (i=x, j=y, k=z) -> signed RAS axis direction, see module docstring.
_AXIS_SIGNS = np.array([-1.0, 1.0, 1.0])


def _member(tar: tarfile.TarFile, name: str, path) -> tarfile.TarInfo:
    """The archive member whose base name is `name` (projects keep files in a temp folder)."""
    for m in tar.getmembers():
        if m.isfile() and Path(m.name).name == name:
            return m
    raise VolumeError(path, f"not an InVesalius project: no {name} inside")


def _read_member(tar: tarfile.TarFile, name: str, path) -> bytes:
    fobj = tar.extractfile(_member(tar, name, path))
    if fobj is None:
        raise VolumeError(path, f"cannot read {name} inside the archive")
    return fobj.read()


def _matrix_info(main: dict, path) -> tuple[str, np.dtype, tuple[int, int, int], np.ndarray]:
    """Validate main.plist's matrix entry and spacing; return filename, dtype, shape, spacing."""
    try:
        matrix = main["matrix"]
        filename = str(matrix["filename"])
        dtype = np.dtype(matrix["dtype"]).newbyteorder("<")
        shape = tuple(int(s) for s in matrix["shape"])
        spacing = np.asarray(main["spacing"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise VolumeError(path, f"main.plist has no usable matrix/spacing entry ({e!r})") from e
    if len(shape) != 3 or min(shape) < 1:
        raise VolumeError(path, f"matrix shape {shape} is not a 3-D volume")
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise VolumeError(path, f"spacing {spacing.tolist()} is not three positive numbers")
    return filename, dtype, shape, spacing


def read_inv3(path) -> Volume:
    """Read the image of an InVesalius project; HU (for CT) kept as stored, float32."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            try:
                main = plistlib.loads(_read_member(tar, MAIN_PLIST, path))
            except plistlib.InvalidFileException as e:
                raise VolumeError(path, f"main.plist is not a valid plist ({e})") from e
            filename, dtype, shape, spacing = _matrix_info(main, path)
            raw = _read_member(tar, Path(filename).name, path)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise VolumeError(path, f"cannot read as an InVesalius .inv3 archive ({e})") from e

    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise VolumeError(
            path, f"{filename} has {len(raw)} bytes, expected {expected} for {dtype} {shape}")
    zyx = np.frombuffer(raw, dtype=dtype).reshape(shape)
    data = np.ascontiguousarray(zyx.transpose(2, 1, 0)).astype(np.float32)  # (x, y, z)

    affine = np.eye(4)
    affine[:3, :3] = np.diag(_AXIS_SIGNS * spacing)  # spacing is stored as (x, y, z)
    # Put the volume's centre at the world origin (the project has no position).
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(data.shape) - 1) / 2.0)
    return Volume(data, affine, str(path))
