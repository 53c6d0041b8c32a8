"""Both directions' updates of a phase share one trace (modeling/fast/shared_update.py) and compute what
inline updates do; the contract (MRGAN.update sees no direction) is checked, and so is this test's reach."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY

from mrgan_tf.modeling import losses
from mrgan_tf.modeling.fast import shared_update
from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig, make_optimizers


def _model(seed=0, cls=MRGAN, **overrides):
    keras.utils.set_random_seed(seed)
    cfg = MRGANConfig(**{**TINY, **overrides})
    model = cls(cfg)
    model.compile(make_optimizers(cfg))
    return model


def _batch(size):
    return tf.constant(np.random.default_rng(3).integers(0, 256, (1, size, size, 4)).astype("float32"))


def _shared_and_inline(cls=MRGAN):
    """Two identical models after two iterations: one through the shared trace, one inline."""
    shared, inline = _model(cls=cls), _model(cls=cls)
    assert shared_update.attach(shared) and inline.update_runner is None
    for a, b in zip(shared.weights, inline.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    batch = _batch(shared.config.image_size)
    step_a, step_b = tf.function(shared.train_step), tf.function(inline.train_step)
    for _ in range(2):
        logs_a, logs_b = step_a(batch), step_b(batch)
    return shared, inline, logs_a, logs_b


def _assert_same(shared, inline, logs_a, logs_b):
    assert sorted(logs_a) == sorted(logs_b)
    for k in logs_a:
        np.testing.assert_allclose(float(logs_a[k]), float(logs_b[k]), rtol=1e-6, err_msg=k)
    for a, b in zip(shared.weights, inline.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6, err_msg=a.path)


def test_shared_equals_inline_and_traces_each_phase_once():
    shared, inline, logs_a, logs_b = _shared_and_inline()
    _assert_same(shared, inline, logs_a, logs_b)
    for key, opt in shared.optimizers.items():
        want = 2 * shared.config.updates_per_iteration(key)
        assert int(opt.iterations.numpy()) == int(inline.optimizers[key].iterations.numpy()) == want
    for phase, fn in shared.update_runner._fns.items():
        assert fn.experimental_get_tracing_count() == 1, phase          # one trace serves both directions
        for concrete in fn._list_all_concrete_functions():
            assert not concrete.captured_inputs, phase                   # every weight came in as an argument


class _KeyedByIdentity(MRGAN):
    """A direction-dependent term the update's signature cannot stop: an extra L1 for MR->CT only,
    found by comparing networks. Inline it applies to MR->CT; in the shared trace never."""

    def update(self, d, g_opt, d_opt, src, real, phase, step=0):
        d_loss, g_loss, terms = super().update(d, g_opt, d_opt, src, real, phase, step)
        if d.back is self.syn_mr:
            terms = {**terms, "extra": losses.l1(d.gen(src, training=True), real)}
            g_vars = d.gen.trainable_variables
            with tf.GradientTape() as tape:
                extra = losses.l1(d.gen(src, training=True), real)
            g_opt.apply_gradients(zip(tape.gradient(extra, g_vars), g_vars))
        return d_loss, g_loss, terms


def test_a_direction_dependent_term_is_caught():
    with pytest.raises(AssertionError):
        _assert_same(*_shared_and_inline(_KeyedByIdentity))


class _ReadsName(MRGAN):
    """A term keyed by the generator's name: the bound networks refuse the read."""

    def update(self, d, g_opt, d_opt, src, real, phase, step=0):
        scale = 2.0 if d.gen.name == "syn_ct" else 1.0
        d_loss, g_loss, terms = super().update(d, g_opt, d_opt, src, real, phase, step)
        return d_loss, g_loss * scale, terms


def test_the_update_cannot_read_which_direction_it_is():
    with pytest.raises(AttributeError, match="direction-blind"):
        _shared_and_inline(_ReadsName)


@pytest.mark.parametrize("why", ["pool", "keras_adam", "mirrored"])
def test_inline_where_sharing_would_not_be_exact(why):
    if why == "pool":
        assert not shared_update.attach(_model(pool_size=2))
    elif why == "keras_adam":
        model = MRGAN(MRGANConfig(**TINY))
        model.compile({k: keras.optimizers.Adam(2e-4) for k in ("syn_mr", "syn_ct", "dis_mr", "dis_ct")})
        assert not shared_update.attach(model)
    else:
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
            model = _model()
            assert not shared_update.attach(model) and model.update_runner is None
