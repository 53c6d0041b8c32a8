"""DICOM series out: validated by dciodvfy, read back by our reader and by SimpleITK on the exact grid."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import DS_TOL, copy_series, dciodvfy, dciodvfy_errors, oblique_lps_grid
from mrgan_tf.io import dicom_write
from mrgan_tf.io.dicom import read_dicom_series
from mrgan_tf.io.dicom_write import SeriesInfo, write_dicom_series
from mrgan_tf.io.volumes import LPS_TO_RAS, Volume, VolumeError
from orthanc_server import require_tool


def oblique_ras() -> np.ndarray:
    """A rotated, anisotropic grid whose slices run along row x column (as a DICOM series stacks them)."""
    return LPS_TO_RAS @ oblique_lps_grid()


def head(shape=(12, 10, 6), lo=-1024.0, hi=2500.0) -> np.ndarray:
    return np.random.default_rng(1).uniform(lo, hi, shape).astype(np.float32)


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    return reader.Execute()


def assert_sitk_geometry(img: sitk.Image, ras_affine: np.ndarray, shape) -> None:
    lps = LPS_TO_RAS @ ras_affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    assert img.GetSize() == tuple(shape)
    np.testing.assert_allclose(img.GetSpacing(), spacing, atol=DS_TOL)
    np.testing.assert_allclose(img.GetOrigin(), lps[:3, 3], atol=DS_TOL)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), lps[:3, :3] / spacing, atol=DS_TOL)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_series_reads_back_on_the_exact_grid_with_both_readers(tmp_path, modality):
    values = head() if modality == "CT" else head(lo=0.0, hi=255.0)
    vol = Volume(values, oblique_ras(), "mem")
    info = write_dicom_series(vol, tmp_path / "out", modality, SeriesInfo(patient_id="p01"))
    files = sorted((tmp_path / "out").iterdir())
    assert info["files"] == len(files) == 6 and not info["slices_reversed"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    step = info["quantisation"]["slope"]
    assert (step == 1.0) if modality == "CT" else (step < 255.0 / 65000)

    back = read_dicom_series(tmp_path / "out")
    np.testing.assert_allclose(back.affine, vol.affine, atol=DS_TOL)
    assert np.abs(back.data - values).max() <= step / 2 + 1e-4

    img = sitk_series(tmp_path / "out")
    assert_sitk_geometry(img, vol.affine, vol.shape)
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float64)
    assert np.abs(arr - values).max() <= step / 2 + 1e-4

    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == dicom_write.SOP_CLASSES[modality] and ds.Modality == modality
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == pytest.approx(2.5)
    assert ds.PatientID == "p01" and ds.Manufacturer == "mrgan-tf"
    assert dciodvfy_errors(tmp_path / "out") == {}


def test_series_from_a_dicom_source_keeps_study_frame_and_patient(tmp_path):
    src = copy_series("98892001/CT5N", tmp_path / "ct")
    vol = read_dicom_series(src)
    first = pydicom.dcmread(next(src.iterdir()))
    info = write_dicom_series(vol.with_data(np.clip(vol.data, 0, None) / 10.0), tmp_path / "syn", "MR",
                              SeriesInfo(description="mrgan-tf synthetic MR from CT, ct2mr v1"), header=vol.header)
    out = [pydicom.dcmread(f) for f in sorted((tmp_path / "syn").iterdir())]
    sources = [pydicom.dcmread(f) for f in src.iterdir()]
    for ds in out:
        for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID", "PatientBirthDate",
                   "PatientSex", "StudyDate", "AccessionNumber"):
            assert ds.get(kw) == first.get(kw), kw
        assert ds.SeriesInstanceUID != first.SeriesInstanceUID
        assert ds.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}
        assert ds.SeriesDescription == "mrgan-tf synthetic MR from CT, ct2mr v1"
        assert int(ds.SeriesNumber) == int(first.SeriesNumber) + 1000
    assert len({ds.SOPInstanceUID for ds in out}) == len(out) == 5
    assert len({ds.SeriesInstanceUID for ds in out}) == 1 and info["study_and_frame_from"] == "source"
    again = read_dicom_series(tmp_path / "syn")
    np.testing.assert_allclose(again.affine, vol.affine, atol=DS_TOL)
    assert_sitk_geometry(sitk_series(tmp_path / "syn"), vol.affine, vol.shape)
    assert dciodvfy_errors(tmp_path / "syn") == {}


def test_generated_study_and_frame_are_the_same_for_one_patient(tmp_path):
    vol = Volume(head(), oblique_ras())
    a = write_dicom_series(vol, tmp_path / "a", "CT", SeriesInfo(patient_id="p01", patient_key="/data/p01"))
    b = write_dicom_series(vol, tmp_path / "b", "MR", SeriesInfo(patient_id="p01", patient_key="/data/p01"))
    c = write_dicom_series(vol, tmp_path / "c", "CT", SeriesInfo(patient_id="p02", patient_key="/data/p02"))
    assert (a["study_instance_uid"], a["frame_of_reference_uid"]) == (b["study_instance_uid"],
                                                                     b["frame_of_reference_uid"])
    assert a["study_instance_uid"] != c["study_instance_uid"]
    assert a["frame_of_reference_uid"] != c["frame_of_reference_uid"]
    assert a["series_instance_uid"] != b["series_instance_uid"] and a["study_and_frame_from"] == "generated"


def test_known_body_part_drops_the_empty_laterality(tmp_path):
    vol = Volume(head(), oblique_ras())
    write_dicom_series(vol, tmp_path / "unknown", "CT")
    write_dicom_series(vol, tmp_path / "head", "CT", SeriesInfo(body_part="head"))
    unknown, known = (sorted((tmp_path / d).iterdir())[0] for d in ("unknown", "head"))
    assert pydicom.dcmread(known).BodyPartExamined == "HEAD" and "Laterality" not in pydicom.dcmread(known)
    assert any("Laterality" in ln for ln in dciodvfy(unknown))
    assert not any("Laterality" in ln for ln in dciodvfy(known))
    assert dciodvfy_errors(tmp_path / "head") == {}


def test_existing_folder_is_refused_unless_overwrite_and_failures_leave_nothing(tmp_path, monkeypatch):
    vol = Volume(head(), oblique_ras())
    write_dicom_series(vol, tmp_path / "out", "CT")
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    with pytest.raises(VolumeError, match="already exists.*--overwrite"):
        write_dicom_series(vol, tmp_path / "out", "CT")
    info = write_dicom_series(vol, tmp_path / "out", "CT", overwrite=True)
    assert pydicom.dcmread(tmp_path / "out" / before[0]).SeriesInstanceUID == info["series_instance_uid"]

    real = dicom_write._slice_dataset

    def failing(series, grid, stored, k):
        if k == 3:
            raise OSError("disk full")
        return real(series, grid, stored, k)

    monkeypatch.setattr(dicom_write, "_slice_dataset", failing)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(vol, tmp_path / "new", "CT")
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(vol, tmp_path / "out", "CT", overwrite=True)
    assert not (tmp_path / "new").exists()
    assert pydicom.dcmread(tmp_path / "out" / before[0]).SeriesInstanceUID == info["series_instance_uid"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_left_handed_grid_is_written_along_the_normal_and_reads_back_in_the_same_place(tmp_path):
    aff = np.diag([-0.8, 0.9, 2.0, 1.0])    # an LAS NIfTI: k runs against row x column
    aff[:3, 3] = [50.0, -60.0, 10.0]
    vol = Volume(head(), aff)
    info = write_dicom_series(vol, tmp_path / "out", "CT")
    assert info["slices_reversed"]
    back = read_dicom_series(tmp_path / "out")
    flipped = aff.copy()
    flipped[:3, 3] += (vol.shape[2] - 1) * aff[:3, 2]
    flipped[:3, 2] *= -1
    np.testing.assert_allclose(back.affine, flipped, atol=DS_TOL)
    np.testing.assert_allclose(back.data, np.rint(vol.data[:, :, ::-1]))


def test_sheared_grid_and_unknown_modality_are_refused(tmp_path):
    aff = np.eye(4)
    aff[0, 1] = 0.3
    with pytest.raises(VolumeError, match="not orthogonal"):
        write_dicom_series(Volume(head(), aff), tmp_path / "s", "CT")
    with pytest.raises(VolumeError, match="modality must be one of"):
        write_dicom_series(Volume(head(), np.eye(4)), tmp_path / "s", "PT")
    assert not os.listdir(tmp_path)


def test_ct_values_outside_int16_are_clipped_and_counted(tmp_path):
    values = head()
    values[0, 0, 0], values[1, 0, 0], values[2, 0, 0] = 40000.0, -40000.0, 33000.0
    info = write_dicom_series(Volume(values, np.eye(4)), tmp_path / "ct", "CT")
    q = info["quantisation"]
    assert (q["clipped_below"], q["clipped_above"]) == (1, 2)
    assert "3 voxel(s) did not fit int16" in info["clipped"] and "2 above 32767 HU" in info["clipped"]
    back = read_dicom_series(tmp_path / "ct")
    assert back.data.max() == 32767 and back.data.min() == -32768


def test_missing_tool_skips_when_not_root_and_fails_when_root(monkeypatch):
    import orthanc_server
    monkeypatch.setattr(orthanc_server.shutil, "which", lambda command: None)
    monkeypatch.setattr(orthanc_server.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="dciodvfy not installed .*dicom3tools.* not root"):
        require_tool("dciodvfy", "dicom3tools")
    monkeypatch.setattr(orthanc_server.os, "geteuid", lambda: 0)
    with pytest.raises(pytest.fail.Exception, match="`make deps` installs Debian package dicom3tools"):
        require_tool("dciodvfy", "dicom3tools")
