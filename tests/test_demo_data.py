"""Tests for the InVesalius reader and the embedded demo data builder."""
from __future__ import annotations

import csv
import io
import json
import plistlib
import subprocess
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from mrgan_tf.demo import anatomy, patients
from mrgan_tf.demo import data as demo_data
from mrgan_tf.io.invesalius import read_inv3
from mrgan_tf.io.volumes import VolumeError

CRANIUM = anatomy.CRANIUM_INV3
needs_cranium = pytest.mark.skipif(
    not CRANIUM.is_file(), reason=f"{CRANIUM} absent (install Debian package invesalius-examples)")
needs_debian = pytest.mark.skipif(
    not (anatomy.debian_available() and CRANIUM.is_file()),
    reason="Debian mricron-data / invesalius-examples absent (CI installs them)")

SMALL = dict(n_paired_train=1, n_paired_test=1, n_unpaired_ct=2, n_unpaired_mr=1, size_scale=0.5,
             progress=False)


# --------------------------------------------------------------------------- InVesalius reader


def _inv3_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"tmpabc/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _main_plist(shape=(2, 3, 4), spacing=(0.5, 0.6, 2.0)) -> bytes:
    return plistlib.dumps({"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(shape)},
                           "spacing": list(spacing), "modality": "CT"})


def test_read_inv3_synthetic_axes_and_spacing(tmp_path):
    zyx = np.arange(2 * 3 * 4, dtype="<i2").reshape(2, 3, 4) - 10
    path = tmp_path / "tiny.inv3"
    path.write_bytes(_inv3_bytes({"main.plist": _main_plist(), "matrix.dat": zyx.tobytes()}))
    vol = read_inv3(path)
    assert vol.shape == (4, 3, 2)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, zyx.transpose(2, 1, 0))
    np.testing.assert_allclose(vol.spacing, (0.5, 0.6, 2.0))
    assert nib.aff2axcodes(vol.affine) == ("L", "A", "S")
    assert vol.source == str(path)


@pytest.mark.parametrize("members, problem", [
    ({"matrix.dat": b"\0" * 48}, "no main.plist"),
    ({"main.plist": b"not a plist"}, "not a valid plist"),
    ({"main.plist": plistlib.dumps({"spacing": [1, 1, 1]})}, "matrix/spacing"),
    ({"main.plist": _main_plist(spacing=(1, 0, 1)), "matrix.dat": b"\0" * 48}, "spacing"),
    ({"main.plist": _main_plist()}, "no matrix.dat"),
    ({"main.plist": _main_plist(), "matrix.dat": b"\0" * 47}, "47 bytes"),
])
def test_read_inv3_rejects_bad_projects(tmp_path, members, problem):
    path = tmp_path / "bad.inv3"
    path.write_bytes(_inv3_bytes(members))
    with pytest.raises(VolumeError, match=problem) as err:
        read_inv3(path)
    assert str(err.value).startswith(str(path))


def test_read_inv3_rejects_non_archive(tmp_path):
    path = tmp_path / "plain.inv3"
    path.write_text("hello")
    with pytest.raises(VolumeError, match="InVesalius") as err:
        read_inv3(path)
    assert str(err.value).startswith(str(path))


@needs_cranium
def test_read_cranium_matches_documented_geometry():
    vol = read_inv3(CRANIUM)
    assert vol.shape == (256, 256, 108)  # stored (z, y, x) = (108, 256, 256)
    np.testing.assert_allclose(vol.spacing, (0.957, 0.957, 1.5), atol=1e-3)
    assert vol.data.min() == -1024 and vol.data.max() == 2986
    assert nib.aff2axcodes(vol.affine) == ("L", "A", "S")
    # Orientation, checked on the anatomy: the head narrows towards the vertex (superior,
    # high k), and the headrest arc (the second-largest blob) lies posterior of the head.
    body = vol.data > -500
    assert body[:, :, 100].sum() < 0.5 * body[:, :, 60].sum()
    lab, _ = ndi.label(body)
    sizes = np.bincount(lab.ravel())[1:]
    head, rest = (np.argsort(sizes)[::-1][:2] + 1)
    world_y = [(vol.affine @ np.r_[np.argwhere(lab == c).mean(axis=0), 1])[1] for c in (head, rest)]
    assert world_y[1] < world_y[0] - 50


# --------------------------------------------------------------------------- demo data set


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (anatomy.debian_available() and CRANIUM.is_file()):
        pytest.skip("Debian mricron-data / invesalius-examples absent (CI installs them)")
    root = tmp_path_factory.mktemp("demo")
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runs[name] = (root / name, demo_data.build_demo_dataset(root / name, seed=seed, **SMALL))
    return runs


def _manifest(folder: Path) -> list[dict]:
    with open(folder / patients.MANIFEST, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == patients.MANIFEST_COLUMNS
        return list(reader)


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asanyarray(nib.load(p).dataobj)
            for p in sorted(folder.rglob("*.nii.gz"))}


EXPECTED_FILES = {"paired": {"ct", "mr", "mask"}, "ct": {"ct", "mask"}, "mr": {"mr", "mask"}}


def test_layout_manifest_and_readme(built):
    folder, summary = built["a"]
    rows = _manifest(folder)
    assert [r["role"] for r in rows].count("paired") == 2
    assert {r["split"] for r in rows if r["role"] != "paired"} == {"train"}
    assert {r["base_subject"] for r in rows} == {"colin27", "mni152", "cranium"}
    patient_dirs = {p.name for p in folder.iterdir() if p.is_dir()}
    assert patient_dirs == {r["patient_id"] for r in rows} == set(summary["patients"])
    for r in rows:
        files = {p.name.removesuffix(".nii.gz") for p in (folder / r["patient_id"]).iterdir()}
        assert files == EXPECTED_FILES[r["role"]], r
    readme = (folder / "README.txt").read_text()
    assert "REAL:" in readme and "SIMULATED:" in readme and "Cranium.inv3" in readme
    assert json.loads((folder / "demo_summary.json").read_text())["seed"] == 0
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_test_patients_share_no_base_with_training(built):
    rows = _manifest(built["a"][0])
    train = {r["base_subject"] for r in rows if r["split"] == "train"}
    test = {r["base_subject"] for r in rows if r["split"] == "test"}
    assert test and train and not (train & test)


def test_volumes_geometry_types_and_intensities(built):
    folder, summary = built["a"]
    for r in _manifest(folder):
        images = {p.name.removesuffix(".nii.gz"): nib.load(p) for p in (folder / r["patient_id"]).iterdir()}
        shapes = {img.shape for img in images.values()}
        assert len(shapes) == 1 and all(s >= 20 for s in shapes.pop())
        for img in images.values():
            np.testing.assert_allclose(img.affine, images["mask"].affine, atol=1e-4)
            np.testing.assert_allclose(nib.affines.voxel_sizes(img.affine), 4.0, atol=1e-3)
        mask = np.asanyarray(images["mask"].dataobj)
        assert images["mask"].get_data_dtype() == np.uint8
        assert set(np.unique(mask)) == {0, 1} and 0.1 < mask.mean() < 0.95
        inside = mask > 0
        if "ct" in images:
            assert images["ct"].get_data_dtype() == np.int16
            ct = np.asanyarray(images["ct"].dataobj).astype(np.float32)
            assert ct.min() >= -1024 and ct.max() <= 3071
            assert (ct < -900).mean() > 0.05, r  # air
            assert (ct[inside] > 500).mean() > 0.01, r  # bone
            assert ((ct[inside] > 0) & (ct[inside] < 60)).mean() > 0.1, r  # brain
        if "mr" in images:
            assert images["mr"].get_data_dtype() == np.float32
            mr = np.asanyarray(images["mr"].dataobj)
            assert np.isfinite(mr).all() and mr.min() >= 0 and mr[inside].mean() > 5 * mr[~inside].mean()
        if r["role"] == "paired":  # T1 contrast: bone is dark, brain is bright
            bone_mr = np.median(mr[ct > 600])
            assert bone_mr < 0.5 * np.median(mr[(ct > 10) & (ct < 50)])
            mis = summary["patients"][r["patient_id"]]["misalignment"]
            assert 1 <= mis["rotation_deg"] <= 3 and 1 <= mis["translation_mm"] <= 3


def test_real_cranium_ct_keeps_its_hu(built):
    folder, _ = built["a"]
    ct = np.asanyarray(nib.load(folder / "ct_only_01" / "ct.nii.gz").dataobj)
    assert ct.min() >= -1024 and ct.max() <= 2986 and ct.max() > 1500
    assert nib.aff2axcodes(nib.load(folder / "ct_only_01" / "ct.nii.gz").affine) == ("L", "A", "S")


def test_same_seed_identical_other_seed_different(built):
    a, b, c = (_arrays(built[k][0]) for k in "abc")
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    simulated = [n for n in a if not n.startswith("ct_only_01")]
    assert all(a[n].shape != c[n].shape or not np.array_equal(a[n], c[n]) for n in simulated)


def test_refuses_non_empty_output_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(demo_data.DemoDataError, match="not empty"):
        demo_data.build_demo_dataset(out, **SMALL)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) % 2 == 0:  # the second patient of each build fails
            raise RuntimeError("interrupted")
        return {"mask": (np.ones((2, 2, 2), np.uint8), np.uint8)}, np.eye(4), {}

    monkeypatch.setattr(demo_data, "make_patient", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        demo_data.build_demo_dataset(tmp_path / "fresh", **SMALL)
    with pytest.raises(RuntimeError, match="interrupted"):
        demo_data.build_demo_dataset(out, overwrite=True, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial or temp folders
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(demo_data.DemoDataError, match="n_paired_test"):
        demo_data.build_demo_dataset(tmp_path / "o", n_paired_test=-1)
    with pytest.raises(demo_data.DemoDataError, match="size_scale"):
        demo_data.build_demo_dataset(tmp_path / "o", size_scale=0)
    assert not (tmp_path / "o").exists()


def test_falls_back_to_nilearn_without_debian_files(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(anatomy, "MRICRON_DIR", tmp_path / "missing")
    monkeypatch.setattr(anatomy, "CRANIUM_INV3", tmp_path / "missing.inv3")
    summary = demo_data.build_demo_dataset(tmp_path / "o", n_paired_train=1, n_paired_test=1,
                                           n_unpaired_ct=1, n_unpaired_mr=0, size_scale=0.5, progress=False)
    assert summary["train_bases"] == summary["test_bases"] == ["mni152"]
    assert len(summary["warnings"]) == 2 and "mricron-data" in caplog.text
    assert "WARNINGS:" in (tmp_path / "o" / "README.txt").read_text()
    assert {r["base_subject"] for r in _manifest(tmp_path / "o")} == {"mni152"}


def test_cli_refuses_non_empty_output(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "mrgan_tf.demo_data", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"{tmp_path}: directory is not empty" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


@pytest.mark.parametrize("shape,n_ctrl", [((37, 41, 29), 4), ((20, 33, 47), 5), ((16, 16, 9), 3)])
def test_smooth_field_is_the_3d_cubic_zoom_of_its_grid(shape, n_ctrl):
    """The per-axis computation gives ndi.zoom's own numbers for the 3-D grid (the simulated data depend on them)."""
    from mrgan_tf.demo.geometry import smooth_field
    ctrl = np.random.default_rng(7).uniform(-1.0, 1.0, size=(n_ctrl,) * 3)
    want = ndi.zoom(ctrl, np.array(shape) / n_ctrl, order=3, mode="nearest", grid_mode=True)[
        tuple(slice(0, s) for s in shape)].astype(np.float32)
    got = smooth_field(np.random.default_rng(7), shape, n_ctrl)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert 0.3 < np.abs(got).max() <= 1.5     # roughly unit amplitude
