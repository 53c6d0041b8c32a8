"""The trainer a person runs: NaN guard, TensorBoard output, export at the end, bad input."""
import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, TINY_FLAGS


class PoisonAt(keras.callbacks.Callback):
    """Turns SynMR's output bias into NaN after iteration ``at``: the next losses are NaN.

    (The output layer, because a NaN in an earlier conv can vanish in a ReLU.)"""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.iteration.numpy()) == self.at:
            w = self.model.syn_mr.get_layer("out_conv").bias
            w.assign(tf.fill(w.shape, np.nan))


def tiny(mode="mrgan"):
    from mrgan_tf.modeling.mrgan import MRGANConfig
    return MRGANConfig(mode=mode, **TINY)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tiny_records, tmp_path):
    from mrgan_tf.training import callbacks, train
    out = str(tmp_path / "run")
    config = train.TrainConfig(steps=8, checkpoint_every=2, log_every=1, image_every=2, verbose=0)
    with pytest.raises(callbacks.NonFiniteLoss, match=r"non-finite loss at iteration 5: .*paired/syn_mr"):
        train.train(tiny_records.root, out, tiny("paired"), config, callbacks=[PoisonAt(4)])
    latest = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
    assert latest.endswith("ckpt-4")                       # nothing saved after the NaN
    reader = tf.train.load_checkpoint(latest)
    assert all(np.all(np.isfinite(reader.get_tensor(n))) for n in reader.get_variable_to_shape_map()
               if reader.get_variable_to_dtype_map()[n].is_floating)
    assert not os.path.exists(os.path.join(out, "export"))  # no export of a broken model

    # TensorBoard got every loss term, the learning rates, the rate and the image panel.
    tags = set()
    for event_file in glob.glob(os.path.join(out, "logs", "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags |= {v.tag for v in event.summary.value}
    assert {"loss/paired/syn_mr_l1", "loss/paired/dis_mr", "learning_rate/syn_mr",
            "iterations_per_second"} <= tags
    assert any(t.startswith("CT | SynMR") for t in tags)
    header = open(os.path.join(out, "history.csv")).readline().strip().split(",")
    assert header[0] == "iteration" and "paired/syn_mr_l1" in header


def test_train_exports_servable_models_at_the_end(tiny_records, tmp_path):
    from mrgan_tf.training import train
    out = str(tmp_path / "run")
    summary = train.train(tiny_records.root, out, tiny("paired"), train.TrainConfig(steps=2, verbose=0))
    assert summary["iterations"] == 2
    assert set(summary["export"]) == {"ct2mr"}              # the paired baseline trains SynMR only
    loaded = tf.saved_model.load(summary["export"]["ct2mr"])
    assert {"serving_default", "normalised"} <= set(loaded.signatures)


def test_cli_bad_records_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    out = subprocess.run([sys.executable, "-m", "mrgan_tf.train", f"--records={missing}",
                          f"--out={tmp_path / 'run'}", "--steps=1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert str(missing) in out.stderr and "dataset.json" in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_reports_progress_then_what_it_wrote(tiny_records, tmp_path):
    """Plain progress lines at the default verbosity (stdout is a pipe here), then the checkpoint and the
    SavedModels; TensorFlow's start-up banner and the export's INFO lines stay out of the way."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "mrgan_tf.train", f"--records={tiny_records.root}", f"--out={out}",
                           "--mode=paired", "--steps=6", "--progress_every=2", "--progress_seconds=0", *TINY_FLAGS],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    progress = [ln for ln in lines if ln.startswith("iteration ")]
    assert [ln.split()[1] for ln in progress] == ["1/6", "2/6", "4/6", "6/6"]
    assert "first iteration in" in progress[0] and "paired: syn_mr " in progress[0]
    assert all(" it/s, " in ln and " left  paired: syn_mr " in ln for ln in progress[1:])
    assert lines[len(progress)].startswith("trained 6 iterations in ")
    assert lines[len(progress) + 1:] == [f"checkpoint of iteration 6: {out / 'checkpoints' / 'ckpt-6'}",
                                         f"exported version 1 of checkpoint {out / 'checkpoints' / 'ckpt-6'}:",
                                         f"  ct2mr: {out / 'export' / 'ct2mr' / '1'}"]
    for noise in ("oneDNN", "InitializeLog", "signature_serialization", "INFO:tensorflow", "Assets written"):
        assert noise not in done.stderr, done.stderr


def test_validation_scores_history_and_best_checkpoint(tmp_path):
    """--val_every scores the validation patients, logs them, keeps the best checkpoint; export can take it."""
    import csv
    import json

    from records_factory import write_tiny_records

    from mrgan_tf.serving import export
    from mrgan_tf.training import checkpoints, train
    records = write_tiny_records(str(tmp_path / "records"), size=32, with_val=True)
    out = str(tmp_path / "run")
    config = train.TrainConfig(steps=4, log_every=1, val_every=2, export_checkpoint="best", checkpoint_every=100,
                               verbose=0)
    summary = train.train(records.root, out, tiny("paired"), config)
    rows = list(csv.DictReader(open(os.path.join(out, "history.csv"))))
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4"]
    scored = [r for r in rows if r["val_ct2mr_mae"] != "nan"]
    assert [r["iteration"] for r in scored] == ["2", "4"]
    assert all(0 < float(r["val_ct2mr_mae"]) < 255 and float(r["val_ct2mr_ssim"]) <= 1 for r in scored)
    best = json.load(open(os.path.join(out, "checkpoints_best", "best.json")))
    assert best["key"] == "ct2mr_mae"
    assert best["value"] == pytest.approx(min(float(r["val_ct2mr_mae"]) for r in scored), rel=1e-5)
    assert best["iteration"] in (2, 4) and summary["best"]["iteration"] == best["iteration"]
    assert checkpoints.resolve_checkpoint(out, "best").endswith(f"ckpt-{best['iteration']}")
    assert checkpoints.resolve_checkpoint(out, "last").endswith("ckpt-4")
    assert export.read_info(summary["export"]["ct2mr"])["preprocess"]["image_size"] == 32
    tags = set()
    for event_file in glob.glob(os.path.join(out, "logs", "validation", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags |= {v.tag for v in event.summary.value}
    assert {"validation/ct2mr_mae", "validation/ct2mr_psnr", "validation/ct2mr_ssim"} <= tags


def test_validation_needs_validation_patients(tiny_records, tmp_path):
    from mrgan_tf.records.spec import SpecError
    from mrgan_tf.training import checkpoints, train
    out = str(tmp_path / "run")
    config = train.TrainConfig(steps=1, val_every=1, log_every=1, verbose=0)
    with pytest.raises(SpecError, match="--val_patients"):
        train.train(tiny_records.root, out, tiny(), config)
    assert not os.path.exists(out)   # refused before anything was written
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        checkpoints.resolve_checkpoint(out, "best")


def test_flags_build_the_configs_with_the_dataclass_defaults(tiny_records):
    """No option given: every field is its dataclass default; the choices are the tables' keys."""
    from absl import flags

    from mrgan_tf.modeling import mrgan as model
    from mrgan_tf.modeling import networks
    from mrgan_tf.training import distribute, train
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["train", f"--records={tiny_records.root}", "--out=/unused"])
    model_config, train_config = train.configs_from_flags(fv)
    assert train_config == train.TrainConfig()
    assert model_config == model.MRGANConfig(image_size=32, input_max=255.0)   # the records' size and scale
    assert fv["mode"].parser.enum_values == list(model.MODES)
    assert fv["discriminator"].parser.enum_values == list(networks.DISCRIMINATOR_VARIANTS)
    assert fv["strategy"].parser.enum_values == list(distribute.STRATEGIES)
    fv(["train", "--noaugment", "--mode=paired", "--max_rotation=3", "--strategy=mirrored", "--cpu_devices=2",
        "--steps=7", "--lr=1e-3"])
    model_config, train_config = train.configs_from_flags(fv)
    assert model_config.mode == "paired" and model_config.augment.is_identity   # --noaugment: no rotation either
    assert (train_config.steps, train_config.total_steps, train_config.lr) == (7, 7, 1e-3)
    assert train_config.distribute == distribute.DistributeConfig("mirrored", 2)


@pytest.mark.parametrize("options, words", [
    (dict(val_every=3, log_every=2), "--val_every=3 must be a multiple of --log_every=2"),
    (dict(export_checkpoint="best"), "--export_checkpoint=best needs --val_every"),
    (dict(precision="float64"), "--precision must be one of"),
])
def test_train_config_refuses_contradictions(options, words):
    from mrgan_tf.training import train
    with pytest.raises(train.TrainConfigError, match=words):
        train.TrainConfig(**options)


def test_model_config_must_fit_the_records(tiny_records, tmp_path):
    from mrgan_tf.modeling.mrgan import MRGANConfig
    from mrgan_tf.training import train
    out = tmp_path / "run"
    with pytest.raises(train.TrainConfigError, match="32-pixel slices .* image_size=64"):
        train.train(tiny_records.root, str(out), MRGANConfig(**{**TINY, "image_size": 64}),
                    train.TrainConfig(steps=1))
    assert not out.exists()
