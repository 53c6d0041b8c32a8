"""Stacks of neighbouring slices (2.5D input): build them, take their centre, average predictions back.

The stack of slice z holds slices z-k .. z+k of its volume as channels (2k+1 of
them), clamped at the volume's ends. A generator maps a stack to a stack, so
every slice is predicted 2k+1 times (once per stack that holds it);
``average_overlaps`` puts those predictions back on one slice each. The numpy
functions serve make_records and synthesize; the ``_tf`` twins run inside the
serving graph, so a client sends an ordered volume and never needs k.
With k = 0 every function is the identity on the 1-channel layout.
"""
from __future__ import annotations

import numpy as np


def channels_for(context_slices: int) -> int:
    """Channels of one image: the slice and its k neighbours on each side."""
    return 2 * int(context_slices) + 1


def centre_slice(x):
    """The middle channel of [..., C] stacks, kept as [..., 1] (numpy or TF): where one image is needed."""
    c = x.shape[-1] // 2
    return x[..., c:c + 1]


def neighbour_indices(n: int, k: int) -> np.ndarray:
    """(n, 2k+1) slice indices of every stack, edge-clamped."""
    return np.clip(np.arange(n)[:, None] + np.arange(-k, k + 1)[None, :], 0, n - 1)


def neighbour_stack(stack: np.ndarray, k: int, centres=None) -> np.ndarray:
    """(Z, H, W) ordered slices -> (Z, H, W, 2k+1) stacks (only those of ``centres`` when given)."""
    stack = np.asarray(stack)
    idx = neighbour_indices(len(stack), k)
    return np.moveaxis(stack[idx if centres is None else idx[np.asarray(centres)]], 1, -1)


def depth_problem(n_slices: int, k: int, axis: str = "axial") -> str | None:
    """What is wrong when a volume has fewer slices than one stack needs (None when it has enough)."""
    if channels_for(k) <= n_slices:
        return None
    return f"--context_slices={k} needs stacks of {channels_for(k)} slices but the volume has {n_slices} {axis} slices"


def average_overlaps(pred: np.ndarray, k: int) -> np.ndarray:
    """(Z, H, W, 2k+1) predicted stacks -> (Z, H, W): each slice the mean of its 2k+1 predictions."""
    pred = np.asarray(pred, np.float32)
    if k == 0:
        return pred[..., 0]
    n = len(pred)
    out = np.zeros((n,) + pred.shape[1:3], np.float32)
    count = np.zeros(n, np.float32)
    idx = neighbour_indices(n, k)
    for j in range(idx.shape[1]):
        np.add.at(out, idx[:, j], pred[..., j])
        np.add.at(count, idx[:, j], 1.0)
    return out / count[:, None, None]


def _neighbour_indices_tf(n, k: int):
    """TF twin of ``neighbour_indices``: (n, 2k+1) edge-clamped slice indices."""
    import tensorflow as tf

    return tf.clip_by_value(tf.range(n)[:, None] + tf.range(-k, k + 1)[None, :], 0, n - 1)


def neighbour_stack_tf(x, k: int):
    """TF twin of ``neighbour_stack`` for [N, H, W, 1] ordered slices -> [N, H, W, 2k+1]."""
    import tensorflow as tf

    if k == 0:
        return x
    idx = _neighbour_indices_tf(tf.shape(x)[0], k)
    return tf.concat([tf.gather(x, idx[:, j]) for j in range(2 * k + 1)], axis=-1)


def average_overlaps_tf(y, k: int):
    """TF twin of ``average_overlaps`` for [N, H, W, 2k+1] -> [N, H, W, 1]."""
    import tensorflow as tf

    if k == 0:
        return y
    n = tf.shape(y)[0]
    idx = _neighbour_indices_tf(n, k)
    data = tf.reshape(tf.transpose(y, [0, 3, 1, 2]), tf.concat([[-1], tf.shape(y)[1:3]], 0))   # [N*C, H, W]
    return tf.math.unsorted_segment_mean(data, tf.reshape(idx, [-1]), n)[..., None]


# The generators' output for a stack without contrast: the bottom of the [-1, 1] scale (MR background, CT air).
BACKGROUND = -1.0


def blank_flat_stacks_tf(generate):
    """``generate`` on [N, H, W, C] stacks, with stacks whose values are all equal given ``BACKGROUND``.

    Such a stack (air beyond the head, MR background: exact after quantisation) carries no
    information, and instance norm turns float rounding into its whole output: 1e-6 of input
    noise moved a constant slice's output by up to 250 on the 0-255 scale, so it differed with
    the batch size and the CPU's kernels. Training never sees one (``min_foreground``).
    """
    import tensorflow as tf

    def run(x):
        y = generate(x)
        flat = tf.equal(tf.reduce_max(x, axis=[1, 2, 3]), tf.reduce_min(x, axis=[1, 2, 3]))
        return tf.where(flat[:, None, None, None], tf.cast(BACKGROUND, y.dtype), y)
    return run


def volume_generator(generate, k: int):
    """Wrap a stack->stack ``generate`` as ordered [N, H, W, 1] slices -> [N, H, W, 1] (TF).

    Stacks without contrast get the background (``blank_flat_stacks_tf``); k = 0 stacks are the slices.
    """
    generate = blank_flat_stacks_tf(generate)
    if k == 0:
        return generate
    return lambda x: average_overlaps_tf(generate(neighbour_stack_tf(x, k)), k)
