"""Volume readers/writers on real files: pydicom's bundled test series, NIfTI, MetaImage."""
import gzip
import shutil
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk

from conftest import copy_series, oblique_affine
from mrgan_tf.io.dicom import read_dicom_series
from mrgan_tf.io.readers import find_modality_file, read_volume
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.io.writers import write_nifti

DICOMDIR_TESTS = Path(pydicom.data.get_testdata_file("DICOMDIR")).parent
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def random_volume(shape=(6, 7, 5)) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 100, shape).astype(np.float32)


# ---------------------------------------------------------------- DICOM


def test_dicom_ct_series_reads_as_3d_with_rescale_and_spacing(tmp_path):
    folder = copy_series("98892001/CT5N", tmp_path / "ct")
    (tmp_path / "ct" / "notes.txt").write_text("not dicom")  # must be skipped
    vol = read_volume(folder)
    assert vol.data.dtype == np.float32 and vol.data.shape == (16, 16, 5)
    assert vol.source == str(folder)
    np.testing.assert_allclose(vol.spacing, [0.488281, 0.488281, 2.5], atol=1e-6)

    # Slices are ordered by position along the normal (+z here): slice 0 is the
    # lowest one (z = -1.2375), i.e. file 3353, whatever the file names say.
    ds = pydicom.dcmread(folder / "3353")
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) == -1024
    np.testing.assert_array_equal(vol.data[:, :, 0], expected.T)

    # World position of voxel (i=col 3, j=row 5, k=0) from the DICOM formula, LPS -> RAS.
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    row_sp, col_sp = map(float, ds.PixelSpacing)
    lps = ipp + 3 * col_sp * iop[:3] + 5 * row_sp * iop[3:]
    np.testing.assert_allclose(vol.affine @ [3, 5, 0, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-6)
    # The last slice sits at the top file's position.
    top = np.array(pydicom.dcmread(folder / "2062").ImagePositionPatient, float)
    np.testing.assert_allclose(vol.affine @ [0, 0, 4, 1], [-top[0], -top[1], top[2], 1], atol=1e-5)


def test_dicom_gap_is_rejected_naming_positions(tmp_path):
    folder = copy_series("77654033/CT2", tmp_path / "ct")
    with pytest.raises(VolumeError, match="gap") as err:
        read_volume(folder)
    msg = str(err.value)
    assert msg.startswith(str(folder))
    assert "-99.480" in msg and "103.020" in msg


def test_dicom_non_uniform_spacing_is_rejected(tmp_path):
    folder = copy_series("98892001/CT5N", tmp_path / "ct")
    ds = pydicom.dcmread(folder / "2062")
    ds.ImagePositionPatient = [-72.2, -143.0, 9.3]  # step 3.04 mm instead of 2.5: > 10 % off, < 1.5x
    ds.save_as(folder / "2062")
    with pytest.raises(VolumeError, match="non-uniform slice spacing.*6.263 mm.*9.300 mm"):
        read_volume(folder)


def test_dicom_several_series_and_mixed_orientations_are_rejected(tmp_path):
    folder = copy_series("98892003/MR2", tmp_path / "mr")
    with pytest.raises(VolumeError, match="series") as err:
        read_dicom_series(folder)
    uids = {str(pydicom.dcmread(f).SeriesInstanceUID) for f in folder.iterdir()}
    assert len(uids) > 1 and all(uid in str(err.value) for uid in uids)
    localizers = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.136"
    with pytest.raises(VolumeError, match="mixed orientations"):
        read_volume(folder, series_uid=localizers)


def test_dicom_single_slice_and_empty_folder(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), one / "a.dcm")
    assert float(pydicom.dcmread(one / "a.dcm").RescaleIntercept) == -1024
    with pytest.raises(VolumeError, match="only 1 slice"):
        read_volume(one)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(DICOMDIR_TESTS / "DICOMDIR", empty / "DICOMDIR")  # a DICOM file without images
    with pytest.raises(VolumeError, match="no DICOM images") as err:
        read_volume(empty)
    assert str(empty) in str(err.value)


def test_dicom_duplicate_positions_are_rejected(tmp_path):
    folder = copy_series("98892001/CT5N", tmp_path / "ct")
    shutil.copy(folder / "2062", folder / "copy")
    with pytest.raises(VolumeError, match="share slice position"):
        read_volume(folder)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.98])
def test_dicom_truncated_slice_is_reported_not_dropped(tmp_path, keep):
    folder = copy_series("98892001/CT5N", tmp_path / "ct")
    top = folder / "2062"  # the top slice: dropping it would leave a gap-free, shorter volume
    blob = top.read_bytes()
    top.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(VolumeError, match="2062"):
        read_volume(folder)


def test_dicom_without_preamble_is_read(tmp_path):
    folder = copy_series("98892001/CT5N", tmp_path / "ct")
    reference = read_volume(folder)
    raw = folder / "2392"
    ds = pydicom.dcmread(raw)
    ds.preamble = None
    del ds.file_meta  # implicit-VR little endian body only, as old ACR-NEMA files
    ds.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.data, reference.data)
    np.testing.assert_array_equal(vol.affine, reference.affine)


# ---------------------------------------------------------------- NIfTI / SimpleITK


@pytest.mark.parametrize("name", ["vol.nii.gz", "vol.nii"])
def test_nifti_round_trip_oblique(tmp_path, name):
    vol = Volume(random_volume(), oblique_affine(), "mem")
    out = write_nifti(vol, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp files left
    back = read_volume(out)
    np.testing.assert_array_equal(back.affine, vol.affine)
    np.testing.assert_array_equal(back.data, vol.data)
    img = nib.load(out)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), vol.affine, atol=1e-4)
    if name.endswith(".gz"):
        with gzip.open(out) as f:  # really compressed
            f.read(10)


def test_nifti_integer_dtype_and_scaling(tmp_path):
    mask = Volume((random_volume() > 0).astype(np.float32), np.eye(4))
    out = write_nifti(mask, tmp_path / "mask.nii.gz", dtype=np.uint8)
    assert nib.load(out).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(read_volume(out).data, mask.data)
    with pytest.raises(VolumeError, match="do not fit"):
        write_nifti(Volume(np.full((2, 2, 2), 300.0), np.eye(4)), tmp_path / "bad.nii", dtype=np.uint8)
    assert not (tmp_path / "bad.nii").exists()

    # scl_slope / scl_inter are applied on read, as nibabel does.
    raw = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "scaled.nii")
    np.testing.assert_array_equal(read_volume(tmp_path / "scaled.nii").data, raw * 2.0 - 1024.0)


def test_mha_with_direction_matches_world_coordinates(tmp_path):
    data_ijk = random_volume((5, 6, 7))
    img = sitk.GetImageFromArray(data_ijk.transpose(2, 1, 0))  # sitk arrays are (z, y, x)
    a = np.deg2rad(25.0)
    direction = np.array([[np.cos(a), 0, np.sin(a)], [0, -1, 0], [np.sin(a), 0, -np.cos(a)]])
    img.SetDirection(direction.ravel().tolist())
    img.SetSpacing((0.8, 1.2, 3.0))
    img.SetOrigin((10.0, -20.0, 35.5))
    sitk.WriteImage(img, str(tmp_path / "ct.mha"))

    vol = read_volume(tmp_path / "ct.mha")
    np.testing.assert_array_equal(vol.data, data_ijk)
    for ijk in [(0, 0, 0), (4, 5, 6), (1, 3, 2), (4, 0, 6)]:
        lps = img.TransformIndexToPhysicalPoint(ijk)
        ras = [-lps[0], -lps[1], lps[2]]
        np.testing.assert_allclose((vol.affine @ [*ijk, 1])[:3], ras, atol=1e-5)
        assert vol.data[ijk] == img[ijk]

    # The same image through NIfTI lands on the same world coordinates.
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    nii = read_volume(tmp_path / "ct.nii.gz")
    np.testing.assert_allclose(nii.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(nii.data, vol.data)


def test_trailing_singleton_4d_is_squeezed(tmp_path):
    nib.save(nib.Nifti1Image(random_volume()[..., None], oblique_affine()), tmp_path / "v.nii.gz")
    assert read_volume(tmp_path / "v.nii.gz").shape == (6, 7, 5)


# Two voxel axes pointing the same way: no voxel size is zero, but no inverse exists.
SINGULAR = np.array([[1.0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: _nifti(p / "a.nii.gz", np.zeros((4, 5), np.float32)), "2-D"),
        (lambda p: _nifti(p / "a.nii.gz", np.zeros((4, 5, 3, 2), np.float32)), "4-D"),
        (lambda p: _nifti(p / "a.nii.gz", np.zeros((4, 0, 3), np.float32)), "empty"),
        (lambda p: _nifti(p / "a.nii", np.where(np.eye(3)[None].repeat(3, 0) > 0, np.nan, 1).astype(np.float32)), "NaN"),
        (lambda p: _nifti(p / "a.nii", np.zeros((3, 3, 3), np.float32), SINGULAR), "not invertible"),
        (lambda p: p / "missing.nii.gz", "no such file"),
        (lambda p: p / "missing_dir" / "ct.mha", "no such file"),
        (lambda p: (p / "x.png").write_bytes(b"\x89PNG") and p / "x.png", "unsupported format"),
    ],
)
def test_bad_inputs_raise_volume_error_naming_the_path(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(VolumeError, match=problem) as err:
        read_volume(path)
    assert str(err.value).startswith(str(path))


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.mha", "ct.nrrd"])
def test_truncated_files_raise_volume_error(tmp_path, name):
    path = tmp_path / name
    data = random_volume((20, 20, 20))
    if name.endswith(".nii.gz"):
        _nifti(path, data)
    else:
        sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    assert str(err.value).startswith(str(path))


def test_2d_mha_rejected(tmp_path):
    path = tmp_path / "x.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.float32)), str(path))
    with pytest.raises(VolumeError, match="2-D"):
        read_volume(path)


def test_inv3_dispatches_lazily(tmp_path, monkeypatch):
    fake = types.ModuleType("mrgan_tf.io.invesalius")
    fake.read_inv3 = lambda p: Volume(np.ones((2, 2, 2), np.int16), np.eye(4), str(p))
    monkeypatch.setitem(sys.modules, "mrgan_tf.io.invesalius", fake)
    import mrgan_tf.io

    monkeypatch.setattr(mrgan_tf.io, "invesalius", fake, raising=False)
    path = tmp_path / "p.inv3"
    path.write_bytes(b"x")
    vol = read_volume(path)
    assert vol.data.dtype == np.float32 and vol.shape == (2, 2, 2)


# ---------------------------------------------------------------- patient folders


def test_find_modality_file(tmp_path):
    assert find_modality_file(tmp_path, "ct") is None
    (tmp_path / "ct.mha").write_bytes(b"")
    copy_series("98892001/CT5N", tmp_path / "mr")
    assert find_modality_file(tmp_path, "ct") == tmp_path / "ct.mha"
    assert find_modality_file(tmp_path, "mr") == tmp_path / "mr"
    assert find_modality_file(tmp_path, "mask") is None
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    with pytest.raises(VolumeError, match="ct.nii.gz, ct.mha") as err:
        find_modality_file(tmp_path, "ct")
    assert str(err.value).startswith(str(tmp_path))
