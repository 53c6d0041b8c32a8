"""Which speed kernels fit the device: CPU-only tricks on CPU, the plain layers elsewhere.

``NarrowConv2D`` doubles the FLOPs of the one- and two-channel convs to suit oneDNN's
blocked CPU kernels (2-6x faster there); on a GPU that is pure cost. The choice is made
when a layer is traced, from the devices TensorFlow sees (no GPU: CPU kernels), and can
be forced with ``kernels(cpu=...)``. Weights, names and checkpoints are the same either way.

oneDNN picks its kernels by the CPU's vector ISA, and some of them are slow on one ISA
only (an AVX2 machine's batch norm and large stride-1 convs, an AVX-512 machine's convs
into 256 channels: docs/BENCHMARKS.md "Kernels per CPU"), so ``vector_isa`` says which
one oneDNN will use here: the CPU's flags, capped by ``ONEDNN_MAX_CPU_ISA`` as oneDNN is.
``kernels(isa=...)`` forces it.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator

ISAS = ("avx512", "avx2", "other")
AVX512_CORE = ("avx512f", "avx512bw", "avx512vl", "avx512dq")   # oneDNN's avx512_core
CAPS_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")

_forced: list[tuple[bool | None, str | None]] = []


def cpu_kernels() -> bool:
    """Whether the CPU-tuned kernels are used: forced by ``kernels``, else when no GPU is visible."""
    for cpu, _ in reversed(_forced):
        if cpu is not None:
            return cpu
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where cpuinfo is not readable)."""
    try:
        with open(cpuinfo) as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


@functools.lru_cache(maxsize=None)
def _host_flags() -> frozenset[str]:
    return cpu_flags()


def detect_isa(flags: frozenset[str], cap: str = "") -> str:
    """The vector ISA oneDNN dispatches to for ``flags`` under ``ONEDNN_MAX_CPU_ISA=cap``."""
    cap = cap.strip().upper()
    if all(f in flags for f in AVX512_CORE) and cap not in CAPS_BELOW_AVX512:
        return "avx512"
    if "avx2" in flags and "fma" in flags and cap not in ("SSE41", "AVX"):
        return "avx2"
    return "other"


def vector_isa() -> str:
    """'avx512', 'avx2' or 'other': forced by ``kernels(isa=...)``, else this CPU's, as oneDNN sees it."""
    for _, isa in reversed(_forced):
        if isa is not None:
            return isa
    return detect_isa(_host_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA", ""))


@contextlib.contextmanager
def kernels(cpu: bool | None = None, isa: str | None = None) -> Iterator[None]:
    """Trace with the CPU-tuned kernels (``cpu=True``) or the plain ones, and/or as if on ``isa``."""
    if isa is not None and isa not in ISAS:
        raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")
    _forced.append((None if cpu is None else bool(cpu), isa))
    try:
        yield
    finally:
        _forced.pop()
