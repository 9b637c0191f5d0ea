"""The ``napari-connectome`` command line: the same operations as the GUI, no napari needed.

Each sub-module of this package registers its sub-commands with ``register(subparsers)``; a command
function receives the parsed arguments and returns an exit code. A :class:`UserInputError`
becomes its message on stderr and exit code 2, the same code argparse uses for a bad command line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from napari_connectome import __version__
from napari_connectome.errors import UserInputError

# Modules under napari_connectome.cli that contribute sub-commands, in help order.
COMMAND_MODULES = (
    "volumes",
    "ffn",
    "segment",
    "evaluate",
    "train",
    "jobs",
    "proofread",
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
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserInputError as exc:
        print(f"napari-connectome {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
