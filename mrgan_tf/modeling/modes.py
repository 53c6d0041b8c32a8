"""The one place that chooses the mode: MR-GAN, paired-only (pix2pix) or unpaired-only (CycleGAN).

Each mode is a row of Table I: which phases of Algorithm 1 run and which generators
the paired phase trains. Training, the data pipeline and the model read it from here.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mode:
    unpaired: bool               # Alg. 1 lines 2-9: the two unpaired cycles
    paired: bool                 # Alg. 1 lines 10-16: the paired updates
    paired_directions: tuple     # which generators the paired phase trains
    paired_cycle: bool           # cycle terms in the paired phase (Eq. 3, last two terms)


MODES = {
    "mrgan": Mode(unpaired=True, paired=True, paired_directions=("mr", "ct"), paired_cycle=True),
    "paired": Mode(unpaired=False, paired=True, paired_directions=("mr",), paired_cycle=False),
    "unpaired": Mode(unpaired=True, paired=False, paired_directions=(), paired_cycle=False),
}

# The paired baseline's direction -> the generators its paired phase trains.
PAIRED_BASELINE = {"ct2mr": ("mr",), "mr2ct": ("ct",)}
