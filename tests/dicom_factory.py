"""Enhanced (multi-frame) CT/MR files built from a known volume, for the reader tests.

Geometry goes where scanners put it: orientation and pixel spacing in the shared
functional groups, one plane position per frame, rescale per frame (CT) or
nowhere (MR).
"""
from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ENHANCED = {"CT": "1.2.840.10008.5.1.4.1.1.2.1", "MR": "1.2.840.10008.5.1.4.1.1.4.1"}


def _item(**attrs) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def enhanced_file(path, stored: np.ndarray, lps_affine: np.ndarray, modality: str = "CT", slope: float = 1.0,
                  intercept: float = 0.0, frame_order=None, per_frame_orientation: bool = False) -> str:
    """Write ``stored`` (i, j, k) int16 on the voxel->LPS ``lps_affine`` as one multi-frame file.

    Frames are written in ``frame_order`` (default k order) so readers must sort by position.
    """
    nx, ny, nz = stored.shape
    di, dj, dk = lps_affine[:3, 0], lps_affine[:3, 1], lps_affine[:3, 2]
    col_sp, row_sp = np.linalg.norm(di), np.linalg.norm(dj)
    iop = [float(v) for v in np.concatenate([di / col_sp, dj / row_sp])]
    order = list(range(nz)) if frame_order is None else list(frame_order)

    ds = pydicom.Dataset()
    ds.SOPClassUID = ENHANCED[modality]
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Known^Volume", "enh01", modality
    ds.SeriesNumber, ds.InstanceNumber = 7, 1
    ds.NumberOfFrames = len(order)
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = _item(PixelMeasuresSequence=Sequence([_item(PixelSpacing=[float(row_sp), float(col_sp)],
                                                         SliceThickness=float(np.linalg.norm(dk)))]))
    if not per_frame_orientation:
        shared.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=iop)])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        item = _item(PlanePositionSequence=Sequence([_item(ImagePositionPatient=[
            float(v) for v in lps_affine[:3, 3] + k * dk])]),
            FrameContentSequence=Sequence([_item(InStackPositionNumber=k + 1)]))
        if per_frame_orientation:
            item.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=iop)])
        if modality == "CT":
            item.PixelValueTransformationSequence = Sequence([_item(RescaleSlope=slope, RescaleIntercept=intercept,
                                                                    RescaleType="HU")])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    pixels = np.stack([stored[:, :, k].T for k in order]).astype("<i2")
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return str(path)
