"""All-or-nothing file and folder writes: readers see the old version or the new one, never half.

The one implementation of write-to-a-temporary-name-then-rename, shared by the
shard writer and by every tool that writes a file or a folder of results.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from typing import Iterator


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside ``path``; renames it to ``path`` if the block succeeds.

    ``suffix`` keeps an extension on the temporary name for libraries that pick
    the format from it (``.nii.gz``). On any exception the temporary file is removed.
    The file gets the usual permissions (0666 & ~umask).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.path.basename(path)}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then ``os.replace``."""
    with atomic_output(path) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def swap_in_directory(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Renames the finished folder ``tmp`` to ``out``.

    An existing ``out`` is moved aside first and deleted last, so at every moment
    one complete version exists under ``out`` or beside it.
    """
    tmp, out = os.fspath(tmp), os.fspath(out)
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    old = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.old-{os.getpid()}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old)
