"""The one command-line runner: flags defined by the tool, user errors as one line, exit codes.

Every tool's module has ``define_flags(fv)`` and ``main(argv)``; its console entry
point is ``run = cli.entry_point(define_flags, main)``. Inside ``main``,
``with cli.user_errors("tool"):`` turns any error a user can cause (a
``UserError``, a corrupt record, an OS error on a path: missing file, full disk,
a folder under a regular file) into ``tool: error: <path>: <problem>`` on stderr
and exit code 1, without a traceback.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from mrgan_tf.errors import UserError


def _user_error_types() -> tuple[type[BaseException], ...]:
    from tfrecords_tools.reader import CorruptRecordError
    types: tuple[type[BaseException], ...] = (UserError, CorruptRecordError, OSError)
    if "tensorflow" in sys.modules:   # e.g. a SavedModel or checkpoint that does not load
        types += (sys.modules["tensorflow"].errors.OpError,)
    return types


@contextlib.contextmanager
def user_errors(tool: str, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Print a user-caused error (or one of ``also``) as one line and exit 1; anything else is a bug
    and keeps its traceback."""
    try:
        yield
    except _user_error_types() + tuple(also) as e:
        print(f"{tool}: error: {_describe(e)}", file=sys.stderr)
        raise SystemExit(1) from None


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return str(e)


def entry_point(define_flags: Callable[[], None], main: Callable[[list[str]], int | None]) -> Callable[[], None]:
    """A console-script function: define the tool's flags (only when it is the program), then run ``main``."""
    def run() -> None:
        from absl import app, flags
        before = set(flags.FLAGS)
        define_flags()
        for name in sorted(set(flags.FLAGS) - before):   # --help lists the tool's own flags
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
        app.run(main)
    return run
