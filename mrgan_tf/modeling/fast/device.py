"""Which speed kernels fit the device: CPU-only tricks on CPU, the plain layers elsewhere.

``NarrowConv2D`` doubles the FLOPs of the one- and two-channel convs to suit oneDNN's
blocked CPU kernels (2-6x faster there); on a GPU that is pure cost. The choice is made
when a layer is traced, from the devices TensorFlow sees (no GPU: CPU kernels), and can
be forced with ``kernels(cpu=...)``. Weights, names and checkpoints are the same either way.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

_forced: list[bool] = []


def cpu_kernels() -> bool:
    """Whether the CPU-tuned kernels are used: forced by ``kernels``, else when no GPU is visible."""
    if _forced:
        return _forced[-1]
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


@contextlib.contextmanager
def kernels(cpu: bool) -> Iterator[None]:
    """Trace with the CPU-tuned kernels (``cpu=True``) or the plain ones, whatever the machine has."""
    _forced.append(bool(cpu))
    try:
        yield
    finally:
        _forced.pop()
