"""Checkpoints written before a refactor restore after it: the same variables under the same keys."""
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY

DATA = Path(__file__).resolve().parent / "data"


def compiled_model(separate_phases: bool, pool_size: int):
    """A tiny MRGAN with its optimizers, as a run (re)starting builds it."""
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig, make_optimizers
    cfg = MRGANConfig(mode="mrgan", pool_size=pool_size, **TINY)
    model = MRGAN(cfg)
    model.compile(make_optimizers(cfg, separate_phases=separate_phases))
    return model


def one_step_model(separate_phases: bool, pool_size: int):
    """After one training step: what the first checkpoint of a run holds."""
    model = compiled_model(separate_phases, pool_size)
    batch = tf.constant(np.random.default_rng(0).integers(0, 255, (1, 32, 32, 4)), tf.uint8)
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1, steps_per_epoch=1, verbose=0)
    return model


@pytest.mark.parametrize("name, separate_phases, pool_size", [("mrgan", False, 0), ("authors_code", True, 2)])
def test_checkpoint_keys_match_the_earlier_release(tmp_path, name, separate_phases, pool_size):
    from mrgan_tf.training import checkpoints
    model = one_step_model(separate_phases, pool_size)
    prefix = checkpoints.manager_for(model, str(tmp_path / "run")).save()   # as a training run saves
    keys = [f"{n} {','.join(map(str, s))}" for n, s in tf.train.list_variables(prefix)]
    assert keys == (DATA / f"checkpoint_keys_{name}.txt").read_text().splitlines()

    fresh = compiled_model(separate_phases, pool_size)   # a resumed run's model, before its restore
    checkpoints.checkpoint_for(fresh).restore(prefix).assert_existing_objects_matched()
    for a, b in zip(model.syn_mr.weights, fresh.syn_mr.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert int(fresh.iteration.numpy()) == 1
