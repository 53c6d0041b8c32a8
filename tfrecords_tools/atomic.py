"""All-or-nothing file and folder writes: readers see the old version or the new one, never half.

The one implementation of write-to-a-temporary-name-then-rename, shared by the
shard writer and by every tool that writes a file or a folder of results.

The one rule for temporaries: the temporary of ``<folder>/<name>`` is
``<folder>/.tmp-<name>-<pid>-<8 hex><suffix>``, beside its final path, hidden,
and naming the process that writes it. A process killed with ``kill -9`` cannot
clean up, so the next writer into the same folder does: ``remove_stale_temporaries``
deletes every temporary whose process is gone (or whose pid now belongs to a
process started after the temporary was last written). Readers skip hidden
names, so a temporary is never read as data or as a patient folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import secrets
import shutil
from typing import Iterator

PREFIX = ".tmp-"
# A folder moved aside by ``swap_in_directory`` while its replacement is renamed in.
ASIDE_SUFFIX = ".old"
_TEMP_RE = re.compile(r"\.tmp-(?P<name>.+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})(?P<suffix>.*)\Z", re.S)
# Earlier releases' folder temporaries: ``<name>.tmp-<pid>`` and ``.<name>.old-<pid>``.
_LEGACY_RE = (re.compile(r"(?P<name>[^.].*)\.tmp-(?P<pid>\d+)\Z", re.S),
              re.compile(r"\.(?P<name>.+)\.old-(?P<pid>\d+)\Z", re.S))


class OutputError(OSError):
    """An output path that cannot be written (under a regular file, disk full, no permission).

    The message is one line: the path, then what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def describe_os_error(e: BaseException) -> str:
    """``No space left on device`` rather than ``[Errno 28] No space left on device: '/x/.tmp-...'``."""
    if isinstance(e, OSError) and e.errno is not None:
        text = os.strerror(e.errno)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            text += " (the disk or quota is full, or the file size limit is reached)"
        return text
    return str(e) or type(e).__name__


# --------------------------------------------------------------------------- the naming rule


@dataclasses.dataclass(frozen=True)
class Temporary:
    """A temporary found in a folder: what it will become and who writes it."""

    path: str
    final_name: str
    pid: int
    aside: bool = False   # a previous version moved aside, not a new one being written

    @property
    def final_path(self) -> str:
        return os.path.join(os.path.dirname(self.path), self.final_name)


def temporary_path(path: str | os.PathLike, suffix: str = "") -> str:
    """The temporary name of ``path`` for this process (see the module docstring)."""
    path = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.dirname(path),
                        f"{PREFIX}{os.path.basename(path)}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def parse_temporary(path: str | os.PathLike) -> Temporary | None:
    """The ``Temporary`` a path names, or None when it does not follow the rule."""
    path = os.fspath(path)
    entry = os.path.basename(path)
    m = _TEMP_RE.match(entry)
    if m:
        suffix = m.group("suffix")
        aside = suffix == ASIDE_SUFFIX
        final = m.group("name") + ("" if aside else suffix)
        return Temporary(path, final, int(m.group("pid")), aside)
    for legacy in _LEGACY_RE:
        m = legacy.match(entry)
        if m:
            return Temporary(path, m.group("name"), int(m.group("pid")), aside=entry.startswith("."))
    return None


def list_temporaries(folder: str | os.PathLike) -> list[Temporary]:
    """Every temporary in ``folder`` (live or stale), sorted by path."""
    folder = os.fspath(folder)
    try:
        entries = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = (parse_temporary(os.path.join(folder, e)) for e in entries)
    return [t for t in found if t is not None]


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def process_start(pid: int) -> float | None:
    """Start time (epoch seconds) of a live process, where /proc tells it."""
    boot = _boot_time()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    except (OSError, ValueError, IndexError):
        return None


def is_stale(temp: Temporary) -> bool:
    """True when the process that wrote ``temp`` is gone.

    A pid that is alive but belongs to a process started after the temporary was
    last modified is a reused pid: that temporary is stale too."""
    try:
        os.kill(temp.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # alive, another user's
        pass
    except OSError:
        return False
    started = process_start(temp.pid)
    try:
        modified = os.lstat(temp.path).st_mtime
    except FileNotFoundError:
        return False
    return started is not None and started > modified + 2.0


def _delete(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporaries in ``folder`` whose writers are gone; returns what was removed.

    A previous version that ``swap_in_directory`` had moved aside when its process
    died is renamed back when nothing took its place, so a kill in that instant
    still leaves the complete old version under its own name.
    """
    removed = []
    for temp in list_temporaries(folder):
        if not is_stale(temp):
            continue
        if temp.aside and not os.path.lexists(temp.final_path):
            with contextlib.suppress(OSError):
                os.rename(temp.path, temp.final_path)
                continue
        _delete(temp.path)
        removed.append(temp.path)
    return removed


# --------------------------------------------------------------------------- output folders


def check_folder_path(folder: str | os.PathLike, what: str = "output folder") -> str:
    """Raise ``OutputError`` when ``folder`` could never be a folder (it, or a folder on its way,
    is a regular file); creates nothing, so start-up checks can run it before writing."""
    folder = os.path.abspath(os.fspath(folder))
    if os.path.isdir(folder):
        return folder
    probe = folder
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if probe and os.path.exists(probe) and not os.path.isdir(probe):
        what_is = "it" if probe == folder else probe
        raise OutputError(folder, f"cannot be the {what}: {what_is} is a regular file, not a folder")
    return folder


def ensure_folder(folder: str | os.PathLike, what: str = "output folder") -> str:
    """``os.makedirs(folder)`` with one-line errors naming the path (e.g. a regular file on the way)."""
    folder = check_folder_path(folder, what)
    if os.path.isdir(folder):
        return folder
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(folder, f"cannot create the {what}: {describe_os_error(e)}") from None
    return folder


# --------------------------------------------------------------------------- writes


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside ``path``; renames it to ``path`` if the block succeeds.

    ``suffix`` keeps an extension on the temporary name for libraries that pick
    the format from it (``.nii.gz``). Stale temporaries in the folder are removed
    first. On any exception the temporary file is removed, and an OSError (disk
    full, no permission) comes back as an ``OutputError`` naming ``path``.
    The file gets the usual permissions (0666 & ~umask).
    """
    path = os.fspath(path)
    folder = ensure_folder(os.path.dirname(os.path.abspath(path)))
    remove_stale_temporaries(folder)
    tmp = temporary_path(path, suffix)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        _delete(tmp)
        if isinstance(e, OutputError):
            raise
        raise OutputError(path, f"cannot write: {describe_os_error(e)}") from None
    except BaseException:
        _delete(tmp)
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


def temporary_folder(out: str | os.PathLike) -> str:
    """A new, empty temporary folder for ``out`` (named by the rule), stale ones removed first.

    Fill it, then ``swap_in_directory(tmp, out)``; on failure ``shutil.rmtree`` it (``atomic_folder`` does both)."""
    out = os.path.abspath(os.fspath(out))
    parent = ensure_folder(os.path.dirname(out))
    remove_stale_temporaries(parent)
    tmp = temporary_path(out)
    try:
        os.mkdir(tmp)
    except OSError as e:
        raise OutputError(tmp, f"cannot create a temporary folder: {describe_os_error(e)}") from None
    return tmp


@contextlib.contextmanager
def atomic_folder(out: str | os.PathLike) -> Iterator[str]:
    """Yields a new temporary folder for ``out``; swaps it in whole if the block succeeds, removes it if not."""
    tmp = temporary_folder(out)
    try:
        yield tmp
        swap_in_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_in_directory(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Renames the finished folder ``tmp`` to ``out``.

    An existing ``out`` is moved aside first (under a temporary name ending in
    ``.old``) and deleted last, so at every moment one complete version exists
    under ``out`` or beside it; a kill in between is healed by the next
    ``remove_stale_temporaries`` of the folder.
    """
    tmp, out = os.fspath(tmp), os.path.abspath(os.fspath(out))
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    old = temporary_path(out, ASIDE_SUFFIX)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old)
