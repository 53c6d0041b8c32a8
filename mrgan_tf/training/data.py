"""tf.data from the dataset spec: one element = unpaired CT, unpaired MR and a paired CT/MR.

Elements keep the records' integer scale (as float32: collective ops, which
multi-worker fit runs on the batch, take no uint8) and are packed along the
channels of one [B, H, W, 4C] tensor (``pack`` / ``unpack``, order ``PACKED``;
C = the spec's channels per image, 1 for 2-D, 2k+1 for 2.5D); the model
rescales and augments them on the device. Streams are independently shuffled and repeated,
so an element's unpaired CT and MR come from unrelated slices (Alg. 1 lines 3-4).
"""
from __future__ import annotations

import itertools

import tensorflow as tf

from mrgan_tf.modeling.batch import pack
from mrgan_tf.modeling.modes import MODES
from mrgan_tf.records.spec import DatasetSpec, SpecError
from tfrecords_tools import reader


def check_depth(spec: DatasetSpec, context_slices: int) -> None:
    """Refuse records whose images have another stack depth than the model, naming both."""
    if spec.preprocess.context_slices != context_slices:
        raise SpecError(f"{spec.root}: records have context_slices={spec.preprocess.context_slices} but the model "
                        f"takes context_slices={context_slices}")


def unpaired_sources(spec: DatasetSpec, mode: str, from_paired: bool | None = None) -> dict[str, tuple[str, ...]]:
    """Which shard sets feed the unpaired CT and MR streams of ``mode`` (decided here only).

    ``from_paired``: True adds the paired training slices to both streams; False never
    does (a missing unpaired set is then an error); None (auto) uses them for a modality
    whose unpaired set is empty, so an all-paired dataset (SynthRAD) trains MR-GAN as it comes.
    """
    if not MODES[mode].unpaired:
        return {}
    out = {}
    for modality in ("ct", "mr"):
        own = f"unpaired_{modality}"
        use_paired = from_paired if from_paired is not None else not spec.count(own)
        sets = [own] + (["paired_train"] if use_paired else [])
        out[modality] = tuple(n for n in sets if spec.count(n)) or (own,)   # empty: require() explains
    return out


def describe_sources(sources: dict[str, tuple[str, ...]], spec: DatasetSpec) -> str:
    """One start-up line: where the unpaired streams come from, and why the paired slices where they do."""
    def one(modality: str, sets: tuple[str, ...]) -> str:
        why = f" (the records have no unpaired {modality.upper()})" if not spec.count(f"unpaired_{modality}") else ""
        return f"unpaired {modality.upper()} slices from {' + '.join(sets)}{why}"
    return "; ".join(one(m, sets) for m, sets in sources.items())


def _stream(spec: DatasetSpec, set_name: str, fields: tuple[str, ...], seed: int, shuffle_buffer: int):
    """An endless shuffled stream of [S, S, C * len(fields)] images from one shard set."""
    spec.require(set_name)
    s, c = spec.preprocess.image_size, spec.preprocess.channels
    ds = reader.make_dataset(spec.root, set_name, shuffle_files=True, seed=seed)
    ds = ds.map(lambda ex: tf.ensure_shape(tf.concat([ex[f] for f in fields], axis=-1), [s, s, c * len(fields)]),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()


def training_dataset(spec: DatasetSpec, mode: str, global_batch_size: int, *, seed: int = 0,
                     shuffle_buffer: int = 2048, skip_batches: int = 0,
                     unpaired_from_paired: bool | None = None, context_slices: int | None = None,
                     n_iter: int = 1) -> tf.data.Dataset:
    """Endless batches [n_iter x global_batch, S, S, 4C] for ``mode``; images a mode does not use are zero.

    One element feeds one iteration of Algorithm 1, whose n_iter inner steps each
    sample a fresh batch (lines 3-4, 11): a distribution strategy gives each replica
    n_iter x batch consecutive examples, and ``MRGAN`` gives inner step i every n_iter-th
    of them from the i-th (so every step's global batch is ``global_batch_size``).
    ``skip_batches`` (iterations done) replays the stream to where a resumed run left off (the
    streams are seeded, so the resumed run sees what the uninterrupted one would).
    ``unpaired_from_paired`` (``unpaired_sources``: None = where the records have no
    unpaired set) feeds the paired training slices to the unpaired streams too (each
    modality shuffled independently). ``context_slices``: the
    model's k, checked against the records' (None: the records').
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    m = MODES[mode]
    if context_slices is not None:
        check_depth(spec, context_slices)
    s, c = spec.preprocess.image_size, spec.preprocess.channels
    dtype = tf.uint8 if spec.preprocess.bits == 8 else tf.uint16
    zeros = tf.data.Dataset.from_tensors(tf.zeros([s, s, c], dtype)).repeat()

    sources = unpaired_sources(spec, mode, unpaired_from_paired)

    def unpaired(modality: str, salt: int):
        if not m.unpaired:
            return zeros
        sets = sources[modality]
        streams = [_stream(spec, n, (modality,), seed + salt + i, shuffle_buffer) for i, n in enumerate(sets)]
        if len(streams) == 1:
            return streams[0]
        weights = [spec.count(n) / sum(spec.count(n) for n in sets) for n in sets]
        return tf.data.Dataset.sample_from_datasets(streams, weights, seed=seed + salt)

    paired = (_stream(spec, "paired_train", ("ct", "mr"), seed + 3, shuffle_buffer) if m.paired
              else zeros.map(lambda z: tf.concat([z, z], axis=-1)))
    ds = tf.data.Dataset.zip(unpaired("ct", 1), unpaired("mr", 2), paired)
    ds = ds.map(lambda ct, mr, pair: tf.cast(pack(ct, mr, pair[..., :c], pair[..., c:]), tf.float32),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(global_batch_size * n_iter, drop_remainder=True)
    if skip_batches:
        ds = ds.skip(skip_batches)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def fixed_slices(spec: DatasetSpec, n: int, set_name: str | None = None) -> dict[str, tf.Tensor]:
    """``n`` slices spread over a paired set (test, else train), for image summaries.

    Returns float images in [-1, 1] under keys ct and mr, [n, S, S, C].
    """
    name = set_name or ("paired_test" if spec.count("paired_test") else "paired_train")
    spec.require(name)
    step = max(1, spec.count(name) // max(n, 1))
    picked = list(itertools.islice(reader.iterate(spec.root, name), 0, n * step, step))   # stop after the n-th
    scale = 2.0 / spec.input_max
    return {k: tf.constant([ex[k] for ex in picked], tf.float32) * scale - 1.0 for k in ("ct", "mr")}
