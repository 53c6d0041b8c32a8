"""write_volume: the format from the name or --out_format, stored types per modality, refusals, clipping."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import oblique_affine
from mrgan_tf.io import writers
from mrgan_tf.io.quantise import fitting_rescale, quantise
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume, VolumeError


def _mr() -> Volume:
    return Volume(np.random.default_rng(2).uniform(0, 255, (7, 6, 5)).astype(np.float32), oblique_affine())


def _ct() -> Volume:
    return Volume(np.random.default_rng(2).uniform(-1024, 3000, (7, 6, 5)).astype(np.float32), oblique_affine())


@pytest.mark.parametrize("name,fmt", [("o.nii.gz", "nifti"), ("o.nii", "nifti"), ("o.mha", "mha"),
                                      ("o.nrrd", "nrrd")])
def test_file_formats_round_trip_mr_as_float32_and_ct_as_int16(tmp_path, name, fmt):
    mr, ct = _mr(), _ct()
    info = writers.write_volume(mr, tmp_path / "mr" / name, modality="MR")
    assert info["format"] == fmt and info["dtype"] == "float32" and info["clipped"] is None
    back = read_volume(tmp_path / "mr" / name)
    np.testing.assert_array_equal(back.data, mr.data)
    np.testing.assert_allclose(back.affine, mr.affine, atol=1e-5)

    info = writers.write_volume(ct, tmp_path / "ct" / name, modality="CT")
    assert info["dtype"] == "int16"
    back = read_volume(tmp_path / "ct" / name)
    np.testing.assert_array_equal(back.data, np.rint(ct.data))
    if fmt == "nifti":
        assert nib.load(str(tmp_path / "ct" / name)).get_data_dtype() == np.int16
    else:
        assert sitk.ReadImage(str(tmp_path / "ct" / name)).GetPixelID() == sitk.sitkInt16
    assert not [p for d in ("mr", "ct") for p in os.listdir(tmp_path / d) if p.startswith(".")]


def test_format_comes_from_the_name_or_an_agreeing_flag(tmp_path):
    assert writers.output_format(tmp_path / "syn_mr") == "dicom"
    assert writers.output_format(tmp_path / "syn.v2", "dicom") == "dicom"
    assert writers.output_format(tmp_path / "a.NII.GZ") == "nifti"
    assert writers.output_name("syn_ct", "mha") == "syn_ct.mha" and writers.output_name("syn_ct", "dicom") == "syn_ct"
    with pytest.raises(VolumeError, match=r"--out_format=dicom but the name ends in \.nii\.gz"):
        writers.output_format(tmp_path / "a.nii.gz", "dicom")
    with pytest.raises(VolumeError, match="--out_format=mha needs a name ending in .mha"):
        writers.output_format(tmp_path / "a", "mha")
    with pytest.raises(VolumeError, match="cannot write .mhd files"):
        writers.output_format(tmp_path / "a.mhd")
    with pytest.raises(VolumeError, match="unknown output format 'png'"):
        writers.output_format(tmp_path / "a", "png")


def test_types_a_modality_or_format_cannot_have_are_refused_before_writing(tmp_path):
    with pytest.raises(VolumeError, match="--out_dtype=uint16: a CT is in HU and holds negative values"):
        writers.write_volume(_ct(), tmp_path / "ct.nii.gz", modality="CT", dtype="uint16")
    with pytest.raises(VolumeError, match="--out_dtype=float32: a DICOM MR series is stored as uint16"):
        writers.write_volume(_mr(), tmp_path / "mr", modality="MR", dtype="float32")
    with pytest.raises(VolumeError, match="modality must be one of"):
        writers.write_volume(_mr(), tmp_path / "x.mha", modality="PET")
    assert not os.listdir(tmp_path)


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "mr.mha"
    writers.write_volume(_mr(), out)
    with pytest.raises(VolumeError, match="already exists.*--overwrite"):
        writers.write_volume(_mr(), out)
    writers.write_volume(_mr().with_data(np.zeros((7, 6, 5), np.float32)), out, overwrite=True)
    assert read_volume(out).data.max() == 0
    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(VolumeError, match="is a folder"):
        writers.write_volume(_mr(), tmp_path / "folder.nii.gz", overwrite=True)


def test_values_that_do_not_fit_are_clipped_and_said(tmp_path):
    vol = _mr().with_data(np.linspace(-20, 300, 7 * 6 * 5, dtype=np.float32).reshape(7, 6, 5))
    info = writers.write_volume(vol, tmp_path / "mr.nii.gz", modality="MR", dtype="uint8")
    q = info["quantisation"]
    below, above = int((np.rint(vol.data) < 0).sum()), int((np.rint(vol.data) > 255).sum())
    assert (q["clipped_below"], q["clipped_above"]) == (below, above) and below > 0 and above > 0
    assert f"{below + above} voxel(s) did not fit uint8" in info["clipped"]
    back = read_volume(tmp_path / "mr.nii.gz").data
    assert back.min() == 0 and back.max() == 255


def test_fitting_rescale_keeps_values_within_half_a_step():
    values = np.array([-3.7, 0.0, 12.5, 4095.3])
    slope, intercept = fitting_rescale(values, np.uint16)
    q = quantise(values, np.uint16, slope, intercept)
    assert q.clipped == 0 and intercept == -4.0 and len(repr(slope)) <= 16
    np.testing.assert_allclose(q.stored * slope + intercept, values, atol=slope / 2 + 1e-9)
    assert fitting_rescale(np.zeros(3), np.uint16) == (1.0, 0.0)


def test_an_existing_file_where_a_dicom_folder_goes_is_refused_once_with_the_real_reason(tmp_path):
    """--overwrite cannot help, so the first refusal says so instead of suggesting it."""
    from mrgan_tf.io.volumes import VolumeError
    from mrgan_tf.io.writers import check_output
    (tmp_path / "syn_ct").write_text("a file")
    for overwrite in (False, True):
        with pytest.raises(VolumeError, match="exists and is a file, and a dicom output is a folder; choose another"):
            check_output(tmp_path / "syn_ct", "dicom", "CT", overwrite=overwrite)
    (tmp_path / "syn.nii.gz").mkdir()
    with pytest.raises(VolumeError, match="exists and is a folder, and a nifti output is a file"):
        check_output(tmp_path / "syn.nii.gz", None, "CT", overwrite=True)
