"""Write a Volume as NIfTI, MetaImage/NRRD or a DICOM series: one entry point, ``write_volume``.

The format comes from the output path (``.nii``/``.nii.gz``, ``.mha``,
``.nrrd``; a name without one of those suffixes is a DICOM series folder) or
from an explicit ``out_format`` that must agree with it. Every output is
written under a temporary name and renamed when complete, and an existing
output is refused unless ``overwrite``. Integer outputs are quantised in
``mrgan_tf.io.quantise``: what does not fit is clipped and reported.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from mrgan_tf.io.formats import NIFTI_SUFFIXES
from mrgan_tf.io.formats import suffix as _suffix
from mrgan_tf.io.quantise import quantise
from mrgan_tf.io.volumes import LPS_TO_RAS, Volume, VolumeError
from tfrecords_tools.atomic import atomic_output

FORMAT_SUFFIXES = {"nifti": (".nii.gz", ".nii"), "mha": (".mha",), "nrrd": (".nrrd",), "dicom": ()}
FORMATS = tuple(FORMAT_SUFFIXES)
DTYPES = ("float32", "int16", "uint16", "uint8")
MODALITIES = ("CT", "MR")
# Suffixes that name a file this module cannot write (rather than a DICOM folder).
_OTHER_FILE_SUFFIXES = (".mhd", ".nhdr", ".dcm", ".png", ".jpg", ".tif", ".tiff", ".raw", ".gz", ".zip")


def output_format(path, out_format: str | None = None) -> str:
    """The format of ``path``: its suffix, or ``out_format`` when given (which must agree with the suffix)."""
    path = Path(path)
    suffix = _suffix(path)
    by_suffix = next((f for f, sufs in FORMAT_SUFFIXES.items() if suffix in sufs), None)
    if out_format is not None and out_format not in FORMATS:
        raise VolumeError(path, f"unknown output format {out_format!r}; choose one of {', '.join(FORMATS)}")
    if by_suffix is None and suffix in _OTHER_FILE_SUFFIXES:
        raise VolumeError(path, f"cannot write {suffix} files; name the output .nii.gz, .nii, .mha, .nrrd, "
                                "or a folder (no suffix) for a DICOM series")
    if out_format is None:
        return by_suffix or "dicom"
    if by_suffix is not None and by_suffix != out_format:
        raise VolumeError(path, f"--out_format={out_format} but the name ends in {suffix} ({by_suffix})")
    if by_suffix is None and out_format != "dicom":
        raise VolumeError(path, f"--out_format={out_format} needs a name ending in "
                                f"{' or '.join(FORMAT_SUFFIXES[out_format])}")
    return out_format


def output_name(stem: str, out_format: str) -> str:
    """``stem`` with the format's usual suffix (a DICOM series is a folder named ``stem``)."""
    return stem + (FORMAT_SUFFIXES[out_format][0] if FORMAT_SUFFIXES[out_format] else "")


def beside(path, tag: str) -> Path:
    """A name beside ``path`` in the same format, ``tag`` before its suffix: ``syn_ct.nii.gz`` ->
    ``syn_ct_sd.nii.gz``, a DICOM folder ``syn_ct`` -> ``syn_ct_sd``."""
    path = Path(path)
    known = _suffix(path)
    fmt_suffix = known if any(known in sufs for sufs in FORMAT_SUFFIXES.values()) else ""
    stem = path.name[:-len(fmt_suffix)] if fmt_suffix else path.name
    return path.with_name(stem + tag + path.name[len(stem):])


def output_dtype(out_format: str, modality: str, dtype: str | None = None, path="<output>") -> np.dtype:
    """The stored type: CT int16 HU and MR float32 in files, int16 CT / uint16 MR in DICOM.

    Refuses types the image cannot have: a CT holds negative HU, so no unsigned
    type; a DICOM series stores integers (CT int16 with slope 1, MR uint16 rescaled).
    """
    if modality not in MODALITIES:
        raise VolumeError(path, f"modality must be one of {MODALITIES}, got {modality!r}")
    if dtype is not None and dtype not in DTYPES:
        raise VolumeError(path, f"--out_dtype={dtype}: choose one of {', '.join(DTYPES)}")
    if out_format == "dicom":
        want = {"CT": "int16", "MR": "uint16"}[modality]
        if dtype not in (None, want):
            raise VolumeError(path, f"--out_dtype={dtype}: a DICOM {modality} series is stored as {want}")
        return np.dtype(want)
    if modality == "CT" and dtype in ("uint8", "uint16"):
        raise VolumeError(path, f"--out_dtype={dtype}: a CT is in HU and holds negative values (air -1000); "
                                "use int16 or float32")
    return np.dtype(dtype or {"CT": "int16", "MR": "float32"}[modality])


def check_output(path, out_format: str | None = None, modality: str = "MR", dtype: str | None = None,
                 overwrite: bool = False) -> tuple[str, np.dtype]:
    """Everything about an output that can be refused before any work is done: (format, stored type)."""
    fmt = output_format(path, out_format)
    stored = output_dtype(fmt, modality, dtype, path)
    path = Path(path)
    if path.exists() and (path.is_dir() != (fmt == "dicom")):   # first: --overwrite would not help
        raise VolumeError(path, f"exists and is a {'folder' if path.is_dir() else 'file'}, and a {fmt} output is a "
                                f"{'folder' if fmt == 'dicom' else 'file'}; choose another output name "
                                "(--overwrite never replaces a file with a folder or the reverse)")
    if path.exists() and not overwrite:
        raise VolumeError(path, "output already exists (use --overwrite to replace it)")
    return fmt, stored


def write_nifti(vol: Volume, path, dtype=np.float32) -> Path:
    """Write `vol` as NIfTI-1 (`.nii` or `.nii.gz`) without ever leaving a partial file.

    The affine goes into both sform and qform (code 'scanner'); sform keeps
    shears, and readers prefer it. NIfTI stores it as float32. Integer dtypes
    are rounded and must fit the type, so masks and labels are never wrapped.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in NIFTI_SUFFIXES:
        raise VolumeError(path, "output name must end in .nii or .nii.gz")
    dtype = np.dtype(dtype)
    data = np.asarray(vol.data)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.rint(data)
        if data.size and (data.min() < info.min or data.max() > info.max):
            raise VolumeError(path, f"values {data.min()}..{data.max()} do not fit {dtype}")
    img = nib.Nifti1Image(data.astype(dtype), vol.affine)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    img.set_sform(vol.affine, code="scanner")
    img.set_qform(vol.affine, code="scanner")
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0

    with atomic_output(path, suffix=suffix) as tmp:   # the suffix tells nibabel to compress
        nib.save(img, tmp)
    return path


def write_sitk(vol: Volume, path, data: np.ndarray | None = None, compress: bool = True) -> Path:
    """Write `vol` (or `data` on its grid) as MetaImage (.mha) or NRRD (.nrrd) with LPS geometry, atomically."""
    import SimpleITK as sitk

    path = Path(path)
    suffix = _suffix(path)
    if suffix not in (".mha", ".nrrd"):
        raise VolumeError(path, "output name must end in .mha or .nrrd")
    lps = LPS_TO_RAS @ vol.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(vol.data if data is None else data).transpose(2, 1, 0)))
    img.SetSpacing(spacing.tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    with atomic_output(path, suffix=suffix) as tmp:
        sitk.WriteImage(img, tmp, useCompression=compress)
    return path


def write_volume(vol: Volume, path, out_format: str | None = None, modality: str = "MR", dtype: str | None = None,
                 overwrite: bool = False, series=None, header=None, progress: bool = False) -> dict:
    """Write ``vol`` (values in output units: HU for CT) as ``path`` in the chosen format.

    ``series`` (``dicom_write.SeriesInfo``) and ``header`` (the source's DICOM
    dataset; default ``vol.header``) are used for a DICOM series. Returns what
    was written, including the quantisation and what was clipped (``clipped``:
    a sentence, or None).
    """
    fmt, stored = check_output(path, out_format, modality, dtype, overwrite)
    if fmt == "dicom":
        from mrgan_tf.io.dicom_write import write_dicom_series

        return write_dicom_series(vol, path, modality, series, vol.header if header is None else header,
                                  overwrite, progress)
    report = {"format": fmt, "path": str(path), "dtype": str(stored), "clipped": None, "quantisation": None}
    data = np.asarray(vol.data, np.float32)
    if np.issubdtype(stored, np.integer):
        q = quantise(data, stored)
        data = q.stored
        report.update(quantisation=q.report(), clipped=q.summary("HU" if modality == "CT" else ""))
    if fmt == "nifti":
        write_nifti(vol.with_data(data), path, stored)
    else:
        write_sitk(vol, path, data.astype(stored, copy=False))
    return report
