"""Read any supported volume into a validated RAS+ Volume.

``read_volume`` is the only entry point the rest of the project uses for input
images, so every format is checked the same way (see ``checked_volume``).
Writers live in ``mrgan_tf.io.writers``; suffixes in ``mrgan_tf.io.formats``.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from mrgan_tf.io.formats import DICOM_SUFFIXES, MODALITY_SUFFIXES, NIFTI_SUFFIXES, SITK_SUFFIXES
from mrgan_tf.io.formats import suffix as _suffix
from mrgan_tf.io.volumes import Volume, VolumeError, checked_volume, lps_to_ras

# What nibabel and zlib/gzip raise on missing, truncated or corrupt files.
_NIFTI_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)



def read_volume(path, series_uid: str | None = None) -> Volume:
    """Read a NIfTI / MetaImage / NRRD file, a DICOM series folder, an enhanced (multi-frame)
    DICOM file (.dcm) or an .inv3 project.

    `series_uid` picks one series when a DICOM folder holds several.
    Raises VolumeError (message starts with `path`) for anything unusable.
    """
    path = Path(path)
    if path.is_dir():
        from mrgan_tf.io.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid)
    if not path.exists():
        raise VolumeError(path, "no such file or directory")
    if not path.is_file():
        raise VolumeError(path, "not a regular file or directory")
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path)
    if suffix in SITK_SUFFIXES:
        return _read_sitk(path)
    if suffix in DICOM_SUFFIXES:
        from mrgan_tf.io.dicom import read_dicom_file

        return read_dicom_file(path)
    if suffix == ".inv3":
        from mrgan_tf.io import invesalius

        vol = invesalius.read_inv3(path)
        return checked_volume(vol.data, vol.affine, path)
    raise VolumeError(
        path, f"unsupported format {suffix or '(no suffix)'!r}; expected one of "
        f"{', '.join(NIFTI_SUFFIXES + SITK_SUFFIXES + DICOM_SUFFIXES)}, .inv3 or a DICOM folder"
    )


def _read_nifti(path: Path) -> Volume:
    """nibabel's affine (sform, else qform) and scaled data (scl_slope/inter applied)."""
    try:
        img = nib.load(str(path))
        # float32 straight from the proxy: scl_slope / scl_inter applied, no float64 copy
        data = img.get_fdata(dtype=np.float32, caching="unchanged")
    except _NIFTI_ERRORS as exc:
        raise VolumeError(path, f"cannot read NIfTI file (missing, truncated or corrupt): {exc}") from exc
    return checked_volume(data, img.affine, path)


def _read_sitk(path: Path) -> Volume:
    """SimpleITK image -> (i, j, k) array and RAS+ affine from LPS origin/direction/spacing."""
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:  # SimpleITK reports every I/O problem this way
        raise VolumeError(path, f"cannot read image (missing, truncated or corrupt): {_sitk_reason(exc)}") from exc
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(path, f"{img.GetNumberOfComponentsPerPixel()} components per voxel, expected a scalar image")
    dim = img.GetDimension()
    # GetArrayFromImage gives reversed index order (..., z, y, x); undo it.
    data = sitk.GetArrayViewFromImage(img).transpose(tuple(range(dim))[::-1])
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    lps = np.eye(4)
    n = min(dim, 3)
    lps[:n, :n] = direction[:n, :n] * np.array(img.GetSpacing()[:n])
    lps[:n, 3] = img.GetOrigin()[:n]
    return checked_volume(np.array(data), lps_to_ras(lps), path)


def _sitk_reason(exc: RuntimeError) -> str:
    """The informative lines of a SimpleITK exception, without source locations."""
    lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
    lines = [re.sub(r"^(ITK ERROR: \w+\(0x[0-9a-f]+\): |sitk::ERROR: )", "", ln) for ln in lines]
    lines = [ln for ln in lines if not ln.startswith("Reason:")]  # a stale errno, often wrong
    if not lines:
        return str(exc).strip() or type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def find_modality_file(patient_dir, modality: str) -> Path | None:
    """The one input for `modality` ('ct', 'mr', 'mask') in a patient folder, or None.

    Looks for `<modality>.nii.gz|.nii|.mha|.nrrd|.mhd|.inv3|.dcm` or a `<modality>/`
    DICOM folder; two of them at once is ambiguous and raises VolumeError.
    """
    patient_dir = Path(patient_dir)
    if not patient_dir.is_dir():
        raise VolumeError(patient_dir, "patient folder does not exist")
    found = [patient_dir / f"{modality}{s}" for s in MODALITY_SUFFIXES]
    found = [p for p in found if p.is_file()]
    if (patient_dir / modality).is_dir():
        found.append(patient_dir / modality)
    if len(found) > 1:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found)
        raise VolumeError(patient_dir, f"several {modality} inputs, keep only one: {names}")
    return found[0] if found else None
