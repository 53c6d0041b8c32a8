"""The optional pieces of an install, checked when a run starts rather than where they are first used.

TensorFlow comes as one of two wheels (the ``cpu`` or ``gpu`` extra), and TF Serving's
protos are installed apart (their ``tensorflow`` requirement would pull the CUDA wheel next
to tensorflow-cpu). A run that needs a piece only at its end, such as ``train --export``
writing the warmup requests after hours of training, asks ``require(tool, ...)`` at start-up;
a missing piece stops it with one line naming the package and the pip command that installs
it (``MissingPackage``, a ``UserError``: ``cli.user_errors`` prints it without a traceback).

    python -m mrgan_tf.requirements      # what this environment has, piece by piece

A leaf: it imports nothing of the project but ``errors``.
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
from importlib import metadata

from mrgan_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class Piece:
    """An optional part of the install: the modules that prove it is there, and how to get it."""
    package: str                # the distribution(s) to install, as a user reads them
    modules: tuple[str, ...]    # every one must import
    install: str                # the exact command
    purpose: str


SERVING_API = "tensorflow-serving-api==2.21.*"

PIECES = {
    "tensorflow": Piece("tensorflow-cpu or tensorflow[and-cuda]", ("tensorflow",),
                        "pip install 'tensorflow-cpu==2.21.*'  (GPU: pip install 'tensorflow[and-cuda]==2.21.*')",
                        "every tool"),
    "serving": Piece("tensorflow-serving-api", ("tensorflow_serving.apis.prediction_log_pb2",
                                                "tensorflow_serving.config.model_server_config_pb2"),
                     f"pip install --no-deps '{SERVING_API}'",
                     "TF Serving's warmup requests and models.config: train --export, export, the demo"),
    "grpc": Piece("grpcio and tensorflow-serving-api", ("grpc", "tensorflow_serving.apis.prediction_service_pb2_grpc"),
                  f"pip install 'grpcio>=1.60' && pip install --no-deps '{SERVING_API}'",
                  "the gRPC client: client/synthesize --server=host:port"),
    "pacs": Piece("pynetdicom", ("pynetdicom",), "pip install 'pynetdicom>=3'",
                  "DICOM networking: pacs, synthesize --send"),
    "dose": Piece("pyradplan and pymedphys", ("pyRadPlan", "pymedphys"),
                  "pip install -e '.[dose]' && pip install --no-deps 'pyradplan==0.5.0'",
                  "dose calculation on synthetic CTs"),
    "bench": Piece("torch", ("torch",), "pip install -e '.[bench]'", "the PyTorch peer of bench/bench_peer.py"),
}

# tool -> (piece, the option that makes it needed, or None: always). An option counts when truthy;
# ``server`` counts when it is a gRPC address (REST, http://..., needs neither protos nor gRPC).
NEEDS = {
    "make_records": (("tensorflow", None),),
    "train": (("tensorflow", None), ("serving", "export")),
    "export": (("tensorflow", None), ("serving", None)),
    "synthesize": (("tensorflow", None), ("grpc", "server"), ("pacs", "send")),
    "client": (("tensorflow", None), ("grpc", "server")),
    "pacs": (("pacs", None),),
    "evaluate": (("tensorflow", None),),
    "demo": (("tensorflow", None), ("serving", None)),
}

# What a run can do instead of installing the piece an option needs.
INSTEAD = {"export": "or train with --noexport", "server": "or run the model here with --model",
           "send": "or leave out --send"}

# The wheels that install the ``tensorflow`` module: at most one may be in an environment.
TENSORFLOW_WHEELS = ("tensorflow", "tensorflow-cpu")


class MissingPackage(UserError, ImportError):
    """A package the run will need is not installed; the message names it and the command that installs it."""


def _wanted(option: str, value) -> bool:
    if option == "server":
        return bool(value) and not str(value).startswith(("http://", "https://"))
    return bool(value)


def needed(tool: str, **options) -> list[tuple[str, str | None]]:
    """(piece, the option that needs it) for ``tool`` run with ``options`` (flag name -> value)."""
    return [(piece, option) for piece, option in NEEDS[tool]
            if option is None or _wanted(option, options.get(option))]


def import_problem(piece: str) -> str | None:
    """Why ``piece`` does not import (the first failing module's error), or None when it does."""
    for module in PIECES[piece].modules:
        try:
            importlib.import_module(module)
        except Exception as e:   # ImportError, or a protobuf / binary mismatch raised while importing
            return f"{type(e).__name__}: {e}"
    return None


def require(tool: str, **options) -> None:
    """Raise ``MissingPackage`` for the first piece ``tool`` needs with ``options`` that does not import.

    Call it before the run builds or writes anything, e.g. ``require("train", export=True)``.
    """
    pieces = needed(tool, **options)
    for piece, option in pieces:
        problem = import_problem(piece)
        if problem is not None:
            p = PIECES[piece]
            why = f"--{option}" if option else tool
            instead = f" ({INSTEAD[option]})" if option in INSTEAD else ""
            raise MissingPackage(f"{why} needs {p.package}, which is not installed ({problem}); "
                                 f"install it with: {p.install}{instead}")
    wheels = installed_tensorflow_wheels()
    if len(wheels) > 1 and any(piece == "tensorflow" for piece, _ in pieces):
        print(f"{tool}: warning: {_two_wheels(wheels)}", file=sys.stderr)


def installed_tensorflow_wheels() -> list[str]:
    """The TensorFlow wheels installed here, e.g. ['tensorflow-cpu 2.21.0'] (two mean a broken module)."""
    found = []
    for name in TENSORFLOW_WHEELS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def report() -> list[str]:
    """One line per piece: installed or not, and how to install what is missing."""
    lines = []
    for name, p in PIECES.items():
        problem = import_problem(name)
        lines.append(f"{name:<11}{'ok' if problem is None else 'missing':<9}{p.package}, for {p.purpose}"
                     + ("" if problem is None else f": {problem}\n{'':<20}-> {p.install}"))
    wheels = installed_tensorflow_wheels()
    if len(wheels) > 1:
        lines.append(f"warning: {_two_wheels(wheels)}")
    return lines


def _two_wheels(wheels: list[str]) -> str:
    return (f"{' and '.join(wheels)} are both installed and overwrite each other's `tensorflow` module: "
            "uninstall both (pip uninstall -y tensorflow tensorflow-cpu), then install one of them")


def main() -> int:
    """Print the report; exit 1 when TensorFlow itself does not import or two TensorFlow wheels are installed."""
    lines = report()
    print("\n".join(lines))
    broken = import_problem("tensorflow") is not None or len(installed_tensorflow_wheels()) > 1
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
