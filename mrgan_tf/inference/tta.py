"""Test-time augmentation: transforms of the model's slice stack, each with its exact inverse beside it.

A copy of the (Z, S, S) canvas stack is transformed, predicted, and mapped back by the
inverse before anything is combined, so a model that is the identity gives back its input
exactly and the spread across copies is zero. Only exactly invertible transforms are
offered: the column mirror (the training's flip, ``modeling.augment``: the patient's
left-right in axial and coronal slices, anterior-posterior in sagittal ones) and
whole-pixel shifts of rows and columns. A shift is circular (``np.roll``): what leaves one
border of the canvas comes back at the other, so no pixel is lost and the inverse is exact;
the canvas border is the background around the body, where this equals the training's
whole-pixel translation with background fill.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mrgan_tf import cli
from mrgan_tf.errors import UserError

TTA_CHOICES = ("flip", "shift")
MAX_SHIFT_PX = 16


class AugmentationError(UserError, ValueError):
    """A test-time augmentation that is unknown or cannot be inverted on this canvas."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """The prediction of the input as it is (always the first copy)."""

    name = "identity"

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return stack

    def inverse(self, stack: np.ndarray) -> np.ndarray:
        return stack


@dataclasses.dataclass(frozen=True)
class Flip:
    """Mirror the slice's columns (its own inverse)."""

    name = "flip"

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(stack[..., ::-1])

    def inverse(self, stack: np.ndarray) -> np.ndarray:
        return self(stack)


@dataclasses.dataclass(frozen=True)
class Shift:
    """Move the slice ``rows`` down and ``cols`` right, circularly (the inverse moves it back)."""

    rows: int
    cols: int

    @property
    def name(self) -> str:
        return f"shift({self.rows:+d},{self.cols:+d})"

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return np.roll(stack, (self.rows, self.cols), axis=(-2, -1))

    def inverse(self, stack: np.ndarray) -> np.ndarray:
        return np.roll(stack, (-self.rows, -self.cols), axis=(-2, -1))


@dataclasses.dataclass(frozen=True)
class TTAConfig:
    """Which augmented copies of the input are predicted besides the input itself.

    Args:
        augment: names from ``TTA_CHOICES``: ``flip`` adds the mirrored copy, ``shift`` four
            copies moved by ``shift_px`` up, down, left and right.
        shift_px: the shift's length in canvas pixels.
    """

    augment: tuple[str, ...] = ()
    shift_px: int = 2

    def __post_init__(self):
        object.__setattr__(self, "augment", tuple(a.strip() for a in self.augment if a.strip()))
        given = ",".join(self.augment)
        for name in self.augment:
            if name not in TTA_CHOICES:
                raise AugmentationError(f"--tta={given}: unknown augmentation {name!r}; choose from "
                                        f"{', '.join(TTA_CHOICES)}")
            if self.augment.count(name) > 1:
                raise AugmentationError(f"--tta={given}: {name!r} given twice")
        if not 1 <= self.shift_px <= MAX_SHIFT_PX:
            raise AugmentationError(f"--tta_shift_px must be 1..{MAX_SHIFT_PX} canvas pixels, got {self.shift_px}")

    def transforms(self) -> tuple:
        """The identity first, then each augmentation's copies, in ``TTA_CHOICES`` order."""
        out = [Identity()]
        if "flip" in self.augment:
            out.append(Flip())
        if "shift" in self.augment:
            d = self.shift_px
            out += [Shift(d, 0), Shift(-d, 0), Shift(0, d), Shift(0, -d)]
        return tuple(out)

    def check_canvas(self, image_size: int, source: str) -> None:
        """A shift must leave most of the canvas where it was: refuse one of half the canvas or more."""
        if "shift" in self.augment and 2 * self.shift_px >= image_size:
            raise AugmentationError(f"{source}: --tta_shift_px={self.shift_px} is half the model's "
                                    f"{image_size}-pixel canvas or more")


# Field -> flag: the one set that synthesize, client and evaluate share.
TTA_FLAGS = {
    "augment": cli.Flag(f"Test-time augmentation: comma-separated {', '.join(TTA_CHOICES)} (flip: the mirrored "
                        "copy; shift: four copies shifted by --tta_shift_px). Each copy is mapped back exactly and "
                        "combined by --fusion; the spread is written beside the output.", name="tta"),
    "shift_px": cli.Flag("Length of --tta=shift in canvas pixels.", name="tta_shift_px"),
}


def define_tta_flags(fv) -> None:
    """--tta and --tta_shift_px, typed and defaulted by ``TTAConfig``."""
    cli.define_field_flags(fv, TTAConfig, TTA_FLAGS)


def tta_from_flags(fv) -> TTAConfig:
    """The TTAConfig the flags describe (validated there: an unknown name is an ``AugmentationError``)."""
    return TTAConfig(**{k: v for k, v in cli.field_values(fv, TTA_FLAGS, TTAConfig).items() if v is not None})


def predict_augmented(predictor, stack01: np.ndarray, transforms, batch_size: int = 16,
                      progress: bool = False) -> list[np.ndarray]:
    """Each transform's copy of ``stack01`` through ``predictor.predict01`` and back by its inverse.

    With only the identity this is exactly ``predictor.predict01(stack01, ...)``. Copies go one
    at a time in batches of ``batch_size`` (a 2.5D model's neighbour stacks must not reach
    across copies; for a 2-D model, sending the copies as one stack in calls of copies x
    ``batch_size`` slices was measured no faster on CPU (docs/USAGE.md): raise ``--batch_size``
    where larger calls pay, e.g. on a GPU).
    """
    return [t.inverse(predictor.predict01(t(stack01), batch_size, progress)) for t in transforms]
