"""One writer per output folder: an exclusive lock file beside the folder, naming its holder.

A training run, an export or a make_records into the same ``--out`` as one still
running would write beside it (two checkpoint managers on one folder, records swapped
under a reader). ``folder_lock(out, tool)`` creates ``<parent>/.<name>.lock`` with
``O_CREAT | O_EXCL`` (atomic on local file systems and on NFSv3+), holding the host,
pid, start time and command of its holder; a second writer is refused at once with
that holder named. The holder refreshes the file's modification time every
``HEARTBEAT_S`` seconds.

A lock left by a process that is gone is taken over with a warning: on the same host
when its pid no longer runs (or runs a process started later: a reused pid); from
another host (a run folder on a shared file system) when it has not been refreshed
for ``STALE_AFTER_S`` seconds, since that host's processes cannot be asked. The
assumption for shared file systems: the hosts' clocks agree to well within that bound.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Iterator

from tfrecords_tools.atomic import OutputError, check_folder_path, ensure_folder, process_start

SUFFIX = ".lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0        # another host's lock not refreshed for this long is a dead holder's
_WRITING_GRACE_S = 5.0       # an unreadable lock younger than this is being written, not damaged

log = logging.getLogger(__name__)


class FolderBusy(OutputError):
    """Another process holds the output folder; the message names it."""


def lock_path(out: str | os.PathLike) -> str:
    """``<parent>/.<name>.lock``: beside the folder, so it can be taken before the folder exists."""
    out = os.path.abspath(os.fspath(out))
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}{SUFFIX}")


def _holder(tool: str) -> dict:
    now = time.time()
    return {"tool": tool, "host": socket.gethostname(), "pid": os.getpid(), "started_epoch": now,
            "started": datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}


def read_holder(path: str) -> dict | None:
    """The holder a lock file names (None when it is unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "an unreadable lock"
    return (f"{holder.get('tool', '?')} (pid {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started')})")


def stale_reason(path: str, holder: dict | None, now: float | None = None) -> str | None:
    """Why the lock at ``path`` is a dead holder's, or None while its holder may be alive."""
    now = time.time() if now is None else now
    try:
        age = now - os.stat(path).st_mtime
    except FileNotFoundError:
        return "a lock removed meanwhile"
    if holder is None:
        return f"an unreadable lock, {age:.0f} s old" if age > _WRITING_GRACE_S else None
    if holder.get("host") != socket.gethostname():
        return (f"{_describe(holder)}, not refreshed for {age / 60:.0f} min (> {STALE_AFTER_S / 60:.0f} min)"
                if age > STALE_AFTER_S else None)
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"{_describe(holder)}, which is no longer running"
    except PermissionError:   # alive, another user's
        return None
    started = process_start(pid)
    if started is not None and started > float(holder.get("started_epoch", now)) + 2.0:
        return f"{_describe(holder)}, whose pid now belongs to a later process"
    return None


def _create(path: str, holder: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(holder, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def acquire(out: str | os.PathLike, tool: str) -> str:
    """Take the lock of ``out`` (FolderBusy naming the holder when it is held); returns the lock's path."""
    path = lock_path(out)
    check_folder_path(out)                                        # a regular file on the way: named as such
    ensure_folder(os.path.dirname(path), "parent folder of the output")   # as the writer would create it
    me = _holder(tool)
    for _ in range(3):   # a take-over can race with another one: try again, then give up
        try:
            if _create(path, me):
                return path
        except OSError as e:
            raise OutputError(path, f"cannot create the lock of {out}: {e.strerror or e}") from None
        holder = read_holder(path)
        why = stale_reason(path, holder)
        if why is None:
            raise FolderBusy(out, f"in use by {_describe(holder)}; wait for it to end or stop it "
                                  f"(its lock: {path})")
        log.warning("%s: taking over the lock left by %s", out, why)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    raise FolderBusy(out, f"another process took the lock {path} at the same time; try again")


def release(path: str) -> None:
    """Remove the lock if it is still this process's (a taken-over lock is not ours to remove)."""
    holder = read_holder(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def folder_lock(out: str | os.PathLike, tool: str) -> Iterator[str]:
    """Hold ``out``'s lock for the block, refreshing it every ``HEARTBEAT_S``; yields the lock's path."""
    path = acquire(out, tool)
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(path)

    beat = threading.Thread(target=heartbeat, name=f"lock {path}", daemon=True)
    beat.start()
    try:
        yield path
    finally:
        stop.set()
        beat.join()
        release(path)
