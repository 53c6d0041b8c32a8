"""Plausibility checks on input volumes: nonsense input is named, never passed on silently.

Pure functions returning ``Problem``s (a kind and a message naming the file);
the tools decide what a problem does: an error, or, when the user accepts its
kind (make_records ``--accept=KIND``), a warning that is counted in the summary.
The body that does not fit the canvas is ``PreparedPatient.body_loss_problem``
(preprocess), not repeated here.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np
from absl import logging

from mrgan_tf.io.layout import UNSUPPORTED_FILE  # a folder check, done by discovery
from mrgan_tf.io.problems import Problem, split  # noqa: F401  (every check returns Problems)
from mrgan_tf.io.volumes import VolumeError

# Kinds a user may accept (then they are warnings).
CONSTANT = "constant"                  # empty or constant volume
OUT_OF_RANGE = "out_of_range"          # values the modality cannot hold
UNSIGNED_CT = "unsigned_ct"            # CT stored as HU+1024 without its rescale intercept
WRONG_MODALITY = "wrong_modality"      # a CT given as the MR, or an MR as the CT
ACCEPTABLE = (CONSTANT, OUT_OF_RANGE, UNSIGNED_CT, WRONG_MODALITY, UNSUPPORTED_FILE)
# Kinds that are always errors of the patient, or always counted and dropped.
NO_SLICES = "no_slices"                # a volume too small (or too empty) to give any slice
PARTIAL_MR = "partial_mr"              # slice pairs whose MR slice is empty: dropped and counted

# Largest magnitude a modality can hold. CT: HU run from -1024 (air) to a few 1000 (bone),
# ~30000 on extended scales for metal, and scanners pad with -3024 or -32768; MR units are
# arbitrary but come from at most 16-32-bit scanner values times a scale.
LIMITS = {"ct": 1e5, "mr": 1e7}
# A CT in HU has air (about -1000) around the body; a CT with no value below this is suspect.
AIR_SEEN_BELOW_HU = 0.0
UNSIGNED_OFFSET_HU = 1024.0
# Air in a CT: at or below this (HU). A CT's field of view is largely air (and scanners pad
# with -1024/-3024); an MR, whose units start at 0 (or z-scores a few units below), has none.
CT_AIR_HU = -500.0
CT_AIR_FRACTION = 0.05     # an "MR" with at least this fraction of voxels at CT air is a CT
# An unsigned CT's body peaks at soft tissue/brain, 20-60 HU + 1024, within this of 1024.
UNSIGNED_PEAK_TOLERANCE = 120.0
# An MR slice is empty over the body when fewer than this fraction of its body pixels are > 0.
EMPTY_MR_FRACTION = 0.01


class ImplausibleInput(VolumeError):
    """Input whose problems were not accepted; a VolumeError, so every tool reports it per patient."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        self.kinds = tuple(p.kind for p in self.problems)
        self.path = self.problems[0].message.split(": ", 1)[0] if self.problems else ""
        self.problem = "; ".join(map(str, self.problems))
        ValueError.__init__(self, self.problem)


@dataclasses.dataclass(frozen=True)
class PlausibilityConfig:
    """What a tool accepts (kinds in ``ACCEPTABLE``) and how it mends an unsigned CT."""

    accept: tuple[str, ...] = ()
    # Subtracted from CTs that look like unsigned HU+offset (None: such a CT is a problem).
    unsigned_ct_offset: float | None = None
    # DICOM series to take when a folder holds several (read_volume's series_uid).
    series_uids: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = sorted(set(self.accept) - set(ACCEPTABLE))
        if unknown:
            raise ValueError(f"--accept: unknown kind(s) {unknown}; choose from {list(ACCEPTABLE)}")
        if self.unsigned_ct_offset is not None and not np.isfinite(self.unsigned_ct_offset):
            raise ValueError(f"--unsigned_ct_offset must be a finite number, got {self.unsigned_ct_offset}")


# --------------------------------------------------------------------------- volumes


def constant_volume(data: np.ndarray, source: str) -> Problem | None:
    """An empty or constant volume (e.g. all zero) holds no image."""
    data = np.asarray(data)
    if data.size == 0:
        return Problem(CONSTANT, f"{source}: the volume is empty (shape {data.shape})")
    lo, hi = float(data.min()), float(data.max())
    if hi - lo <= 1e-6 * max(1.0, abs(lo), abs(hi)):
        return Problem(CONSTANT, f"{source}: every voxel is {lo:g}: an empty or constant volume holds no image "
                                 f"(shape {data.shape})")
    return None


def out_of_range(data: np.ndarray, modality: str, source: str) -> Problem | None:
    """Values beyond what the modality can hold (``LIMITS``), e.g. a block of 1e30 in a CT."""
    data = np.asarray(data)
    limit = LIMITS[modality]
    bad = np.abs(data) > limit
    n = int(np.count_nonzero(bad))
    if not n:
        return None
    unit = " HU" if modality == "ct" else ""
    return Problem(OUT_OF_RANGE, f"{source}: {n} voxel(s) ({n / data.size:.2%}) beyond +-{limit:g}{unit}, "
                                 f"which a{'' if modality == 'ct' else 'n'} {modality.upper()} cannot hold "
                                 f"(values {float(data.min()):g}..{float(data.max()):g}); a corrupt or "
                                 "wrongly scaled file?")


def body_peak(data: np.ndarray, above: float = 200.0, bin_width: float = 20.0) -> float | None:
    """The most common value (20-unit bins) above the background: soft tissue's level in a CT."""
    body = np.asarray(data)[np.asarray(data) > above]
    if body.size == 0:
        return None
    edges = np.arange(above, float(body.max()) + bin_width + 1e-3, bin_width)
    counts, edges = np.histogram(body, edges)
    i = int(np.argmax(counts))
    return float(edges[i] + bin_width / 2)


def _looks_unsigned(peak: float | None) -> bool:
    """A body peak (``body_peak``) at soft tissue + 1024."""
    return peak is not None and abs(peak - UNSIGNED_OFFSET_HU - 40.0) <= UNSIGNED_PEAK_TOLERANCE


def unsigned_ct(data: np.ndarray, source: str, peak: float | None) -> Problem | None:
    """A CT with no value below 0 whose body peaks (``peak``) at soft tissue + 1024: HU+1024 stored without
    the intercept."""
    data = np.asarray(data)
    lo, hi = float(data.min()), float(data.max())
    if lo < AIR_SEEN_BELOW_HU or hi <= lo or not _looks_unsigned(peak):
        return None
    return Problem(UNSIGNED_CT, f"{source}: CT values {lo:g}..{hi:g} with none below 0 (no air near -1000 HU) and "
                                f"the body peaking at {peak:g} (soft tissue + {UNSIGNED_OFFSET_HU:g}) look "
                                f"like unsigned HU+{UNSIGNED_OFFSET_HU:g} stored without its rescale intercept; "
                                f"pass --unsigned_ct_offset={UNSIGNED_OFFSET_HU:g} to subtract it from such CTs, "
                                f"or --accept={UNSIGNED_CT} to use the values as they are")


def other_modality(data: np.ndarray, modality: str, source: str, peak: float | None) -> Problem | None:
    """A CT given as the MR (much of it at CT air), or an MR given as the CT (no air, not an unsigned CT;
    ``peak``: its ``body_peak``)."""
    data = np.asarray(data)
    air = float(np.count_nonzero(data <= CT_AIR_HU)) / max(data.size, 1)
    override = f"pass --accept={WRONG_MODALITY} to use it as {'an MR' if modality == 'mr' else 'a CT'} anyway"
    if modality == "mr" and air >= CT_AIR_FRACTION:
        return Problem(WRONG_MODALITY, f"{source}: given as an MR but looks like a CT: {air:.0%} of its voxels are at "
                                       f"or below {CT_AIR_HU:g} (CT air is near -1000 HU; an MR has no such values), "
                                       f"values {float(data.min()):g}..{float(data.max()):g}; give it as the CT, "
                                       f"or {override}")
    if modality == "ct" and air == 0.0 and not (float(data.min()) >= AIR_SEEN_BELOW_HU and _looks_unsigned(peak)):
        where = f"the body peaking at {peak:g}" if peak is not None else "nothing above 200"
        return Problem(WRONG_MODALITY, f"{source}: given as a CT but looks like an MR: no voxel at or below "
                                       f"{CT_AIR_HU:g} (a CT's air is near -1000 HU) and {where}, neither soft tissue "
                                       f"in HU (~40) nor in unsigned HU+{UNSIGNED_OFFSET_HU:g} (~1064); values "
                                       f"{float(data.min()):g}..{float(data.max()):g}; give it as the MR, or {override}")
    return None


def check_volume(vol, modality: str) -> list[Problem]:
    """Every volume problem of one input (a ``Volume``); a constant volume is only that."""
    if modality not in LIMITS:
        raise ValueError(f"modality must be one of {sorted(LIMITS)}, got {modality!r}")
    constant = constant_volume(vol.data, vol.source)
    if constant is not None:
        return [constant]
    # The body's histogram peak, once: both CT checks read it, and only a CT without air needs it.
    peak = body_peak(vol.data) if modality == "ct" and float(np.min(vol.data)) > CT_AIR_HU else None
    problems = [out_of_range(vol.data, modality, vol.source), other_modality(vol.data, modality, vol.source, peak)]
    if modality == "ct":
        problems.append(unsigned_ct(vol.data, vol.source, peak))
    return [p for p in problems if p is not None]


def remove_unsigned_offset(vol, offset: float):
    """The CT with ``offset`` HU subtracted (the mend ``--unsigned_ct_offset`` asks for)."""
    return vol.with_data(np.asarray(vol.data, np.float32) - np.float32(offset))


# --------------------------------------------------------------------------- slices


def empty_mr_slices(mr_stack: np.ndarray, mask_stack: np.ndarray) -> np.ndarray:
    """Per slice pair (Z, S, S): True where the MR is empty over the body (the MR's field of view
    ends before the CT's), so the pair teaches nothing but a blank MR."""
    mr = np.asarray(mr_stack).reshape(len(mr_stack), -1)
    body = np.asarray(mask_stack).reshape(len(mask_stack), -1) > 0
    area = body.sum(axis=1)
    signal = ((mr > 0) & body).sum(axis=1)
    return (area == 0) | (signal < EMPTY_MR_FRACTION * area)


def no_slices_problem(shape: Sequence[int], source: str, min_foreground: float) -> Problem:
    return Problem(NO_SLICES, f"{source}: no slice kept from a volume of shape {tuple(int(s) for s in shape)} "
                              f"(no body slice reaches --min_foreground={min_foreground:g} of the largest, or the "
                              "volume is too small or empty); not a usable patient")


# --------------------------------------------------------------------------- outcome


def raise_or_warn(problems: Iterable[Problem], accept: Iterable[str] = ()) -> list[Problem]:
    """Raise ``ImplausibleInput`` with the problems not accepted; log the accepted ones; returns them."""
    errors, warnings = split(problems, accept)
    if errors:
        raise ImplausibleInput(errors)
    for p in warnings:
        logging.warning("%s", p)
    return warnings
