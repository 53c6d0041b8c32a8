"""Write a named set of TFRecord shards plus its JSON index, all-or-nothing.

Layout in ``out_dir`` for a set ``name`` (GZIP):

- while writing: ``.tmp-<name>-00000-<pid>-<hex>.tfrecord.gz``, ... (``atomic``'s temporary rule)
- on success: ``<name>-00000-of-00002.tfrecord.gz`` ... and then, last,
  ``<name>.shards.json`` = ``{"name", "compression", "fields", "shards": [{"file", "count"}], "count"}``.

The total is unknown until the end, so shards keep their temporary names until
``close()`` renames them all; a file with a final name is therefore always a
complete shard, and the index (written atomically) is what makes a set exist.
If the ``with`` body raises (including KeyboardInterrupt), every temp file of
the writer is removed and no index is written. One writer per (out_dir, name)
at a time.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import tensorflow as tf

from tfrecords_tools import schema
from tfrecords_tools import atomic
from tfrecords_tools.atomic import atomic_write_text  # also importable from here

INDEX_SUFFIX = ".shards.json"
_EXTENSIONS = {"GZIP": ".tfrecord.gz", "ZLIB": ".tfrecord.zz", "": ".tfrecord"}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_ANY_EXT = "(" + "|".join(re.escape(e) for e in _EXTENSIONS.values()) + r")\Z"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def index_path(out_dir: str | os.PathLike, name: str) -> str:
    """Where the index of shard set ``name`` lives."""
    return os.path.join(os.fspath(out_dir), name + INDEX_SUFFIX)


def check_name(name: str) -> None:
    """Shard-set names become file names: letters, digits, ``_ . -``, not starting with a dot."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"shard set name must match [A-Za-z0-9][A-Za-z0-9_.-]*, got {name!r}")


def extension(compression: str) -> str:
    """File extension for a compression type ("GZIP", "ZLIB" or "" for none)."""
    if compression not in _EXTENSIONS:
        raise ValueError(f"compression must be one of {sorted(_EXTENSIONS)}, got {compression!r}")
    return _EXTENSIONS[compression]


class ShardedWriter:
    """Context manager writing validated records into ``examples_per_shard``-sized shards.

    ``compression`` is "GZIP" (default), "ZLIB" or None/"" for none.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        name: str,
        fields: schema.Fields,
        examples_per_shard: int = 512,
        compression: str | None = "GZIP",
        compression_level: int | None = None,
    ) -> None:
        check_name(name)
        schema.check_fields(fields)
        if not isinstance(examples_per_shard, int) or examples_per_shard < 1:
            raise ValueError(f"examples_per_shard must be a positive int, got {examples_per_shard!r}")
        self.out_dir = os.fspath(out_dir)
        self.name = name
        self.fields = dict(fields)
        self.examples_per_shard = examples_per_shard
        self.compression = (compression or "").upper()
        self._ext = extension(self.compression)
        # zlib level 0-9; None = zlib's default (6). Lower levels write faster, read the same.
        self._options = tf.io.TFRecordOptions(compression_type=self.compression, compression_level=compression_level)
        self._temps: list[str] = []  # every temp shard this writer created
        self._counts: list[int] = []
        self._current: tf.io.TFRecordWriter | None = None
        self._info: dict[str, Any] | None = None
        self._state = "new"

    # ------------------------------------------------------------ context
    def __enter__(self) -> "ShardedWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Create ``out_dir`` and clear temporaries that killed earlier writers left there."""
        if self._state != "new":
            raise RuntimeError(f"ShardedWriter({self.name!r}) can only be opened once")
        atomic.ensure_folder(self.out_dir, "records folder")
        atomic.remove_stale_temporaries(self.out_dir)
        self._state = "open"

    # ------------------------------------------------------------ writing
    def write(self, record: Mapping[str, Any]) -> None:
        """Validate and append one record (ValueError naming the field if it does not fit)."""
        if self._state != "open":
            raise RuntimeError(f"ShardedWriter({self.name!r}) is {self._state}; use it as a context manager")
        serialized = schema.encode(record, self.fields)
        if self._current is None or self._counts[-1] >= self.examples_per_shard:
            self._start_shard()
        self._current.write(serialized)
        self._counts[-1] += 1

    def _start_shard(self) -> None:
        self._close_current()
        tmp = atomic.temporary_path(os.path.join(self.out_dir, f"{self.name}-{len(self._temps):05d}"), self._ext)
        self._temps.append(tmp)  # registered before creation so abort() always removes it
        self._counts.append(0)
        self._current = tf.io.TFRecordWriter(tmp, options=self._options)

    def _close_current(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    @property
    def count(self) -> int:
        """Records written so far."""
        return sum(self._counts)

    # ------------------------------------------------------------ finishing
    def close(self) -> dict[str, Any]:
        """Rename shards to final names, drop the previous version of this set, write the index."""
        if self._state != "open":
            raise RuntimeError(f"ShardedWriter({self.name!r}) is {self._state}, cannot close")
        try:
            self._close_current()
            n = len(self._temps)
            width = max(5, len(str(n)))
            finals = [f"{self.name}-{i:0{width}d}-of-{n:0{width}d}{self._ext}" for i in range(n)]
            # No index may point at a mix of old and new shards: drop the old index first.
            index = index_path(self.out_dir, self.name)
            _remove(index)
            old = re.compile(re.escape(self.name) + r"-\d+-of-\d+" + _ANY_EXT)  # any compression
            for entry in os.listdir(self.out_dir):
                if old.match(entry) and entry not in finals:
                    _remove(os.path.join(self.out_dir, entry))
            for tmp, final in zip(self._temps, finals):
                os.replace(tmp, os.path.join(self.out_dir, final))
            info = {
                "name": self.name,
                "compression": self.compression,
                "fields": schema.fields_to_json(self.fields),
                "shards": [{"file": f, "count": c} for f, c in zip(finals, self._counts)],
                "count": self.count,
            }
            atomic_write_text(index, json.dumps(info, indent=1) + "\n")
        except BaseException:
            self.abort()
            raise
        self._info = info
        self._state = "closed"
        return info

    def abort(self) -> None:
        """Remove every temp file of this writer; no index is written."""
        try:
            self._close_current()
        except Exception:  # the shard is being discarded anyway
            self._current = None
        for tmp in self._temps:
            _remove(tmp)
        self._state = "aborted"

    @property
    def info(self) -> dict[str, Any]:
        """The index dict (as written to ``<name>.shards.json``); available after a clean close."""
        if self._info is None:
            raise RuntimeError(f"ShardedWriter({self.name!r}) has no info: it is {self._state}, not closed")
        return self._info
