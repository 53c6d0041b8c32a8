"""The one command-line runner: flags defined by the tool, user errors as one line, exit codes.

Every tool's module has ``define_flags(fv)`` and ``main(argv)``; its console entry
point is ``run = cli.entry_point(define_flags, main)``. Inside ``main``,
``with cli.user_errors("tool"):`` turns any error a user can cause (a
``UserError``, a corrupt record, an OS error on a path: missing file, full disk,
a folder under a regular file) into ``tool: error: <path>: <problem>`` on stderr
and exit code 1, without a traceback.

A tool whose options are a dataclass derives their flags from it
(``define_field_flags``): each flag's type and default are the field's, so a
default lives in one place and a new option is one line of the tool's table.

How every tool's command line behaves (``tfrecords_tools.console``): ``--flagfile``
names resolve from any working directory (a nested one beside the file that names
it, then this repository's ``configs/``); a usage error is ``tool: error: <message>``
and exit code 2; ``--help`` starts with the docstring of the tool's command-line
module (``mrgan_tf/<tool>.py``), however the tool was started; library INFO lines
(TensorFlow saving a model, ...) show only with ``--verbose``.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from mrgan_tf.errors import UserError
from tfrecords_tools import console

PACKAGE = Path(__file__).resolve().parent
CONFIGS = PACKAGE.parent / "configs"      # the flagfiles of a source checkout


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


def entry_point(define_flags: Callable[[], None], main: Callable[[list[str]], int | None],
                tool: str | None = None) -> Callable[[], None]:
    """A console-script function: define the tool's flags (only when it is the program), then run ``main``.

    ``tool`` (default: the last part of ``main``'s module) names the tool in error lines and
    finds its help text (``help_text``)."""
    tool = tool or main.__module__.rpartition(".")[2]

    def run() -> None:
        from absl import flags
        before = set(flags.FLAGS)
        define_flags()
        if "verbose" not in flags.FLAGS:   # train has its own, a level
            flags.DEFINE_bool("verbose", False, "Also show the INFO log lines of TensorFlow and other libraries.")
        for name in sorted(set(flags.FLAGS) - before):   # --help lists the tool's own flags
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
        console.run(lambda argv: main(_no_arguments(argv)), tool, help_text=help_text(tool), fallback=[CONFIGS],
                    own=[PACKAGE, Path(console.__file__).parent], verbose=lambda: library_logs(flags.FLAGS.verbose))
    return run


def library_logs(verbose: bool | int) -> bool:
    """Whether ``--verbose`` asks for the INFO lines of libraries: ``--verbose``, or train's level 2."""
    return verbose is True or verbose >= 2


def help_text(tool: str) -> str | None:
    """What ``--help`` prints on top: the docstring of ``python -m mrgan_tf.<tool>``'s module, read
    from its file (a console script's ``__main__`` is another module)."""
    for path in (PACKAGE / f"{tool}.py", PACKAGE / tool / "__main__.py"):
        if path.is_file():
            doc = ast.get_docstring(ast.parse(path.read_text()))
            return doc and doc + "\n"
    return None


def require_flags(fv, *names: str) -> None:
    """A usage error naming the first flag of ``names`` that was left unset."""
    for name in names:
        if not fv[name].value:
            from absl import app
            raise app.UsageError(f"--{name} is required")


def named_paths(values, flag: str, default_name: Callable[[str], str], error: type[Exception]) -> dict[str, str]:
    """``["NAME=PATH", "PATH"]`` of a repeated flag -> {name: path}; a bare path is named by ``default_name``.

    A malformed entry or a name given twice is an ``error`` naming the flag."""
    out = {}
    for v in values or ():
        name, sep, path = v.partition("=")
        if not sep:
            path, name = v, default_name(v)
        if not name or not path:
            raise error(f"--{flag} {v!r}: expected PATH or NAME=PATH")
        if name in out:
            raise error(f"--{flag}: name {name!r} given twice")
        out[name] = path
    return out


def _no_arguments(argv: list[str]) -> list[str]:
    """Every tool takes flags only: a stray word (a missing ``--``, a shell glob) is a usage error."""
    if len(argv) > 1:
        from absl import app
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return argv


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one dataclass field appears on the command line; its type and default are the field's."""
    help: str
    choices: Iterable[str] | None = None   # an enum flag: e.g. the keys of the table the field names a row of
    name: str | None = None                # the flag's name where it is not the field's (an older name kept)


def _flag_type(hint):
    """The field's type without ``None`` (``int | None`` -> ``int``, ``tuple[float, float] | None`` -> the tuple)."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint


def _kind(hint) -> str:
    """bool, int, float, str or tuple: how a field's value is written on the command line."""
    t = _flag_type(hint)
    if typing.get_origin(t) is tuple and typing.get_args(t):
        return "tuple"
    return "untyped tuple" if t is tuple else getattr(t, "__name__", str(t))


_DEFINE = {"bool": "DEFINE_bool", "int": "DEFINE_integer", "float": "DEFINE_float", "str": "DEFINE_string",
           "tuple": "DEFINE_list"}


def define_field_flags(fv, cls, table: Mapping[str, Flag]) -> None:
    """One flag per ``table`` entry (field name -> ``Flag``), typed and defaulted by that field of ``cls``.

    A tuple field is a comma-separated list flag (``--mr_percentiles=0.5,99.5``); an enum of
    numbers (``Flag(choices=("8", "16"))``) takes the number's text.
    """
    from absl import flags
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for field, flag in table.items():
        f = fields[field]
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:   # a required field: its flag has no default (the tool says when it is missing)
            default = None if f.default_factory is dataclasses.MISSING else f.default_factory()
        kind = _kind(hints[field])
        name = flag.name or field
        if flag.choices is not None:
            flags.DEFINE_enum(name, None if default is None else str(default), list(flag.choices), flag.help,
                              flag_values=fv)
        elif kind in _DEFINE:
            if kind == "tuple" and default is not None:
                default = [f"{v:g}" if isinstance(v, float) else str(v) for v in default]
            getattr(flags, _DEFINE[kind])(name, default, flag.help, flag_values=fv)
        else:
            raise TypeError(f"{cls.__name__}.{field}: no flag type for {hints[field]!r}")


def field_values(fv, table: Mapping[str, Flag], cls=None) -> dict[str, Any]:
    """The parsed flags of ``table`` as keyword arguments of its dataclass (field name -> value).

    With ``cls``, each value takes its field's type (list flags -> tuples of numbers, enum
    texts -> numbers); a value that does not convert is a ``UserError`` naming the flag.
    """
    values = {field: fv[flag.name or field].value for field, flag in table.items()}
    if cls is None:
        return values
    hints = typing.get_type_hints(cls)
    for field, value in values.items():
        if value is None:
            continue
        t, kind = _flag_type(hints[field]), _kind(hints[field])
        try:
            if kind == "tuple":
                values[field] = tuple(typing.get_args(t)[0](v) for v in value) if value else None
            elif kind in ("int", "float") and isinstance(value, str):
                values[field] = t(value)
        except ValueError:
            name = table[field].name or field
            got = ",".join(value) if kind == "tuple" else repr(value)
            raise UserError(f"--{name} must be {'numbers' if kind == 'tuple' else 'a number'}, got {got}") from None
    return values
