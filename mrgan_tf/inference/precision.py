"""Inference precision: float32, or bfloat16 on a CPU that computes it natively (AVX512-BF16, AMX-BF16).

bfloat16 is TensorFlow's oneDNN auto-mixed-precision graph rewrite: the convolutions,
normalisations and element-wise ops of every graph first run after it is switched on
compute in bfloat16 (oneDNN accumulates in float32), while inputs, weights and outputs
stay float32. So a float32 SavedModel and a run dir's Keras generator both run in bf16,
without a re-export. The switch is process-wide and reaches only graphs not yet run:
``use_precision`` before a model is loaded. On a CPU without BF16 the rewrite would
emulate bf16 (slower than float32), so it is refused there.
"""
from __future__ import annotations

import dataclasses
import sys

from mrgan_tf import cli
from mrgan_tf.errors import UserError

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
    try:
        with open(cpuinfo) as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return ()
    have = set(line.partition(":")[2].split())
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in have)


def use_precision(precision: str, cpuinfo: str = "/proc/cpuinfo") -> None:
    """Make every graph run from now on compute in ``precision`` (call before loading a model)."""
    InferenceConfig(precision)
    if precision == "bfloat16" and not cpu_bf16_flags(cpuinfo):
        raise PrecisionError(f"--precision=bfloat16 needs a CPU with native bf16 ({' or '.join(BF16_CPU_FLAGS)} in "
                             f"{cpuinfo}); this one has neither, and emulated bf16 is slower than float32")
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({REWRITE: precision == "bfloat16"})


def current_precision() -> str:
    """The precision graphs run from now on get (what a synthesis' provenance records)."""
    if "tensorflow" not in sys.modules:
        return "float32"
    return "bfloat16" if sys.modules["tensorflow"].config.optimizer.get_experimental_options().get(REWRITE) \
        else "float32"


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
