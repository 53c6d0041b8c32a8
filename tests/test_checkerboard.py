"""The checkerboard index on constructed patterns: known amplitudes in, the same amplitudes out."""
import numpy as np
import pytest

from mrgan_tf.evaluation import checkerboard


def smooth_head(n: int = 64) -> np.ndarray:
    """A smooth image in HU: a wide Gaussian bump on a ramp (no edges)."""
    y, x = np.mgrid[:n, :n].astype(np.float64)
    return 40.0 + 3.0 * x - 2.0 * y + 300.0 * np.exp(-((x - n / 2) ** 2 + (y - n / 2) ** 2) / (2 * (n / 4) ** 2))


def pattern(kind: str, n: int = 64) -> np.ndarray:
    y, x = np.mgrid[:n, :n]
    return {"checkerboard": (-1.0) ** (x + y), "columns": (-1.0) ** x, "rows": (-1.0) ** y}[kind]


def body(n: int = 64) -> np.ndarray:
    m = np.zeros((n, n), bool)
    m[4:-4, 4:-4] = True
    return m


def test_a_smooth_image_has_almost_none():
    assert checkerboard.amplitude(smooth_head(), body()) < 0.5     # HU: only its curvature


@pytest.mark.parametrize("kind", ["checkerboard", "columns", "rows"])
def test_a_period_2_pattern_added_to_a_smooth_image_gives_its_amplitude(kind):
    a = 50.0
    got = checkerboard.amplitude(smooth_head() + a * pattern(kind), body())
    assert got == pytest.approx(a, abs=0.5)


def test_the_transposed_convs_tap_count_pattern_is_all_three_components():
    """1, 2, 2, 4 taps per 2x2 cell = 2.25 + 0.75 (-1)^x + 0.75 (-1)^y + 0.25 (-1)^(x+y), scaled by a."""
    a = 20.0
    taps = (1.5 + 0.5 * pattern("columns")) * (1.5 + 0.5 * pattern("rows"))
    got = checkerboard.amplitude(smooth_head() + a * taps, body())
    assert got == pytest.approx(a * np.sqrt(0.75 ** 2 + 0.75 ** 2 + 0.25 ** 2), rel=0.01)


def test_index_is_relative_to_the_reference_on_the_same_voxels():
    ref = smooth_head() + 10.0 * pattern("checkerboard")
    assert checkerboard.index(ref, ref, body()) == pytest.approx(1.0)
    assert checkerboard.index(smooth_head() + 30.0 * pattern("checkerboard"), ref, body()) == pytest.approx(3.0, rel=0.05)


def test_volumes_are_measured_in_the_plane_named():
    """A pattern across slices (axis 2) is not in the axial plane (axes 0, 1) the generator draws."""
    vol = np.repeat(smooth_head()[:, :, None], 8, axis=2) + 25.0 * (-1.0) ** np.arange(8)[None, None, :]
    mask = np.repeat(body()[:, :, None], 8, axis=2)
    mask[:, :, [0, -1]] = False       # the filters' edge slices see a repeated neighbour
    assert checkerboard.amplitude(vol, mask, axes=(0, 1)) < 0.5
    assert checkerboard.amplitude(vol, mask, axes=(0, 2)) == pytest.approx(25.0, abs=0.5)


def test_bad_masks_and_flat_references_are_refused():
    with pytest.raises(ValueError, match="empty mask"):
        checkerboard.amplitude(smooth_head(), np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="shape"):
        checkerboard.amplitude(smooth_head(), np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="undefined"):
        checkerboard.index(smooth_head(), np.zeros((64, 64)), body())
