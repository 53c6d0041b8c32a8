"""``evaluate --dose``: a dose table per test patient and model, beside the image metrics and never mixed
with them, each patient's dose report folder, the patient limit, and the refusals before the slow part.

The models' synthetic CT is replaced by the patient's own CT (a perfect model) and by that CT 100 HU
denser in the body, so the figures are known: zero error and full gamma, and a proton dose that moves.
"""
import dataclasses
import json
import os

import numpy as np
import pytest

pytest.importorskip("pyRadPlan")
pytest.importorskip("pymedphys")

from test_dose import FAST, phantom  # noqa: E402

from conftest import tiny_export  # noqa: E402
from mrgan_tf.evaluation import evaluate, grid, patients  # noqa: E402
from mrgan_tf.evaluation.dose import models as dose_models  # noqa: E402
from mrgan_tf.inference import predictors  # noqa: E402
from mrgan_tf.io.readers import read_volume  # noqa: E402
from mrgan_tf.io.volumes import Volume  # noqa: E402
from mrgan_tf.io.writers import write_nifti  # noqa: E402
from mrgan_tf.preprocess import PreprocessConfig, resample_like  # noqa: E402

DENSER_HU = 100.0


def _mr_of(ct: np.ndarray) -> np.ndarray:
    return np.where(ct > -500, 600.0 - 0.3 * ct, 0.0).astype(np.float32)


def _ct_of(mr: np.ndarray) -> np.ndarray:
    return np.where(mr > 0, (600.0 - mr) / 0.3, -1000.0).astype(np.float32)


@pytest.fixture(scope="module")
def dose_data(tmp_path_factory):
    """A dataset root of phantom heads (a, b: test; c: training), its full-range CT records and a model export."""
    from mrgan_tf.records.make_records import make_records
    from mrgan_tf.records.spec import DatasetSpec

    base = tmp_path_factory.mktemp("dose_eval")
    root = base / "root"
    ct, _ = phantom()
    for pid in "abc":
        (root / pid).mkdir(parents=True)
        write_nifti(ct, root / pid / "ct.nii.gz")
        write_nifti(ct.with_data(_mr_of(ct.data)), root / pid / "mr.nii.gz")
    make_records(str(root), str(base / "records"), PreprocessConfig(image_size=32, spacing_mm=6.0, bits=16,
                                                                     ct_range=(-1024.0, 3000.0)),
                 test_patients=["a", "b"], workers=0, progress=False)
    records = str(base / "records")
    return root, records, tiny_export(tmp_path_factory, DatasetSpec.load(records))


def _known_synthetic_ct(predictor, mr, ct_to_mr, batch_size, source):
    """The patient's own CT from its MR (the phantom's MR is a function of the CT), denser for model 'denser';
    for model 'mrlike' the MR itself (no CT)."""
    if source.startswith("mrlike"):
        return Volume(np.asarray(mr.data, np.float32), mr.affine, source)
    ct = _ct_of(np.asarray(mr.data, np.float32))
    return Volume(np.where(ct > -500, ct + DENSER_HU, ct) if source.startswith("denser") else ct, mr.affine, source)


@pytest.fixture(scope="module")
def dosed(dose_data, tmp_path_factory):
    root, records, export = dose_data
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dose_models, "synthetic_ct", _known_synthetic_ct)
        result = evaluate.evaluate({"same": export, "denser": export}, records, str(out), fig_slices=1, dose=FAST)
    return out, result


def test_dose_rows_per_patient_and_model_with_the_known_figures(dosed):
    _, result = dosed
    rows = result["dose"]["per_patient"]
    assert sorted(rows) == ["denser", "same"] and all(sorted(r) == ["a", "b"] for r in rows.values())
    for pid in "ab":
        same, denser = rows["same"][pid], rows["denser"][pid]
        assert set(same) == set(dose_models.DOSE_METRICS)
        for m in ("photons", "protons"):
            assert same[f"{m}_mae_target"] == pytest.approx(0.0, abs=1e-3)
            assert same[f"{m}_gamma_2_2"] == same[f"{m}_gamma_1_1"] == 100.0
            assert same[f"{m}_target_d98_diff"] == pytest.approx(0.0, abs=1e-3)
        assert denser["protons_mae_target"] > 1.0                  # % of the prescription
        assert denser["protons_target_d98_diff"] < -1.0            # Gy: the distal edge falls short
        assert denser["protons_gamma_1_1"] < 100.0
        assert denser["photons_mae_target"] < denser["protons_mae_target"]
    summary = result["dose"]["summary"]["denser"]["protons_mae_target"]
    assert summary["n"] == 2 and summary["mean"] == pytest.approx(np.mean([rows["denser"][p]["protons_mae_target"]
                                                                            for p in "ab"]))


def test_dose_tables_stand_apart_from_the_image_metrics(dosed):
    out, result = dosed
    md = (out / "metrics.md").read_text()
    assert md == result["markdown"]
    section = md[md.index("## Dose check of the synthetic CT"):md.index("## Inference latency")]
    before = md[:md.index("## Dose check of the synthetic CT")]
    assert "not a clinical dose check" in section and "pencil-beam" in section and "generic" in section
    assert "### Photons: planned on the CT" in section and "### Protons: planned on the CT" in section
    assert "mae_target % same | mae_target % denser" in section and "| Avg±sd |" in section
    assert "mae_target" not in before and "sct_mae" not in section and "MAE HU" not in section
    doc = json.load(open(out / "metrics.json"))
    assert set(doc["dose"]["metrics"]) == set(dose_models.DOSE_METRICS)
    assert doc["dose"]["config"]["resolution_mm"] == FAST.resolution_mm and doc["dose"]["left_out_patients"] == []
    assert not any(k in row for rows in doc["synthrad"]["per_patient"].values() for row in rows.values()
                   for k in dose_models.DOSE_METRICS)
    assert not any(k in doc["metrics"] for k in dose_models.DOSE_METRICS)
    csv_lines = (out / "metrics_dose.csv").read_text().splitlines()
    assert csv_lines[0] == "model,patient,metric,value" and len(csv_lines) == 1 + 2 * 2 * 10


def test_each_patient_and_model_has_its_dose_report_folder(dosed):
    out, result = dosed
    assert result["dose"]["folders"]["denser"]["b"] == os.path.join("dose", "b", "denser")
    for pid in "ab":
        for name in ("same", "denser"):
            folder = out / "dose" / pid / name
            report = json.load(open(folder / "dose.json"))
            assert report["plans"]["protons"]["mae_target"] * 100 == pytest.approx(
                result["dose"]["per_patient"][name][pid]["protons_mae_target"])
            for f in ("dose.md", "dose_difference.png", "dvh.png", "dose_protons_synthetic.nii.gz",
                      "dose_photons_reference.nii.gz"):
                assert (folder / f).is_file(), folder / f
    assert not [f for f in os.listdir(out) if f.startswith(".")]   # no temporary folder left


def test_dose_on_the_first_patients_only_and_a_refused_synthetic_ct_noted(dose_data, tmp_path, monkeypatch):
    _, records, export = dose_data
    monkeypatch.setattr(dose_models, "synthetic_ct", _known_synthetic_ct)
    lines = []
    monkeypatch.setattr(dose_models, "_line", lambda *a: lines.append(a) or "")
    result = evaluate.evaluate({"same": export, "mrlike": export}, records, str(tmp_path), grid_metrics=False,
                               dose=dataclasses.replace(FAST, modalities=("protons",)),
                               dose_patients=1)
    assert list(result["dose"]["per_patient"]["same"]) == ["a"] and result["dose"]["left_out_patients"] == ["b"]
    assert result["dose"]["per_patient"]["mrlike"] == {} and not (tmp_path / "dose" / "a" / "mrlike").exists()
    assert any(n.startswith("patient a, model mrlike: no dose figures:") for n in result["dose"]["notes"])
    assert len(lines) == 1                          # a progress line per patient
    md = result["markdown"]
    assert "### Protons" in md and "### Photons" not in md and "beyond the first 1 (--dose_patients): b" in md
    assert result["dose"]["metrics"] == [k for k in dose_models.DOSE_METRICS if k.startswith("protons_")]


def test_the_synthetic_ct_goes_where_the_image_metrics_put_it(dose_data):
    """Through the records' CT -> MR registration: the same HU on the CT grid as the SynthRAD scores see."""
    root, _, export = dose_data
    ct, mr = read_volume(str(root / "a" / "ct.nii.gz")), read_volume(str(root / "a" / "mr.nii.gz"))
    ct_to_mr = np.eye(4)
    ct_to_mr[:3, 3] = [7.0, -4.0, 5.0]
    predictor = predictors.load_predictor(export, "mr2ct")
    placed = dose_models.synthetic_ct(predictor, mr, ct_to_mr, 16, "sct")
    from mrgan_tf.inference.synthesis import AIR_HU, synthesize_volume
    syn, _ = synthesize_volume(predictor, mr)
    want = grid._onto(syn.data.astype(np.float32), mr, ct, 1, AIR_HU, ct_to_mr)
    got = resample_like(placed, ct, order=1, fill=AIR_HU).data
    assert np.abs(got - want).max() < 1e-2


def test_refused_before_the_slow_part(exported_windowed, tiny_records, tmp_path):
    with pytest.raises(patients.EvaluationError, match="display window without air or bone"):
        evaluate.evaluate({"m": exported_windowed}, tiny_records.root, str(tmp_path / "out"), grid_metrics=False,
                          dose=FAST)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def exported_windowed(tiny_records, tmp_path_factory):
    return tiny_export(tmp_path_factory, tiny_records)
