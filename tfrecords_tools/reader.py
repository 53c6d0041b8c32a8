"""Read shard sets written by ``writer.ShardedWriter``: tf.data for training,
numpy iteration for tools and tests, and a full CRC/parse check.

Everything goes through the set's index (``<name>.shards.json``), never a glob,
so stray or half-written files in the directory are never read.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Iterator

import tensorflow as tf

from tfrecords_tools import schema
from tfrecords_tools.writer import INDEX_SUFFIX, extension, index_path

_INDEX_KEYS = ("name", "compression", "fields", "shards", "count")


class CorruptRecordError(ValueError):
    """A record that cannot be read (bad CRC, truncated/garbled compression) or parsed."""

    def __init__(self, file: str, index: int, error: str) -> None:
        super().__init__(f"{file} record {index}: {error}")
        self.file, self.index, self.error = file, index, error


def _read_index(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or any(k not in info for k in _INDEX_KEYS):
        raise ValueError(f"{path}: not a shard-set index (needs keys {list(_INDEX_KEYS)})")
    try:
        extension(info["compression"])
        schema.fields_from_json(info["fields"])
        counts = [int(s["count"]) for s in info["shards"]]
        files = [s["file"] for s in info["shards"]]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: bad shard-set index: {e}") from None
    if any(os.path.basename(f) != f for f in files) or sum(counts) != info["count"]:
        raise ValueError(f"{path}: bad shard-set index: shard names must be plain file names and counts must sum to 'count'")
    return info


def list_shard_sets(directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """All shard sets in ``directory`` as ``{name: info}`` (sorted by name)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: not a directory")
    names = sorted(e[: -len(INDEX_SUFFIX)] for e in os.listdir(directory) if e.endswith(INDEX_SUFFIX) and not e.startswith("."))
    return {name: load_shard_set(directory, name) for name in names}


def load_shard_set(directory: str | os.PathLike, name: str) -> dict[str, Any]:
    """The index of set ``name`` in ``directory``; FileNotFoundError naming both if absent."""
    directory = os.fspath(directory)
    path = index_path(directory, name)
    if not os.path.isfile(path):
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{directory}: not a directory (looking for shard set '{name}')")
        present = sorted(e[: -len(INDEX_SUFFIX)] for e in os.listdir(directory) if e.endswith(INDEX_SUFFIX))
        raise FileNotFoundError(f"{directory}: no shard set '{name}' ({os.path.basename(path)} not found; sets present: {present})")
    return _read_index(path)


def fields_of(info: dict[str, Any]) -> dict[str, schema.Field]:
    """The schema stored in a shard-set index."""
    return schema.fields_from_json(info["fields"])


def shard_files(directory: str | os.PathLike, info: dict[str, Any]) -> list[str]:
    """Full paths of a set's shards, in index order."""
    return [os.path.join(os.fspath(directory), s["file"]) for s in info["shards"]]


def make_dataset(
    directory: str | os.PathLike,
    name: str,
    *,
    shuffle_files: bool = False,
    seed: int | None = None,
    cycle_length: int | None = None,
    parse: bool = True,
    deterministic: bool | None = None,
) -> tf.data.Dataset:
    """A tf.data.Dataset of one pass over set ``name``: parsed dicts, or serialized strings.

    Shards are read interleaved (``cycle_length`` at a time, default
    min(#shards, 8)) with parallel reads and parsing (AUTOTUNE). With
    ``shuffle_files`` the shard order is reshuffled each epoch; ``seed`` makes
    it reproducible. ``deterministic=False`` trades order for speed. Shuffle
    examples and repeat downstream.
    """
    info = load_shard_set(directory, name)
    files = shard_files(directory, info)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{directory}: shard set '{name}' is missing shard file(s) {missing}")
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
    if shuffle_files and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    compression = info["compression"]
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression, buffer_size=1 << 20),
        cycle_length=max(1, cycle_length or min(len(files), 8)),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if parse:
        ds = ds.map(schema.make_tf_parser(fields_of(info)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds


def _op_error_text(e: tf.errors.OpError) -> str:
    """``DataLossError: inflate() failed ...`` without TF's function-node and op decorations."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", e.message)
    message = re.sub(r"\s*\[Op:[^\]]*\].*\Z", "", message, flags=re.S)
    return f"{type(e).__name__}: {message.strip()}"


def _records(path: str, compression: str) -> Iterator[bytes]:
    """Serialized records of one shard, in order; CorruptRecordError on unreadable data."""
    it = iter(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator())
    index = 0
    while True:
        try:
            serialized = next(it)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            raise CorruptRecordError(path, index, _op_error_text(e)) from None
        yield serialized
        index += 1


def iterate(directory: str | os.PathLike, name: str) -> Iterator[dict[str, Any]]:
    """Numpy dicts of every record of set ``name``, in file order (shard by shard).

    Raises CorruptRecordError (a ValueError naming file and record) on a bad record.
    """
    info = load_shard_set(directory, name)
    fields = fields_of(info)
    for path in shard_files(directory, info):
        if not os.path.isfile(path):
            raise CorruptRecordError(path, 0, "shard file is missing")
        for i, serialized in enumerate(_records(path, info["compression"])):
            try:
                yield schema.decode_numpy(serialized, fields)
            except Exception as e:  # protobuf DecodeError, ValueError, UnicodeDecodeError
                raise CorruptRecordError(path, i, f"parse error: {e}") from None


@dataclasses.dataclass
class BadRecord:
    file: str
    index: int
    error: str

    def __str__(self) -> str:
        return f"{self.file} record {self.index}: {self.error}"


@dataclasses.dataclass
class VerifyReport:
    """Outcome of ``verify``: ``count`` records read fine, ``bad`` the first problem if any."""

    name: str
    count: int
    expected_count: int
    shards: int
    groups: int | None = None
    bad: BadRecord | None = None

    @property
    def ok(self) -> bool:
        return self.bad is None and self.count == self.expected_count


def verify(
    directory: str | os.PathLike,
    name: str,
    group_key: str | None = None,
    on_example: Callable[[int, dict[str, Any]], None] | None = None,
) -> VerifyReport:
    """Read and parse every record of every shard of set ``name``.

    Catches bad CRCs, truncated or garbled compression, parse errors, missing
    shards and per-shard counts that differ from the index; reports the first
    problem and keeps checking the other shards. ``groups`` is the number of
    distinct values of ``group_key`` (e.g. "patient_id"). ``on_example(i, ex)``
    sees each good example (global index ``i``) so callers need not read twice.
    """
    info = load_shard_set(directory, name)
    fields = fields_of(info)
    if group_key is not None and group_key not in fields:
        raise ValueError(f"{directory}: shard set '{name}' has no field '{group_key}' (fields: {sorted(fields)})")
    report = VerifyReport(name=name, count=0, expected_count=info["count"], shards=len(info["shards"]))
    groups: set[Any] = set()

    def flag(path: str, index: int, error: str) -> None:
        if report.bad is None:
            report.bad = BadRecord(path, index, error)

    for shard, path in zip(info["shards"], shard_files(directory, info)):
        if not os.path.isfile(path):
            flag(path, 0, "shard file is missing")
            continue
        n = 0
        try:
            for serialized in _records(path, info["compression"]):
                try:
                    ex = schema.decode_numpy(serialized, fields)
                except Exception as e:
                    raise CorruptRecordError(path, n, f"parse error: {e}") from None
                if group_key is not None:
                    value = ex[group_key]
                    groups.add(value.tobytes() if hasattr(value, "tobytes") else value)
                if on_example is not None:
                    on_example(report.count, ex)
                report.count += 1
                n += 1
        except CorruptRecordError as e:
            flag(e.file, e.index, e.error)
            continue
        if n != shard["count"]:
            flag(path, n, f"index says {shard['count']} records, shard has {n}")
    if group_key is not None:
        report.groups = len(groups)
    return report


def first_bad_record(directory: str | os.PathLike, names) -> BadRecord | None:
    """The first unreadable record (``verify``'s check) among the shard sets ``names``, or None.

    For a reader that failed with a bare DataLossError: it names the shard and the record."""
    for name in names:
        try:
            report = verify(directory, name)
        except (FileNotFoundError, ValueError) as e:
            return BadRecord(index_path(directory, name), 0, str(e))
        if report.bad is not None:
            return report.bad
    return None
