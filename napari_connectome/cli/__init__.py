"""The ``napari-connectome`` command line: the same operations as the GUI, no napari needed.

Each sub-module of this package registers its sub-commands with ``register(subparsers)``; a command
function receives the parsed arguments and returns an exit code. A :class:`UserInputError`
becomes its message on stderr and exit code 2, the same code argparse uses for a bad command line;
so does a failure of the machine that a user fixes (a read-only or full disk, a mistyped path: see
``_faults``). A reader that went away (``... | head -1``) ends the command quietly with 141, as a
program killed by SIGPIPE does. Anything else is a bug and keeps its traceback
(``NAPARI_CONNECTOME_TRACEBACK=1`` shows it for the expected failures too).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from napari_connectome import __version__
from napari_connectome.errors import UserInputError

# What `pip install napari-connectome` leaves out (the [napari] extra): a command reaching for
# one of them is refused with what to install, never a traceback.
GUI_PACKAGES = frozenset({"napari", "magicgui", "qtpy", "npe2", "psygnal", "vispy", "superqt",
                          "PyQt5", "PyQt6", "PySide2", "PySide6"})  # fmt: skip
SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader went away

# Modules under napari_connectome.cli that contribute sub-commands, in help order.
COMMAND_MODULES = (
    "volumes",
    "ffn",
    "segment",
    "consensus",
    "evaluate",
    "train",
    "jobs",
    "proofread",
    "graph",
    "agglomerate",
    "neuroglancer",
    "meshes",
    "skeletons",
    "webknossos",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-connectome",
        description="Connectomics at the desk: EM volumes, FFN, HPC jobs, proofreading.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # that command group is not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad option (argparse printed why), --help or --version
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with warnings.catch_warnings():  # restores showwarning after the command
            warnings.showwarning = _warning_printer(args.command)
            rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit
        return rc
    except UserInputError as exc:
        print(f"napari-connectome {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in GUI_PACKAGES:
            raise
        print(
            f"napari-connectome {args.command}: error: this command needs the napari GUI, and "
            f'{exc.name} is not installed: pip install "napari-connectome[napari]"',
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        from napari_connectome.cli._faults import silence_stdout, stdout_is_gone

        if not stdout_is_gone():
            raise  # another pipe (a subprocess, a socket): not the reader of our output
        silence_stdout()
        return SIGPIPE_EXIT
    except OSError as exc:
        from napari_connectome.cli._faults import explain

        message = explain(exc, args)
        if message is None or os.environ.get("NAPARI_CONNECTOME_TRACEBACK"):
            raise
        print(f"napari-connectome {args.command}: error: {message}", file=sys.stderr)
        return 2


def _warning_printer(command: str):
    """Our own warnings (e.g. a precision that runs slowly here, a voxel size the data does not
    give) as one plain line on stderr, like the errors; anyone else's keep Python's format, with
    file and line."""
    from napari_connectome.errors import DataWarning
    from napari_connectome.ffn.precision import PrecisionWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, (PrecisionWarning, DataWarning)):
            print(f"napari-connectome {command}: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
