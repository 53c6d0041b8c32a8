"""End-to-end smoke test of the one-command demo at toy size, plus its small helpers.

The demo runs once per module (CLI, in a subprocess, as `make demo` would) with
tiny networks on 8 mm / 32 px data; every test then checks one kind of artefact.
Three training processes dominate the cost (graph tracing in each).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mrgan_tf.demo import anatomy
from mrgan_tf.demo import pipeline as demo
from mrgan_tf.demo import report, runs

STEPS = 3
TOY_ARGS = ["--size_scale=0.25", f"--steps={STEPS}", "--train_flag=--ngf=4", "--train_flag=--n_blocks=1",
            "--train_flag=--ndf_scale=0.125", "--train_flag=--log_every=1"]
TOY_OPTIONS = dict(size_scale=0.25, steps=STEPS, train_flags=("--ngf=4", "--n_blocks=1", "--ndf_scale=0.125",
                                                              "--log_every=1"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The demo's output folder after one full CLI run, and that run's console output."""
    out = str(tmp_path_factory.mktemp("demo") / "run")
    proc = subprocess.run([sys.executable, "-m", "mrgan_tf.demo", f"--out={out}", *TOY_ARGS],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_console_shows_stage_headers_and_training_output(built):
    _, stdout = built
    headers = re.findall(r"^=== \[(\d)/8\] (.+?)  \(elapsed \d+:\d\d\) ===$", stdout, flags=re.M)
    assert [int(n) for n, _ in headers] == list(range(1, 9))
    for mode in demo.MODES:
        assert f"[{mode}] trained {STEPS} iterations" in stdout      # the child's own output, streamed
    assert "oneDNN custom operations" not in stdout                    # TF chatter stays in the logs


def test_synthetic_ct_row_in_hu(built):
    out, _ = built
    spec = json.load(open(os.path.join(out, "records_sct", "dataset.json")))
    assert spec["preprocess"]["ct_range"] == [-1024.0, 3000.0] and spec["preprocess"]["bits"] == 16
    rows = json.load(open(os.path.join(out, "eval_sct", "metrics.json")))["synthrad"]["per_patient"]["mrgan"]
    assert sorted(rows) == ["pair_test_01", "pair_test_02"]
    assert all(r["sct_mae"] > 0 and -1 <= r["sct_ssim"] <= 1 for r in rows.values())
    report = open(os.path.join(out, "report.md")).read()
    assert "## Synthetic CT in HU" in report and "MAE (HU)" in report and "sct_bone_window.png" in report
    assert os.path.getsize(os.path.join(out, "sct_bone_window.png")) > 1000
    # The same model with flip TTA: its spread, scored against the error and drawn beside it.
    tta = json.load(open(os.path.join(out, "eval_sct_tta", "metrics.json")))["synthrad"]["per_patient"]["mrgan_flip"]
    assert sorted(tta) == ["pair_test_01", "pair_test_02"]
    for r in tta.values():
        assert -1 <= r["sct_unc_spearman"] <= 1 and r["sct_unc_mae_top10"] >= 0 and r["sct_unc_mae_rest"] >= 0
    assert "spread~error (Spearman)" in report and "sct_uncertainty.png" in report
    assert os.path.getsize(os.path.join(out, "sct_uncertainty.png")) > 1000
    # The dose check of the synthetic CT on the first test head (--dose_patients=1, the default).
    dose = json.load(open(os.path.join(out, "eval_sct", "metrics.json")))["dose"]
    (pid, row), = dose["per_patient"]["mrgan"].items()
    assert pid == "pair_test_01" and 0 <= row["photons_gamma_2_2"] <= 100 and row["protons_mae_target"] >= 0
    assert "### Dose check of the synthetic CT" in report and "dose_difference.png" in report


def test_synthetic_ct_scoring_starts_when_its_training_ends(built):
    """Stage 7's evaluations run as the commands the report lists, started beside the last trainings."""
    out, stdout = built
    assert stdout.index("[eval_sct] started beside the rest") < stdout.index("=== [4/8] SavedModels")
    assert stdout.index("[eval_sct_tta] started beside the rest") < stdout.index("=== [4/8] SavedModels")
    report = open(os.path.join(out, "report.md")).read()
    for name in ("eval_sct", "eval_sct_tta"):
        log = open(os.path.join(out, "logs", f"{name}.log")).read()
        assert f"files to {os.path.join(out, name)}" in log         # evaluate's own last line
        assert f"--out={os.path.join(out, name)}" in report


def test_synthetic_ct_scoring_failure_names_its_log(tmp_path):
    d = demo.Demo(demo.DemoOptions(out=str(tmp_path)).resolved())
    d.sct.scoring_commands = lambda: {"eval_sct": [sys.executable, "-c", "import sys; sys.exit('no model here')"]}
    d.sct._key = dict
    d.sct.start_scoring(force=True)
    with pytest.raises(runs.DemoError, match=r"exit 1.*eval_sct\.log(.|\n)*no model here"):
        d.sct.finish_scoring()
    assert not d.sct._scoring


def test_records_verify(built):
    from tfrecords_tools import reader
    out, _ = built
    records = os.path.join(out, "records")
    spec = json.load(open(os.path.join(records, "dataset.json")))
    assert spec["preprocess"]["image_size"] == 32 and spec["preprocess"]["spacing_mm"] == 8.0
    assert sorted(spec["split"]["test"]) == ["pair_test_01", "pair_test_02"]
    for name in ("paired_train", "unpaired_ct", "unpaired_mr", "paired_test"):
        report = reader.verify(records, name)
        assert report.ok and report.count > 0, (name, report)


def test_runs_have_checkpoints_history_and_loadable_savedmodels(built):
    import tensorflow as tf

    from mrgan_tf.serving.export import load_exported
    out, _ = built
    x = tf.zeros([1, 32, 32, 1])
    for mode in demo.MODES:
        run = os.path.join(out, mode)
        assert tf.train.latest_checkpoint(os.path.join(run, "checkpoints")).endswith(f"ckpt-{STEPS}")
        curves = report.read_history(os.path.join(run, "history.csv"))
        assert curves and next(iter(curves.values()))[0][-1] == STEPS
        exported = load_exported(os.path.join(run, "export"), "ct2mr")
        y = exported.normalised(ct=x)["mr"].numpy()
        assert y.shape == (1, 32, 32, 1) and np.all(np.abs(y) <= 1.0)
        has_mr2ct = os.path.isdir(os.path.join(run, "export", "mr2ct"))
        assert has_mr2ct == (mode != "paired")   # the paired baseline trains CT -> MR only


def test_metrics_compare_the_three_models(built):
    out, _ = built
    doc = json.load(open(os.path.join(out, "eval", "metrics.json")))
    assert set(doc["models"]) == set(demo.MODES)
    md = open(os.path.join(out, "eval", "metrics.md")).read()
    for mode in demo.MODES:
        assert f"MAE {mode}" in md


def test_report_mentions_everything_and_its_links_exist(built):
    out, _ = built
    report = open(os.path.join(out, "report.md")).read()
    for mode in demo.MODES:
        assert f"--mode={mode}" in report                      # the command that trained it
        assert f"`{mode}/export/ct2mr/1`" in report              # its SavedModel
        assert f"loss_{mode}.png" in report
    assert "MAE mrgan" in report and "say nothing about the paper's claims" in report
    assert f"tensorboard --logdir {out}" in report
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert any(link.endswith("fig6.png") for link in links)
    assert any(link.endswith("_syn_mr.png") for link in links)
    for link in links:
        assert os.path.isfile(os.path.join(out, link)), link


def test_pngs_open(built):
    from PIL import Image
    out, _ = built
    pngs = [os.path.join(root, f) for root, _, files in os.walk(out) for f in files if f.endswith(".png")]
    names = {os.path.basename(p) for p in pngs}
    assert {"fig6.png", "loss_mrgan.png", "loss_paired.png", "loss_unpaired.png"} <= names
    for p in pngs:
        with Image.open(p) as im:
            im.verify()


def test_synthesized_volume_is_on_the_ct_grid(built):
    import nibabel as nib
    out, _ = built
    pid, real = demo.Demo(demo.DemoOptions(out=out, **TOY_OPTIONS).resolved()).cranium_patient()
    assert real == anatomy.CRANIUM_INV3.is_file()
    ct = nib.load(os.path.join(out, "data", pid, "ct.nii.gz"))
    syn = nib.load(os.path.join(out, demo.SYN_NAME if real else f"{pid}_syn_mr.nii.gz"))
    assert syn.shape == ct.shape
    np.testing.assert_allclose(syn.affine, ct.affine, atol=1e-5)
    data = np.asarray(syn.dataobj)
    assert np.isfinite(data).all() and 0 <= data.min() and data.max() <= 255


def test_second_run_reuses_everything(built):
    out, _ = built
    result = demo.run_demo(demo.DemoOptions(out=out, **TOY_OPTIONS))
    statuses = {row["stage"]: row["status"] for row in result["stages"]}
    assert [s for name, s in statuses.items() if not name.startswith("Loss")] == \
        ["reused", "reused", "reused", "present", "reused", "reused", "reused"], statuses
    assert result["exports"]["mrgan"]["ct2mr"].endswith(os.path.join("ct2mr", "1"))  # no re-export


# --------------------------------------------------------------------------- helpers (no training)


def test_options_defaults_follow_size_scale(tmp_path):
    o = demo.DemoOptions(out=str(tmp_path), size_scale=0.5).resolved()
    assert (o.spacing_mm, o.image_size) == (4.0, 64)
    assert o.steps == demo._flagfile_int(o.config, "steps") > 0
    full = demo.DemoOptions(out=str(tmp_path)).resolved()
    assert (full.spacing_mm, full.image_size) == (2.0, 128)


@pytest.mark.parametrize("bad, message", [(dict(size_scale=5.0), "size_scale"), (dict(image_size=30), "multiple of 4"),
                                          (dict(config="/nonexistent.cfg"), "/nonexistent.cfg"),
                                          (dict(jobs=0), "jobs")])
def test_options_errors_name_the_problem(tmp_path, bad, message):
    with pytest.raises(demo.DemoError, match=re.escape(message)):
        demo.DemoOptions(out=str(tmp_path), **bad).resolved()


def test_cli_bad_flag_exits_nonzero_with_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mrgan_tf.demo", f"--out={tmp_path}", "--size_scale=9"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "demo: error:" in proc.stderr and "size_scale" in proc.stderr
    assert not os.listdir(tmp_path)


def test_console_filter():
    assert not runs.worth_showing("I1124 22:52:10.987956 139625383144320 signature_serialization.py:156] x\n")
    assert runs.worth_showing("I1124 22:52:10.987956 139625383144320 train.py:99] resuming\n")
    assert runs.worth_showing("W1124 22:52:10.987956 139625383144320 anything.py:1] careful\n")
    assert runs.worth_showing("trained 3 iterations in 5.0 s -> /x\n")
    # train's progress lines: the pool prints its own
    assert not runs.worth_showing("iteration 30/600 (5%)  2.7 it/s, 3m30s left  paired: syn_mr 56.7\n")


def test_read_history(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("iteration,a/loss,b,iterations_per_second\n10,1.5,nan,3\n20,1.0,2,3.5\n")
    curves = report.read_history(str(path))
    assert set(curves) == {"a/loss", "b"}
    assert curves["a/loss"] == ([10, 20], [1.5, 1.0])
    assert np.isnan(curves["b"][1][0])
    assert report.read_history(str(tmp_path / "missing.csv")) == {}


def test_register_help_names_the_transform_that_runs():
    from absl import flags

    from mrgan_tf.preprocess import PreprocessConfig
    fv = flags.FlagValues()
    demo.define_flags(fv)
    assert PreprocessConfig().register_model == "rigid" and "rigid" in fv["register"].help


def test_trainings_side_by_side_share_the_cores(monkeypatch):
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_FORCE_GPU_ALLOW_GROWTH"):
        monkeypatch.delenv(name, raising=False)
    assert runs.shared_cores_env(1, cores=2) == {}
    assert runs.shared_cores_env(2, cores=2) == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                                                 "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert runs.shared_cores_env(2, cores=8)["TF_NUM_INTRAOP_THREADS"] == "4"
    assert runs.shared_cores_env(3, cores=2)["TF_NUM_INTRAOP_THREADS"] == "1"
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")      # the user's own setting wins
    assert "TF_NUM_INTRAOP_THREADS" not in runs.shared_cores_env(2, cores=2)
    assert runs.cmd_text(["python", "-m", "x"], {"A": "1"}) == "A=1 python -m x"
    o = demo.DemoOptions(out="/tmp/unused").resolved()
    assert o.jobs == (2 if runs.available_cores() >= 2 else 1)


def test_training_pool_runs_two_at_once_with_their_share(tmp_path, monkeypatch):
    """Two children that each wait for the other's file: they finish only if they run at the same time."""
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    child = ("import os, sys, time\n"
             "me, other = sys.argv[1], sys.argv[2]\n"
             "open(me, 'w').write(os.environ.get('TF_NUM_INTRAOP_THREADS', '-'))\n"
             "deadline = time.time() + 60\n"
             "while not os.path.exists(other) and time.time() < deadline: time.sleep(0.01)\n"
             "print('saw the other' if os.path.exists(other) else 'alone')\n")
    files = {n: str(tmp_path / f"{n}.started") for n in ("a", "b")}

    def command(name):
        return [sys.executable, "-c", child, files[name], files["b" if name == "a" else "a"]]

    done = []
    pool = runs.TrainingPool(command, {n: str(tmp_path / n) for n in files}, str(tmp_path), jobs=2, steps=1)
    pool.run(["a", "b"], on_done=lambda name, seconds: done.append(name))
    assert sorted(done) == ["a", "b"]
    share = str(max(1, runs.available_cores() // 2))
    for name in files:
        assert open(files[name]).read() == share
        assert "saw the other" in open(tmp_path / f"train_{name}.log").read()
