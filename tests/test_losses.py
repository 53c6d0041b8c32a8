"""Every loss on hand-computed tensors (Eq. 1-4)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.modeling import losses
from mrgan_tf.modeling.schedule import ConstantThenLinearDecay


def t(x):
    return tf.constant(x, tf.float32)


def test_lsgan_discriminator_and_generator():
    real, fake = t([[1.0, 0.5]]), t([[0.0, 2.0]])
    # mean((real-1)^2) = (0 + .25)/2 ; mean(fake^2) = (0 + 4)/2
    assert float(losses.lsgan_discriminator(real, fake)) == pytest.approx(0.125 + 2.0)
    assert float(losses.lsgan_discriminator(real, fake, real_label=0.9)) == pytest.approx((0.01 + 0.16) / 2 + 2.0)
    assert float(losses.lsgan_generator(fake)) == pytest.approx((1.0 + 1.0) / 2)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_nll_matches_log_likelihood():
    real, fake = t([2.0]), t([-1.0])
    expected = -math.log(sig(2.0)) - math.log(1 - sig(-1.0))
    assert float(losses.nll_discriminator(real, fake)) == pytest.approx(expected, rel=1e-5)
    assert float(losses.nll_generator(fake)) == pytest.approx(-math.log(sig(-1.0)), rel=1e-5)
    smoothed = -(0.9 * math.log(sig(2.0)) + 0.1 * math.log(1 - sig(2.0))) - math.log(1 - sig(-1.0))
    assert float(losses.nll_discriminator(real, fake, 0.9)) == pytest.approx(smoothed, rel=1e-5)


def test_l1():
    assert float(losses.l1(t([[0.0, 1.0], [2.0, -1.0]]), t([[1.0, 1.0], [0.0, 0.0]]))) == pytest.approx(1.0)


def test_adversarial_kinds():
    assert losses.adversarial_kinds("paper") == {"unpaired": "lsgan", "paired": "nll"}
    assert losses.adversarial_kinds("nll") == {"unpaired": "nll", "paired": "nll"}
    with pytest.raises(ValueError):
        losses.adversarial_kinds("wgan")


def test_schedule_constant_then_linear():
    s = ConstantThenLinearDecay(2e-4, decay_start=100, decay_steps=200)
    values = {i: float(s(i)) for i in (0, 99, 100, 200, 300, 400)}
    assert values[0] == pytest.approx(2e-4) and values[99] == pytest.approx(2e-4)
    assert values[100] == pytest.approx(2e-4)
    assert values[200] == pytest.approx(1e-4)   # middle of the decay
    assert values[300] == 0.0 and values[400] == 0.0


def test_schedule_counts_iterations_not_updates():
    s = ConstantThenLinearDecay(1.0, decay_start=10, decay_steps=10, updates_per_iteration=2)
    assert float(s(30)) == pytest.approx(0.5)   # update 30 = iteration 15
    assert float(s(np.int64(40))) == 0.0
