"""How a command line of this project behaves, whatever the tool (absl underneath).

* ``quiet_tensorflow()``: TensorFlow's C++ INFO and WARNING lines stay hidden unless
  ``TF_CPP_MIN_LOG_LEVEL`` says otherwise, also the ones it prints while it loads,
  before it reads that level (oneDNN, CPU instructions, CUDA plugins registered twice).
* ``run(main, tool)``: a usage error (unknown flag, bad value, stray word) is two lines
  on stderr, ``tool: error: <message>`` and a pointer to ``--help``, and exit status 2;
  ``--flagfile`` is expanded first (``expand_flagfiles``); INFO lines of libraries
  (TensorFlow saving a model, ...) show only when asked for, the tool's own always.

``mrgan_tf.cli.entry_point`` and ``tfrecords_tools.inspect`` run through ``run``.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
USAGE_EXIT = 2
# A C++ log record: severity I/W/E/F, date, time, thread, file:line].
_RECORD = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\]")
_BEFORE_INIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_CONTINUED = ("To enable the following instructions",)   # the second line of the CPU-instructions record
# Logged as errors when a CUDA build loads, yet harmless: a plugin registered by two libraries.
_HARMLESS_ERRORS = ("Attempting to register factory for plugin",)


# ---------------------------------------------------------------- TensorFlow's start-up lines
def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ INFO and WARNING lines unless the user set ``TF_CPP_MIN_LOG_LEVEL``.

    Call before TensorFlow is imported; the import itself is left for whoever needs it."""
    os.environ.setdefault(LOG_LEVEL, "2")
    if "tensorflow" not in sys.modules and _level() > 0 and not any(
            isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def _level() -> int:
    try:
        return int(os.environ.get(LOG_LEVEL, "0"))
    except ValueError:
        return 0


def shown(line: str, level: int) -> bool:
    """Whether TensorFlow would have printed ``line`` at ``TF_CPP_MIN_LOG_LEVEL=level``."""
    if level <= 0:
        return True
    record = _RECORD.match(line)
    if record:
        hidden = "IWEF".index(record.group(1)) < level
        return not (hidden or (level >= 2 and any(h in line for h in _HARMLESS_ERRORS)))
    return not line.startswith((_BEFORE_INIT, *_CONTINUED))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and loads it with its start-up lines filtered (once)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader   # TensorFlow sees its own loader
        with _filtered_stderr(_level()):
            self.loader.exec_module(module)


_held_stderr: list[int] = []   # the real stderr's descriptor while _filtered_stderr holds fd 2 back


def stderr_fd() -> int:
    """Where stderr really goes, also while TensorFlow's import is being filtered: for a line that
    must show even when the process ends before the filter replays what it held."""
    return _held_stderr[-1] if _held_stderr else 2


@contextlib.contextmanager
def _filtered_stderr(level: int) -> Iterator[None]:
    """Everything written to file descriptor 2 meanwhile (C++ and Python alike), then the lines
    ``shown`` at ``level``; all of it when the block raises."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:          # no stderr to hold back
        yield
        return
    ok = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        _held_stderr.append(saved)
        try:
            yield
            ok = True
        finally:
            _held_stderr.pop()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(ln for ln in lines if not ok or shown(ln, level)))
            sys.stderr.flush()


# ---------------------------------------------------------------- flagfiles
class FlagfileError(Exception):
    """A --flagfile that cannot be read; the message names the file (and line) that names it."""


def _directive(arg: str) -> str | None:
    """The file of a ``--flagfile=FILE`` (or ``-flagfile=FILE``) argument, else None."""
    for prefix in ("--flagfile=", "-flagfile="):
        if arg.startswith(prefix):
            return arg[len(prefix):].strip()
    return None


def expand_flagfiles(argv: Sequence[str], fallback: Iterable[Path] = ()) -> list[str]:
    """``argv`` with each ``--flagfile`` replaced by the flags of its file, where it stands (a flag
    later on the line still wins), nested files included, as absl reads them: one flag per line,
    blank lines and lines starting with ``#`` or ``//`` left out.

    A file named on the command line is looked for in the working directory, a nested one beside
    the file that names it; then in each ``fallback`` folder (a name that starts with that folder's
    own name, e.g. ``configs/demo.cfg``, also from the folder above it); a nested one last in the
    working directory, as absl did. Raises ``FlagfileError`` naming the file and line."""
    fallback = tuple(Path(d) for d in fallback)
    out, args = list(argv[:1]), iter(argv[1:])
    for arg in args:
        if arg == "--":                       # the end of the flags: the rest is taken as it is
            out += [arg, *args]
            break
        name = next(args, None) if arg in ("--flagfile", "-flagfile") else _directive(arg)
        if arg in ("--flagfile", "-flagfile") and name is None:
            raise FlagfileError(f"{arg} needs a file name")
        if name is None:
            out.append(arg)
        else:
            out += _flagfile_lines(name, None, fallback, "", ())
    return out


def _flagfile_lines(name: str, beside: Path | None, fallback: tuple[Path, ...], origin: str,
                    stack: tuple[Path, ...]) -> list[str]:
    if not name:
        return []        # absl ignores an empty --flagfile=
    wanted = Path(os.path.expanduser(name))
    places = [wanted] if wanted.is_absolute() else [beside / wanted if beside else wanted]
    if not wanted.is_absolute():
        for folder in fallback:
            places.append(folder / wanted)
            if wanted.parts[0] == folder.name and len(wanted.parts) > 1:
                places.append(folder.parent / wanted)
        if beside is not None:
            places.append(wanted)
    path = next((p for p in places if p.is_file()), None)
    if path is None:
        looked = ", ".join(dict.fromkeys(os.path.abspath(p) for p in places))
        raise FlagfileError(f"{origin}--flagfile={name}: no such file (looked in {looked})")
    key = path.resolve()
    if key in stack:
        raise FlagfileError(f"{origin}--flagfile={name}: includes itself")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FlagfileError(f"{origin}--flagfile={name}: {path}: {getattr(e, 'strerror', None) or e}") from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        nested = _directive(line)
        if nested is None:
            lines.append(line)
        else:
            lines += _flagfile_lines(nested, path.parent, fallback, f"{path}:{number}: ", stack + (key,))
    return lines


# ---------------------------------------------------------------- library log lines
class _OwnInfo:
    """A logging filter: WARNING and above, and anything logged by code under ``roots``."""

    def __init__(self, roots: Iterable[Path]):
        self.roots = tuple(str(Path(r).resolve()) + os.sep for r in roots)

    def filter(self, record) -> bool:
        import logging
        return record.levelno >= logging.WARNING or os.path.realpath(record.pathname).startswith(self.roots)


def library_logs(show: bool, own: Iterable[Path]) -> None:
    """INFO lines of the code under ``own`` always show; other libraries' only with ``show``.

    Call once absl's handler is in place (``app.run`` installs it before it parses the flags)."""
    if show:
        return
    import logging

    from absl import logging as absl_logging
    absl_logging.get_absl_handler().addFilter(_OwnInfo(own))
    logging.getLogger("tensorflow").setLevel(logging.WARNING)   # also its own "INFO:tensorflow:" handler


# ---------------------------------------------------------------- the runner
def usage_error(tool: str, error: BaseException | str) -> None:
    """``tool: error: <message>`` and where the flags are described, on stderr; exit status 2."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{tool}: error: {message}\nTry '--help' for the flags.", file=sys.stderr)
    raise SystemExit(USAGE_EXIT)


def run(main: Callable[[list[str]], int | None], tool: str, *, help_text: str | None = None,
        fallback: Iterable[Path] = (), own: Iterable[Path] = (),
        verbose: Callable[[], bool] = lambda: False) -> None:
    """``absl.app.run(main)`` with flagfiles expanded (``fallback``: see ``expand_flagfiles``),
    short usage errors, ``help_text`` on top of ``--help`` and library INFO lines only when
    ``verbose()`` (asked once the flags are parsed) says so (``own``: the tool's code folders)."""
    from absl import app, flags
    if help_text:
        sys.modules["__main__"].__doc__ = help_text   # what absl's --help prints on top

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = flags.FLAGS(expand_flagfiles(argv, fallback))
        except (flags.Error, FlagfileError) as e:
            usage_error(tool, e)
        library_logs(verbose(), own)
        return rest

    def call(argv: list[str]):
        try:
            return main(argv)
        except app.UsageError as e:
            usage_error(tool, e)

    app.run(call, flags_parser=parse)
