"""Both directions' updates of a phase share one trace (shared_update.py) and compute what inline updates do."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY

from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig, make_optimizers


def _model(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    cfg = MRGANConfig(**{**TINY, **overrides})
    model = MRGAN(cfg)
    model.compile(make_optimizers(cfg))
    return model


def _batch(size):
    return tf.constant(np.random.default_rng(3).integers(0, 256, (1, size, size, 4)).astype("float32"))


def test_shared_equals_inline_and_traces_each_phase_once():
    shared, inline = _model(), _model()
    assert shared._shared is not None
    inline._shared = None                                   # the same model, every update built in the step
    for a, b in zip(shared.weights, inline.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    batch = _batch(shared.config.image_size)
    step_a, step_b = tf.function(shared.train_step), tf.function(inline.train_step)
    for _ in range(2):
        logs_a, logs_b = step_a(batch), step_b(batch)
    assert sorted(logs_a) == sorted(logs_b)
    for k in logs_a:
        np.testing.assert_allclose(float(logs_a[k]), float(logs_b[k]), rtol=1e-6, err_msg=k)
    for a, b in zip(shared.weights, inline.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6, err_msg=a.path)
    for key, opt in shared.optimizers.items():
        want = 2 * shared.config.updates_per_iteration(key)
        assert int(opt.iterations.numpy()) == int(inline.optimizers[key].iterations.numpy()) == want
    for phase, fn in shared._shared._fns.items():
        assert fn.experimental_get_tracing_count() == 1, phase          # one trace serves both directions
        for concrete in fn._list_all_concrete_functions():
            assert not concrete.captured_inputs, phase                   # every weight came in as an argument


@pytest.mark.parametrize("why", ["pool", "keras_adam", "mirrored"])
def test_inline_where_sharing_would_not_be_exact(why):
    if why == "pool":
        assert _model(pool_size=2)._shared is None
    elif why == "keras_adam":
        cfg = MRGANConfig(**TINY)
        model = MRGAN(cfg)
        model.compile({k: keras.optimizers.Adam(2e-4) for k in ("syn_mr", "syn_ct", "dis_mr", "dis_ct")})
        assert model._shared is None
    else:
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
            assert _model()._shared is None
