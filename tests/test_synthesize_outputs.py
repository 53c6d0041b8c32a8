"""synthesize's outputs: DICOM series / .mha / NIfTI, the provenance sidecar, --overwrite, --send, the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import DS_TOL, copy_series, dciodvfy_errors, head_ct, oblique_lps_affine, tiny_export, tiny_model
from mrgan_tf.inference import outputs
from mrgan_tf.inference import predictors as predictors_lib
from mrgan_tf.inference import provenance
from mrgan_tf.io import pacs
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.io.writers import write_volume
from orthanc_server import Orthanc


@pytest.fixture(scope="module")
def exported(tiny_records, tmp_path_factory):
    return tiny_export(tmp_path_factory, tiny_records)


@pytest.fixture(scope="module")
def predictors(exported):
    return predictors_lib.load_predictors(exported)


def _folder_sha256(folder) -> str:
    lines = "".join(f"{name} {hashlib.sha256((folder / name).read_bytes()).hexdigest()}\n"
                    for name in sorted(os.listdir(folder)))
    return hashlib.sha256(lines.encode()).hexdigest()


def test_dicom_ct_in_synthetic_mr_series_out_on_the_source_grid(predictors, exported, tiny_records, tmp_path):
    src = copy_series("98892001/CT5N", tmp_path / "p07" / "ct")
    vol = read_volume(src)
    out = tmp_path / "out" / "syn_mr"
    info = outputs.write_synthesis(predictors["ct2mr"], vol, str(out), options=outputs.OutputOptions(
        out_format="dicom"))
    assert info["format"] == "dicom" and info["sidecar"] == str(tmp_path / "out" / "syn_mr.json")
    back = read_volume(out)
    np.testing.assert_allclose(back.affine, vol.affine, atol=DS_TOL)
    assert back.shape == vol.shape and 0 <= back.data.min() and back.data.max() <= 255.0

    first_src = pydicom.dcmread(next(src.iterdir()))
    ds = pydicom.dcmread(next(out.iterdir()))
    for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
        assert ds.get(kw) == first_src.get(kw)
    assert ds.SeriesInstanceUID != first_src.SeriesInstanceUID and ds.Modality == "MR"
    assert ds.SeriesDescription.startswith("mrgan-tf synthetic MR from CT, ct2mr v1")
    assert ds.SoftwareVersions == provenance.tool_version()
    assert dciodvfy_errors(out) == {}

    doc = json.loads((tmp_path / "out" / "syn_mr.json").read_text())
    assert doc["input"] == {"path": str(src), "sha256": _folder_sha256(src),
                            "sha256_of": "folder: sorted 'name sha256' lines"}
    assert doc["direction"] == "ct2mr" and doc["tool"] == "mrgan-tf" and doc["created_utc"].endswith("+00:00")
    assert doc["model"]["path"] == os.path.join(exported, "ct2mr", "1") and doc["model"]["version"] == 1
    assert doc["model"]["run_config"]["ngf"] == 4 and "training_iterations" in doc["model"]
    assert doc["preprocess"] == tiny_records.preprocess.to_dict()
    assert doc["output"]["series_instance_uid"] == ds.SeriesInstanceUID and doc["output"]["files"] == 5


def test_mr2ct_to_mha_is_int16_hu_with_a_sidecar_and_refusals(predictors, tmp_path):
    src = tmp_path / "p1" / "mr.nii.gz"
    mr = np.clip(head_ct((24, 28, 20)) + 1000.0, 0, None)
    write_volume(Volume(mr, oblique_lps_affine()), src)
    out = tmp_path / "p1" / "syn_ct.mha"
    with pytest.raises(predictors_lib.SynthesisError, match="only within 0..80 HU.*--allow_windowed_ct"):
        outputs.synthesize_file(predictors["mr2ct"], str(src), str(out))   # the tiny model knows the window only
    assert not out.exists()
    windowed = outputs.OutputOptions(allow_windowed_ct=True)
    info = outputs.synthesize_file(predictors["mr2ct"], str(src), str(out), options=windowed)
    assert info["format"] == "mha" and sitk.ReadImage(str(out)).GetPixelID() == sitk.sitkInt16
    np.testing.assert_allclose(read_volume(out).affine, read_volume(src).affine, atol=1e-5)
    doc = json.loads((tmp_path / "p1" / "syn_ct.mha.json").read_text())
    assert doc["input"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert doc["output"]["dtype"] == "int16" and doc["direction"] == "mr2ct"
    assert doc["ct_range_hu"] == [0.0, 80.0] and doc["windowed_ct"].startswith("WINDOWED 0..80 HU, NOT FOR DOSE")

    with pytest.raises(VolumeError, match="already exists.*--overwrite"):
        outputs.synthesize_file(predictors["mr2ct"], str(src), str(out), options=windowed)
    outputs.synthesize_file(predictors["mr2ct"], str(src), str(out), options=outputs.OutputOptions(
        overwrite=True, allow_windowed_ct=True))
    with pytest.raises(predictors_lib.SynthesisError, match="--send needs a DICOM series output"):
        outputs.synthesize_file(predictors["mr2ct"], str(src), str(tmp_path / "x.nii.gz"),
                                   options=outputs.OutputOptions(send="PACS@127.0.0.1:104", allow_windowed_ct=True))
    with pytest.raises(VolumeError, match="--out_dtype=uint8: a CT is in HU"):
        outputs.synthesize_file(predictors["mr2ct"], str(src), str(tmp_path / "x.nii.gz"),
                                   options=outputs.OutputOptions(out_dtype="uint8", allow_windowed_ct=True))
    assert not (tmp_path / "x.nii.gz").exists()


def test_folder_mode_writes_one_dicom_series_per_patient(predictors, tmp_path):
    root, out_dir = tmp_path / "root", tmp_path / "out"
    for pid in ("p1", "p2"):
        write_volume(Volume(head_ct((20, 22, 6)), np.eye(4)), root / pid / "ct.nii.gz", modality="CT")
    (out_dir / "p2" / "syn_mr").mkdir(parents=True)   # already there: refused, reported, not replaced
    done, errors = outputs.synthesize_root(predictors["ct2mr"], str(root), str(out_dir),
                                              options=outputs.OutputOptions(out_format="dicom"))
    assert [d["output"] for d in done] == [str(out_dir / "p1" / "syn_mr")]
    assert set(errors) == {"p2"} and "already exists" in errors["p2"]
    ds = pydicom.dcmread(next((out_dir / "p1" / "syn_mr").iterdir()))
    assert ds.PatientID == "p1" and (out_dir / "p1" / "syn_mr.json").is_file()
    assert not os.listdir(out_dir / "p2" / "syn_mr")


def test_run_dir_provenance_reads_the_iteration_from_the_checkpoint(tmp_path):
    from mrgan_tf.training import checkpoints
    model = tiny_model()
    run_dir = str(tmp_path / "run")
    from mrgan_tf.preprocess import PreprocessConfig
    checkpoints.save_run_config(run_dir, model.config, str(tmp_path / "records"), PreprocessConfig(image_size=32))
    model.iteration.assign(7)
    try:
        checkpoints.manager_for(model, run_dir).save()
    finally:
        model.iteration.assign(0)
    record = provenance.model_record(run_dir, "ct2mr")
    assert record["kind"] == "run" and record["training_iterations"] == 7 and record["version"] == "ckpt-1"
    assert record["run_config"]["ngf"] == 4


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(str(tmp_path_factory.mktemp("orthanc")))
    yield server
    server.stop()


def test_send_stores_the_series_in_orthanc(predictors, orthanc, tmp_path):
    src = tmp_path / "p3" / "ct.nii.gz"
    write_volume(Volume(head_ct((20, 22, 6)), np.eye(4)), src, modality="CT")
    info = outputs.synthesize_file(predictors["ct2mr"], str(src), str(tmp_path / "p3" / "syn_mr"),
                                      options=outputs.OutputOptions(send=orthanc.peer))
    assert "stored 6 of 6" in info["sent"]
    uid = pydicom.dcmread(next((tmp_path / "p3" / "syn_mr").iterdir())).SeriesInstanceUID
    (found,) = pacs.find_series(pacs.parse_peer(orthanc.peer), uid)
    assert found["NumberOfSeriesRelatedInstances"] == 6 and found["Modality"] == "MR"


def test_failed_send_keeps_the_complete_series_and_says_nothing_was_stored(predictors, tmp_path):
    from orthanc_server import free_port
    src = tmp_path / "p4" / "ct.nii.gz"
    write_volume(Volume(head_ct((20, 22, 6)), np.eye(4)), src, modality="CT")
    out = tmp_path / "p4" / "syn_mr"
    with pytest.raises(pacs.PacsError, match=r"cannot reach the peer.*nothing was stored \(0 of 6 instances"):
        outputs.synthesize_file(predictors["ct2mr"], str(src), str(out), options=outputs.OutputOptions(
            send=f"NOBODY@127.0.0.1:{free_port()}"))
    assert len(os.listdir(out)) == 6 and (tmp_path / "p4" / "syn_mr.json").is_file()


def test_cli_dicom_output_and_refusal(exported, tmp_path):
    src = copy_series("98892001/CT5N", tmp_path / "p9" / "ct")
    (tmp_path / "taken").mkdir()
    cmd = [sys.executable, "-m", "mrgan_tf.synthesize", f"--model={exported}", "--noprogress", f"--ct={src}"]
    ok = subprocess.Popen(cmd + [f"--out={tmp_path / 'syn_mr'}", "--series_number=77"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    refused = subprocess.Popen(cmd + [f"--out={tmp_path / 'taken'}"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    ok_out, ok_err = ok.communicate(timeout=180)
    _, refused_err = refused.communicate(timeout=180)
    assert ok.returncode == 0, ok_err[-2000:]
    assert f"provenance {tmp_path / 'syn_mr.json'}" in ok_out
    assert {int(pydicom.dcmread(f).SeriesNumber) for f in (tmp_path / "syn_mr").iterdir()} == {77}
    assert refused.returncode == 1
    assert f"synthesize: error: {tmp_path / 'taken'}: output already exists (use --overwrite" in refused_err
    assert not os.listdir(tmp_path / "taken")
