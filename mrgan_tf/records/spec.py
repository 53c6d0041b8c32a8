"""The dataset spec (``dataset.json``): the one place preprocessing parameters live.

make_records writes it; training, export, synthesis and evaluation read it, so
none of them re-states a window, a scale or an image size.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from mrgan_tf.errors import UserError
from mrgan_tf.io.layout import SPEC_NAME  # noqa: F401  (discovery must know a records folder too)
from mrgan_tf.preprocess import PreprocessConfig

FORMAT = 1
SET_NAMES = ("paired_train", "unpaired_ct", "unpaired_mr", "paired_test")
# Written only when make_records holds out validation patients (--val_patients).
VAL_SET = "paired_val"


class SpecError(UserError, ValueError):
    pass


@dataclasses.dataclass
class DatasetSpec:
    root: str
    preprocess: PreprocessConfig
    sets: dict[str, dict[str, Any]]
    split: dict[str, list[str]]
    patients: dict[str, dict[str, Any]]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, root: str | os.PathLike) -> "DatasetSpec":
        path = os.path.join(root, SPEC_NAME)
        if not os.path.isfile(path):
            raise SpecError(f"{root}: no {SPEC_NAME}; is this a records directory written by make_records?")
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SpecError(f"{path}: unreadable dataset spec ({e})") from e
        if d.get("format") != FORMAT:
            raise SpecError(f"{path}: format {d.get('format')!r}, this version reads format {FORMAT}")
        try:
            return cls(root=str(root), preprocess=PreprocessConfig.from_dict(d["preprocess"]), sets=d["sets"],
                       split=d["split"], patients=d["patients"],
                       extra={k: v for k, v in d.items()
                              if k not in ("format", "preprocess", "sets", "split", "patients")})
        except (KeyError, ValueError, TypeError) as e:
            raise SpecError(f"{path}: malformed dataset spec ({e})") from e

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "preprocess": self.preprocess.to_dict(), "sets": self.sets,
                "split": self.split, "patients": self.patients, **self.extra}

    def count(self, name: str) -> int:
        return int(self.sets.get(name, {}).get("count", 0))

    def require(self, name: str) -> dict[str, Any]:
        """The shard-set info, or a clear error saying which set is missing or empty."""
        if self.count(name) == 0:
            raise SpecError(f"{self.root}: shard set {name!r} is missing or empty "
                            f"(counts: { {n: self.count(n) for n in SET_NAMES} })")
        return self.sets[name]

    @property
    def input_max(self) -> float:
        """Integer value that stands for intensity 1.0 in the records."""
        return float(2 ** self.preprocess.bits - 1)
