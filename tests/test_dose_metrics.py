"""The dose figures against values computed by hand."""
import numpy as np
import pytest

from mrgan_tf.evaluation.dose.metrics import dose_at_volume, dvh_curve, dvh_points, gamma_pass_rate, mae_target


def test_mae_target_averages_over_the_high_dose_voxels_of_the_reference_only():
    ref = np.array([60.0, 54.0, 53.9, 10.0])        # 90 % of 60 Gy = 54 Gy: the first two count
    syn = np.array([57.0, 60.0, 0.0, 0.0])
    assert mae_target(ref, syn, 60.0) == pytest.approx((3.0 + 6.0) / 2 / 60.0)
    assert np.isnan(mae_target(np.full(3, 10.0), np.zeros(3), 60.0))


def test_dvh_points_interpolate_between_sorted_voxel_doses():
    dose = np.arange(101, dtype=np.float64)         # 0..100 Gy, one voxel each
    mask = np.ones(101, bool)
    points = dvh_points(dose, mask)
    # D98: 98 % of the voxels get at least it -> the 2nd percentile, i.e. 2 Gy; D2 -> 98 Gy.
    assert points == pytest.approx({"D98": 2.0, "D50": 50.0, "D2": 98.0, "Dmean": 50.0})
    assert dose_at_volume(np.array([10.0, 20.0]), 50) == pytest.approx(15.0)
    assert dvh_curve(dose, mask, np.array([0.0, 50.0, 100.0, 101.0])) == pytest.approx([100.0, 5100 / 101,
                                                                                       100 / 101, 0.0])
    assert all(np.isnan(v) for v in dvh_points(dose, np.zeros(101, bool)).values())


def test_gamma_of_a_ramp_shifted_in_dose_matches_the_hand_computed_index():
    # Reference: 1 Gy per mm along x (0..100 Gy, max 100). Evaluated: +1.5 Gy everywhere. The best
    # match of a point is 0.75 mm down the ramp: gamma = sqrt(0.75^2 / DTA^2 + 0.75^2 / dD^2), with
    # dD = DTA x 1 Gy/mm: 0.53 at 2 %/2 mm (all pass), 1.06 at 1 %/1 mm (all fail).
    ref = np.arange(101, dtype=np.float64)            # a 1-D profile: the same search as in 3-D, along x
    assert gamma_pass_rate(ref, ref + 1.5, (1.0,), 2.0, 2.0) == 100.0
    assert gamma_pass_rate(ref, ref + 1.5, (1.0,), 1.0, 1.0) == 0.0
    assert gamma_pass_rate(ref, ref.copy(), (1.0,), 1.0, 1.0) == 100.0


def test_gamma_counts_only_voxels_above_the_low_dose_cutoff():
    ref = np.zeros((20, 3, 3))
    ref[10:] = 50.0                                  # half the grid at 50 Gy, half at 0
    syn = ref.copy()
    syn[0:10] = 4.9                                  # below 10 % of 50 in the reference: not scored
    syn[15:] = 60.0                                  # 20 % over in 5 of the 10 scored rows
    assert gamma_pass_rate(ref, syn, (5.0, 5.0, 5.0), 2.0, 2.0, cutoff_percent=10.0) == pytest.approx(50.0)


def test_a_missing_dose_extra_is_named_with_its_install_command(monkeypatch):
    import importlib.util

    from mrgan_tf.evaluation.dose.engine import require_engine
    from mrgan_tf.evaluation.dose.errors import DoseError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyRadPlan" else real(name, *a))
    with pytest.raises(DoseError, match=r"optional 'dose' extra \(pyRadPlan missing\): pip install -e '\.\[dose\]' "
                                        r"&& pip install --no-deps 'pyradplan==0\.5\.0'"):
        require_engine()
