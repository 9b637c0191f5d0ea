"""The one exception every refused proofreading edit raises.

It is a :class:`UserInputError`, so the CLI prints it and exits 2 and the GUI shows it in the
status bar: a refused edit is something the proofreader can fix (click elsewhere, unlock first),
never a crash.
"""

from __future__ import annotations

from napari_connectome.errors import UserInputError


class EditRefused(UserInputError):
    """An edit was refused before anything changed; the message says why and what to do."""
