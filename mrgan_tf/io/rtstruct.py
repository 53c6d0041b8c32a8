"""Regions of a DICOM RT Structure Set as masks on a CT's grid (closed planar contours, filled per slice).

Contours are filled in the CT's own voxel grid: each contour must lie in one slice of it (axial
contours on an axial CT, as planning systems write them); a voxel belongs to the region when its
centre lies inside or on the contour; nested contours of one region in a slice cut holes (even-odd
filling).
"""
from __future__ import annotations

import numpy as np

from mrgan_tf.io.volumes import LPS_TO_RAS, Volume, VolumeError


def roi_names(ds) -> dict[int, str]:
    """{ROI number: ROI name} of an RT Structure Set dataset."""
    return {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}


def read_rtstruct(path, names, reference: Volume) -> dict[str, np.ndarray]:
    """{name: bool mask on ``reference``'s grid} for each ROI in ``names`` of the RT Structure Set ``path``.

    Refuses a file that is not an RTSTRUCT, one on another frame of reference than a DICOM
    ``reference``, and names it does not hold (listing those it does)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise VolumeError(path, f"cannot read as DICOM: {e}") from None
    if ds.get("Modality") != "RTSTRUCT":
        raise VolumeError(path, f"not an RT Structure Set (Modality {ds.get('Modality', 'missing')!r}, expected "
                                "'RTSTRUCT')")
    frame = reference.header.get("FrameOfReferenceUID") if reference.header is not None else None
    frames = {str(f.FrameOfReferenceUID) for f in ds.get("ReferencedFrameOfReferenceSequence", [])}
    if frame and frames and str(frame) not in frames:
        raise VolumeError(path, f"its frame of reference ({', '.join(sorted(frames))}) is not the CT's "
                                f"({frame}, {reference.source})")
    numbers = {name: number for number, name in roi_names(ds).items()}
    missing = [n for n in names if n not in numbers]
    if missing:
        raise VolumeError(path, f"no ROI named {', '.join(map(repr, missing))}; it holds "
                                f"{', '.join(map(repr, sorted(numbers))) or 'none'}")
    contours = {int(c.ReferencedROINumber): c.get("ContourSequence", []) for c in ds.get("ROIContourSequence", [])}
    return {name: _fill(contours.get(numbers[name], []), reference, path, name) for name in names}


def _fill(contours, reference: Volume, path, name: str) -> np.ndarray:
    from skimage.draw import polygon, polygon_perimeter

    to_voxel = np.linalg.inv(LPS_TO_RAS @ reference.affine)
    mask = np.zeros(reference.shape, bool)
    for c in contours:
        if c.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
            continue   # points and open contours enclose no volume
        lps = np.asarray(c.ContourData, np.float64).reshape(-1, 3)
        ijk = to_voxel[:3, :3] @ lps.T + to_voxel[:3, 3:4]
        k = np.rint(ijk[2])
        if np.ptp(ijk[2]) > 0.5:
            raise VolumeError(path, f"ROI {name!r}: a contour crosses slices of {reference.source} (it must lie in "
                                    "one axial slice of the CT's grid)")
        if not 0 <= k[0] < reference.shape[2]:
            raise VolumeError(path, f"ROI {name!r}: a contour lies outside the slices of {reference.source}")
        inside = np.zeros(reference.shape[:2], bool)
        inside[polygon(ijk[0], ijk[1], shape=inside.shape)] = True
        inside[polygon_perimeter(np.rint(ijk[0]), np.rint(ijk[1]), shape=inside.shape)] = True   # the outline too
        mask[:, :, int(k[0])] ^= inside
    return mask
