"""Write a dose grid as a DICOM RT Dose object on a CT's frame of reference and study.

A dose computed on a synthetic CT belongs to that CT: the RT Dose copies its patient, study and
frame of reference (from the CT's DICOM header), so a planning system shows it on that CT. The
dose grid is one multi-frame image (one frame per slice, positions in GridFrameOffsetVector),
stored as unsigned 16-bit integers times DoseGridScaling (Gy). DoseSummationType is PLAN, and the
plan is referenced by a UID the caller gives (the same for the doses of one plan on several CTs);
that plan is not written as a DICOM RT Plan.
"""
from __future__ import annotations

import datetime

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, RTDoseStorage, RTIonPlanStorage,
                         RTPlanStorage, generate_uid)

from mrgan_tf.io.dicom_write import FRAME_KEYWORDS, PATIENT_KEYWORDS, STUDY_KEYWORDS, _copy, _ds, _lo, slice_grid
from mrgan_tf.io.volumes import Volume, VolumeError
from tfrecords_tools.atomic import atomic_output

STORED_MAX = 2 ** 16 - 1   # 16-bit: a step of max/65535 (< 1 mGy at 60 Gy); dciodvfy cannot read 32-bit


def write_rtdose(dose: Volume, path, header, plan_uid: str, description: str = "mrgan-tf dose",
                 comment: str = "", photons: bool = True) -> dict:
    """Write ``dose`` (Gy, any grid with orthogonal in-plane axes) as an RT Dose file ``path`` on ``header``'s
    patient, study and frame of reference (``header``: a CT image's dataset, e.g. ``Volume.header``);
    ``plan_uid`` names the plan, an RT Plan (``photons``) or an RT Ion Plan."""
    if header is None or "FrameOfReferenceUID" not in header or "StudyInstanceUID" not in header:
        raise VolumeError(path, "an RT Dose needs the CT's DICOM header (study and frame of reference); the CT "
                                "was not read from DICOM")
    values = np.asarray(dose.data, np.float64)
    if values.min() < 0 or not np.all(np.isfinite(values)):
        raise VolumeError(path, "dose values must be finite and not negative")
    grid = slice_grid(dose.with_data(values), path)
    scaling = max(float(values.max()), 1e-6) / STORED_MAX
    stored = np.rint(grid.data / scaling).clip(0, STORED_MAX).astype("<u2")

    ds = pydicom.Dataset()
    if "SpecificCharacterSet" in header:
        ds.SpecificCharacterSet = header.SpecificCharacterSet
    _copy(header, ds, PATIENT_KEYWORDS + STUDY_KEYWORDS + FRAME_KEYWORDS)
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator"):
        if kw not in ds:
            setattr(ds, kw, None)
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = RTDoseStorage, generate_uid()
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID, ds.SeriesNumber = generate_uid(), 2000
    ds.SeriesDescription = _lo(description)
    ds.InstanceNumber = 1
    ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.Manufacturer, ds.ManufacturerModelName = "mrgan-tf", "dose check"
    ds.OperatorsName = None
    if comment:
        ds.ImageComments = str(comment)[:10240]
    ds.ImageType = ["DERIVED", "SECONDARY"]

    ds.ImageOrientationPatient = [_ds(v) for v in grid.orientation]
    ds.ImagePositionPatient = [_ds(v) for v in grid.positions[0]]
    ds.PixelSpacing = [_ds(v) for v in grid.pixel_spacing]
    ds.SliceThickness = _ds(grid.spacing)
    ds.GridFrameOffsetVector = [_ds(k * grid.spacing) for k in range(stored.shape[2])]
    ds.FrameIncrementPointer = pydicom.tag.Tag("GridFrameOffsetVector")
    ds.NumberOfFrames = int(stored.shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Columns, ds.Rows = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    plan = pydicom.Dataset()
    plan.ReferencedSOPClassUID = RTPlanStorage if photons else RTIonPlanStorage
    plan.ReferencedSOPInstanceUID = plan_uid
    ds.ReferencedRTPlanSequence = [plan]
    ds.DoseGridScaling = _ds(scaling)
    ds.PixelData = np.ascontiguousarray(stored.transpose(2, 1, 0)).tobytes()   # frames of [row, column]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    with atomic_output(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return {"path": str(path), "sop_instance_uid": str(ds.SOPInstanceUID), "series_instance_uid":
            str(ds.SeriesInstanceUID), "frame_of_reference_uid": str(ds.FrameOfReferenceUID),
            "study_instance_uid": str(ds.StudyInstanceUID), "dose_grid_scaling": scaling}
