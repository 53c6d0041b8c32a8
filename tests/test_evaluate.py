"""Evaluation: report files, numbers equal to a hand computation, several models, dataset roots, errors;
the SynthRAD metrics on the original grid, the mask fallback and a preprocessing mismatch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_export, tiny_run
from mrgan_tf.evaluation import evaluate, grid, metrics, paper, patients, synthrad_metrics
from mrgan_tf.inference import predictors, synthesis
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume
from mrgan_tf.io.writers import write_nifti
from mrgan_tf.preprocess import PreprocessConfig, body_mask_from_ct, denormalise_mr, dequantise, resample_like
from tfrecords_tools import reader


@pytest.fixture(scope="module")
def exported(tiny_records, tmp_path_factory):
    return tiny_export(tmp_path_factory, tiny_records)


@pytest.fixture(scope="module")
def single(exported, tiny_records, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval"))
    return out, evaluate.evaluate({"mrgan": exported}, tiny_records.root, out, fig_slices=2, grid_metrics=False)


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
    to_mr = predictors.load_predictor(exported, "ct2mr")
    syn = (to_mr.fn(ct[..., None] * 2 - 1)[..., 0] + 1) / 2 * 255.0
    ref = mr * 255.0
    mse = np.mean((syn - ref) ** 2)
    row = result["per_patient"]["mrgan"][pid]
    assert row["mae"] == pytest.approx(np.mean(np.abs(syn - ref)), rel=1e-5)
    assert row["psnr"] == pytest.approx(10 * np.log10(255.0 ** 2 / mse), rel=1e-5)
    assert row["psnr_paper"] == pytest.approx(row["psnr"] + 20 * np.log10(255.0), rel=1e-6)
    assert row["ssim"] == pytest.approx(metrics.ssim(ref, syn), rel=1e-5)
    assert row["mae_masked"] == pytest.approx(np.mean(np.abs(syn - ref)[mask]), rel=1e-5)
    assert set(row) == set(paper.ALL_METRICS)   # the paper's table holds the paper's metrics only
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
    assert doc["ddof"] == 0 and doc["dataset_kind"] == "records" and "synthrad" not in doc
    assert "SynthRAD's (not computed here: --nogrid_metrics)" in md
    want = result["per_patient"]["mrgan"][pids[0]]["psnr"]
    assert doc["per_patient"]["mrgan"][pids[0]]["psnr"] == pytest.approx(want)
    assert doc["latency"]["mrgan"]["slices"] == tiny_records.count("paired_test")
    assert doc["latency"]["mrgan"]["ms_per_slice"] > 0
    csv_lines = open(os.path.join(out, "metrics.csv")).read().splitlines()
    assert csv_lines[0] == "model,patient,metric,value"
    assert len(csv_lines) == 1 + len(pids) * len(paper.ALL_METRICS)
    assert not [f for f in os.listdir(out) if f.startswith(".")]


def test_several_models_side_by_side(exported, tiny_records, tmp_path_factory, tmp_path):
    run_dir = tiny_run(tmp_path_factory, tiny_records.root)
    result = evaluate.evaluate({"saved": exported, "run": run_dir}, tiny_records.root, str(tmp_path), fig_slices=1,
                               grid_metrics=False)
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
    with pytest.raises(patients.EvaluationError, match="patient b .* has no reference MR"):
        evaluate.evaluate({"m": exported}, str(root), str(tmp_path / "out"))
    result = evaluate.evaluate({"m": exported}, str(root), str(tmp_path / "out"), skip_missing=True, fig_slices=1)
    assert list(result["per_patient"]["m"]) == ["a"]
    assert result["synthrad"]["mask_source"] == {"a": "computed"}      # no mask file: the CT's body mask
    assert np.isfinite(result["synthrad"]["per_patient"]["m"]["a"]["sct_mae"])
    assert json.load(open(tmp_path / "out" / "metrics.json"))["dataset_kind"] == "root"
    assert np.isfinite(result["per_patient"]["m"]["a"]["psnr"])


def test_empty_test_set(exported, tiny_records, tmp_path):
    records = tmp_path / "records"
    shutil.copytree(tiny_records.root, records)
    spec = json.load(open(records / "dataset.json"))
    spec["sets"]["paired_test"]["count"] = 0
    (records / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(patients.EvaluationError, match="empty test set"):
        evaluate.evaluate({"m": exported}, str(records), str(tmp_path / "out"), grid_metrics=False)
    assert not (tmp_path / "out").exists()


def test_parse_models():
    assert evaluate.parse_models(["paired=runs/p", "runs/mrgan/"]) == {"paired": "runs/p", "mrgan": "runs/mrgan/"}
    with pytest.raises(patients.EvaluationError, match="given twice"):
        evaluate.parse_models(["a=x", "a=y"])


def test_cli_error_names_the_problem(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mrgan_tf.evaluate", f"--model=m={tmp_path}",
                        f"--dataset={tmp_path}", f"--out={tmp_path / 'out'}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert f"{tmp_path}: no SavedModel found" in r.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- SynthRAD metrics on the original grid

SHAPE = (24, 28, 12)


def _textured_pair(seed: int, mr_shift_mm: float = 0.0):
    """A head: CT in HU (soft tissue with bone-like blobs, air outside), MR a smooth function of it.

    ``mr_shift_mm`` puts the MR on a grid two slices longer, starting that far below the CT's."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    body = _head(SHAPE, 1.0, 0.0) > 0
    texture = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 1.5)
    ct = np.where(body, 40.0 + 600.0 * np.clip(texture / texture.std(), 0, None), -1000.0).astype(np.float32)
    mr = np.where(body, 600.0 - 0.3 * ct, 0.0).astype(np.float32)
    ct_vol, mask = Volume(ct, np.eye(4)), Volume(body.astype(np.uint8), np.eye(4))
    if not mr_shift_mm:
        return ct_vol, Volume(mr, np.eye(4)), mask
    affine = np.eye(4)
    affine[2, 3] = -mr_shift_mm
    longer = Volume(np.zeros(SHAPE[:2] + (SHAPE[2] + 2,), np.float32), affine)
    return ct_vol, resample_like(Volume(mr, np.eye(4)), longer, order=1, fill=0.0), mask


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory):
    """A dataset root (a: MR on its own longer grid; b: no mask file; c: training) and its records."""
    from mrgan_tf.records.make_records import make_records
    base = tmp_path_factory.mktemp("grid")
    root = base / "root"
    for seed, pid in enumerate("abc"):
        (root / pid).mkdir(parents=True)
        ct, mr, mask = _textured_pair(seed, mr_shift_mm=1.0 if pid == "a" else 0.0)
        write_nifti(ct, root / pid / "ct.nii.gz")
        write_nifti(mr, root / pid / "mr.nii.gz")
        if pid != "b":
            write_nifti(mask, root / pid / "mask.nii.gz", dtype=np.uint8)
    make_records(str(root), str(base / "records"), PreprocessConfig(image_size=32), test_patients=["a", "b"],
                 workers=0, progress=False)
    return root, str(base / "records")


@pytest.fixture(scope="module")
def grid_eval(exported, grid_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid_eval")
    return out, evaluate.evaluate({"m": exported}, grid_data[1], str(out), fig_slices=1)


def _by_hand(exported, root, pid, mr_range):
    """SynCT and SynMR through synthesize_volume, scored with the metric functions called directly."""
    ct, mr = read_volume(str(root / pid / "ct.nii.gz")), read_volume(str(root / pid / "mr.nii.gz"))
    mask_file = root / pid / "mask.nii.gz"
    mask = read_volume(str(mask_file)).data > 0 if mask_file.exists() else body_mask_from_ct(ct.data, -500.0)
    syn_ct, _ = synthesis.synthesize_volume(predictors.load_predictor(exported, "mr2ct"), mr)
    syn_mr, _ = synthesis.synthesize_volume(predictors.load_predictor(exported, "ct2mr"), ct)
    sct = resample_like(syn_ct, ct, order=1, fill=-1024.0).data
    smr = Volume(denormalise_mr(syn_mr.data / 255.0, *mr_range), ct.affine)
    smr = resample_like(smr, mr, order=1, fill=mr_range[0]).data
    mr_mask = resample_like(Volume(mask.astype(np.uint8), ct.affine), mr, order=0, fill=0).data > 0
    return (synthrad_metrics.synthrad_ct_metrics(ct.data, sct, mask),
            synthrad_metrics.synthrad_mr_metrics(mr.data, smr, mr_mask),
            mr_mask)


def test_synthrad_metrics_equal_a_hand_computation(grid_eval, grid_data, exported):
    root, records = grid_data
    out, result = grid_eval
    spec = json.load(open(os.path.join(records, "dataset.json")))
    assert result["synthrad"]["root"] == spec["source_root"]       # found through dataset.json
    mr_masks = {}
    for pid in ("a", "b"):
        ct_hand, mr_hand, mr_masks[pid] = _by_hand(exported, root, pid, spec["patients"][pid]["mr_range"])
        row = result["synthrad"]["per_patient"]["m"][pid]
        for key in ("mae", "psnr", "ssim", "ms_ssim"):
            assert row[f"sct_{key}"] == pytest.approx(ct_hand[key], rel=1e-5, abs=1e-6), (pid, key)
            assert row[f"smr_{key}"] == pytest.approx(mr_hand[key], rel=1e-5, abs=1e-6), (pid, key)
        assert result["synthrad"]["smr_range"][pid] == pytest.approx([mr_hand["range_lo"], mr_hand["range_hi"]])
    a_mask = mr_masks["a"]           # a's MR grid is two slices longer than its CT's
    assert a_mask.shape == (24, 28, 14) and not a_mask[..., 0].any() and a_mask.any()
    assert result["synthrad"]["mask_source"] == {"a": "file", "b": "computed"}


def test_an_ensemble_is_scored_on_its_fused_volume_with_its_spread_against_the_error(exported, grid_data, tmp_path):
    """Two copies of one model with flip TTA: the fused synthetic CT and its spread through synthesize's code,
    then scored by hand on the CT grid; metrics.json, the CSV and the report carry the same numbers."""
    from mrgan_tf.evaluation import uncertainty
    from mrgan_tf.inference.tta import TTAConfig
    root, records = grid_data
    flip = TTAConfig(("flip",))
    result = evaluate.evaluate({"e": f"{exported},{exported}"}, records, str(tmp_path), fig_slices=1, tta=flip,
                               fusion="mean")
    ct, mr = read_volume(str(root / "a" / "ct.nii.gz")), read_volume(str(root / "a" / "mr.nii.gz"))
    mask = read_volume(str(root / "a" / "mask.nii.gz")).data > 0
    member = predictors.load_predictor(exported, "mr2ct")
    syn_ct, spread, info = synthesis.synthesize_with_spread(predictors.Fusion((member, member), "mean", flip), mr)
    assert info["fusion"]["predictions"] == 4
    sct = resample_like(syn_ct, ct, order=1, fill=-1024.0).data
    sd = resample_like(spread, ct, order=1, fill=0.0).data
    row = result["synthrad"]["per_patient"]["e"]["a"]
    assert row["sct_mae"] == pytest.approx(synthrad_metrics.synthrad_mae(ct.data, sct, mask), rel=1e-5)
    assert row["sct_unc_spearman"] == pytest.approx(uncertainty.spread_error_spearman(ct.data, sct, sd, mask), abs=1e-6)
    top, rest = uncertainty.mae_by_spread(ct.data, sct, sd, mask)
    assert (row["sct_unc_mae_top10"], row["sct_unc_mae_rest"]) == (pytest.approx(top), pytest.approx(rest))
    assert -1.0 <= row["smr_unc_spearman"] <= 1.0 and row["smr_unc_mae_top10"] >= 0
    doc = json.load(open(tmp_path / "metrics.json"))
    assert doc["synthrad"]["per_patient"]["e"]["b"]["sct_unc_spearman"] is not None
    assert doc["fusion"]["e"]["augmentations"] == ["identity", "flip"] and doc["fusion"]["e"]["models"] == 2
    assert "sct_unc_mae_top10" in (tmp_path / "metrics_synthrad.csv").read_text()
    md = (tmp_path / "metrics.md").read_text()
    assert md.index("### Is the uncertainty worth anything?") < md.index("Spearman(SD, |err|) e")


def test_a_single_model_has_no_uncertainty_columns(grid_eval):
    out, _ = grid_eval
    assert "unc_" not in (out / "metrics_synthrad.csv").read_text()
    assert "uncertainty worth" not in (out / "metrics.md").read_text()


def test_report_keeps_the_two_conventions_apart(grid_eval):
    out, result = grid_eval
    md = (out / "metrics.md").read_text()
    paper = md.index("## Paper conventions")
    synthrad = md.index("## SynthRAD conventions")
    latency = md.index("## Inference latency")
    assert paper < synthrad < latency
    for label in ("MAE HU m", "SSIM 3-D m", "MS-SSIM 3-D m", "MAE (MR units) m"):
        assert md.index(label) > synthrad and label not in md[paper:synthrad]
    assert "PSNR (paper conv.) m" in md[paper:synthrad] and "(paper conv.)" not in md[synthrad:]
    assert "No mask file for b: scored inside the body mask computed from the CT" in md
    # the tiny records keep the paper's 40/80 HU window: the report says what that means for the sCT numbers
    assert "CT range of the models: 0..80 HU (a display window): their synthetic CT cannot represent air" in md[synthrad:]
    csv_lines = (out / "metrics_synthrad.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * len(grid.GRID_METRICS)
    assert not any(k in (out / "metrics.csv").read_text() for k in grid.GRID_METRICS)
    doc = json.load(open(out / "metrics.json"))
    assert doc["synthrad"]["mask_source"]["b"] == "computed"
    assert doc["synthrad"]["ct_range_hu"] == [0.0, 80.0] and doc["synthrad"]["ct_windowed"] is True
    assert doc["synthrad"]["summary"]["m"]["sct_mae"]["n"] == 2


def test_registration_transform_carries_the_mr_onto_the_ct(exported, grid_data):
    """An MR 3 mm off in world space, with the CT->MR transform that says so, scores as the aligned pair."""
    root, _ = grid_data
    loaded = {"m": predictors.load_predictors(exported)}
    cfg = loaded["m"]["ct2mr"].preprocess
    files = grid.original_files(str(root), ["c"])["c"]
    p = patients.TestPatient("c", None, None, None, np.array([[0.0, 600.0]]), None)
    aligned, _, _ = grid.grid_rows(loaded, "c", files, p, cfg, [])
    mr = read_volume(files["mr"])
    moved = np.eye(4)
    moved[0, 3] = 3.0
    write_nifti(Volume(mr.data, moved @ mr.affine), grid_data[0].parent / "moved_mr.nii.gz")
    p.ct_to_mr = moved
    shifted, _, _ = grid.grid_rows(loaded, "c", {**files, "mr": str(grid_data[0].parent / "moved_mr.nii.gz")},
                                       p, cfg, [])
    for key, value in aligned["m"].items():
        assert shifted["m"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_source_root_missing_moved_or_given(exported, grid_data, tiny_records, tmp_path):
    root, records = grid_data
    with pytest.raises(patients.EvaluationError, match="no source_root.*--root=DATASET_ROOT"):
        evaluate.evaluate({"m": exported}, tiny_records.root, str(tmp_path / "out"))
    moved = tmp_path / "records"
    shutil.copytree(records, moved)
    spec = json.load(open(moved / "dataset.json"))
    spec["source_root"] = str(tmp_path / "gone")
    (moved / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(patients.EvaluationError, match=f"{tmp_path / 'gone'}: .*source_root.*--root"):
        evaluate.evaluate({"m": exported}, str(moved), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert grid.source_root(str(moved), True, str(root)) == str(root)
    with pytest.raises(patients.EvaluationError, match="--root is not a directory"):
        grid.source_root(str(moved), True, str(tmp_path / "nowhere"))


def test_preprocessing_mismatch_names_both_values(exported, tiny_records, tmp_path):
    records = tmp_path / "records"
    shutil.copytree(tiny_records.root, records)
    spec = json.load(open(records / "dataset.json"))
    spec["preprocess"]["ct_window_width"] = 100.0
    spec["preprocess"]["min_foreground"] = 0.2      # slice selection only: not a mismatch
    (records / "dataset.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "mrgan_tf.evaluate", f"--model=m={exported}", f"--dataset={records}",
                        f"--out={tmp_path / 'out'}", "--nogrid_metrics"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert f"{records / 'dataset.json'}" in r.stderr and "other preprocessing" in r.stderr
    assert "ct_window_width 80.0 (model) vs 100.0 (test data)" in r.stderr
    assert "min_foreground" not in r.stderr
    assert not (tmp_path / "out").exists()
