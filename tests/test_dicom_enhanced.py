"""Enhanced (multi-frame) CT/MR input: geometry per frame from the functional groups, errors as for series."""
from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pydicom
import pydicom.data
import pytest

from dicom_factory import enhanced_file
from mrgan_tf.io.readers import find_modality_file, read_volume
from mrgan_tf.io.volumes import LPS_TO_RAS, VolumeError


def _oblique_lps() -> np.ndarray:
    t = np.deg2rad(12.0)
    rot = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.75, 0.8, 2.0])
    a[:3, 3] = [-60.25, -80.5, 12.0]
    return a


def _known(shape=(9, 7, 6)) -> np.ndarray:
    return np.random.default_rng(3).integers(-1000, 2000, shape).astype(np.int16)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_file_reads_as_the_known_volume(tmp_path, modality):
    stored, lps = _known(), _oblique_lps()
    slope, intercept = (0.5, -1024.0) if modality == "CT" else (1.0, 0.0)
    path = enhanced_file(tmp_path / "img.dcm", stored, lps, modality, slope, intercept,
                         frame_order=[3, 0, 5, 1, 4, 2])   # frames out of order: sorted by position
    vol = read_volume(path)
    assert vol.shape == stored.shape and vol.source == str(path)
    np.testing.assert_array_equal(vol.data, stored.astype(np.float32) * slope + intercept)
    np.testing.assert_allclose(vol.affine, LPS_TO_RAS @ lps, atol=1e-9)
    assert vol.header.PatientID == "enh01" and "PixelData" not in vol.header
    assert "PerFrameFunctionalGroupsSequence" not in vol.header


def test_enhanced_file_in_a_folder_and_as_a_patient_input(tmp_path):
    stored, lps = _known(), _oblique_lps()
    (tmp_path / "p1" / "ct").mkdir(parents=True)
    enhanced_file(tmp_path / "p1" / "ct" / "enhanced", stored, lps, per_frame_orientation=True)
    enhanced_file(tmp_path / "p1" / "mr.dcm", stored, lps, "MR")
    folder = read_volume(tmp_path / "p1" / "ct")
    np.testing.assert_array_equal(folder.data, stored)
    assert find_modality_file(tmp_path / "p1", "mr") == tmp_path / "p1" / "mr.dcm"


def test_enhanced_gap_and_mixed_orientation_are_reported_like_a_series(tmp_path):
    stored, lps = _known(), _oblique_lps()
    gap = enhanced_file(tmp_path / "gap.dcm", stored, lps)
    ds = pydicom.dcmread(gap)
    del ds.PerFrameFunctionalGroupsSequence[4]   # drop the 5th slice's frame and its pixels
    ds.NumberOfFrames = 5
    frame_bytes = stored.shape[0] * stored.shape[1] * 2
    ds.PixelData = ds.PixelData[:4 * frame_bytes] + ds.PixelData[5 * frame_bytes:]
    ds.save_as(gap)
    with pytest.raises(VolumeError, match=r"gap in the series: 4\.000 mm .*gap\.dcm frame 4.*gap\.dcm frame 5"):
        read_volume(gap)

    mixed = enhanced_file(tmp_path / "mixed.dcm", stored, lps, per_frame_orientation=True)
    ds = pydicom.dcmread(mixed)
    ds.PerFrameFunctionalGroupsSequence[2].PlaneOrientationSequence[0].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(mixed)
    with pytest.raises(VolumeError, match="mixed orientations"):
        read_volume(mixed)


def test_enhanced_missing_geometry_names_the_tag_and_the_file(tmp_path):
    path = enhanced_file(tmp_path / "nopos.dcm", _known(), _oblique_lps())
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    ds.save_as(path)
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    assert str(err.value).startswith(str(path))
    assert "nopos.dcm frame 3" in str(err.value) and "ImagePositionPatient" in str(err.value)

    flat = enhanced_file(tmp_path / "flat.dcm", _known(), _oblique_lps())
    ds = pydicom.dcmread(flat)
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(flat)
    with pytest.raises(VolumeError, match="without PerFrameFunctionalGroupsSequence"):
        read_volume(flat)


def test_single_frame_dcm_file_is_refused_as_a_volume(tmp_path):
    one = pydicom.data.get_testdata_file("CT_small.dcm")
    with pytest.raises(VolumeError, match="single-frame DICOM file is one slice"):
        read_volume(one)


def test_pydicom_bundled_enhanced_ct_and_mr_files_are_read():
    """pydicom's own enhanced CT/MR test files, if its wheel ships any (3.0 ships none: skipped)."""
    root = os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm"))
    enhanced = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4.1"}
    found = []
    for f in glob.glob(os.path.join(root, "**", "*"), recursive=True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        if str(ds.get("SOPClassUID", "")) in enhanced:
            found.append(f)
    if not found:
        pytest.skip(f"pydicom {pydicom.__version__} ships no enhanced CT/MR test files")
    for f in found:
        assert read_volume(f).data.ndim == 3


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_classic_series_missing_geometry_names_the_tag_and_the_file(tmp_path, keyword):
    from conftest import copy_series
    folder = copy_series("98892001/CT5N", tmp_path / "ct")
    ds = pydicom.dcmread(folder / "2392")
    delattr(ds, keyword)
    ds.save_as(folder / "2392")
    with pytest.raises(VolumeError) as err:
        read_volume(folder)
    assert str(err.value).startswith(f"{folder}: 2392: missing or malformed {keyword}")
