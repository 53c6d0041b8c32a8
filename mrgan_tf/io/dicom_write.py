"""Write a Volume as a classic DICOM series (one CT or MR Image Storage file per slice).

What planning systems and PACSs check, and why each is done here:
- new SeriesInstanceUID and SOPInstanceUIDs (a derived series that reuses the
  source's UIDs overwrites or is rejected as a duplicate);
- the source's StudyInstanceUID, FrameOfReferenceUID and patient module when
  the input was DICOM (a new frame of reference makes the series unregistered
  to the planning CT); otherwise the same generated UIDs for every output of
  one patient, so a synthetic MR and a synthetic CT of a patient share a study
  and a frame of reference;
- one slice per file on the volume's own grid: ImagePositionPatient per slice,
  ImageOrientationPatient, PixelSpacing, SliceThickness and
  SpacingBetweenSlices written from the affine, nothing resampled;
- ImageType DERIVED\\SECONDARY, and a SeriesDescription that says what made it.

The folder is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from mrgan_tf.io.quantise import Quantised, fitting_rescale, quantise
from mrgan_tf.io.volumes import LPS_TO_RAS, Volume, VolumeError
from tfrecords_tools.atomic import swap_in_directory

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
STORED_DTYPES = {"CT": np.int16, "MR": np.uint16}
ORTHOGONAL_TOL = 1e-6
GENERATED_STUDY_ID = "mrgan-tf"
# Copied from the source image when there is one: patient, study and frame of reference.
PATIENT_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID", "PatientBirthDate",
                    "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence", "OtherPatientNames", "EthnicGroup",
                    "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
                    "DeidentificationMethodCodeSequence", "PatientAge", "PatientSize", "PatientWeight")
STUDY_KEYWORDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
                  "AccessionNumber", "StudyDescription")
FRAME_KEYWORDS = ("FrameOfReferenceUID", "PositionReferenceIndicator")
SERIES_KEYWORDS = ("PatientPosition", "BodyPartExamined", "Laterality")
# Type 2 attributes: present, empty when unknown.
TYPE2_EMPTY = {
    "common": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator",
               "PatientPosition"),
    "CT": ("KVP", "AcquisitionNumber"),
    "MR": ("ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength"),
}


@dataclasses.dataclass
class SeriesInfo:
    """What the series says about itself; the rest comes from the volume and its source header."""

    description: str = "mrgan-tf synthetic image"   # SeriesDescription (LO: 64 characters at most)
    series_number: int | None = None                 # default: the source's + 1000, else 1000
    patient_id: str = "anonymous"                    # used only when the source is not DICOM
    patient_key: str | None = None                   # seeds the generated study/frame UIDs (default patient_id)
    body_part: str | None = None                     # BodyPartExamined when the source does not say (e.g. HEAD)
    derivation: str = ""                             # DerivationDescription
    comments: str = ""                               # ImageComments (what a reader must know: e.g. not for dose)
    manufacturer: str = "mrgan-tf"
    model_name: str = "MR-GAN"                       # ManufacturerModelName
    software_version: str = ""                       # SoftwareVersions


def _ds(x: float) -> str:
    return format_number_as_ds(float(x))


def _lo(text: str) -> str:
    """A Long String value: 64 characters at most, no backslash."""
    return str(text).replace("\\", "/")[:64]


@dataclasses.dataclass
class SliceGrid:
    """A volume's affine as DICOM geometry (LPS): one plane orientation, one position per slice."""

    data: np.ndarray            # (columns, rows, slices), k running along row x column
    orientation: np.ndarray     # (6,) row direction, column direction
    positions: np.ndarray       # (slices, 3)
    pixel_spacing: tuple        # (between rows, between columns)
    spacing: float              # along the slice normal
    reversed: bool              # slices were written in reverse k order to keep a right-handed stack


def slice_grid(vol: Volume, path) -> SliceGrid:
    """The DICOM geometry of ``vol``; refuses grids a series cannot hold (sheared in-plane axes)."""
    lps = LPS_TO_RAS @ vol.affine
    di, dj, dk = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    col_spacing, row_spacing = float(np.linalg.norm(di)), float(np.linalg.norm(dj))
    row_dir, col_dir = di / col_spacing, dj / row_spacing
    if abs(float(row_dir @ col_dir)) > ORTHOGONAL_TOL:
        raise VolumeError(path, f"in-plane axes are not orthogonal (cosine {float(row_dir @ col_dir):.2e}); "
                                "a DICOM series cannot hold a sheared grid: write NIfTI or .mha instead")
    normal = np.cross(row_dir, col_dir)
    data, origin, reverse = np.asarray(vol.data), lps[:3, 3], bool(dk @ normal < 0)
    if reverse:   # readers stack slices along row x column: keep that the increasing-k direction
        data, origin, dk = data[:, :, ::-1], origin + (data.shape[2] - 1) * dk, -dk
    positions = origin[None, :] + np.arange(data.shape[2])[:, None] * dk[None, :]
    return SliceGrid(data, np.concatenate([row_dir, col_dir]), positions, (row_spacing, col_spacing),
                     float(dk @ normal), reverse)


def stored_values(values: np.ndarray, modality: str) -> Quantised:
    """CT: int16 HU at slope 1 (clipped values counted); MR: uint16 with a rescale that fits the range."""
    if modality == "CT":
        return quantise(values, np.int16, 1.0, 0.0)
    return quantise(values, np.uint16, *fitting_rescale(values, np.uint16))


def _patient_uids(key: str) -> tuple[str, str]:
    """Study and frame-of-reference UIDs that are the same for every output of one patient."""
    return (generate_uid(entropy_srcs=["mrgan-tf study", key]),
            generate_uid(entropy_srcs=["mrgan-tf frame of reference", key]))


def _copy(src, dst, keywords) -> None:
    for kw in keywords:
        if src is not None and kw in src:
            dst[kw] = copy.deepcopy(src[kw])


def _series_dataset(modality: str, info: SeriesInfo, header, q: Quantised, grid: SliceGrid, now) -> pydicom.Dataset:
    """Every attribute that is the same in all slices of the series."""
    ds = pydicom.Dataset()
    if header is not None and "SpecificCharacterSet" in header:
        ds.SpecificCharacterSet = header.SpecificCharacterSet
    _copy(header, ds, PATIENT_KEYWORDS + STUDY_KEYWORDS + FRAME_KEYWORDS + SERIES_KEYWORDS)
    from_source = header is not None and "StudyInstanceUID" in header
    if not from_source:
        ds.PatientID = _lo(info.patient_id)
        ds.PatientName = _lo(info.patient_id).replace("^", " ") + "^"   # family name = the ID
        ds.StudyID = GENERATED_STUDY_ID
    study_uid, frame_uid = _patient_uids(info.patient_key or str(ds.get("PatientID", info.patient_id)))
    ds.StudyInstanceUID = ds.get("StudyInstanceUID") or study_uid
    ds.FrameOfReferenceUID = ds.get("FrameOfReferenceUID") or frame_uid
    if "SpecificCharacterSet" not in ds and not all(str(ds.get(k, "")).isascii() for k in ("PatientID", "PatientName")):
        ds.SpecificCharacterSet = "ISO_IR 192"
    for kw in TYPE2_EMPTY["common"] + TYPE2_EMPTY[modality]:
        if kw not in ds:
            setattr(ds, kw, None)
    if "BodyPartExamined" not in ds and info.body_part:
        ds.BodyPartExamined = str(info.body_part).upper()[:16]
    if "BodyPartExamined" not in ds and "Laterality" not in ds:
        ds.Laterality = None   # type 2C: empty = unknown, as the body part is not known either

    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    source_number = header.get("SeriesNumber") if header is not None else None
    ds.SeriesNumber = info.series_number if info.series_number is not None else (
        int(source_number) + 1000 if source_number not in (None, "") else 1000)
    ds.SeriesDescription = _lo(info.description)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time
    ds.Manufacturer = _lo(info.manufacturer)
    ds.ManufacturerModelName = _lo(info.model_name)
    ds.SoftwareVersions = _lo(info.software_version or "unknown")
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if modality == "CT" else "OTHER"]
    if info.derivation:
        ds.DerivationDescription = str(info.derivation)[:1024]
    if info.comments:
        ds.ImageComments = str(info.comments)[:10240]
    ds.BurnedInAnnotation = "NO"

    ds.ImageOrientationPatient = [_ds(v) for v in grid.orientation]
    ds.PixelSpacing = [_ds(v) for v in grid.pixel_spacing]
    ds.SliceThickness = _ds(grid.spacing)
    ds.SpacingBetweenSlices = _ds(grid.spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Columns, ds.Rows = int(grid.data.shape[0]), int(grid.data.shape[1])
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(np.issubdtype(q.dtype, np.signedinteger))
    ds.RescaleIntercept, ds.RescaleSlope = _ds(q.intercept), _ds(q.slope)
    if modality == "MR":
        ds.ScanningSequence = "RM"     # research mode: no acquisition made these pixels
        ds.SequenceVariant = "NONE"
    lo, hi = (float(v) for v in np.clip(q.value_range, *q.representable))
    ds.WindowCenter, ds.WindowWidth = _ds((lo + hi) / 2), _ds(max(hi - lo, 1.0))
    return ds


def _slice_dataset(series: pydicom.Dataset, grid: SliceGrid, stored: np.ndarray, k: int) -> pydicom.Dataset:
    ds = copy.deepcopy(series)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in grid.positions[k]]
    normal = np.cross(grid.orientation[:3], grid.orientation[3:])
    ds.SliceLocation = _ds(float(grid.positions[k] @ normal))
    pixels = stored[:, :, k].T   # [row, column]
    ds.SmallestImagePixelValue, ds.LargestImagePixelValue = int(pixels.min()), int(pixels.max())
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def write_dicom_series(vol: Volume, out_dir, modality: str, info: SeriesInfo | None = None, header=None,
                       overwrite: bool = False, progress: bool = False) -> dict:
    """Write ``vol`` (values in output units: HU for CT) as one file per slice in the folder ``out_dir``.

    ``header`` is the source image's dataset (``Volume.header`` of a DICOM input).
    Returns what was written: UIDs, file count, quantisation and clipping.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if modality not in SOP_CLASSES:
        raise VolumeError(out_dir, f"DICOM modality must be one of {sorted(SOP_CLASSES)}, got {modality!r}")
    if out_dir.exists() and not overwrite:
        raise VolumeError(out_dir, "output already exists (use --overwrite to replace it)")
    if header is not None and not isinstance(header, pydicom.Dataset):
        header = None
    info = info or SeriesInfo()
    grid = slice_grid(vol, out_dir)
    q = stored_values(grid.data, modality)
    series = _series_dataset(modality, info, header, q, grid, datetime.datetime.now())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent)
    try:
        n = grid.data.shape[2]
        for k in tqdm(range(n), desc=f"DICOM {out_dir.name}", unit="slice", disable=not progress, leave=False):
            _slice_dataset(series, grid, q.stored, k).save_as(os.path.join(tmp, f"{modality}{k + 1:05d}.dcm"),
                                                              enforce_file_format=True)
        os.chmod(tmp, 0o777 & ~_umask())
        if out_dir.exists() and not overwrite:
            raise VolumeError(out_dir, "appeared while writing; not replacing it (use --overwrite)")
        swap_in_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    uids_from = "source" if header is not None and "StudyInstanceUID" in header else "generated"
    return {"format": "dicom", "path": str(out_dir), "files": int(n), "sop_class_uid": str(series.SOPClassUID),
            "series_instance_uid": str(series.SeriesInstanceUID), "series_number": int(series.SeriesNumber),
            "study_instance_uid": str(series.StudyInstanceUID),
            "frame_of_reference_uid": str(series.FrameOfReferenceUID), "study_and_frame_from": uids_from,
            "patient_id": str(series.get("PatientID", "")), "slices_reversed": grid.reversed,
            "quantisation": q.report(), "clipped": q.summary("HU" if modality == "CT" else "")}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
