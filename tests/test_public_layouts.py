"""The public datasets as they come: SynthRAD2023 and SynthRAD2025 folders, overview files included,
through make_records -> a few training steps -> synthesize --root, with no extra flag."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_FLAGS, add_patient, head_pair, train_configs

from mrgan_tf.io import layout
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume
from mrgan_tf.io.writers import write_volume
from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.records.make_records import make_records

# What the downloads carry besides patients (SynthRAD2023 Task1/brain/overview, SynthRAD2025 Task1/HN/overview).
OVERVIEW = {"synthrad2023": ("1_brain_train.xlsx", "1BA001_train.png", "1BA002_train.png"),
            "synthrad2025": ("1_HN_train.xlsx", "1HNA001_train.png")}
LAYOUT = {"synthrad2023": ("Task1/brain", "1BA{:03d}", ".nii.gz"),
          "synthrad2025": ("Task1/HN", "1HNA{:03d}", ".mha")}


def synthrad_download(base: Path, which: str, n: int = 4) -> Path:
    """A miniature download: every patient paired with a mask, plus overview/ and a stray file at the root."""
    region, pid, suffix = LAYOUT[which]
    root = base / region
    for i in range(n):
        folder = add_patient(root, pid.format(i + 1), seed=i, suffix=suffix)
        ct, _ = head_pair(seed=i)
        write_volume(Volume((ct.data > -500).astype(np.float32), ct.affine), folder / f"mask{suffix}",
                     modality="MR", dtype="uint8")
    (root / "overview").mkdir()
    for name in OVERVIEW[which]:
        (root / "overview" / name).write_bytes(b"PK\x03\x04 not an image" if name.endswith(".xlsx") else b"\x89PNG")
    (root / "README.txt").write_text("SynthRAD\n")
    return root


@pytest.mark.parametrize("which", sorted(LAYOUT))
def test_synthrad_download_to_synthetic_ct_with_no_extra_flag(which, tmp_path):
    from mrgan_tf.inference import outputs, predictors
    from mrgan_tf.training import train

    root = synthrad_download(tmp_path, which)
    cfg = PreprocessConfig(spacing_mm=4.0, image_size=32, ct_range=(-1024.0, 3000.0), bits=16)
    summary = make_records(root, tmp_path / "records", cfg, test_patients=1, workers=0, progress=False)
    assert summary["not_patients"] == {"README.txt": "a file, not a patient folder",
                                       "overview": "a folder without images"}
    assert json.loads((tmp_path / "records" / "summary.json").read_text())["not_patients"] == summary["not_patients"]
    assert summary["patients"] == {"paired/test": 1, "paired/train": 3} and not summary["failed_patients"]

    run = tmp_path / "run"
    model_config, train_config = train_configs([f"--records={tmp_path / 'records'}", f"--out={run}", "--steps=2",
                                                "--verbose=0", "--mode=mrgan", *TINY_FLAGS])
    done = train.train(str(tmp_path / "records"), str(run), model_config, train_config)
    assert done["iterations"] == 2
    sources = json.loads((run / "run.json").read_text())["unpaired_sources"]
    assert sources == {"ct": ["paired_train"], "mr": ["paired_train"]}   # decided once, recorded

    predictor = predictors.load_predictor(done["export"]["mr2ct"], "mr2ct")
    written, errors = outputs.synthesize_root(predictor, str(root), str(tmp_path / "syn"))
    assert not errors and len(written) == 4
    out = read_volume(tmp_path / "syn" / LAYOUT[which][1].format(1) / "syn_ct.nii.gz")
    assert out.shape == read_volume(next((root / LAYOUT[which][1].format(1)).glob("mr.*"))).shape
    assert not (tmp_path / "syn" / "overview").exists()


def test_a_folder_that_looks_like_a_patient_but_has_no_ct_or_mr_stays_an_error(tmp_path):
    root = tmp_path / "root"
    add_patient(root, "p1")
    ct, _ = head_pair()
    (root / "p2").mkdir()
    write_volume(ct, root / "p2" / "mask.nii.gz", modality="MR", dtype="float32")    # an image, but no CT/MR
    (root / "p3").mkdir()
    write_volume(ct, root / "p3" / "t1.mha", modality="MR", dtype="float32")         # an image of another name
    (root / "docs").mkdir()
    (root / "docs" / "notes.pdf").write_bytes(b"%PDF")
    contents = layout.scan_root(root)
    assert contents.not_patients == {"docs": "a folder without images"}
    assert contents.patients["p1"].error is None
    assert "neither a CT nor an MR" in contents.patients["p2"].error
    assert "neither a CT nor an MR" in contents.patients["p3"].error


def test_a_dicom_series_in_an_oddly_named_folder_makes_a_patient(tmp_path):
    from conftest import copy_series
    copy_series("98892001/CT5N", tmp_path / "root" / "p1" / "series_3")
    contents = layout.scan_root(tmp_path / "root")
    assert list(contents.patients) == ["p1"] and "neither a CT nor an MR" in contents.patients["p1"].error


def test_nounpaired_from_paired_keeps_the_unpaired_sets_apart(tiny_records):
    from mrgan_tf.records.spec import DatasetSpec
    from mrgan_tf.training import data
    spec = DatasetSpec.load(tiny_records.root)
    assert spec.count("unpaired_ct") and spec.count("unpaired_mr")
    assert data.unpaired_sources(spec, "mrgan") == {"ct": ("unpaired_ct",), "mr": ("unpaired_mr",)}
    assert data.unpaired_sources(spec, "mrgan", True) == {"ct": ("unpaired_ct", "paired_train"),
                                                           "mr": ("unpaired_mr", "paired_train")}
    assert data.unpaired_sources(spec, "paired") == {}


def test_an_empty_folder_is_a_patient_lacking_its_images(tmp_path):
    add_patient(tmp_path / "root", "p1")
    (tmp_path / "root" / "p2").mkdir()
    contents = layout.scan_root(tmp_path / "root")
    assert not contents.not_patients and "neither a CT nor an MR" in contents.patients["p2"].error
