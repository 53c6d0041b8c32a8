"""Inference precision: float32, or bfloat16 on a CPU that computes it natively (AVX512-BF16, AMX-BF16).

bfloat16 is TensorFlow's oneDNN auto-mixed-precision graph rewrite: the convolutions,
normalisations and element-wise ops of a graph run while it is on compute in bfloat16
(oneDNN accumulates in float32), while inputs, weights and outputs stay float32. So a
float32 SavedModel and a run dir's Keras generator both run in bf16, without a re-export.
The switch is process-wide, and TensorFlow keeps one optimised graph per setting, so a
bf16 predictor turns it on around each of its own calls only (``computing_in``): float32
predictors and other graphs in the process are untouched. On a CPU without BF16 the
rewrite would emulate bf16 (slower than float32), so it is refused there.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

from mrgan_tf import cli
from mrgan_tf.errors import UserError
from mrgan_tf.modeling.fast import device

PRECISIONS = ("float32", "bfloat16")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")     # /proc/cpuinfo flags of a CPU with native bf16 arithmetic
REWRITE = "auto_mixed_precision_onednn_bfloat16"  # TensorFlow's grappler option


class PrecisionError(UserError, ValueError):
    """A precision this machine cannot run."""


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How the generator computes during synthesis.

    Args:
        precision: float32 (the trained weights' own precision), or bfloat16: ~3x less CPU per
            slice on a CPU with AMX, outputs within the differences docs/BENCHMARKS.md measures.
    """

    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise PrecisionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The BF16 flags the CPU announces (empty where it has none, or where cpuinfo is not readable)."""
    have = device.cpu_flags(cpuinfo)
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in have)


def check_precision(precision: str, cpuinfo: str = "/proc/cpuinfo") -> None:
    """Raise ``PrecisionError`` for a precision unknown, or one this CPU has no arithmetic for."""
    InferenceConfig(precision)
    if precision == "bfloat16" and not cpu_bf16_flags(cpuinfo):
        raise PrecisionError(f"--precision=bfloat16 needs a CPU with native bf16 ({' or '.join(BF16_CPU_FLAGS)} in "
                             f"{cpuinfo}); this one has neither, and emulated bf16 is slower than float32")


@contextlib.contextmanager
def computing_in(precision: str) -> Iterator[None]:
    """Graphs run inside compute in ``precision``; the process' setting is restored after."""
    import tensorflow as tf

    before = bool(tf.config.optimizer.get_experimental_options().get(REWRITE, False))
    tf.config.optimizer.set_experimental_options({REWRITE: precision == "bfloat16"})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({REWRITE: before})


# Field -> flag: synthesize's.
PRECISION_FLAGS = {
    "precision": cli.Flag("Arithmetic of the generator: float32, or bfloat16 (CPUs with AVX512-BF16 or AMX; "
                          "~3x less CPU per slice, outputs differ slightly: docs/BENCHMARKS.md).",
                          choices=PRECISIONS),
}


def define_precision_flags(fv) -> None:
    """--precision, defaulted by ``InferenceConfig``."""
    cli.define_field_flags(fv, InferenceConfig, PRECISION_FLAGS)


def precision_from_flags(fv) -> InferenceConfig:
    return InferenceConfig(**cli.field_values(fv, PRECISION_FLAGS, InferenceConfig))
