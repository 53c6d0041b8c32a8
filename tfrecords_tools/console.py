"""How a command line of this project behaves, whatever the tool (absl underneath).

``run(main, tool)``: ``--flagfile`` is expanded first, so that a name resolves from any working
directory (``expand_flagfiles``); a usage error (unknown flag, bad value, stray word) is two
lines on stderr, ``tool: error: <message>`` and a pointer to ``--help``, and exit status 2.

``mrgan_tf.cli.entry_point`` and ``tfrecords_tools.inspect`` run through ``run``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

USAGE_EXIT = 2


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


# ---------------------------------------------------------------- the runner
def usage_error(tool: str, error: BaseException | str) -> None:
    """``tool: error: <message>`` and where the flags are described, on stderr; exit status 2."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{tool}: error: {message}\nTry '--help' for the flags.", file=sys.stderr)
    raise SystemExit(USAGE_EXIT)


def run(main: Callable[[list[str]], int | None], tool: str, *, fallback: Iterable[Path] = ()) -> None:
    """``absl.app.run(main)`` with flagfiles expanded (``fallback``: see ``expand_flagfiles``) and
    short usage errors."""
    from absl import app, flags

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = flags.FLAGS(expand_flagfiles(argv, fallback))
        except (flags.Error, FlagfileError) as e:
            usage_error(tool, e)
        return rest

    def call(argv: list[str]):
        try:
            return main(argv)
        except app.UsageError as e:
            usage_error(tool, e)

    app.run(call, flags_parser=parse)
