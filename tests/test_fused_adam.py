"""FusedAdam: Keras Adam's numbers and checkpoints, on one device and under MirroredStrategy."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.modeling.fast.fused_adam import FusedAdam
from mrgan_tf.modeling.schedule import ConstantThenLinearDecay

SHAPES = [(3, 3, 2, 4), (4,), (7,)]


def _variables():
    rng = np.random.default_rng(1)
    return [keras.Variable(rng.normal(size=s).astype("float32")) for s in SHAPES]


def _train(opt, vs, steps, first=0):
    @tf.function
    def step(gs):
        opt.apply_gradients(zip(gs, vs))
    for i in range(first, first + steps):
        rng = np.random.default_rng(i)
        step([tf.constant(rng.normal(size=s).astype("float32")) for s in SHAPES])


def _adam(cls):
    return cls(ConstantThenLinearDecay(1e-2, 2, 4), beta_1=0.5, name="syn_mr")


def test_matches_keras_adam_through_the_schedule():
    out = {}
    for cls in (keras.optimizers.Adam, FusedAdam):
        vs, opt = _variables(), _adam(cls)
        _train(opt, vs, 7)        # constant, decaying and zero learning rate
        out[cls] = [v.numpy() for v in vs] + [v.numpy() for v in opt.variables]
    for a, b in zip(out[keras.optimizers.Adam], out[FusedAdam]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[FusedAdam][0], _variables()[0].numpy())


def test_checkpoint_of_keras_adam_restores_into_fused_adam(tmp_path):
    vs, opt = _variables(), _adam(keras.optimizers.Adam)
    _train(opt, vs, 3)
    path = tf.train.Checkpoint(opt=opt, vs=vs).write(str(tmp_path / "ckpt"))
    fused_vs, fused = _variables(), _adam(FusedAdam)
    fused.build(fused_vs)
    tf.train.Checkpoint(opt=fused, vs=fused_vs).read(path).assert_consumed()
    assert int(fused.iterations.numpy()) == 3
    for a, b in zip(opt.variables, fused.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    _train(opt, vs, 2, first=3)              # and both continue alike
    _train(fused, fused_vs, 2, first=3)
    for a, b in zip(vs, fused_vs):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)


def test_refuses_amsgrad():
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdam(amsgrad=True)


def test_make_optimizers_gives_fused_adam():
    from mrgan_tf.modeling.mrgan import MRGANConfig, make_optimizers
    opts = make_optimizers(MRGANConfig(image_size=32), loss_scale=True)
    assert all(isinstance(o.inner_optimizer, FusedAdam) for o in opts.values())


def test_mirrored_two_cpus_equals_keras_adam_on_one_device():
    script = os.path.join(os.path.dirname(__file__), "fused_adam_mirrored.py")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["tensors"] == 10
    assert out["max_diff"] < 1e-5, out
