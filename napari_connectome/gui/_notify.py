"""Errors from workers and callbacks become napari notifications, never a traceback only."""

from __future__ import annotations

import logging

from napari_connectome.errors import UserInputError

log = logging.getLogger("napari_connectome.gui")


def report_error(exc: BaseException, what: str) -> str:
    """Show ``exc`` in the viewer: the message for input problems, type and message for bugs."""
    from napari.utils.notifications import show_error

    if isinstance(exc, UserInputError):
        message = f"{what}: {exc}"
    else:
        log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
        message = f"{what} failed ({type(exc).__name__}: {exc})"
    show_error(message)
    return message
