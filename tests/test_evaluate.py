"""Evaluation: report files, numbers equal to a hand computation, several models, dataset roots, errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mrgan_tf import evaluate, metrics, synthesize
from mrgan_tf.io.readers import write_nifti
from mrgan_tf.io.volumes import Volume
from mrgan_tf.preprocess import dequantise, unwindow_ct
from test_export import tiny_export, tiny_run
from tfrecords_tools import reader


@pytest.fixture(scope="module")
def exported(tiny_records, tmp_path_factory):
    return tiny_export(tmp_path_factory, tiny_records)


@pytest.fixture(scope="module")
def single(exported, tiny_records, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval"))
    return out, evaluate.evaluate({"mrgan": exported}, tiny_records.root, out, fig_slices=2)


def _patient_by_hand(records_dir: str, pid: str, bits: int):
    exs = sorted((e for e in reader.iterate(records_dir, "paired_test") if e["patient_id"] == pid),
                 key=lambda e: e["slice_index"])
    stack = lambda k: np.stack([e[k][..., 0] for e in exs])  # noqa: E731
    return dequantise(stack("ct"), bits), dequantise(stack("mr"), bits), stack("mask") > 0


def test_numbers_equal_a_hand_computation(single, exported, tiny_records):
    _, result = single
    cfg = tiny_records.preprocess
    pid = "paired_test_p1"
    ct, mr, mask = _patient_by_hand(tiny_records.root, pid, cfg.bits)
    to_mr = synthesize.load_predictor(exported, "ct2mr")
    to_ct = synthesize.load_predictor(exported, "mr2ct")
    syn = (to_mr.fn(ct[..., None] * 2 - 1)[..., 0] + 1) / 2 * 255.0
    ref = mr * 255.0
    mse = np.mean((syn - ref) ** 2)
    row = result["per_patient"]["mrgan"][pid]
    assert row["mae"] == pytest.approx(np.mean(np.abs(syn - ref)), rel=1e-5)
    assert row["psnr"] == pytest.approx(10 * np.log10(255.0 ** 2 / mse), rel=1e-5)
    assert row["psnr_paper"] == pytest.approx(row["psnr"] + 20 * np.log10(255.0), rel=1e-6)
    assert row["ssim"] == pytest.approx(metrics.ssim(ref, syn), rel=1e-5)
    assert row["mae_masked"] == pytest.approx(np.mean(np.abs(syn - ref)[mask]), rel=1e-5)
    syn_ct = (to_ct.fn(mr[..., None] * 2 - 1)[..., 0] + 1) / 2
    hu = metrics.physical_ct_metrics(unwindow_ct(ct), unwindow_ct(syn_ct), mask)
    assert row["ct_mae_hu"] == pytest.approx(hu["mae"], rel=1e-4)
    # tiny records store mr_range (0, 1): scanner units are the 0..1 fractions
    assert row["mr_mae_phys"] == pytest.approx(np.mean(np.abs(syn - ref)[mask]) / 255.0, rel=1e-4)
    # Avg±sd over patients with the population sd (ddof=0), as the paper's Table I
    maes = [r["mae"] for r in result["per_patient"]["mrgan"].values()]
    assert result["summary"]["mrgan"]["mae"]["mean"] == pytest.approx(np.mean(maes))
    assert result["summary"]["mrgan"]["mae"]["sd"] == pytest.approx(np.std(maes, ddof=0))


def test_report_files(single, tiny_records):
    out, result = single
    pids = sorted(tiny_records.split["test"])
    assert sorted(result["per_patient"]["mrgan"]) == pids
    for pid in pids:
        assert os.path.getsize(os.path.join(out, f"fig5_{pid}.png")) > 1000
        assert os.path.getsize(os.path.join(out, f"fig7_{pid}.png")) > 1000
    assert not os.path.exists(os.path.join(out, "fig6.png"))   # one model: nothing to compare
    md = open(os.path.join(out, "metrics.md")).read()
    assert "ddof=0" in md and "## Inference latency" in md and "PSNR (paper conv.) mrgan" in md
    assert f"| {pids[0]} |" in md and "| Avg±sd |" in md
    doc = json.load(open(os.path.join(out, "metrics.json")))
    assert doc["ddof"] == 0 and doc["dataset_kind"] == "records"
    want = result["per_patient"]["mrgan"][pids[0]]["psnr"]
    assert doc["per_patient"]["mrgan"][pids[0]]["psnr"] == pytest.approx(want)
    assert doc["latency"]["mrgan"]["slices"] == tiny_records.count("paired_test")
    assert doc["latency"]["mrgan"]["ms_per_slice"] > 0
    csv_lines = open(os.path.join(out, "metrics.csv")).read().splitlines()
    assert csv_lines[0] == "model,patient,metric,value"
    assert len(csv_lines) == 1 + len(pids) * len(evaluate.ALL_METRICS)
    assert not [f for f in os.listdir(out) if f.startswith(".")]


def test_several_models_side_by_side(exported, tiny_records, tmp_path_factory, tmp_path):
    run_dir = tiny_run(tmp_path_factory, tiny_records.root)
    result = evaluate.evaluate({"saved": exported, "run": run_dir}, tiny_records.root, str(tmp_path), fig_slices=1)
    assert os.path.getsize(tmp_path / "fig6.png") > 1000
    assert (tmp_path / "fig5_saved_paired_test_p0.png").exists() and (tmp_path / "fig5_run_paired_test_p0.png").exists()
    md = (tmp_path / "metrics.md").read_text()
    assert "MAE saved | MAE run" in md
    for pid, row in result["per_patient"]["saved"].items():   # same weights -> same numbers
        assert result["per_patient"]["run"][pid]["mae"] == pytest.approx(row["mae"], abs=1e-3)


def _head(shape, inside, outside):
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return np.where(sum(g ** 2 for g in grid) < 0.6, inside, outside).astype(np.float32)


def test_dataset_root_and_missing_reference(exported, tmp_path):
    root = tmp_path / "root"
    for pid in ("a", "b"):
        (root / pid).mkdir(parents=True)
        write_nifti(Volume(_head((24, 28, 12), 40.0, -1000.0), np.eye(4)), root / pid / "ct.nii.gz")
    write_nifti(Volume(_head((24, 28, 12), 600.0, 0.0), np.eye(4)), root / "a" / "mr.nii.gz")
    with pytest.raises(evaluate.EvaluationError, match="patient b .* has no reference MR"):
        evaluate.evaluate({"m": exported}, str(root), str(tmp_path / "out"))
    result = evaluate.evaluate({"m": exported}, str(root), str(tmp_path / "out"), skip_missing=True, fig_slices=1)
    assert list(result["per_patient"]["m"]) == ["a"]
    assert json.load(open(tmp_path / "out" / "metrics.json"))["dataset_kind"] == "root"
    assert np.isfinite(result["per_patient"]["m"]["a"]["psnr"])


def test_empty_test_set(exported, tiny_records, tmp_path):
    records = tmp_path / "records"
    shutil.copytree(tiny_records.root, records)
    spec = json.load(open(records / "dataset.json"))
    spec["sets"]["paired_test"]["count"] = 0
    (records / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(evaluate.EvaluationError, match="empty test set"):
        evaluate.evaluate({"m": exported}, str(records), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_parse_models():
    assert evaluate.parse_models(["paired=runs/p", "runs/mrgan/"]) == {"paired": "runs/p", "mrgan": "runs/mrgan/"}
    with pytest.raises(evaluate.EvaluationError, match="given twice"):
        evaluate.parse_models(["a=x", "a=y"])


def test_cli_error_names_the_problem(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mrgan_tf.evaluate", f"--model=m={tmp_path}",
                        f"--dataset={tmp_path}", f"--out={tmp_path / 'out'}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert f"{tmp_path}: no SavedModel found" in r.stderr
    assert not (tmp_path / "out").exists()
