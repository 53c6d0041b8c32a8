"""A named problem of an input file, and the user's choice to accept some kinds as warnings.

Below every tool (discovery in ``io.layout``, the volume checks in ``plausibility``):
a check returns ``Problem``s; the tool decides what each one does.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str
    message: str   # starts with the file it is about

    def __str__(self) -> str:
        return self.message


def split(problems: Iterable[Problem], accept: Iterable[str]) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings): accepted kinds are warnings."""
    accept = set(accept)
    problems = [p for p in problems if p is not None]
    return [p for p in problems if p.kind not in accept], [p for p in problems if p.kind in accept]
