"""The trainer a person runs: NaN guard, TensorBoard output, export at the end, bad input."""
import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from conftest import TINY_FLAGS


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


def parse_flags(argv):
    from mrgan_tf import train  # noqa: F401  (defines the flags)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", *argv])


def test_nan_stops_training_and_keeps_last_good_checkpoint(tiny_records, tmp_path):
    from mrgan_tf import callbacks, train
    out = str(tmp_path / "run")
    parse_flags([f"--records={tiny_records.root}", f"--out={out}", "--mode=paired", "--steps=8",
                 "--checkpoint_every=2", "--log_every=1", "--image_every=2", "--verbose=0", *TINY_FLAGS])
    try:
        with pytest.raises(callbacks.NonFiniteLoss, match=r"non-finite loss at iteration 5: .*paired/syn_mr"):
            train.train(tiny_records.root, out, extra_callbacks=[PoisonAt(4)])
    finally:
        flags.FLAGS.unparse_flags()
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
    from mrgan_tf import train
    out = str(tmp_path / "run")
    parse_flags([f"--records={tiny_records.root}", f"--out={out}", "--mode=paired", "--steps=2",
                 "--verbose=0", *TINY_FLAGS])
    try:
        summary = train.train(tiny_records.root, out)
    finally:
        flags.FLAGS.unparse_flags()
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


def test_validation_scores_history_and_best_checkpoint(tmp_path):
    """--val_every scores the validation patients, logs them, keeps the best checkpoint; export can take it."""
    import csv
    import json

    from records_factory import write_tiny_records

    from mrgan_tf import checkpoints, export, train
    records = write_tiny_records(str(tmp_path / "records"), size=32, with_val=True)
    out = str(tmp_path / "run")
    parse_flags([f"--records={records.root}", f"--out={out}", "--mode=paired", "--steps=4", "--log_every=1",
                 "--val_every=2", "--export_checkpoint=best", "--checkpoint_every=100", "--verbose=0", *TINY_FLAGS])
    try:
        summary = train.train(records.root, out)
    finally:
        flags.FLAGS.unparse_flags()
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
    from mrgan_tf import checkpoints, train
    from mrgan_tf.spec import SpecError
    out = str(tmp_path / "run")
    parse_flags([f"--records={tiny_records.root}", f"--out={out}", "--steps=1", "--val_every=1",
                 "--log_every=1", "--verbose=0", *TINY_FLAGS])
    try:
        with pytest.raises(SpecError, match="--val_patients"):
            train.train(tiny_records.root, out)
    finally:
        flags.FLAGS.unparse_flags()
    assert not os.path.exists(out)   # refused before anything was written
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        checkpoints.resolve_checkpoint(out, "best")
