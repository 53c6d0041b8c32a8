"""The batch layout: four images packed along the channels of one [B, H, W, 4C] tensor.

One packed tensor keeps every tf.distribute strategy, multi-worker included, on plain
tensors; ``pack`` and ``unpack`` are each other's inverse, and ``split_steps`` cuts a
replica's batch into Algorithm 1's inner steps. The data pipeline packs, the model unpacks.
"""
from __future__ import annotations

import tensorflow as tf


def decode(q, input_max: float):
    """Records' integers (``input_max`` = intensity 1.0: 255 or 65535) -> the network's [-1, 1]."""
    return tf.cast(q, tf.float32) * (2.0 / input_max) - 1.0

# The packed batch's images, in channel order; each takes C channels.
PACKED = ("unpaired_ct", "unpaired_mr", "paired_ct", "paired_mr")


def pack(unpaired_ct, unpaired_mr, paired_ct, paired_mr):
    """Four [..., C] images -> one [..., 4C] tensor in ``PACKED`` order (plain tensors for every strategy)."""
    return tf.concat([unpaired_ct, unpaired_mr, paired_ct, paired_mr], axis=-1)


def unpack(batch, channels: int) -> tuple:
    """Inverse of ``pack``: [..., 4C] -> (unpaired_ct, unpaired_mr, paired_ct, paired_mr), each [..., C]."""
    if batch.shape[-1] != len(PACKED) * channels:
        raise ValueError(f"a packed batch of {channels}-channel images has {len(PACKED) * channels} channels, "
                         f"got {batch.shape[-1]}")
    return tuple(batch[..., i * channels:(i + 1) * channels] for i in range(len(PACKED)))


def split_steps(images: tuple, n_iter: int) -> list[tuple]:
    """A replica's n_iter x batch examples as n_iter per-step batches: step i takes examples i, i + n, ...

    Strided, not contiguous: a replica holds a contiguous chunk of the global batch
    (``training_dataset(..., n_iter=)``), so this way each step's examples across
    replicas are the ones one device would take.
    """
    if n_iter == 1:
        return [tuple(images)]
    size = images[0].shape[0]
    if size is not None and size % n_iter:
        raise ValueError(f"a replica's batch of {size} examples does not split into n_iter={n_iter} steps: "
                         "build the dataset with data.training_dataset(..., n_iter=n_iter)")
    return [tuple(x[i::n_iter] for x in images) for i in range(n_iter)]
