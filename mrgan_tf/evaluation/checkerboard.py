"""The checkerboard index: how much period-2 pattern a synthetic image carries inside the body.

Why period 2: a stride-2 3x3 transposed conv gives even output pixels one kernel tap
and odd ones two, per axis (Odena et al. 2016), so its artefact repeats every 2 pixels
along x, along y, or both: the energy of the three Nyquist frequencies (pi, 0), (0, pi)
and (pi, pi) of the slice's 2-D spectrum. A 2-D FFT would need the whole slice; inside a
body mask each frequency is measured instead by a separable 3x3 filter: the second
difference [1, -2, 1] / 4 along each axis that alternates (gain 1 at pi, 0 at DC and on
any linear ramp) times the binomial [1, 2, 1] / 4 along an axis that does not (gain 1
at DC, 0 at pi). So a pattern a (-1)^x, a (-1)^y or a (-1)^(x+y) gives exactly |a| in
its own filter and 0 in the two others, and smooth anatomy gives only its curvature.

``amplitude`` is the RMS of the three responses over the mask, in the image's units
(HU for CT): the amplitude of the period-2 pattern. Anatomy has some (every sharp edge,
the skull's above all), so ``index`` divides the synthetic image's amplitude by the
reference's on the same voxels: about 1 when the synthetic image is no rougher at
period 2 than the real one, above 1 by what the generator added.
"""
from __future__ import annotations

import numpy as np

NYQUIST = np.array([1.0, -2.0, 1.0]) / 4.0    # gain 1 at pi, 0 at DC and on ramps
SMOOTH = np.array([1.0, 2.0, 1.0]) / 4.0      # gain 1 at DC, 0 at pi


def responses(image: np.ndarray, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """The (pi, 0), (0, pi) and (pi, pi) responses, stacked on a new first axis; ``axes`` are the slice's plane."""
    from scipy.ndimage import correlate1d

    x = np.asarray(image, np.float64)
    a, b = axes

    def filt(fa, fb):
        return correlate1d(correlate1d(x, fa, axis=a, mode="nearest"), fb, axis=b, mode="nearest")

    return np.stack([filt(NYQUIST, SMOOTH), filt(SMOOTH, NYQUIST), filt(NYQUIST, NYQUIST)])


def amplitude(image: np.ndarray, mask: np.ndarray | None = None, axes: tuple[int, int] = (0, 1)) -> float:
    """RMS over ``mask`` (default: everywhere) of the period-2 responses, in the image's units."""
    r = responses(image, axes)
    m = np.ones(r.shape[1:], bool) if mask is None else np.asarray(mask, bool)
    if m.shape != r.shape[1:]:
        raise ValueError(f"mask shape {m.shape} != image shape {r.shape[1:]}")
    if not m.any():
        raise ValueError("empty mask: no voxel to measure the checkerboard in")
    return float(np.sqrt(np.mean(np.sum(r[:, m] ** 2, axis=0))))


def index(synthetic: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None,
          axes: tuple[int, int] = (0, 1)) -> float:
    """amplitude(synthetic) / amplitude(reference) over the same voxels: 1 = the reference's own roughness."""
    ref = amplitude(reference, mask, axes)
    if ref <= 0:
        raise ValueError("the reference has no period-2 content inside the mask: the index is undefined")
    return amplitude(synthetic, mask, axes) / ref
