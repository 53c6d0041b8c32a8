"""Shared fixtures: one tiny records dir and one traced tiny model per session.

Tracing Algorithm 1's step costs tens of seconds even for a tiny network, so
tests share models instead of building their own.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY = dict(image_size=32, ngf=4, n_blocks=1, ndf_scale=0.125)
TINY_FLAGS = ["--ngf=4", "--n_blocks=1", "--ndf_scale=0.125"]


def train_configs(argv):
    """The (model, train) configs of a ``python -m mrgan_tf.train`` command line, without global flags."""
    from absl import flags

    from mrgan_tf.training import train
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["train", *argv])
    return train.configs_from_flags(fv)


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory):
    from records_factory import write_tiny_records
    return write_tiny_records(str(tmp_path_factory.mktemp("records")), size=32)


@pytest.fixture(scope="session")
def tiny_model_factory():
    """Builds (and caches) a compiled tiny MRGAN per (mode, options)."""
    from mrgan_tf.modeling.fast import shared_update
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig, make_optimizers
    cache = {}

    def make(mode="mrgan", **overrides):
        key = (mode, tuple(sorted(overrides.items())))
        if key not in cache:
            cfg = MRGANConfig(mode=mode, **{**TINY, **overrides})
            model = MRGAN(cfg)
            model.compile(make_optimizers(cfg))
            shared_update.attach(model)
            cache[key] = model
        return cache[key]

    return make


def rounding_tolerance(fn, x, network) -> float:
    """How far two float32 evaluations of ``fn`` at ``x`` (other kernels, batch sizes or CPUs) may differ.

    Derived from the computation, not from one machine: the output's response to a relative
    input perturbation of float32's epsilon (the computation's condition, measured), for each
    of ``network``'s convolutions (each rounds once more), each rounding like a sum of its
    fan-in n terms, ~sqrt(n) epsilons in any order of accumulation (the usual statistical bound).
    """
    import keras
    convs = [layer for layer in network._flatten_layers(include_self=False)
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    fan_in = max(int(np.prod(layer.kernel.shape[:-1])) for layer in convs)
    eps = float(np.finfo(np.float32).eps)
    x = np.asarray(x, np.float32)
    dx = (x * eps * np.random.default_rng(0).choice([-1.0, 1.0], x.shape)).astype(np.float32)
    moved = np.abs(np.asarray(fn(x + dx)) - np.asarray(fn(x))).max()
    return len(convs) * np.sqrt(fan_in) * max(float(moved), eps)
