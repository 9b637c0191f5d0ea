"""Progress reporting for the core without any UI dependency.

Core functions accept ``progress: ProgressCallback | None``; the CLI passes a tqdm-backed callback
and the GUI passes one that emits a Qt signal, so the algorithm never knows who is watching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ProgressCallback(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def no_progress(done: int, total: int, message: str = "") -> None:
    """Default callback: report nothing."""


def tqdm_progress(desc: str, unit: str = "block") -> tuple[ProgressCallback, Callable[[], None]]:
    """A callback drawing a tqdm bar on stderr, and a function that closes the bar."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit, total=0, dynamic_ncols=True)

    def update(done: int, total: int, message: str = "") -> None:
        if done < bar.n or (bar.total and total != bar.total):
            bar.reset(total=total)  # a new phase: its own rate and ETA, not the whole run's
        elif bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return update, bar.close
