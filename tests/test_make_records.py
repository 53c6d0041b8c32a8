"""Tests for mrgan_tf.records.make_records: round trip, split, manifest, bad input, atomic output, CLI."""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import HEAD_SHAPE, HEAD_SPACING, add_patient, head_pair, records_config
from mrgan_tf import preprocess as pp
from mrgan_tf.io import layout
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.writers import write_nifti
from mrgan_tf.records import make_records as mr_mod
from mrgan_tf.records.make_records import MakeRecordsError, make_records
from mrgan_tf.records.spec import SET_NAMES, DatasetSpec
from tfrecords_tools import reader

CFG = records_config()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """4 paired, 1 CT-only, 1 MR-only patient plus a stray file at the root."""
    root = tmp_path_factory.mktemp("data") / "root"
    for i in range(4):
        add_patient(root, f"p{i}", seed=i)
    add_patient(root, "c0", ("ct",), seed=10)
    add_patient(root, "m0", ("mr",), seed=11)
    (root / "demo_manifest.csv").write_text("not a patient\n")
    (root / ".hidden").mkdir()
    return root


@pytest.fixture(scope="module")
def converted(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "records"
    summary = make_records(dataset, out, CFG, test_patients=1, workers=2, progress=False)
    return out, summary


def no_leftovers(out):
    out = Path(out)
    from tfrecords_tools.atomic import list_temporaries
    return not out.exists() and not [t for t in list_temporaries(out.parent) if t.final_name == out.name]


def run_fail(*args, **kw):
    kw = {"workers": 0, "progress": False, **kw}
    with pytest.raises(MakeRecordsError) as info:
        make_records(*args, **kw)
    return str(info.value)


# ------------------------------------------------------------------ round trip and layout

def test_round_trip_and_dataset_layout(converted, dataset):
    out, summary = converted
    spec = DatasetSpec.load(out)
    assert spec.preprocess == CFG
    assert spec.split["test"] and len(spec.split["test"]) == 1
    assert sorted(spec.split["train"] + spec.split["test"]) == ["c0", "m0", "p0", "p1", "p2", "p3"]
    assert {n: spec.count(n) > 0 for n in SET_NAMES} == dict.fromkeys(SET_NAMES, True)
    assert summary["slices"] == {n: spec.count(n) for n in SET_NAMES}
    assert summary["patients"] == {"ct/train": 1, "mr/train": 1, "paired/test": 1, "paired/train": 3}
    assert json.loads((out / "summary.json").read_text())["slices"] == summary["slices"]
    for name in SET_NAMES:
        ex = next(reader.iterate(out, name))
        images = set(mr_mod.SET_IMAGES[name])
        assert images <= set(ex) and ({"ct", "mr"} - images).isdisjoint(ex)
        for f in images:
            assert ex[f].shape == (64, 64, 1) and ex[f].dtype == np.uint8
    # One paired training patient, checked slice by slice against preprocess functions applied by hand.
    pid = spec.split["train"][[p.startswith("p") for p in spec.split["train"]].index(True)]
    entry = spec.patients[pid]
    assert entry["role"] == "paired" and entry["split"] == "train"
    ct, mr = (read_volume(dataset / pid / f"{m}.nii.gz") for m in ("ct", "mr"))
    ref = pp.resample_to_spacing(pp.to_canonical(ct), HEAD_SPACING)
    body = pp.body_mask_from_ct(ref.data, CFG.body_threshold_hu)
    lo, hi = pp.mr_range(mr.data, body, CFG.mr_percentiles)  # same grid: MR resampling is the identity
    examples = [ex for ex in reader.iterate(out, "paired_train") if ex["patient_id"] == pid]
    assert len(examples) == entry["n_slices_kept"] and entry["n_slices_kept"] + entry["n_slices_skipped"] == HEAD_SHAPE[2]
    ex = examples[len(examples) // 2]
    k = ex["slice_index"]
    exp_ct, placement = pp.fit_to_size(pp.axial_image(pp.window_ct(ref.data, 40, 80), k), 64, pad_value=0)
    exp_mr, _ = pp.fit_to_size(pp.axial_image(pp.normalise_mr(mr.data, lo, hi), k), 64, pad_value=0)
    exp_mask, _ = pp.fit_to_size(pp.axial_image(body.astype(np.uint8), k), 64, pad_value=0)
    np.testing.assert_array_equal(ex["ct"][..., 0], pp.quantise(exp_ct, 8))
    np.testing.assert_array_equal(ex["mr"][..., 0], pp.quantise(exp_mr, 8))
    np.testing.assert_array_equal(ex["mask"][..., 0], exp_mask)
    np.testing.assert_allclose(ex["mr_range"], [lo, hi], rtol=1e-6)
    np.testing.assert_allclose(ex["affine"].reshape(4, 4), ref.affine, atol=1e-5)
    assert ex["volume_shape"].tolist() == list(HEAD_SHAPE) and ex["num_slices"] == HEAD_SHAPE[2]
    np.testing.assert_allclose(ex["placement"], placement.to_list())
    # CT-only examples have no MR range; slices of one patient are in order.
    assert all(e["mr_range"].tolist() == [0, 0] for e in reader.iterate(out, "unpaired_ct"))
    assert [e["slice_index"] for e in examples] == sorted(e["slice_index"] for e in examples)


def test_split_is_by_patient_and_deterministic(dataset, converted, tmp_path):
    out, _ = converted
    again = make_records(dataset, tmp_path / "again", CFG, test_patients=1, workers=0, progress=False)
    spec1, spec2 = DatasetSpec.load(out), DatasetSpec.load(tmp_path / "again")
    assert spec1.split == spec2.split and again["slices"] == converted[1]["slices"]
    owners = {}
    for name in SET_NAMES:
        for ex in reader.iterate(out, name):
            owners.setdefault(ex["patient_id"], set()).add(name)
    assert all(len(sets) == 1 for sets in owners.values()), owners
    assert owners[spec1.split["test"][0]] == {"paired_test"}
    # The choice depends on the ids and the seed, not on the folder listing.
    ids = ["p0", "p1", "p2", "p3"]
    assert layout.choose_test_patients(ids, 2, 0) == layout.choose_test_patients(ids[::-1], 2, 0)
    picks = {tuple(layout.choose_test_patients(ids, 2, seed)) for seed in range(10)}
    assert len(picks) > 1
    assert layout.choose_test_patients(ids, ["p3", "p1"]) == ["p1", "p3"]


def test_manifest_overrides_roles_and_split(dataset, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("patient_id,role,split,note\np0,ct,train,x\np1,paired,test,\np2,mr,train,\n"
                        "c0,ct,train,\nm0,mr,train,\n")
    make_records(dataset, tmp_path / "out", CFG, manifest=manifest, workers=0, progress=False)
    spec = DatasetSpec.load(tmp_path / "out")
    assert spec.split == {"train": ["c0", "m0", "p0", "p2"], "test": ["p1"]}
    assert spec.patients["p0"]["role"] == "ct" and set(spec.patients["p0"]["sources"]) == {"ct"}
    ids = {n: {ex["patient_id"] for ex in reader.iterate(tmp_path / "out", n)} for n in SET_NAMES}
    assert ids == {"paired_train": set(), "unpaired_ct": {"c0", "p0"}, "unpaired_mr": {"m0", "p2"},
                   "paired_test": {"p1"}}
    assert spec.count("paired_train") == 0 and spec.sets["paired_train"]["shards"] == []
    assert "p3" not in spec.patients  # not listed: left out


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("case", ["truncated", "2d", "4d", "nan", "dicom_gap", "no_modality", "no_overlap"])
def test_bad_patient_fails_cleanly_naming_the_file(tmp_path, case):
    root = tmp_path / "root"
    add_patient(root, "a")
    bad = add_patient(root, "b")
    if case == "truncated":
        data = (bad / "mr.nii.gz").read_bytes()
        (bad / "mr.nii.gz").write_bytes(data[: len(data) // 2])
        culprit, words = bad / "mr.nii.gz", "truncated"
    elif case == "2d":
        nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), bad / "ct.nii.gz")
        culprit, words = bad / "ct.nii.gz", "2-D"
    elif case == "dicom_gap":  # pydicom's test series with a missing slice, as a ct/ folder
        (bad / "ct.nii.gz").unlink()
        src = Path(pydicom.data.get_testdata_file("DICOMDIR")).parent / "77654033" / "CT2"
        shutil.copytree(src, bad / "ct")
        culprit, words = bad / "ct", "gap"
    elif case == "4d":
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), bad / "ct.nii.gz")
        culprit, words = bad / "ct.nii.gz", "4-D"
    elif case == "nan":
        ct, _ = head_pair()
        ct.data[3, 3, 3] = np.nan
        nib.save(nib.Nifti1Image(ct.data, ct.affine), bad / "ct.nii.gz")
        culprit, words = bad / "ct.nii.gz", "NaN"
    elif case == "no_modality":
        for f in bad.iterdir():
            f.unlink()
        culprit, words = bad, "neither a CT nor an MR"
    else:
        _, mr = head_pair()
        mr.affine[2, 3] += 500
        write_nifti(mr, bad / "mr.nii.gz")
        culprit, words = bad / "mr.nii.gz", "does not overlap"
    out = tmp_path / "out"
    msg = run_fail(root, out, CFG, test_patients=0)
    assert str(culprit) in msg and words in msg
    assert no_leftovers(out)


def test_on_error_skip_lists_bad_patient_and_writes_the_rest(tmp_path):
    root = tmp_path / "root"
    add_patient(root, "a")
    add_patient(root, "b")
    bad = add_patient(root, "c", ("ct",))
    with gzip.open(bad / "ct.nii.gz", "wb") as f:
        f.write(b"garbage")
    summary = make_records(root, root / "out", CFG, test_patients=1, on_error="skip", workers=2,
                           progress=False)
    assert list(summary["failed_patients"]) == ["c"] and str(bad / "ct.nii.gz") in summary["failed_patients"]["c"]
    spec = DatasetSpec.load(root / "out")
    assert "error" in spec.patients["c"] and spec.count("unpaired_ct") == 0
    assert spec.count("paired_train") > 0 and spec.count("paired_test") > 0
    assert "c" not in spec.split["train"]
    # Records written inside the root are not taken for a patient next time.
    assert [t.patient_id for t in layout.plan_patients(root, test_patients=1)[0]] == ["a", "b", "c"]
    # Nothing usable at all is an error, even with skip.
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (root / "c").rename(only_bad / "c")
    assert "no slices written" in run_fail(only_bad, tmp_path / "none", CFG, on_error="skip")
    assert no_leftovers(tmp_path / "none")


def test_configuration_errors(tmp_path, dataset):
    out = tmp_path / "out"
    assert "does not exist" in run_fail(tmp_path / "nope", out, CFG)
    (tmp_path / "empty").mkdir()
    assert "is empty" in run_fail(tmp_path / "empty", out, CFG)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "x.nii.gz").write_text("")
    assert "no patient folders" in run_fail(tmp_path / "files", out, CFG)
    assert "not paired" in run_fail(dataset, out, CFG, test_patients=["c0"])
    assert "only 4 paired" in run_fail(dataset, out, CFG, test_patients=5)
    manifest = tmp_path / "m.csv"
    for text, words in [("patient_id,role,split\nzz,paired,train\n", "unknown patient"),
                        ("patient_id,role,split\np0,both,train\n", "role 'both'"),
                        ("patient_id,role,split\np0,paired,dev\n", "split 'dev'"),
                        ("patient_id,role,split\nc0,ct,val\n", "validation patients must be paired"),
                        ("patient_id,role,split\nc0,paired,train\n", "no MR"),
                        ("patient_id,role,split\nc0,ct,test\n", "must be paired"),
                        ("patient_id,role\np0,ct\n", "lacks column")]:
        manifest.write_text(text)
        msg = run_fail(dataset, out, CFG, manifest=manifest, on_error="skip")
        assert str(manifest) in msg and words in msg, msg
    assert no_leftovers(out)


def test_existing_output_refused_then_replaced_intact(dataset, converted, tmp_path):
    out = tmp_path / "out"
    make_records(dataset, out, CFG, test_patients=1, workers=0, progress=False)
    before = DatasetSpec.load(out).split
    assert "--overwrite" in run_fail(dataset, out, CFG, test_patients=2)
    assert DatasetSpec.load(out).split == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert "does not hold records" in run_fail(dataset, tmp_path / "other", CFG, overwrite=True)
    make_records(dataset, out, CFG, test_patients=2, overwrite=True, workers=0, progress=False)
    spec = DatasetSpec.load(out)
    assert len(spec.split["test"]) == 2
    assert sum(len(reader.load_shard_set(out, n)["shards"]) for n in SET_NAMES) == len(list(out.glob("*.tfrecord.gz")))
    assert not list(tmp_path.glob("out.*"))


def test_interrupted_write_leaves_old_output(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    make_records(dataset, out, CFG, test_patients=1, workers=0, progress=False)
    files_before = sorted(p.name for p in out.iterdir())
    calls = []
    real = mr_mod.convert_patient

    def flaky(task, *args):
        calls.append(task.patient_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, *args)

    monkeypatch.setattr(mr_mod, "convert_patient", flaky)
    with pytest.raises(KeyboardInterrupt):
        make_records(dataset, out, CFG, test_patients=2, overwrite=True, workers=0, progress=False)
    assert len(calls) == 3
    assert sorted(p.name for p in out.iterdir()) == files_before
    assert len(DatasetSpec.load(out).split["test"]) == 1
    assert not list(tmp_path.glob("out.*"))
    # No earlier output: nothing at all is left.
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        make_records(dataset, tmp_path / "new", CFG, test_patients=1, workers=0, progress=False)
    assert no_leftovers(tmp_path / "new")


# ------------------------------------------------------------------ CLI

def test_cli(dataset, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "mrgan_tf.make_records", "--root", str(dataset), "--out", str(tmp_path / "o"),
           "--spacing_mm=2", "--image_size=48", "--bits=16", "--test_patients=p1,p2", "--workers=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "slices/s" in done.stdout
    spec = DatasetSpec.load(tmp_path / "o")
    assert spec.preprocess.bits == 16 and spec.preprocess.image_size == 48 and spec.split["test"] == ["p1", "p2"]
    assert next(reader.iterate(tmp_path / "o", "paired_test"))["mr"].dtype == np.uint16
    bad = tmp_path / "missing_root"
    done = subprocess.run(cmd[:3] + [str(bad), "--out", str(tmp_path / "o2")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode != 0 and str(bad) in done.stderr
    assert no_leftovers(tmp_path / "o2")


def test_config_from_flags_covers_every_field():
    from absl import flags

    fv = flags.FlagValues()
    mr_mod.define_flags(fv)
    fv(["prog", "--bits=16", "--mr_percentiles=1,99", "--fit=resize", "--register", "--register_model=affine"])
    cfg = mr_mod.config_from_flags(fv)
    assert cfg == pp.PreprocessConfig(bits=16, mr_percentiles=(1, 99), fit="resize", register=True,
                                      register_model="affine")
    fv2 = flags.FlagValues()
    mr_mod.define_flags(fv2)
    fv2(["prog"])
    assert mr_mod.config_from_flags(fv2) == pp.PreprocessConfig()
    assert mr_mod.parse_test_patients("3") == 3 and mr_mod.parse_test_patients("a, b") == ["a", "b"]


# ------------------------------------------------------------------ HU range, validation split, body loss

def test_full_hu_range_and_validation_patients(dataset, tmp_path):
    cfg = pp.PreprocessConfig(spacing_mm=HEAD_SPACING, image_size=64, ct_range=(-1024, 3000), bits=16)
    out = tmp_path / "full"
    summary = make_records(dataset, out, cfg, test_patients=1, val_patients=1, workers=0, progress=False)
    spec = DatasetSpec.load(out)
    assert spec.preprocess.ct_hu_range == (-1024.0, 3000.0)
    train, test, val = (set(spec.split[s]) for s in ("train", "test", "val"))
    assert len(test) == len(val) == 1 and not (train & test) and not (train & val) and not (test & val)
    assert spec.count("paired_val") > 0 and {ex["patient_id"] for ex in reader.iterate(out, "paired_val")} == val
    assert summary["slices"]["paired_val"] == spec.count("paired_val")
    # Air, soft tissue and bone survive: stored HU = q / 65535 * 4024 - 1024.
    ex = next(reader.iterate(out, "paired_val"))
    hu = ex["ct"].astype(np.float64) / 65535 * 4024 - 1024
    assert hu.min() < -900 and hu.max() > 900


def test_validation_patients_must_not_be_test_patients(dataset, tmp_path):
    msg = run_fail(dataset, tmp_path / "o", CFG, test_patients=["p0"], val_patients=["p0"])
    assert "leakage" in msg and "p0" in msg
    assert "--val_patients" in run_fail(dataset, tmp_path / "o", CFG, test_patients=1, val_patients=4)
    assert "not paired" in run_fail(dataset, tmp_path / "o", CFG, test_patients=1, val_patients=["c0"])


def test_body_outside_the_canvas_fails_naming_the_flags(dataset, tmp_path):
    small = pp.PreprocessConfig(spacing_mm=HEAD_SPACING, image_size=24)   # 48 mm canvas, 64 x 80 mm head
    msg = run_fail(dataset, tmp_path / "o", small, test_patients=1)
    assert "outside the 24 x 24 canvas" in msg and "--image_size" in msg and "--fit=resize" in msg
    assert no_leftovers(tmp_path / "o")
    tolerant = pp.PreprocessConfig(spacing_mm=HEAD_SPACING, image_size=24, max_body_loss=1.0)
    summary = make_records(dataset, tmp_path / "t", tolerant, test_patients=1, workers=0, progress=False)
    lost = summary["body_outside_canvas"]
    assert set(lost) == set(DatasetSpec.load(tmp_path / "t").patients) and all(v["fraction"] > 0 for v in lost.values())
    assert "body outside the canvas: patient p0" in mr_mod.format_summary(summary)


def _preprocess_from(argv):
    from absl import flags
    fv = flags.FlagValues()
    mr_mod.define_flags(fv)
    fv(["prog", *argv])
    return mr_mod.config_from_flags(fv)


@pytest.mark.parametrize("text, words", [("a,b", "numbers"), ("3000,-1024", "lo < hi"), ("1", "two finite")])
def test_malformed_ct_range_flag(text, words):
    with pytest.raises(MakeRecordsError, match=words):
        _preprocess_from([f"--ct_range={text}", "--bits=16"])
    assert _preprocess_from(["--ct_range=-1024, 3000", "--bits=16"]).ct_range == (-1024.0, 3000.0)
    assert _preprocess_from([]).ct_range is None


def test_cli_refuses_full_range_at_8_bits(dataset, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "mrgan_tf.make_records", "--root", str(dataset),
                           "--out", str(tmp_path / "o"), "--ct_range=-1024,3000"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and "--bits=16" in done.stderr and "HU steps" in done.stderr
    assert no_leftovers(tmp_path / "o")
