"""Test-time augmentation and ensembles in synthesize: exact inverses, the spread beside the output (NIfTI,
.mha, a second DICOM series), its provenance, and the refusals."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from conftest import dciodvfy_errors, head_pair, identity_predictor
from mrgan_tf.inference import outputs, predictors, synthesis, tta
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume
from mrgan_tf.io.writers import write_volume
from mrgan_tf.preprocess import PreprocessConfig

FULL = PreprocessConfig(spacing_mm=2.0, image_size=32, ct_range=(-1024, 3000), bits=16)
ALL = tta.TTAConfig(("flip", "shift"))


def mr_volume(tmp_path) -> Volume:
    _, mr = head_pair()
    path = tmp_path / "p1" / "mr.nii.gz"
    write_volume(mr, path, dtype="float32")
    return Volume(mr.data, mr.affine, str(path))


def ramp_predictor(name: str, cfg, source: str = "ramp"):
    """A model that is not mirror-symmetric: it adds 0.1 (model units: 0.05 on 0..1) times the column's
    position, left to right, so a flipped copy mapped back disagrees with the input's prediction."""
    ramp = np.linspace(-1.0, 1.0, cfg.image_size, dtype=np.float32)[None, None, :, None]
    pred = identity_predictor(name, cfg)
    pred.fn, pred.source = (lambda x: np.clip(x + 0.1 * ramp, -1.0, 1.0)), source
    return pred


@pytest.mark.parametrize("transform", ALL.transforms()[1:], ids=lambda t: t.name)
def test_each_augmentation_moves_the_stack_and_its_inverse_puts_it_back_exactly(transform):
    stack = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    moved = transform(stack)
    assert not np.array_equal(moved, stack)
    np.testing.assert_array_equal(transform.inverse(moved), stack)


def test_transforms_are_the_identity_then_flip_then_four_shifts():
    assert [t.name for t in tta.TTAConfig(("shift", "flip"), shift_px=3).transforms()] == [
        "identity", "flip", "shift(+3,+0)", "shift(-3,+0)", "shift(+0,+3)", "shift(+0,-3)"]
    assert [t.name for t in tta.TTAConfig().transforms()] == ["identity"]


def test_an_identity_model_gives_the_single_prediction_and_zero_spread_on_the_output_grid(tmp_path):
    vol = mr_volume(tmp_path)
    model = identity_predictor("mr2ct", FULL)
    single = outputs.write_synthesis(model, vol, str(tmp_path / "one.nii.gz"))
    info = outputs.write_synthesis(predictors.Fusion((model, model), "mean", ALL), vol, str(tmp_path / "syn_ct.mha"))
    assert single["spread"] is None and not (tmp_path / "one_sd.nii.gz").exists()
    one = json.loads((tmp_path / "one.nii.gz.json").read_text())
    assert one["uncertainty"]["spread"] is None and "none written" in one["uncertainty"]["is"]

    out, sd = read_volume(tmp_path / "syn_ct.mha"), read_volume(tmp_path / "syn_ct_sd.mha")
    np.testing.assert_array_equal(out.data, read_volume(tmp_path / "one.nii.gz").data)
    assert info["spread"] == str(tmp_path / "syn_ct_sd.mha") and info["slices"] == 12 * single["slices"]
    assert sd.shape == out.shape == vol.shape and sd.data.dtype == np.float32
    np.testing.assert_array_equal(sd.affine, out.affine)
    assert np.count_nonzero(sd.data) == 0

    doc = json.loads((tmp_path / "syn_ct.mha.json").read_text())
    assert doc["uncertainty"]["spread"] == str(tmp_path / "syn_ct_sd.mha")
    assert doc["uncertainty"]["predictions"] == 12 and doc["uncertainty"]["method"] == "mean"
    assert doc["model"]["augmentations"] == [t.name for t in ALL.transforms()]
    assert [m["path"] for m in doc["model"]["models"]] == ["identity-mr2ct"] * 2
    sd_doc = json.loads((tmp_path / "syn_ct_sd.mha.json").read_text())
    assert sd_doc["spread_of"] == str(tmp_path / "syn_ct.mha")
    assert sd_doc["output"]["path"] == str(tmp_path / "syn_ct_sd.mha") and sd_doc["output"]["dtype"] == "float32"


def test_a_model_that_is_not_mirror_symmetric_has_the_spread_of_its_two_copies(tmp_path):
    """Flip TTA of the ramp model: the copies differ by 2 x 0.05 x ramp on 0..1, so the spread (population sd
    of two) grows towards both sides, and where nothing is clipped the mean cancels the ramp."""
    cfg = PreprocessConfig(spacing_mm=2.0, image_size=64)
    ct, _ = head_pair()
    vol = Volume(ct.data, ct.affine, "ct")
    fused, sd, _ = synthesis.synthesize_with_spread(predictors.Fusion((ramp_predictor("ct2mr", cfg),), "mean",
                                                                      tta.TTAConfig(("flip",))), vol)
    plain, _ = synthesis.synthesize_volume(identity_predictor("ct2mr", cfg), vol)
    unclipped = (plain.data > 15) & (plain.data < 240)   # the brain, mid-window
    assert unclipped.sum() > 1000 and sd.data.max() > 5.0
    np.testing.assert_allclose(fused.data[unclipped], plain.data[unclipped], atol=0.01)
    left_to_right = sd.data[:, sd.shape[1] // 2, sd.shape[2] // 2]   # x runs along the canvas columns
    assert left_to_right[0] > left_to_right[len(left_to_right) // 2] < left_to_right[-1]


def test_dicom_spread_is_a_second_series_of_the_same_study_and_frame(tmp_path):
    out = tmp_path / "out" / "syn_ct"
    model = ramp_predictor("mr2ct", FULL)
    info = outputs.write_synthesis(predictors.Fusion((model,), tta=tta.TTAConfig(("flip",))), mr_volume(tmp_path),
                                   str(out), options=outputs.OutputOptions(out_format="dicom", series_number=40))
    spread = tmp_path / "out" / "syn_ct_sd"
    assert info["spread"] == str(spread) and (tmp_path / "out" / "syn_ct_sd.json").is_file()
    main, sd = pydicom.dcmread(next(out.iterdir())), pydicom.dcmread(next(spread.iterdir()))
    assert sd.SeriesInstanceUID != main.SeriesInstanceUID
    assert (sd.StudyInstanceUID, sd.FrameOfReferenceUID) == (main.StudyInstanceUID, main.FrameOfReferenceUID)
    assert (int(main.SeriesNumber), int(sd.SeriesNumber)) == (40, 41) and sd.Modality == "CT"
    assert sd.SeriesDescription.startswith("SD HU of series 40: mrgan-tf synthetic CT") and len(sd.SeriesDescription) <= 64
    assert "standard deviation in HU across 2 predictions" in sd.ImageComments
    assert main.SeriesInstanceUID in sd.ImageComments
    assert len(list(spread.iterdir())) == len(list(out.iterdir()))
    back = read_volume(spread)
    np.testing.assert_allclose(back.affine, read_volume(out).affine, atol=1e-4)
    assert back.data.max() > 50   # HU: the ramp's 0.05 of 4024 HU at the canvas edges
    assert dciodvfy_errors(spread) == {}


def test_fusion_of_one_stack_of_slices_combines_members_and_copies():
    stack = np.random.default_rng(1).uniform(0.2, 0.8, (5, 32, 32)).astype(np.float32)   # nothing clipped
    ramp = ramp_predictor("ct2mr", FULL)
    fused = predictors.Fusion((ramp,), "mean", tta.TTAConfig(("flip",)))
    assert np.abs(ramp.predict01(stack) - stack).max() > 0.04
    np.testing.assert_allclose(fused.predict01(stack), stack, atol=1e-6)   # the ramp cancels
    coronal = identity_predictor("ct2mr", PreprocessConfig(spacing_mm=2.0, image_size=32, slice_axis="coronal"))
    with pytest.raises(predictors.SynthesisError, match="different planes fuse only on the volume's grid"):
        predictors.Fusion((identity_predictor("ct2mr", PreprocessConfig(spacing_mm=2.0, image_size=32)),
                           coronal)).predict01(stack)


# ---------------------------------------------------------------- refusals
def test_unknown_repeated_or_too_long_augmentations_are_refused():
    with pytest.raises(tta.AugmentationError, match=r"--tta=flip,rotate: unknown augmentation 'rotate'; choose "
                                                    r"from flip, shift"):
        tta.TTAConfig(("flip", "rotate"))
    with pytest.raises(tta.AugmentationError, match="'flip' given twice"):
        tta.TTAConfig(("flip", "flip"))
    with pytest.raises(tta.AugmentationError, match=r"--tta_shift_px must be 1\.\.16"):
        tta.TTAConfig(("shift",), shift_px=0)
    with pytest.raises(tta.AugmentationError, match="identity-ct2mr: --tta_shift_px=16 is half the model's "
                                                    "32-pixel canvas"):
        predictors.Fusion((identity_predictor("ct2mr", FULL),), tta=tta.TTAConfig(("shift",), shift_px=16))


def test_members_of_other_directions_or_preprocessing_are_refused():
    a = identity_predictor("ct2mr", FULL)
    with pytest.raises(predictors.SynthesisError, match="identity-mr2ct: a mr2ct model cannot be fused with the "
                                                        "ct2mr model identity-ct2mr"):
        predictors.Fusion((a, identity_predictor("mr2ct", FULL)), tta=ALL)
    other = identity_predictor("ct2mr", PreprocessConfig(spacing_mm=1.0, image_size=32, ct_range=(-1024, 3000),
                                                         bits=16))
    with pytest.raises(predictors.SynthesisError, match=r"trained with other preprocessing .*spacing_mm=1\.0 vs 2\.0"):
        predictors.Fusion((a, other), tta=ALL)
    with pytest.raises(predictors.SynthesisError, match="at least two models, got 1 .* or --tta"):
        predictors.Fusion((a,))


def test_existing_spread_output_is_refused_before_any_work(tmp_path):
    (tmp_path / "syn_ct_sd.nii.gz").write_text("taken")
    fusion = predictors.Fusion((identity_predictor("mr2ct", FULL),), tta=ALL)
    with pytest.raises(Exception, match="syn_ct_sd.nii.gz: output already exists"):
        outputs.write_synthesis(fusion, mr_volume(tmp_path), str(tmp_path / "syn_ct.nii.gz"))
    assert not (tmp_path / "syn_ct.nii.gz").exists()


def test_cli_refuses_an_unknown_augmentation_in_one_line(tmp_path):
    src = tmp_path / "mr.nii.gz"
    write_volume(mr_volume(tmp_path), src, dtype="float32")
    run = subprocess.run([sys.executable, "-m", "mrgan_tf.synthesize", f"--model={tmp_path}", f"--mr={src}",
                          f"--out={tmp_path / 'syn_ct.nii.gz'}", "--tta=flip,mirror"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == ("synthesize: error: --tta=flip,mirror: unknown augmentation "
                                                   "'mirror'; choose from flip, shift")
    assert not (tmp_path / "syn_ct.nii.gz").exists()
