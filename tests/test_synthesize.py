"""Whole-volume synthesis: geometry round trip, every slice through the model, folder mode, errors."""
from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import head_ct, identity_predictor, oblique_lps_affine, tiny_export, tiny_run
from mrgan_tf.inference import outputs, predictors, synthesis
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.io.writers import write_nifti
from mrgan_tf.preprocess import axial_stack, dequantise, quantise, volume_from_axial_stack, window_ct
from mrgan_tf.serving.export import ExportError


@pytest.fixture(scope="module")
def exported(tiny_records, tmp_path_factory):
    return tiny_export(tmp_path_factory, tiny_records)


@pytest.fixture(scope="module")
def to_mr(exported):
    return predictors.load_predictor(exported, "ct2mr")


def test_geometry_is_preserved_on_oblique_flipped_grid(to_mr, tmp_path):
    src = tmp_path / "ct.nii.gz"
    write_nifti(Volume(head_ct((24, 28, 20)), oblique_lps_affine()), src)
    info = outputs.synthesize_file(to_mr, str(src), str(tmp_path / "syn.nii.gz"))
    ref, out = read_volume(src), read_volume(tmp_path / "syn.nii.gz")
    assert out.shape == ref.shape == (24, 28, 20)
    np.testing.assert_array_equal(out.affine, ref.affine)
    np.testing.assert_array_equal(out.spacing, ref.spacing)
    assert nib.load(str(tmp_path / "syn.nii.gz")).get_data_dtype() == np.float32
    assert 0.0 <= out.data.min() and out.data.max() <= 255.0 and out.data.max() > 0
    assert info["slices"] > 0 and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_geometry_is_preserved_for_mha_input(to_mr, tmp_path):
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(head_ct((20, 28, 24)))   # (z, y, x)
    img.SetSpacing((0.8, 1.2, 1.5))
    img.SetOrigin((5.0, -3.0, 10.0))
    img.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))   # swapped x/y, flipped z
    sitk.WriteImage(img, str(tmp_path / "ct.mha"))
    outputs.synthesize_file(to_mr, str(tmp_path / "ct.mha"), str(tmp_path / "syn.nii.gz"))
    ref, out = read_volume(tmp_path / "ct.mha"), read_volume(tmp_path / "syn.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)   # NIfTI stores the affine as float32


def test_every_slice_goes_through_the_model(to_mr, tiny_records):
    """On a grid that needs no resampling, output slice k == model(windowed axial slice k), slices without a
    body too; a slice without any contrast is the background (context.blank_flat_stacks_tf)."""
    cfg = tiny_records.preprocess
    ct = head_ct((32, 32, 6))
    ct[:, :, :2] = -1000.0   # no body: make_records would drop these slices; synthesis must not
    ct[3:6, 3:6, 0] = 40.0   # slice 0: a speck (a headrest, a marker) gives it contrast; slice 1 is flat air
    vol = Volume(ct, np.eye(4), "mem")
    out, timing = synthesis.synthesize_volume(to_mr, vol)
    assert timing["slices"] == 6
    q01 = dequantise(quantise(window_ct(axial_stack(ct), cfg.ct_window_center, cfg.ct_window_width), cfg.bits),
                     cfg.bits)
    want = volume_from_axial_stack(to_mr.predict01(q01) * 255.0)
    np.testing.assert_allclose(out.data, want, atol=1e-3)
    assert out.data[:, :, 0].max() > 0   # the slice without a body was synthesized, not filled
    assert out.data[:, :, 1].max() == 0  # the flat one is the background, whatever the batch or the CPU


def test_run_dir_and_saved_model_agree(to_mr, tiny_records, tmp_path_factory):
    from_run = predictors.load_predictor(tiny_run(tmp_path_factory, tiny_records.root), "ct2mr")
    assert from_run.preprocess == to_mr.preprocess
    stack = np.random.default_rng(5).uniform(0, 1, (5, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(from_run.predict01(stack, batch_size=2), to_mr.predict01(stack), atol=1e-5)


def test_mr2ct_volume_in_hu_with_air_outside_the_field_of_view(exported, tiny_records):
    cfg = tiny_records.preprocess
    to_ct = predictors.load_predictor(exported, "mr2ct")
    mr = np.clip(head_ct((40, 24, 5)) + 1000.0, 0, None)   # 40 mm wide: pad fit crops 4 mm per side
    out, _ = synthesis.synthesize_volume(to_ct, Volume(mr, np.eye(4), "mem"))
    assert out.shape == mr.shape
    low, high = cfg.ct_window_center - cfg.ct_window_width / 2, cfg.ct_window_center + cfg.ct_window_width / 2
    inside = out.data[4:-4]
    assert inside.min() >= low - 1e-3 and inside.max() <= high + 1e-3
    np.testing.assert_array_equal(out.data[:4], synthesis.AIR_HU)
    np.testing.assert_array_equal(out.data[-4:], synthesis.AIR_HU)


def test_folder_mode(to_mr, tmp_path):
    root, out_dir = tmp_path / "root", tmp_path / "out"
    for pid in ("p1", "p2", "p3"):
        (root / pid).mkdir(parents=True)
    write_nifti(Volume(head_ct((24, 28, 20)), np.eye(4)), root / "p1" / "ct.nii.gz")
    write_nifti(Volume(head_ct((24, 28, 20)), np.eye(4)), root / "p2" / "mr.nii.gz")   # no CT: nothing to do
    nib.save(nib.Nifti1Image(np.zeros((10, 10), np.float32), np.eye(4)), str(root / "p3" / "ct.nii.gz"))
    done, errors = outputs.synthesize_root(to_mr, str(root), str(out_dir))
    assert [d["output"] for d in done] == [str(out_dir / "p1" / "syn_mr.nii.gz")]
    assert read_volume(out_dir / "p1" / "syn_mr.nii.gz").shape == (24, 28, 20)
    assert set(errors) == {"p3"} and "2-D" in errors["p3"]
    assert not (out_dir / "p3").exists() and not (out_dir / "p2").exists()


def test_bad_inputs(to_mr, tmp_path):
    with pytest.raises(ExportError, match="no SavedModel found"):
        predictors.load_predictor(str(tmp_path), "ct2mr")
    with pytest.raises(predictors.SynthesisError, match="does not exist"):
        predictors.load_predictor(str(tmp_path / "nope"), "ct2mr")
    with pytest.raises(VolumeError, match="no such file"):
        outputs.synthesize_file(to_mr, str(tmp_path / "missing.nii.gz"), str(tmp_path / "o.nii.gz"))
    assert not (tmp_path / "o.nii.gz").exists()
    assert synthesis.ct_like_warning(Volume(head_ct((16, 16, 16)), np.eye(4), "ct")) is None
    assert "do not look like a CT" in synthesis.ct_like_warning(Volume(np.full((4, 4, 4), 50.0), np.eye(4), "x"))
    assert "do not look like a CT" in synthesis.ct_like_warning(Volume(np.full((4, 4, 4), 9000.0), np.eye(4)))


def test_cli(exported, tmp_path):
    src, bad = tmp_path / "ct.nii.gz", tmp_path / "flat.nii.gz"
    write_nifti(Volume(head_ct((24, 28, 20)), oblique_lps_affine()), src)
    nib.save(nib.Nifti1Image(np.zeros((10, 10), np.float32), np.eye(4)), str(bad))
    cmd = [sys.executable, "-m", "mrgan_tf.synthesize", f"--model={exported}", "--noprogress"]
    ok = subprocess.Popen(cmd + [f"--ct={src}", f"--out={tmp_path / 'syn.nii.gz'}"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    fail = subprocess.Popen(cmd + [f"--ct={bad}", f"--out={tmp_path / 'bad_out.nii.gz'}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ok_out, ok_err = ok.communicate(timeout=180)
    _, fail_err = fail.communicate(timeout=180)
    assert ok.returncode == 0, ok_err[-2000:]
    assert read_volume(tmp_path / "syn.nii.gz").shape == (24, 28, 20)
    assert fail.returncode == 1
    assert f"{bad}: image is 2-D" in fail_err
    assert not (tmp_path / "bad_out.nii.gz").exists()


def test_cli_bfloat16_where_the_cpu_has_it_close_to_float32_and_recorded(exported, tmp_path):
    import json

    from mrgan_tf.inference.precision import cpu_bf16_flags
    src = tmp_path / "ct.nii.gz"
    write_nifti(Volume(head_ct((24, 28, 20)), oblique_lps_affine()), src)
    cmd = [sys.executable, "-m", "mrgan_tf.synthesize", f"--model={exported}", "--noprogress", f"--ct={src}"]
    runs = {p: subprocess.Popen(cmd + [f"--precision={p}", f"--out={tmp_path / p}.nii.gz"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for p in ("float32", "bfloat16")}
    errs = {p: r.communicate(timeout=180)[1] for p, r in runs.items()}
    assert runs["float32"].returncode == 0, errs["float32"][-2000:]
    if not cpu_bf16_flags():
        assert runs["bfloat16"].returncode == 1 and "--precision=bfloat16 needs a CPU with native bf16" in errs[
            "bfloat16"]
        return
    assert runs["bfloat16"].returncode == 0, errs["bfloat16"][-2000:]
    fp32, bf16 = (read_volume(tmp_path / f"{p}.nii.gz").data for p in ("float32", "bfloat16"))
    assert 0 < np.abs(bf16 - fp32).max() < 10.0    # 0-255 scale: bf16 arithmetic, not another model
    for p in ("float32", "bfloat16"):
        assert json.loads((tmp_path / f"{p}.nii.gz.json").read_text())["model"]["precision"] == p


def test_cli_fuses_several_models_and_refuses_fusion_of_one(exported, tmp_path):
    import json
    src = tmp_path / "ct.nii.gz"
    write_nifti(Volume(head_ct((24, 28, 20)), oblique_lps_affine()), src)
    cmd = [sys.executable, "-m", "mrgan_tf.synthesize", f"--model={exported}", "--noprogress", f"--ct={src}"]
    fused = subprocess.Popen(cmd + [f"--model={exported}", "--fusion=mean", f"--out={tmp_path / 'fused.nii.gz'}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = subprocess.Popen(cmd + ["--fusion=median", f"--out={tmp_path / 'one.nii.gz'}"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    _, fused_err = fused.communicate(timeout=180)
    _, one_err = one.communicate(timeout=180)
    assert fused.returncode == 0, fused_err[-2000:]
    sidecar = json.loads((tmp_path / "fused.nii.gz.json").read_text())
    assert sidecar["model"]["fusion"] == "mean" and len(sidecar["model"]["models"]) == 2
    assert sidecar["synthesis"]["fusion"]["models"] == 2
    assert one.returncode != 0 and "--fusion=median needs at least two --model, or --tta; got 1 --model" in one_err
    assert not (tmp_path / "one.nii.gz").exists()


def test_progress_bar_counts_slices(capsys):
    from mrgan_tf.preprocess import PreprocessConfig
    pred = identity_predictor("ct2mr", PreprocessConfig(image_size=32))
    stack = np.random.default_rng(0).random((10, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(pred.predict01(stack, batch_size=3, progress=True), stack, atol=1e-6)
    bar = capsys.readouterr().err
    assert "ct2mr:" in bar and "/10 [" in bar and "slice/s" in bar and "batch" not in bar


def test_synthetic_ct_is_int16_hu_over_the_full_range():
    from mrgan_tf.preprocess import PreprocessConfig
    cfg = PreprocessConfig(spacing_mm=1.0, image_size=32, ct_range=(-1024, 3000), bits=16)
    mr = np.clip(head_ct((40, 24, 6)) + 1000.0, 0, None)   # 40 mm wide on a 32 px canvas: 8 px outside
    out, info = synthesis.synthesize_volume(identity_predictor("mr2ct", cfg), Volume(mr, np.eye(4), "mem"))
    assert out.data.dtype == np.int16 and out.shape == mr.shape
    assert out.data.min() >= -1024 and out.data.max() <= 3000
    inside = out.data[4:-4]
    assert inside.max() > 2000 and inside.min() < -900   # bright MR -> bone HU, background -> air: full range
    assert "HU" in info["units"] and "-1024..3000" in info["units"]
    assert info["body_voxels_outside"] == 0  # the canvas crop is centred on the body, which fits


def test_synthetic_mr_in_reference_units(tmp_path):
    from mrgan_tf.preprocess import PreprocessConfig
    cfg = PreprocessConfig(spacing_mm=1.0, image_size=32)
    ct = Volume(head_ct((24, 24, 6)), np.eye(4), "mem")
    pred = identity_predictor("ct2mr", cfg)
    scale, info255 = synthesis.synthesize_volume(pred, ct)
    ref_units, info = synthesis.synthesize_volume(pred, ct, mr_range=(100.0, 900.0))
    np.testing.assert_allclose(ref_units.data, 100.0 + scale.data / 255.0 * 800.0, atol=1e-3)
    assert "0-255" in info255["units"] and "100..900" in info["units"]
    ref = tmp_path / "ref_mr.nii.gz"
    write_nifti(Volume(np.clip(head_ct((24, 24, 6)) + 1000, 0, None), np.eye(4)), ref)
    lo, hi = synthesis.reference_mr_range(str(ref), pred)
    assert 0 <= lo < hi
    with pytest.raises(predictors.SynthesisError, match="only a synthetic MR"):
        synthesis.reference_mr_range(str(ref), identity_predictor("mr2ct", cfg))
