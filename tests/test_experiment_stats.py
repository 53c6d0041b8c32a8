"""The experiments' difference record (table1.difference), which Table I and the context grid share."""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "experiments"))
import table1  # noqa: E402


def _s(values):
    return {**table1._stats(values), "per_seed": values}


def test_difference_against_combined_sd():
    a, b = _s([9.0, 11.0]), _s([11.5, 12.5])
    d = table1.difference(a, b, lower_is_better=True)
    assert d["difference"] == a["mean"] - b["mean"] < 0
    assert math.isclose(d["combined_sd"], math.hypot(a["sd"], b["sd"]))
    assert d["a_better"] is True
    assert d["exceeds_combined_sd"] is (abs(d["difference"]) > d["combined_sd"])
    assert d["per_seed"] == [-2.5, -1.5]
    assert table1.difference(a, b, lower_is_better=False)["a_better"] is False


def test_one_seed_or_a_missing_seed():
    d = table1.difference(_s([3.0]), _s([2.0]), lower_is_better=False)
    assert d["exceeds_combined_sd"] is None and d["a_better"] is True
    assert table1.difference(_s([3.0, None]), _s([2.0, 1.0]), True)["per_seed"] == [1.0, None]
