"""Shared fixtures: one tiny records dir and one traced tiny model per session.

Tracing Algorithm 1's step costs tens of seconds even for a tiny network, so
tests share models instead of building their own.
"""
from __future__ import annotations

import os
import sys

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
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig, make_optimizers
    cache = {}

    def make(mode="mrgan", **overrides):
        key = (mode, tuple(sorted(overrides.items())))
        if key not in cache:
            cfg = MRGANConfig(mode=mode, **{**TINY, **overrides})
            model = MRGAN(cfg)
            model.compile(make_optimizers(cfg))
            cache[key] = model
        return cache[key]

    return make
