"""Float volumes -> stored integers (value = stored * slope + intercept), with what was clipped counted.

Writers quantise here so that NIfTI, MetaImage and DICOM outputs agree on
rounding and on how a value that does not fit is reported: it is clipped to
the nearest representable value and counted, never wrapped.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# DICOM's Decimal String holds at most 16 characters: 9 significant digits always fit.
_DS_DIGITS = 9


@dataclasses.dataclass
class Quantised:
    """Stored integers plus the linear map back to values and a count of what did not fit."""

    stored: np.ndarray
    slope: float
    intercept: float
    clipped_below: int            # voxels below the lowest representable value
    clipped_above: int            # voxels above the highest
    value_range: tuple            # (min, max) of the values before quantising

    @property
    def dtype(self) -> np.dtype:
        return self.stored.dtype

    @property
    def representable(self) -> tuple[float, float]:
        info = np.iinfo(self.dtype)
        return info.min * self.slope + self.intercept, info.max * self.slope + self.intercept

    @property
    def clipped(self) -> int:
        return self.clipped_below + self.clipped_above

    def summary(self, units: str = "") -> str | None:
        """One line saying what was clipped, or None when nothing was."""
        if not self.clipped:
            return None
        lo, hi = self.representable
        u = f" {units}" if units else ""
        return (f"{self.clipped} voxel(s) did not fit {self.dtype} and were clipped: {self.clipped_below} below "
                f"{lo:g}{u}, {self.clipped_above} above {hi:g}{u} (values ranged {self.value_range[0]:g}.."
                f"{self.value_range[1]:g}{u})")

    def report(self) -> dict:
        lo, hi = self.representable
        return {"dtype": str(self.dtype), "slope": self.slope, "intercept": self.intercept,
                "representable": [lo, hi], "value_range": list(self.value_range),
                "clipped_below": self.clipped_below, "clipped_above": self.clipped_above}


def ds_number(x: float) -> float:
    """``x`` rounded to what a DICOM Decimal String stores, so writer and reader use the same number."""
    return float(f"{float(x):.{_DS_DIGITS}g}")


def quantise(values: np.ndarray, dtype, slope: float = 1.0, intercept: float = 0.0) -> Quantised:
    """round((values - intercept) / slope) as ``dtype``; out-of-range values clipped and counted."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"quantise needs an integer dtype, got {dtype}")
    values = np.asarray(values, np.float64)
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError(f"{int(values.size - np.count_nonzero(np.isfinite(values)))} value(s) are NaN or infinite")
    info = np.iinfo(dtype)
    q = np.rint((values - intercept) / slope)
    below, above = int(np.count_nonzero(q < info.min)), int(np.count_nonzero(q > info.max))
    stored = np.clip(q, info.min, info.max).astype(dtype)
    vrange = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    return Quantised(stored, float(slope), float(intercept), below, above, vrange)


def fitting_rescale(values: np.ndarray, dtype) -> tuple[float, float]:
    """(slope, intercept), both Decimal-String exact, that map the whole value range into unsigned ``dtype``.

    The intercept is 0 unless values go below 0, so that stored 0 stays value 0
    where it can; the slope is the smallest DS number that still reaches the
    maximum (the quantisation step is the slope, the largest error half of it).
    """
    info = np.iinfo(np.dtype(dtype))
    if info.min < 0:
        raise ValueError(f"fitting_rescale is for unsigned types, got {np.dtype(dtype)}")
    values = np.asarray(values, np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    intercept = 0.0 if lo >= 0 else ds_number(np.floor(lo))
    if hi <= intercept:
        return 1.0, intercept
    s = ds_number((hi - intercept) / info.max)
    while intercept + s * info.max < hi:
        s = ds_number(s * (1 + 10.0 ** (1 - _DS_DIGITS)))
    return s, intercept
