"""Tests for mrgan_tf.preprocess.intensity: every numpy step against its TensorFlow twin, and the CT mapping from the spec."""
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.preprocess import intensity as it

HU = np.array([-2000, -1024, -1000, -500, 0, 20, 40, 80, 1000, 3000, 3500], np.float32)
WINDOW = PreprocessConfig()
FULL = PreprocessConfig(ct_range=(-1024, 3000), bits=16)


def test_ct_hu_range_comes_from_the_spec():
    assert WINDOW.ct_hu_range == (0.0, 80.0) and not WINDOW.ct_full_range
    assert FULL.ct_hu_range == (-1024.0, 3000.0) and FULL.ct_full_range
    assert PreprocessConfig.from_dict(FULL.to_dict()) == FULL
    assert PreprocessConfig.from_dict(WINDOW.to_dict()).ct_range is None


@pytest.mark.parametrize("cfg", [WINDOW, FULL], ids=["window", "full"])
def test_ct_mapping_hand_values_and_round_trip(cfg):
    lo, hi = cfg.ct_hu_range
    q = it.ct_to_unit(HU, cfg)
    np.testing.assert_allclose(q, np.clip((HU - lo) / (hi - lo), 0, 1), atol=1e-7)
    inside = HU[(HU >= lo) & (HU <= hi)]
    np.testing.assert_allclose(it.ct_from_unit(it.ct_to_unit(inside, cfg), cfg), inside, atol=1e-3)
    # Outside the interval: clipped to its edges, never wrapped.
    assert it.ct_from_unit(it.ct_to_unit(np.float32(-5000), cfg), cfg) == pytest.approx(lo)
    assert it.ct_from_unit(it.ct_to_unit(np.float32(9000), cfg), cfg) == pytest.approx(hi)


def test_full_range_keeps_air_fat_and_bone_apart_at_16_bits():
    q = it.quantise(it.ct_to_unit(np.array([-1000, -100, 40, 1500], np.float32), FULL), 16)
    back = it.ct_from_unit(it.dequantise(q, 16), FULL)
    np.testing.assert_allclose(back, [-1000, -100, 40, 1500], atol=(4024 / 65535))


@pytest.mark.parametrize("cfg", [WINDOW, FULL], ids=["window", "full"])
def test_ct_numpy_and_tf_twins_agree(cfg):
    np.testing.assert_allclose(it.ct_to_unit_tf(tf.constant(HU), cfg).numpy(), it.ct_to_unit(HU, cfg), atol=1e-7)
    q = np.linspace(0, 1, 11, dtype=np.float32)
    np.testing.assert_allclose(it.ct_from_unit_tf(tf.constant(q), cfg).numpy(), it.ct_from_unit(q, cfg), rtol=1e-6)
    np.testing.assert_allclose(it.window_ct_tf(tf.constant(HU), 40, 80).numpy(), it.window_ct(HU, 40, 80))
    np.testing.assert_allclose(it.unwindow_ct_tf(tf.constant(q), 40, 80).numpy(), it.unwindow_ct(q, 40, 80))


def test_mr_and_quantisation_twins_agree():
    mr = np.random.default_rng(0).normal(500, 200, 1000).astype(np.float32)
    np.testing.assert_allclose(it.normalise_mr_tf(tf.constant(mr), 100.0, 900.0).numpy(),
                               it.normalise_mr(mr, 100.0, 900.0), atol=1e-7)
    q01 = np.random.default_rng(1).uniform(-0.1, 1.1, 1000).astype(np.float32)
    for bits in (8, 16):
        np.testing.assert_allclose(it.quantised_tf(tf.constant(q01), bits).numpy(),
                                   it.dequantise(it.quantise(q01, bits), bits), atol=1e-7)
    np.testing.assert_allclose(it.from_model_range(it.to_model_range(q01)), q01, atol=1e-7)


@pytest.mark.parametrize("bad, match", [
    (dict(ct_range=(3000, -1024), bits=16), "lo < hi"),
    (dict(ct_range=(0, float("nan")), bits=16), "finite"),
    (dict(ct_range=(-1024, 3000)), "15.8 HU steps; use bits=16"),
])
def test_bad_ct_range_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        PreprocessConfig(**bad)
