"""``PreprocessConfig``: every preprocessing parameter, stored in dataset.json and read back by all stages."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mrgan_tf.preprocess.context import channels_for

FIT_MODES = ("pad", "resize")
SLICE_AXES = ("axial", "coronal", "sagittal")
REGISTER_MODELS = ("rigid", "affine")
# The HU span a synthetic CT must cover to be planned on: air (about -1000 HU) to cortical
# bone (1500 HU and above). A model trained on a narrower range (the paper's 40/80 HU display
# window) writes air and bone as that range's ends: a picture of a CT, not a CT.
PLANNING_CT_SPAN_HU = (-900.0, 1500.0)
# Layout fields written into a spec only when they differ from these defaults, so a default
# dataset.json / preprocess.json stays byte-identical to those written before 2.5D and planes.
LAYOUT_DEFAULTS = {"context_slices": 0, "slice_axis": "axial"}


@dataclasses.dataclass
class PreprocessConfig:
    """Every preprocessing parameter; stored in dataset.json and read back by all stages."""

    spacing_mm: float = 1.0
    image_size: int = 256
    fit: str = "pad"
    ct_window_center: float = 40.0
    ct_window_width: float = 80.0
    # HU interval stored as [0, 1] instead of the window, e.g. (-1024, 3000) for a synthetic CT in
    # real HU (SynthRAD's clip); None keeps the paper's window. Needs bits=16.
    ct_range: tuple[float, float] | None = None
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    bits: int = 8
    # Keep a slice when its body area is at least this fraction of the patient's largest body
    # slice (independent of the canvas size, so a larger image_size keeps the same slices).
    min_foreground: float = 0.15
    # Largest fraction of a patient's body voxels that may fall outside the canvas (pad fit).
    max_body_loss: float = 0.005
    body_threshold_hu: float = -500.0
    register: bool = False
    register_skull_hu: float = 300.0
    register_model: str = "rigid"  # or "affine" (the paper); see registration.register_affine
    # 2.5D: each image carries its k neighbouring slices on each side as channels (0: one slice).
    context_slices: int = 0
    # The plane images are cut in, in the canonical (RAS+) orientation (docs/DESIGN.md).
    slice_axis: str = "axial"

    def __post_init__(self):
        self.mr_percentiles = tuple(float(p) for p in self.mr_percentiles)
        problems = []
        if self.ct_range is not None:
            self.ct_range = tuple(float(v) for v in self.ct_range)
            if len(self.ct_range) != 2 or not np.all(np.isfinite(self.ct_range)) \
                    or not self.ct_range[0] < self.ct_range[1]:
                problems.append(f"ct_range must be two finite HU values lo,hi with lo < hi (e.g. -1024,3000), got "
                                f"{','.join(f'{v:g}' for v in self.ct_range)}")
            elif self.bits != 16:
                step = (self.ct_range[1] - self.ct_range[0]) / 255
                problems.append(f"ct_range {self.ct_range[0]:g},{self.ct_range[1]:g} at bits=8 would store CT in "
                                f"{step:.1f} HU steps; use bits=16 (--bits=16)")
        if not self.spacing_mm > 0:
            problems.append(f"spacing_mm must be > 0, got {self.spacing_mm}")
        if int(self.image_size) != self.image_size or self.image_size < 8:
            problems.append(f"image_size must be an integer >= 8, got {self.image_size}")
        if self.fit not in FIT_MODES:
            problems.append(f"fit must be one of {FIT_MODES}, got {self.fit!r}")
        if not self.ct_window_width > 0:
            problems.append(f"ct_window_width must be > 0, got {self.ct_window_width}")
        lo, hi = self.mr_percentiles if len(self.mr_percentiles) == 2 else (None, None)
        if lo is None or not 0 <= lo < hi <= 100:
            problems.append(f"mr_percentiles must be (lo, hi) with 0 <= lo < hi <= 100, got {self.mr_percentiles}")
        if self.bits not in (8, 16):
            problems.append(f"bits must be 8 or 16, got {self.bits}")
        if self.register_model not in REGISTER_MODELS:
            problems.append(f"register_model must be one of {REGISTER_MODELS}, got {self.register_model!r}")
        if not 0 <= self.min_foreground <= 1:
            problems.append(f"min_foreground must be in [0, 1], got {self.min_foreground}")
        if not 0 <= self.max_body_loss <= 1:
            problems.append(f"max_body_loss must be in [0, 1], got {self.max_body_loss}")
        if int(self.context_slices) != self.context_slices or self.context_slices < 0:
            problems.append(f"context_slices must be an integer >= 0, got {self.context_slices}")
        if self.slice_axis not in SLICE_AXES:
            problems.append(f"slice_axis must be one of {SLICE_AXES}, got {self.slice_axis!r}")
        if problems:
            raise ValueError("invalid PreprocessConfig: " + "; ".join(problems))
        self.image_size = int(self.image_size)
        self.context_slices = int(self.context_slices)

    @property
    def channels(self) -> int:
        """Channels of one image in records and networks: the slice and its neighbours (2k+1)."""
        return channels_for(self.context_slices)

    @property
    def ct_hu_range(self) -> tuple[float, float]:
        """The HU interval that the stored CT's [0, 1] spans (``ct_range`` or the window)."""
        if self.ct_range is not None:
            return self.ct_range
        return (self.ct_window_center - self.ct_window_width / 2, self.ct_window_center + self.ct_window_width / 2)

    @property
    def ct_windowed(self) -> bool:
        """True when the CT range misses air or bone (``PLANNING_CT_SPAN_HU``): its synthetic CT is no CT."""
        lo, hi = self.ct_hu_range
        return lo > PLANNING_CT_SPAN_HU[0] or hi < PLANNING_CT_SPAN_HU[1]

    @property
    def ct_full_range(self) -> bool:
        """True when CT is stored over a full HU range rather than the paper's display window."""
        return self.ct_range is not None

    def to_dict(self, complete: bool = False) -> dict[str, Any]:
        """The spec's dict; ``complete`` keeps layout fields at their defaults too (for comparisons)."""
        d = dataclasses.asdict(self)
        d["mr_percentiles"] = list(self.mr_percentiles)
        d["ct_range"] = None if self.ct_range is None else list(self.ct_range)
        for key, default in LAYOUT_DEFAULTS.items():
            if d[key] == default and not complete:
                del d[key]
        return d

    def without_layout(self) -> dict[str, Any]:
        """``to_dict`` less the slice layout (k, plane): what models must share to be fused."""
        return {k: v for k, v in self.to_dict().items() if k not in LAYOUT_DEFAULTS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        """Missing keys take defaults (older specs); unknown keys are an error (typos)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PreprocessConfig keys: {unknown}")
        return cls(**d)
