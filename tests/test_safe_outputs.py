"""Nothing unsafe leaves synthesize: a windowed model's synthetic CT is refused (or marked), and an input of
the other modality is refused with one line naming the file, the evidence and the override."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from conftest import dciodvfy_errors, head_ct, head_pair, identity_predictor

from mrgan_tf.inference import outputs, predictors
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.io.writers import write_volume
from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.preprocess import plausibility as pl

WINDOW = PreprocessConfig(spacing_mm=2.0, image_size=32)                                  # the paper's 40/80 HU
FULL = PreprocessConfig(spacing_mm=2.0, image_size=32, ct_range=(-1024, 3000), bits=16)   # SynthRAD's clip


def mr_volume(tmp_path) -> Volume:
    _, mr = head_pair()
    path = tmp_path / "p1" / "mr.nii.gz"
    write_volume(mr, path, dtype="float32")
    return Volume(mr.data, mr.affine, str(path))


# ---------------------------------------------------------------- the windowed synthetic CT
def test_windowed_model_refuses_a_synthetic_ct_dicom_series(tmp_path):
    out = tmp_path / "out" / "syn_ct"
    with pytest.raises(predictors.SynthesisError, match=r"only within 0\.\.80 HU .*--allow_windowed_ct"):
        outputs.write_synthesis(identity_predictor("mr2ct", WINDOW), mr_volume(tmp_path), str(out),
                                options=outputs.OutputOptions(out_format="dicom"))
    assert not out.exists() and not (tmp_path / "out" / "syn_ct.json").exists()


def test_windowed_synthetic_ct_written_on_request_says_so_everywhere(tmp_path, caplog):
    out = tmp_path / "out" / "syn_ct"
    options = outputs.OutputOptions(out_format="dicom", allow_windowed_ct=True)
    outputs.write_synthesis(identity_predictor("mr2ct", WINDOW), mr_volume(tmp_path), str(out), options=options)
    ds = pydicom.dcmread(next(out.iterdir()))
    assert ds.Modality == "CT" and ds.SeriesDescription.startswith("WINDOWED 0..80 HU, NOT FOR DOSE")
    assert len(ds.SeriesDescription) <= 64 and "NOT FOR DOSE" in ds.ImageComments
    assert "CT range 0..80 HU" in ds.DerivationDescription
    doc = json.loads((tmp_path / "out" / "syn_ct.json").read_text())
    assert doc["ct_range_hu"] == [0.0, 80.0] and "NOT FOR DOSE" in doc["windowed_ct"]
    assert "NOT FOR DOSE" in caplog.text
    assert dciodvfy_errors(out) == {}


def test_full_range_synthetic_ct_is_written_unmarked_with_its_range(tmp_path):
    out = tmp_path / "out" / "syn_ct"
    outputs.write_synthesis(identity_predictor("mr2ct", FULL), mr_volume(tmp_path), str(out),
                            options=outputs.OutputOptions(out_format="dicom"))
    ds = pydicom.dcmread(next(out.iterdir()))
    assert "WINDOWED" not in ds.SeriesDescription and "ImageComments" not in ds
    assert "CT range -1024..3000 HU" in ds.DerivationDescription
    doc = json.loads((tmp_path / "out" / "syn_ct.json").read_text())
    assert doc["ct_range_hu"] == [-1024.0, 3000.0] and doc["windowed_ct"] is None


def test_a_synthetic_mr_is_never_refused_for_the_ct_window(tmp_path):
    ct, _ = head_pair()
    outputs.write_synthesis(identity_predictor("ct2mr", WINDOW), Volume(ct.data, ct.affine, "ct"), str(tmp_path / "mr.nii.gz"))
    assert (tmp_path / "mr.nii.gz").exists()


@pytest.mark.parametrize("ct_range, windowed", [(None, True), ((-1024, 3000), False), ((-1000, 1500), False),
                                                ((-1024, 1000), True), ((-200, 3000), True)])
def test_which_ct_ranges_count_as_windowed(ct_range, windowed):
    assert PreprocessConfig(ct_range=ct_range, bits=16).ct_windowed is windowed


# ---------------------------------------------------------------- the wrong modality
def test_a_ct_given_as_the_mr_is_refused_naming_file_evidence_and_override(tmp_path):
    ct, _ = head_pair()
    vol = Volume(ct.data, ct.affine, str(tmp_path / "patient" / "mr.nii.gz"))
    with pytest.raises(VolumeError) as info:
        outputs.write_synthesis(identity_predictor("mr2ct", FULL), vol, str(tmp_path / "syn_ct.nii.gz"))
    message = str(info.value)
    assert message.startswith(f"{vol.source}: given as an MR but looks like a CT")
    assert "at or below -500" in message and "--accept=wrong_modality" in message
    assert not (tmp_path / "syn_ct.nii.gz").exists()
    outputs.write_synthesis(identity_predictor("mr2ct", FULL), vol, str(tmp_path / "syn_ct.nii.gz"),
                            options=outputs.OutputOptions(accept=(pl.WRONG_MODALITY,)))   # the override
    assert (tmp_path / "syn_ct.nii.gz").exists()


@pytest.mark.parametrize("scale", [1.0, 4.0])   # raw MR units of two scanners
def test_an_mr_given_as_the_ct_is_refused_and_not_called_unsigned(scale):
    _, mr = head_pair()
    problems = pl.check_volume(Volume(np.clip(mr.data, 0, None) * scale, mr.affine, "mr.nii.gz"), "ct")
    assert [p.kind for p in problems] == [pl.WRONG_MODALITY]
    assert "looks like an MR" in problems[0].message and "unsigned_ct_offset" not in problems[0].message


def test_a_z_scored_mr_given_as_the_ct_is_refused():
    _, mr = head_pair()
    z = (mr.data - mr.data.mean()) / mr.data.std()
    assert [p.kind for p in pl.check_volume(Volume(z, mr.affine, "z.nii.gz"), "ct")] == [pl.WRONG_MODALITY]


def test_an_unsigned_ct_gets_the_unsigned_hint_and_only_that():
    ct, _ = head_pair()
    problems = pl.check_volume(Volume(ct.data + 1024.0, ct.affine, "ct.nii.gz"), "ct")
    assert [p.kind for p in problems] == [pl.UNSIGNED_CT]
    assert "--unsigned_ct_offset=1024" in problems[0].message


@pytest.mark.parametrize("modality, data", [("ct", lambda ct, mr: ct), ("mr", lambda ct, mr: np.clip(mr, 0, None)),
                                            ("ct", lambda ct, mr: np.maximum(ct, -1024.0))])
def test_real_modalities_pass(modality, data):
    ct, mr = head_pair()
    assert pl.check_volume(Volume(data(ct.data, mr.data), ct.affine, "x"), modality) == []


def test_cli_one_line_for_the_wrong_modality(tmp_path):
    src = tmp_path / "ct.nii.gz"
    write_volume(Volume(head_ct((24, 28, 20)), np.eye(4)), src, modality="CT")
    run = subprocess.run([sys.executable, "-m", "mrgan_tf.synthesize", f"--model={tmp_path / 'no-model'}",
                          f"--mr={src}", f"--out={tmp_path / 'syn_ct.nii.gz'}"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("synthesize:")]
    assert errors == [errors[0]] and str(src) in errors[0] and "looks like a CT" in errors[0]
