"""Is the spread worth anything: Spearman and the top-10 % MAE on constructed cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from mrgan_tf.evaluation import uncertainty


def case():
    """100 mask voxels with errors 1..100 (in a shuffled order) and 20 voxels outside the mask with huge
    errors and spreads, which must not count."""
    order = np.random.default_rng(0).permutation(100)
    ref = np.zeros((10, 12), np.float32)
    pred = np.zeros_like(ref)
    mask = np.zeros(ref.shape, bool)
    mask[:, :10] = True
    pred[mask] = (order + 1).astype(np.float32) * np.where(order % 2, 1, -1)   # |error| 1..100, both signs
    pred[~mask] = 1e4
    return ref, pred, mask


def test_a_spread_that_ranks_the_error_perfectly():
    ref, pred, mask = case()
    spread = np.abs(pred - ref) * 0.1 + 3.0          # any increasing function of the error
    spread[~mask] = 0.0
    assert uncertainty.spread_error_spearman(ref, pred, spread, mask) == pytest.approx(1.0)
    top, rest = uncertainty.mae_by_spread(ref, pred, spread, mask)
    assert top == pytest.approx(np.mean(np.arange(91, 101))) and rest == pytest.approx(np.mean(np.arange(1, 91)))


def test_a_spread_that_ranks_the_error_backwards_or_not_at_all():
    ref, pred, mask = case()
    backwards = 1000.0 - np.abs(pred - ref)
    assert uncertainty.spread_error_spearman(ref, pred, backwards, mask) == pytest.approx(-1.0)
    top, rest = uncertainty.mae_by_spread(ref, pred, backwards, mask)
    assert top == pytest.approx(5.5) and rest == pytest.approx(np.mean(np.arange(11, 101)))
    # spread of one half of the errors only: ranks 2 levels, Spearman of a 0/1 variable against 1..100
    half = (np.abs(pred - ref) > 50).astype(np.float32)
    expected = np.corrcoef(np.r_[np.full(50, 25.5), np.full(50, 75.5)], np.r_[np.arange(1, 51), np.arange(51, 101)])[0, 1]
    assert uncertainty.spread_error_spearman(ref, pred, half, mask) == pytest.approx(expected)


def test_ties_at_the_cut_still_split_ten_ninety():
    ref, pred, mask = case()
    flat = np.ones_like(ref)
    top, rest = uncertainty.mae_by_spread(ref, pred, flat, mask)
    assert top * 10 + rest * 90 == pytest.approx(np.sum(np.arange(1, 101)))   # 10 voxels and 90 voxels


def test_undefined_correlations_and_bad_shapes_are_value_errors():
    ref, pred, mask = case()
    with pytest.raises(ValueError, match="the spread is the same in every mask voxel"):
        uncertainty.spread_error_spearman(ref, pred, np.zeros_like(ref), mask)
    with pytest.raises(ValueError, match="the absolute error is the same"):
        uncertainty.spread_error_spearman(ref, ref, np.abs(pred), mask)
    with pytest.raises(ValueError, match="differ in shape"):
        uncertainty.mae_by_spread(ref, pred, np.zeros((3, 3)), mask)
