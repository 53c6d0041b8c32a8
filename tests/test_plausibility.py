"""Plausibility checks: nonsense input is an error naming the patient, or an accepted, counted warning."""
import shutil
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import add_patient, head_pair, records_config
from mrgan_tf.inference import synthesis
from mrgan_tf.io import layout
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.io.writers import write_nifti
from mrgan_tf.preprocess import plausibility as pl
from mrgan_tf.preprocess.plausibility import PlausibilityConfig
from mrgan_tf.records.make_records import make_records
from tfrecords_tools import reader


def vol(data, source="x.nii.gz"):
    return Volume(np.asarray(data, np.float32), np.eye(4), source)


# ------------------------------------------------------------------ pure checks

def test_volume_checks():
    ct, mr = head_pair()
    assert pl.check_volume(ct, "ct") == [] and pl.check_volume(mr, "mr") == []
    zero = pl.check_volume(vol(np.zeros((4, 4, 4)), "z.nii"), "ct")
    assert [p.kind for p in zero] == ["constant"] and "z.nii" in str(zero[0]) and "every voxel is 0" in str(zero[0])
    blob = ct.data.copy()
    blob[:3, :3, :3] = 1e30
    far = pl.check_volume(vol(blob, "b.nii"), "ct")
    assert [p.kind for p in far] == ["out_of_range"] and "27 voxel(s)" in str(far[0])
    unsigned = pl.check_volume(vol(ct.data + 1024, "u.nii"), "ct")
    assert [p.kind for p in unsigned] == ["unsigned_ct"]
    assert "HU+1024" in str(unsigned[0]) and "--unsigned_ct_offset=1024" in str(unsigned[0])
    assert pl.check_volume(vol(mr.data - mr.data.min()), "mr") == []      # MR has no sign rule
    mended = pl.remove_unsigned_offset(vol(ct.data + 1024), 1024)
    np.testing.assert_allclose(mended.data, ct.data, atol=1e-3)


def test_empty_mr_slices_and_raise_or_warn():
    mask = np.zeros((3, 4, 4), np.uint8)
    mask[:, 1:3, 1:3] = 1
    mr = np.zeros((3, 4, 4), np.uint8)
    mr[0, 1:3, 1:3] = 200
    mr[2, 0, 0] = 200                    # signal only outside the body: still empty
    assert pl.empty_mr_slices(mr, mask).tolist() == [False, True, True]
    problems = [pl.Problem("constant", "a.nii: c"), pl.Problem("unsigned_ct", "b.nii: u")]
    with pytest.raises(VolumeError, match="a.nii: c") as err:
        pl.raise_or_warn(problems, accept=["unsigned_ct"])
    assert err.value.kinds == ("constant",)
    assert pl.raise_or_warn(problems, accept=["constant", "unsigned_ct"]) == problems
    with pytest.raises(ValueError, match="unknown kind"):
        PlausibilityConfig(accept=("nonsense",))


def test_unsupported_files_are_named(tmp_path):
    (tmp_path / "ct.img").write_bytes(b"\0")
    (tmp_path / "ct.hdr").write_bytes(b"\0")
    (tmp_path / "IM0001.dcm").write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("fine")
    found = layout.unsupported_inputs(tmp_path)
    assert [Path(str(p).split(":")[0]).name for p in found] == ["IM0001.dcm", "ct.hdr", "ct.img"]
    assert all(p.kind == "unsupported_file" for p in found)
    assert "ct/ or mr/" in str(found[0]) and "nib.load('ct.hdr')" in str(found[2])


# ------------------------------------------------------------------ make_records

@pytest.fixture(scope="module")
def bad_root(tmp_path_factory):
    """Two good pairs and one patient for each kind of nonsense the issue measured."""
    root = tmp_path_factory.mktemp("bad") / "root"
    for i in range(2):
        add_patient(root, f"good{i}", seed=i)
    ct, mr = head_pair(seed=0)

    def patient(pid, ct_data=None, mr_vol=None):
        folder = root / pid
        folder.mkdir()
        write_nifti(ct if ct_data is None else ct.with_data(ct_data.astype(np.float32)), folder / "ct.nii.gz")
        write_nifti(mr if mr_vol is None else mr_vol, folder / "mr.nii.gz")
        return folder

    patient("zero_ct", np.zeros(ct.shape))
    huge = ct.data.copy()
    huge[5:10, 5:10, 5:10] = 1e30
    patient("huge_ct", huge)
    patient("unsigned_ct", ct.data + 1024)
    patient("constant_mr", mr_vol=mr.with_data(np.full(mr.shape, 7.0, np.float32)))
    patient("short_mr", mr_vol=mr.with_data(mr.data[:, :, :20]))           # same affine, 10 slices shorter
    tiny = root / "tiny"
    tiny.mkdir()
    noise = np.random.default_rng(3).normal(-1000, 5, (5, 5, 5)).astype(np.float32)
    write_nifti(Volume(noise, np.eye(4)), tiny / "ct.nii.gz")
    write_nifti(Volume(noise + 1000, np.eye(4)), tiny / "mr.nii.gz")
    analyze = root / "analyze_ct"
    analyze.mkdir()
    nib.save(nib.AnalyzeImage(ct.data, ct.affine), str(analyze / "ct.img"))
    write_nifti(mr, analyze / "mr.nii.gz")
    return root


def test_make_records_names_counts_and_drops(bad_root, tmp_path):
    summary = make_records(bad_root, tmp_path / "out", records_config(), test_patients=0, on_error="skip", workers=0,
                           progress=False)
    failed = summary["failed_patients"]
    assert sorted(failed) == ["analyze_ct", "constant_mr", "huge_ct", "tiny", "unsigned_ct", "zero_ct"]
    assert "ct.img" in failed["analyze_ct"] and "not a supported input" in failed["analyze_ct"]
    assert "every voxel is 0" in failed["zero_ct"] and "every voxel is 7" in failed["constant_mr"]
    assert "beyond +-100000 HU" in failed["huge_ct"] and "HU+1024" in failed["unsigned_ct"]
    assert "no slice kept" in failed["tiny"] and "(5, 5, 5)" not in failed["tiny"]   # shape after resampling
    assert all(failed[p].startswith(f"patient {p}") for p in ("zero_ct", "huge_ct", "unsigned_ct", "tiny"))
    assert summary["plausibility"]["errors"] == {"constant": 2, "no_slices": 1, "out_of_range": 1,
                                                 "unsigned_ct": 1, "unsupported_file": 1}
    assert summary["patients"] == {"paired/train": 3}              # tiny is no patient of the records
    dropped = summary["plausibility"]["partial_mr_pairs_dropped"]
    assert set(dropped) == {"short_mr"} and dropped["short_mr"] > 0
    assert summary["plausibility"]["warnings"] == {"partial_mr": 1}
    assert "dropped" in summary["plausibility"]["patient_warnings"]["short_mr"][0]
    kept = {}
    for ex in reader.iterate(tmp_path / "out", "paired_train"):
        kept.setdefault(ex["patient_id"], []).append(int(ex["slice_index"]))
        body = ex["mask"][..., 0] > 0
        assert np.count_nonzero(ex["mr"][..., 0][body]) > 0.01 * body.sum()   # no empty MR slice was written
    assert max(kept["short_mr"]) < 20 <= max(kept["good0"])                # the MR's 20 slices, no more


def test_make_records_accepts_and_mends_on_request(bad_root, tmp_path):
    only = tmp_path / "root"
    only.mkdir()
    for pid in ("good0", "unsigned_ct", "analyze_ct"):
        (only / pid).symlink_to(bad_root / pid)
    summary = make_records(only, tmp_path / "out", records_config(), test_patients=0, workers=0, progress=False,
                           checks=PlausibilityConfig(accept=("unsupported_file",), unsigned_ct_offset=1024))
    assert summary["failed_patients"] == {} and summary["patients"] == {"mr/train": 1, "paired/train": 2}
    assert summary["plausibility"]["ct_offset_hu_subtracted"] == {"unsigned_ct": 1024.0}
    assert summary["plausibility"]["warnings"] == {"unsupported_file": 1}
    assert "ct.img" in " ".join(summary["plausibility"]["patient_warnings"]["analyze_ct"])
    ct = {}
    for ex in reader.iterate(tmp_path / "out", "paired_train"):
        ct.setdefault(ex["patient_id"], []).append(ex["ct"].astype(int))
    assert np.abs(np.stack(ct["unsigned_ct"]) - np.stack(ct["good0"])).max() <= 1   # the same CT once mended


# ------------------------------------------------------------------ synthesize

def test_synthesize_refuses_constant_input_and_warns_on_unsigned_ct(caplog):
    predictor = types.SimpleNamespace(name="ct2mr")   # the checks run before the model is used
    with pytest.raises(VolumeError, match="every voxel is 0"):
        synthesis.prepare_input(predictor, vol(np.zeros((8, 8, 8)), "zero.nii.gz"))
    ct, _ = head_pair()
    with pytest.raises(AttributeError):               # past the checks, into the (absent) model's preprocessing
        synthesis.prepare_input(predictor, ct.with_data(ct.data + 1024))
    assert "HU+1024" in caplog.text


# ------------------------------------------------------------------ DICOM: several series in one folder

def test_several_dicom_series_name_the_flag_and_a_list_picks_one(tmp_path):
    import pydicom

    from conftest import copy_series
    from mrgan_tf.io.dicom import read_dicom_series
    single = copy_series("98892001/CT5N", tmp_path / "single")
    both = tmp_path / "ct"
    both.mkdir()
    for src, prefix in ((single, "a"), (copy_series("77654033/CT2", tmp_path / "b"), "b")):
        for f in src.iterdir():
            shutil.copy(f, both / f"{prefix}_{f.name}")
    uid = str(pydicom.dcmread(next(both.glob("a_*"))).SeriesInstanceUID)
    with pytest.raises(VolumeError, match="choose one with --series_uid=UID") as err:
        read_dicom_series(both)
    assert uid in str(err.value)
    assert read_dicom_series(both, series_uid=[uid, "1.2.3"]).shape[2] == 5
    with pytest.raises(VolumeError, match="names none of them"):
        read_dicom_series(both, series_uid=["1.2.3"])
    assert read_dicom_series(single, series_uid=["1.2.3"]).shape[2] == 5   # a list matters only given a choice
