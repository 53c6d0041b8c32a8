"""A damaged latest checkpoint (flipped byte, truncated data, missing index) is named on resume and training
continues from the newest intact one, saying how many iterations are repeated."""
from __future__ import annotations

import glob
import os
import shutil

import pytest
from conftest import TINY_FLAGS, train_configs

from mrgan_tf.training import checkpoints


def _flip_byte(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


DAMAGE = {"flipped byte": lambda prefix: _flip_byte(glob.glob(prefix + ".data-*")[0]),
          "truncated data": lambda prefix: _truncate(glob.glob(prefix + ".data-*")[0]),
          "missing index": lambda prefix: os.remove(prefix + ".index")}


@pytest.fixture(scope="module")
def trained(tiny_records, tmp_path_factory):
    """A paired run with ckpt-2 and ckpt-4."""
    from mrgan_tf.training import train
    out = str(tmp_path_factory.mktemp("damage") / "run")
    summary = train.train(tiny_records.root, out, *_configs(tiny_records, out, steps=4))
    assert summary["checkpoint"].endswith("ckpt-4")
    return out


def _configs(tiny_records, out, steps):
    return train_configs([f"--records={tiny_records.root}", f"--out={out}", "--mode=paired", f"--steps={steps}",
                          "--checkpoint_every=2", "--noexport", "--verbose=0", *TINY_FLAGS])


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_detected(trained, tmp_path, damage):
    run = shutil.copytree(trained, tmp_path / "run")
    prefix = str(run / "checkpoints" / "ckpt-4")
    assert checkpoints.checkpoint_damage(prefix) is None
    DAMAGE[damage](prefix)
    assert checkpoints.checkpoint_damage(prefix) is not None
    assert checkpoints.checkpoint_damage(str(run / "checkpoints" / "ckpt-2")) is None


def test_resume_passes_over_a_damaged_latest_checkpoint(trained, tiny_records, tmp_path, caplog):
    from mrgan_tf.training import train
    run = str(shutil.copytree(trained, tmp_path / "run"))
    DAMAGE["flipped byte"](os.path.join(run, "checkpoints", "ckpt-4"))
    summary = train.train(tiny_records.root, run, *_configs(tiny_records, run, steps=6))
    assert summary["start_iteration"] == 2 and summary["iterations"] == 6
    assert "ckpt-4 is damaged" in caplog.text and "iterations 3..4 will be trained again" in caplog.text
    assert checkpoints.checkpoint_damage(summary["checkpoint"]) is None


def test_every_checkpoint_damaged_is_an_error_naming_them(trained, tiny_records, tmp_path):
    from mrgan_tf.training import train
    run = str(shutil.copytree(trained, tmp_path / "run"))
    for n in (2, 4):
        DAMAGE["missing index"](os.path.join(run, "checkpoints", f"ckpt-{n}"))
    with pytest.raises(checkpoints.RunConfigError, match="every checkpoint is damaged.*ckpt-4.*ckpt-2"):
        train.train(tiny_records.root, run, *_configs(tiny_records, run, steps=6))


def test_a_damaged_best_checkpoint_is_named_and_chosen_again(tmp_path, caplog):
    import json

    from conftest import tiny_model
    best_dir = tmp_path / "run" / checkpoints.BEST_DIR
    best_dir.mkdir(parents=True)
    (best_dir / checkpoints.BEST_INFO).write_text(json.dumps({"key": "val_mr2ct_mae", "value": 1.0, "iteration": 4,
                                                             "checkpoint": "ckpt-4"}))   # its files are gone
    best = checkpoints.BestCheckpoint(tiny_model(), str(tmp_path / "run"), "val_mr2ct_mae")
    assert best.record == {} and "the best checkpoint ckpt-4 is damaged" in caplog.text
    assert best.offer(6, 2.0, {})   # any score beats "none": a new best is written
    assert checkpoints.read_best(str(tmp_path / "run"))["iteration"] == 6
