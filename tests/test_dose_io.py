"""The dose check's files: RT Dose (dciodvfy, geometry), RT Structure Set regions, the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from conftest import DS_TOL, copy_series, dciodvfy, dciodvfy_errors
from mrgan_tf.io.dicom import read_dicom_series
from mrgan_tf.io.dicom_write import SeriesInfo, write_dicom_series
from mrgan_tf.io.rtdose import write_rtdose
from mrgan_tf.io.rtstruct import read_rtstruct
from mrgan_tf.io.volumes import LPS_TO_RAS, Volume, VolumeError


def _dose_affine(ds) -> np.ndarray:
    """The RT Dose's voxel -> RAS affine, from its own attributes (as a planning system reads them)."""
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    offsets = np.array(ds.GridFrameOffsetVector, float)
    lps = np.eye(4)
    lps[:3, 0] = row * float(ds.PixelSpacing[1])
    lps[:3, 1] = col * float(ds.PixelSpacing[0])
    lps[:3, 2] = np.cross(row, col) * (offsets[1] - offsets[0])
    lps[:3, 3] = np.array(ds.ImagePositionPatient, float)
    return LPS_TO_RAS @ lps


def test_rt_dose_is_valid_on_the_ct_frame_and_round_trips_its_geometry(tmp_path):
    ct = read_dicom_series(copy_series("98892001/CT5N", tmp_path / "ct"))
    rng = np.random.default_rng(0)
    dose = ct.with_data(rng.uniform(0, 62.0, ct.shape).astype(np.float32))
    info = write_rtdose(dose, tmp_path / "rd" / "dose.dcm", ct.header, "1.2.826.0.1.3680043.8.498.1")
    assert dciodvfy_errors(tmp_path / "rd") == {}
    ds = pydicom.dcmread(tmp_path / "rd" / "dose.dcm")
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY" and ds.DoseSummationType == "PLAN"
    for kw in ("FrameOfReferenceUID", "StudyInstanceUID", "PatientID"):
        assert ds[kw].value == ct.header[kw].value, kw
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    np.testing.assert_allclose(_dose_affine(ds), ct.affine, atol=DS_TOL)
    back = ds.pixel_array.transpose(2, 1, 0) * float(ds.DoseGridScaling)   # frames of [row, column] -> (i, j, k)
    assert np.abs(back - dose.data).max() <= info["dose_grid_scaling"] / 2 + 1e-4


def test_rt_dose_needs_the_ct_header(tmp_path):
    with pytest.raises(VolumeError, match="needs the CT's DICOM header"):
        write_rtdose(Volume(np.ones((4, 4, 3)), np.eye(4)), tmp_path / "d.dcm", None, "1.2.3")


def _rtstruct(ct: Volume, rois: dict) -> pydicom.Dataset:
    """A minimal RT Structure Set: {name: [(k, [(i, j), ...]), ...]} as closed planar contours on ``ct``'s grid."""
    from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

    ds = pydicom.Dataset()
    ds.Modality, ds.SOPClassUID, ds.SOPInstanceUID = "RTSTRUCT", RTStructureSetStorage, generate_uid()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = ct.header.FrameOfReferenceUID
    ds.ReferencedFrameOfReferenceSequence = [frame]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    lps = LPS_TO_RAS @ ct.affine
    for number, (name, contours) in enumerate(rois.items(), 1):
        roi = pydicom.Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        item = pydicom.Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = []
        for k, points in contours:
            c = pydicom.Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            xyz = [(lps @ [i, j, k, 1.0])[:3] for i, j in points]
            c.NumberOfContourPoints = len(xyz)
            c.ContourData = [f"{v:.4f}" for p in xyz for v in p]
            item.ContourSequence.append(c)
        ds.ROIContourSequence.append(item)
    return ds


def test_rtstruct_regions_fill_their_contours_on_the_ct_grid(tmp_path):
    ct = read_dicom_series(copy_series("98892001/CT5N", tmp_path / "ct"))
    square = [(2, 2), (2, 9), (9, 9), (9, 2)]            # voxel centres 2..9 on both axes: 8 x 8 (edges included)
    hole = [(4, 4), (4, 7), (7, 7), (7, 4)]
    ds = _rtstruct(ct, {"PTV": [(1, square), (2, square), (2, hole)], "eye": [(3, [(0, 0), (0, 1), (1, 1)])]})
    path = tmp_path / "rs.dcm"
    ds.save_as(path, enforce_file_format=True)
    masks = read_rtstruct(path, ["PTV"], ct)
    ptv = masks["PTV"]
    assert ptv.shape == ct.shape and ptv[:, :, 1].sum() == 64 and ptv[:, :, 2].sum() == 64 - 16
    assert not ptv[:, :, [0, 3, 4]].any() and ptv[2, 2, 1] and ptv[9, 9, 1] and not ptv[5, 5, 2]
    with pytest.raises(VolumeError, match="no ROI named 'GTV'; it holds 'PTV', 'eye'"):
        read_rtstruct(path, ["GTV"], ct)
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.4"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(VolumeError, match=r"frame of reference \(1.2.3.4\) is not the CT's"):
        read_rtstruct(path, ["PTV"], ct)


# ---------------------------------------------------------------- the command line
def _dose(*args):
    return subprocess.run([sys.executable, "-m", "mrgan_tf.dose", *args], capture_output=True, text=True, timeout=300,
                          cwd="/", env={**os.environ})


def test_command_line_errors_are_one_line_naming_the_file(tmp_path):
    done = _dose(f"--ct={tmp_path}/ct.nii.gz", f"--out={tmp_path}/out")
    assert done.returncode == 2 and "--sct is required" in done.stderr
    done = _dose(f"--ct={tmp_path}/none.nii.gz", f"--sct={tmp_path}/none.nii.gz", f"--out={tmp_path}/out")
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == (
        f"dose: error: {tmp_path}/none.nii.gz: no such file or directory")
    assert not (tmp_path / "out").exists()


def test_bad_plan_options_are_named():
    from mrgan_tf.errors import UserError
    from mrgan_tf.evaluation.dose.config import DoseConfig

    with pytest.raises(UserError, match="--modalities: expected some of photons, protons, got electrons"):
        DoseConfig(modalities=("electrons",))
    with pytest.raises(UserError, match="--proton_angles: a proton plan needs at least one beam"):
        DoseConfig(proton_angles=())
    with pytest.raises(UserError, match="--resolution_mm must be positive, got 0"):
        DoseConfig(resolution_mm=0.0)


def test_command_line_on_dicom_cts_writes_report_pictures_volumes_and_rt_doses(tmp_path):
    pytest.importorskip("pyRadPlan")
    from test_dose import phantom

    ct, bone = phantom()
    info = SeriesInfo(patient_id="p01")
    write_dicom_series(ct, tmp_path / "ct", "CT", info)
    ref = read_dicom_series(tmp_path / "ct")
    write_dicom_series(ref.with_data(np.where(bone, 40.0, ref.data)), tmp_path / "sct", "CT",
                       SeriesInfo(description="synthetic CT"), header=ref.header)
    out = tmp_path / "report"
    args = [f"--ct={tmp_path}/ct", f"--sct={tmp_path}/sct", f"--out={out}", "--modalities=protons",
            "--proton_angles=0,90", "--resolution_mm=5", "--bixel_mm=10", "--iterations=20", "--noprogress"]
    done = _dose(*args)
    assert done.returncode == 0, done.stderr
    assert "| mae_target (% of prescription) |" in done.stdout and "synthetic sphere" in done.stdout
    assert "Beam" not in done.stderr and "Ray" not in done.stderr and "RuntimeWarning" not in done.stderr
    names = sorted(os.listdir(out))
    assert names == ["dose.json", "dose.md", "dose_difference.png", "dose_protons_reference.nii.gz",
                     "dose_protons_synthetic.nii.gz", "dvh.png", "rtdose_protons_reference.dcm",
                     "rtdose_protons_synthetic.dcm"]
    doc = json.loads((out / "dose.json").read_text())
    assert doc["plans"]["protons"]["mae_target"] > 0.01 and doc["synthetic_target"] is True
    assert sorted(os.listdir(tmp_path)) == ["ct", "report", "sct"]      # no temporary left beside it
    syn = pydicom.dcmread(out / "rtdose_protons_synthetic.dcm")
    sct_first = pydicom.dcmread(next((tmp_path / "sct").iterdir()))
    assert syn.FrameOfReferenceUID == sct_first.FrameOfReferenceUID
    assert not [ln for ln in dciodvfy(out / "rtdose_protons_synthetic.dcm") if ln.startswith("Error")]
    again = _dose(*args)
    assert again.returncode == 1 and "output folder exists and is not empty (use --overwrite" in again.stderr
