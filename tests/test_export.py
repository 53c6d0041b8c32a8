"""SavedModel export: signatures, in-graph preprocessing, TF Serving layout and versions.

``tiny_model``, ``tiny_export`` and ``tiny_run`` are cached per session and
reused by test_synthesize.py and test_evaluate.py (saving a SavedModel traces
the generator, which costs seconds even for a tiny network). The model is
this file's own, so no other test changes its weights.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import rounding_tolerance, tiny_export, tiny_model, tiny_run

from mrgan_tf.preprocess import (PreprocessConfig, dequantise, fit_to_size, from_model_range, mr_range, normalise_mr,
                                 quantise, slices, to_model_range, unfit, unwindow_ct, window_ct)
from mrgan_tf.serving import export
from mrgan_tf.serving.names import PREPROCESS_ASSET

VENV_BIN = os.path.dirname(sys.executable)
@pytest.fixture(scope="module")
def exported(tiny_records, tmp_path_factory):
    return tiny_export(tmp_path_factory, tiny_records)


@pytest.fixture(scope="module")
def loaded(exported):
    return {name: export.load_exported(exported, name) for name in ("ct2mr", "mr2ct")}


def _manual_ct2mr(hu: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The numpy pipeline of make_records + model + unfit, for (N, H, W) HU -> (N, H, W) 0..1."""
    q01, placement = fit_to_size(window_ct(hu, cfg.ct_window_center, cfg.ct_window_width), cfg.image_size,
                                 cfg.fit, pad_value=0)
    x = to_model_range(dequantise(quantise(q01, cfg.bits), cfg.bits))[..., None]
    y = from_model_range(tiny_model().syn_mr(x, training=False).numpy()[..., 0])
    return unfit(y, placement, fill=0.0)


def test_layout_and_stored_preprocessing(exported, tiny_records):
    for name in ("ct2mr", "mr2ct"):
        version_dir = os.path.join(exported, name, "1")
        assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
        with open(os.path.join(version_dir, "assets", PREPROCESS_ASSET)) as f:
            info = json.load(f)
        assert info["name"] == name
        assert PreprocessConfig.from_dict(info["preprocess"]) == tiny_records.preprocess
    assert not [n for n in os.listdir(os.path.join(exported, "ct2mr")) if n.startswith(".")]


def test_normalised_signature_equals_generator(loaded):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    got = loaded["ct2mr"].normalised(ct=x)["mr"].numpy()
    np.testing.assert_allclose(got, tiny_model().syn_mr(x).numpy(), atol=1e-5)
    got = loaded["mr2ct"].normalised(mr=x)["ct"].numpy()
    np.testing.assert_allclose(got, tiny_model().syn_ct(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("hw", [(40, 36), (24, 20), (40, 20)])
def test_serving_default_matches_numpy_pipeline_both_ranks(loaded, tiny_records, hw):
    cfg = tiny_records.preprocess
    hu = np.random.default_rng(1).uniform(-200, 300, (2, *hw)).astype(np.float32)
    want = _manual_ct2mr(hu, cfg)
    sig = loaded["ct2mr"].loaded.signatures["serving_default"]
    out3 = sig(ct=hu)
    out4 = sig(ct=hu[..., None])
    assert out3["mr"].shape == hu.shape and out4["mr"].shape == hu.shape + (1,)
    np.testing.assert_allclose(out3["mr"].numpy(), want, atol=1e-5)
    np.testing.assert_allclose(out4["mr"].numpy()[..., 0], want, atol=1e-5)
    np.testing.assert_allclose(out3["mr_255"].numpy(), want * 255.0, atol=1e-3)


def test_mr2ct_signatures(loaded, tiny_records):
    cfg = tiny_records.preprocess
    rng = np.random.default_rng(2)
    mr = np.zeros((3, 36, 28), np.float32)
    mr[:, 4:-4, 4:-4] = rng.uniform(50, 900, (3, 28, 20))
    sigs = loaded["mr2ct"].loaded.signatures
    out = sigs["serving_default"](mr=mr)
    assert out["ct_hu"].shape == mr.shape
    lo, hi = mr_range(mr, mr > mr.min(), cfg.mr_percentiles)   # the documented per-request range
    np.testing.assert_allclose(out["mr_range"].numpy(), [lo, hi], rtol=1e-4)
    np.testing.assert_allclose(out["ct_hu"].numpy(), unwindow_ct(out["ct"].numpy()), atol=1e-3)
    # with_mr_range: (lo, hi) from the caller; compare with the numpy pipeline
    fixed = sigs["with_mr_range"](mr=mr[..., None], mr_range=np.array([0.0, 1000.0], np.float32))
    q01, placement = fit_to_size(normalise_mr(mr, 0.0, 1000.0), cfg.image_size, cfg.fit, pad_value=0)
    x = to_model_range(dequantise(quantise(q01, cfg.bits), cfg.bits))[..., None]
    want = unfit(from_model_range(tiny_model().syn_ct(x).numpy()[..., 0]), placement, fill=0.0)
    np.testing.assert_allclose(fixed["ct"].numpy()[..., 0], want, atol=1e-5)


def test_bad_rank_is_a_clear_error(loaded):
    import tensorflow as tf
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be \[N, H, W\] or \[N, H, W, 1\]"):
        loaded["ct2mr"].loaded.signatures["serving_default"](ct=np.zeros((1, 2, 8, 8), np.float32))


def test_preprocessing_parameters_signature(loaded, tiny_records):
    cfg = tiny_records.preprocess
    p = loaded["ct2mr"].loaded.signatures["preprocessing_parameters"]()
    assert p["direction"].numpy() == b"ct2mr"
    assert int(p["image_size"]) == cfg.image_size and p["fit"].numpy().decode() == cfg.fit
    assert float(p["ct_window_width"]) == cfg.ct_window_width
    assert json.loads(p["preprocess_json"].numpy()) == cfg.to_dict()


def test_fit_tf_twins_numpy():
    img = np.random.default_rng(3).uniform(0, 1, (2, 40, 20)).astype(np.float32)
    got = slices.fit_tf(img[..., None], 32, "pad").numpy()[..., 0]
    want, placement = fit_to_size(img, 32, "pad", pad_value=0)
    np.testing.assert_array_equal(got, want)
    back = slices.unfit_tf(got[..., None], 40, 20, 32, "pad").numpy()[..., 0]
    np.testing.assert_array_equal(back, unfit(want, placement, fill=0.0))
    smooth = np.broadcast_to(np.linspace(0, 1, 20, dtype=np.float32), (2, 40, 20))
    got = slices.fit_tf(smooth[..., None], 32, "resize").numpy()[..., 0]
    want, placement = fit_to_size(smooth, 32, "resize", pad_value=0)
    assert placement.scaled_shape() == (32, 16)
    assert np.abs(got - want).mean() < 0.01     # same placement, interpolation details differ
    assert np.array_equal(got == 0, want == 0)


def test_saved_model_cli_shows_and_runs(exported):
    version_dir = os.path.join(exported, "ct2mr", "1")
    cli = os.path.join(VENV_BIN, "saved_model_cli")
    # Both at once: each pays TensorFlow's start-up.
    show = subprocess.Popen([cli, "show", "--all", "--dir", version_dir], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # The TF1-style loader (what TF Serving uses) must restore the variables.
    run = subprocess.Popen([cli, "run", "--dir", version_dir, "--tag_set", "serve", "--signature_def",
                            "serving_default", "--input_exprs",
                            "ct=[[[0.0,40.0,80.0],[40.0,40.0,40.0],[0.0,20.0,60.0]]]"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    text, show_err = show.communicate(timeout=120)
    run_out, run_err = run.communicate(timeout=120)
    assert show.returncode == 0, show_err[-2000:]
    for sig in ("serving_default", "normalised", "preprocessing_parameters"):
        assert f"signature_def['{sig}']" in text
    for key in ("inputs['ct']", "outputs['mr']", "outputs['mr_255']", "outputs['ct_window_center']"):
        assert key in text
    assert text.count("Method name is: tensorflow/serving/predict") >= 3
    assert run.returncode == 0, run_err[-2000:]
    assert "Result for output key mr_255" in run_out


def test_versions_count_up_and_never_overwrite(tmp_path, tiny_records):
    # A stand-in for the paired baseline: only SynMR is trained, so only ct2mr is exported.
    model = tiny_model()
    paired = types.SimpleNamespace(config=model.config, trained_directions=("mr",), syn_mr=model.syn_mr,
                                   syn_ct=model.syn_ct)
    first = export.export_model(paired, tiny_records, str(tmp_path))
    second = export.export_model(paired, tiny_records, str(tmp_path))
    assert first == {"ct2mr": str(tmp_path / "ct2mr" / "1")}
    assert second == {"ct2mr": str(tmp_path / "ct2mr" / "2")}
    assert not (tmp_path / "mr2ct").exists()
    pb = tmp_path / "ct2mr" / "1" / "saved_model.pb"
    before = pb.stat().st_mtime_ns
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_model(paired, tiny_records, str(tmp_path), version=1)
    (tmp_path / "ct2mr" / "3").mkdir()   # a collision with a pre-existing (even empty) version dir
    with pytest.raises(export.ExportError, match="3: version 3 already exists"):
        export.export_model(paired, tiny_records, str(tmp_path), version=3)
    assert pb.stat().st_mtime_ns == before
    assert sorted(os.listdir(tmp_path / "ct2mr")) == ["1", "2", "3"]   # no temporary leftovers
    assert export.resolve_version_dir(str(tmp_path)) == str(tmp_path / "ct2mr" / "2")   # "3" holds no model
    assert export.existing_versions(str(tmp_path / "ct2mr")) == [1, 2, 3]


def test_resolve_and_load_errors(tmp_path, exported):
    assert export.resolve_version_dir(exported, "mr2ct") == os.path.join(exported, "mr2ct", "1")
    assert export.resolve_version_dir(os.path.join(exported, "ct2mr")) == os.path.join(exported, "ct2mr", "1")
    with pytest.raises(export.ExportError, match="no SavedModel found"):
        export.resolve_version_dir(str(tmp_path))
    with pytest.raises(export.ExportError, match="holds a ct2mr model, not mr2ct"):
        export.load_exported(os.path.join(exported, "ct2mr", "1"), "mr2ct")


def test_image_size_mismatch(tmp_path):
    with pytest.raises(export.ExportError, match="image_size 64 != model image_size 32"):
        export.export_model(tiny_model(), PreprocessConfig(image_size=64), str(tmp_path))
    assert not os.listdir(tmp_path)


def test_cli_run_without_checkpoint(tmp_path, tiny_records):
    from mrgan_tf.training import checkpoints
    run_dir = tmp_path / "run"
    checkpoints.save_run_config(str(run_dir), tiny_model().config, tiny_records.root)
    r = subprocess.run([sys.executable, "-m", "mrgan_tf.export", f"--run={run_dir}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert f"{run_dir}: no checkpoint" in r.stderr
    assert not (run_dir / "export").exists()


def test_cli_says_what_it_wrote_without_tensorflow_chatter(tmp_path_factory, tiny_records, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run(tmp_path_factory, tiny_records.root), run_dir)
    checkpoint = sorted((run_dir / "checkpoints").glob("ckpt-*.index"))[-1].with_suffix("")
    r = subprocess.run([sys.executable, "-m", "mrgan_tf.export", f"--run={run_dir}", "--version=7"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"exported version 7 of checkpoint {checkpoint}:",
                                     f"  ct2mr: {run_dir / 'export' / 'ct2mr' / '7'}",
                                     f"  mr2ct: {run_dir / 'export' / 'mr2ct' / '7'}"]
    for noise in ("signature_serialization", "functional_saver", "INFO:tensorflow", "Assets written", "fingerprint"):
        assert noise not in r.stderr, r.stderr


def test_a_run_folder_stands_alone_and_older_run_json_still_loads(tmp_path_factory, tiny_records, tmp_path):
    """run.json holds the preprocessing: export and synthesis need the records no more; a run.json written
    before (2k+1 "channels", no preprocessing) still restores, reading its records."""
    import json
    import shutil

    from mrgan_tf.inference.predictors import load_predictor
    from mrgan_tf.training import checkpoints
    records = tmp_path / "records"
    shutil.copytree(tiny_records.root, records)
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run(tmp_path_factory, tiny_records.root), run_dir)
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["preprocess"] == tiny_records.preprocess.to_dict()
    old = {**doc, "records": str(records), "model": {**doc["model"], "channels": 1}}
    del old["preprocess"], old["model"]["context_slices"]
    (run_dir / "run.json").write_text(json.dumps(old))
    assert checkpoints.run_preprocess(str(run_dir)) == tiny_records.preprocess
    stack = np.random.default_rng(2).uniform(0, 1, (3, 32, 32)).astype(np.float32)
    want = load_predictor(str(run_dir), "ct2mr").predict01(stack)
    shutil.rmtree(records)                                                         # the old run needs them ...
    with pytest.raises(checkpoints.SpecError, match=str(records)):
        checkpoints.run_preprocess(str(run_dir))
    (run_dir / "run.json").write_text(json.dumps({**doc, "records": str(records)}))   # ... a new one does not
    np.testing.assert_array_equal(load_predictor(str(run_dir), "ct2mr").predict01(stack), want)
    assert set(export.export_run(str(run_dir), str(tmp_path / "export"))) == {"ct2mr", "mr2ct"}


def test_export_run_from_checkpoint(tmp_path_factory, tiny_records, tmp_path):
    run_dir = tiny_run(tmp_path_factory, tiny_records.root)
    out = export.export_run(run_dir, str(tmp_path))
    assert set(out) == {"ct2mr", "mr2ct"}
    assert export.read_info(out["mr2ct"])["iterations"] == int(tiny_model().iteration.numpy())
    x = np.random.default_rng(4).uniform(-1, 1, (1, 32, 32, 1)).astype(np.float32)
    got = export.load_exported(str(tmp_path), "ct2mr").normalised(ct=x)["mr"].numpy()
    np.testing.assert_allclose(got, tiny_model().syn_mr(x).numpy(), atol=1e-5)


def test_row_format_twins_and_per_slice_ranges(loaded, tiny_records):
    """serving_rows / preprocessing_parameters_rows give the old signatures' values, batch-major."""
    rng = np.random.default_rng(6)
    mr = np.zeros((3, 30, 26), np.float32)
    mr[:, 3:-3, 3:-3] = rng.uniform(50, 900, (3, 24, 20))
    sigs = loaded["mr2ct"].loaded.signatures
    old, rows = sigs["serving_default"](mr=mr), sigs["serving_rows"](mr=mr)
    assert rows["mr_range"].shape == (3, 2)
    np.testing.assert_allclose(rows["mr_range"].numpy(), np.tile(old["mr_range"].numpy(), (3, 1)))
    np.testing.assert_allclose(rows["ct_hu"].numpy(), old["ct_hu"].numpy())
    # [N, 2]: one range per slice == each slice on its own with that range
    ranges = np.float32([[0, 1000], [100, 700], [50, 950]])
    per_slice = sigs["with_mr_range"](mr=mr, mr_range=ranges)
    assert per_slice["mr_range"].shape == (3, 2)
    for i in range(3):
        one = sigs["with_mr_range"](mr=mr[i:i + 1], mr_range=ranges[i])
        tol = rounding_tolerance(lambda m: sigs["with_mr_range"](mr=m, mr_range=ranges[i])["ct"].numpy(),
                                 mr[i:i + 1], tiny_model().syn_ct)
        np.testing.assert_allclose(per_slice["ct"].numpy()[i], one["ct"].numpy()[0], atol=tol)
    import tensorflow as tf
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be \[2\] or \[N, 2\]"):
        sigs["with_mr_range"](mr=mr, mr_range=ranges[:2])
    p = loaded["ct2mr"].loaded.signatures["preprocessing_parameters_rows"](row=np.zeros(2, np.int32))
    assert p["image_size"].numpy().tolist() == [tiny_records.preprocess.image_size] * 2
    assert p["mr_percentiles"].shape == (2, 2)
    assert json.loads(p["preprocess_json"].numpy()[1]) == tiny_records.preprocess.to_dict()


def test_warmup_covers_every_signature(exported):
    from mrgan_tf.serving import files as serving_files
    for name, count in (("ct2mr", 14), ("mr2ct", 26)):
        logs = serving_files.read_warmup(os.path.join(exported, name, "1", serving_files.WARMUP_DIR,
                                                      serving_files.WARMUP_FILE))
        sigs = {log.predict_log.request.model_spec.signature_name for log in logs}
        assert sigs == set(export.load_exported(exported, name).loaded.signatures)
        assert len(logs) == count


def test_full_hu_range_in_and_out_of_the_serving_graph(tmp_path):
    """With full-range records the graph maps HU over [-1024, 3000] (the spec's mapping), not the window."""
    from mrgan_tf.preprocess.intensity import ct_from_unit, ct_to_unit
    cfg = PreprocessConfig(image_size=32, ct_range=(-1024, 3000), bits=16)
    out = export.export_model(tiny_model(), cfg, str(tmp_path))
    to_mr, to_ct = (export.load_exported(str(tmp_path), n) for n in ("ct2mr", "mr2ct"))
    hu = np.random.default_rng(5).uniform(-1100, 3100, (2, 32, 32)).astype(np.float32)
    x = to_model_range(dequantise(quantise(ct_to_unit(hu, cfg), 16), 16))[..., None]
    gen = tiny_model().syn_mr
    want = from_model_range(gen(x, training=False).numpy()[..., 0])
    tol = rounding_tolerance(lambda v: from_model_range(gen(v, training=False).numpy()), x, gen)
    np.testing.assert_allclose(to_mr.loaded.signatures["serving_default"](ct=hu)["mr"].numpy(), want, atol=tol)
    mr = np.random.default_rng(6).uniform(0, 900, (2, 32, 32)).astype(np.float32)
    res = to_ct.loaded.signatures["serving_default"](mr=mr)
    np.testing.assert_allclose(res["ct_hu"].numpy(), ct_from_unit(res["ct"].numpy(), cfg), atol=1e-3)
    assert res["ct_hu"].numpy().min() >= -1024 - 1e-3 and res["ct_hu"].numpy().max() <= 3000 + 1e-3
    params = to_ct.loaded.signatures["preprocessing_parameters"]()
    np.testing.assert_allclose(params["ct_hu_range"].numpy(), [-1024, 3000])
    assert json.loads(params["preprocess_json"].numpy().decode())["ct_range"] == [-1024.0, 3000.0]
    assert set(out) == {"ct2mr", "mr2ct"}
    assert export.read_info(out["mr2ct"])["iterations"] == int(tiny_model().iteration.numpy())


def test_versions_are_written_as_pairs_and_leftovers_heal(tmp_path):
    import shutil
    out = tmp_path / "export"
    cfg = PreprocessConfig(image_size=32)
    first = export.export_model(tiny_model(), cfg, str(out))
    assert {n: os.path.basename(p) for n, p in first.items()} == {"ct2mr": "1", "mr2ct": "1"}
    shutil.copytree(out / "ct2mr" / "1", out / "ct2mr" / "2")          # the half of a killed export
    (out / "mr2ct" / ".tmp-3-999999-0badf00d").mkdir()                  # a killed writer's temporary
    second = export.export_model(tiny_model(), cfg, str(out))
    # A number that was ever served is not reused: the orphan 2 is removed and the pair is 3.
    assert {n: os.path.basename(p) for n, p in second.items()} == {"ct2mr": "3", "mr2ct": "3"}
    assert export.existing_versions(str(out / "ct2mr")) == export.existing_versions(str(out / "mr2ct")) == [1, 3]
    assert not (out / "mr2ct" / ".tmp-3-999999-0badf00d").exists()
    assert export.read_info(second["ct2mr"])["name"] == "ct2mr"
