"""Progress bars of the command line: on by default on a terminal, off when piped.

Why one place: every long command (``segment``, ``train``, ``convert``, ``proofread import`` /
``export``, ``graph``, ``evaluate``, ``run-job``, ``stream``) gets the same two flags and the same
rule. A bar with an ETA is what someone at a terminal needs for a run of minutes; in a pipe, a log
file or a batch job its carriage returns are noise, so it stays off there unless ``--progress``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from napari_connectome.progress import ProgressCallback


def add_progress_flags(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--quiet`` (mutually exclusive) into ``args.progress``: True, False or
    None (= a bar when stderr is a terminal)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show the progress bar on stderr (default: only on a terminal)",
    )
    group.add_argument(
        "--quiet",
        dest="progress",
        action="store_false",
        help="no progress bar (messages, warnings and errors still show)",
    )


def wants_progress(args: argparse.Namespace, stream: Any = None) -> bool:
    """The flags' answer, or for neither flag whether ``stream`` (stderr) is a terminal."""
    choice = getattr(args, "progress", None)
    if choice is not None:
        return bool(choice)
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def cli_progress(
    args: argparse.Namespace, desc: str, unit: str = "block"
) -> tuple[ProgressCallback | None, Callable[[], None]]:
    """``(callback or None, close)`` for a command: a tqdm bar with an ETA on stderr when
    :func:`wants_progress`, else no callback. ``close`` is always safe to call."""
    if not wants_progress(args):
        return None, lambda: None
    from napari_connectome.progress import tqdm_progress

    return tqdm_progress(desc, unit=unit)
