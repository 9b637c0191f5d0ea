"""Keys typed into a panel's text fields stay there.

Qt passes a key a line edit does not use (Enter after ``returnPressed``, Escape, arrows at the
ends) on to its parents; napari's main window forwards every key it receives to the canvas, where
the active layer's key bindings run. So Enter in a "jump to segment" field also pressed the
proofreading split key. The filter below lets the field handle each key and then consumes it.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QAbstractSpinBox, QLineEdit, QPlainTextEdit, QTextEdit, QWidget

TEXT_FIELDS = (QLineEdit, QAbstractSpinBox, QTextEdit, QPlainTextEdit)


class _KeysStayInFields(QObject):
    def eventFilter(self, obj: Any, event: Any) -> bool:
        kind = event.type()
        if kind not in (QEvent.KeyPress, QEvent.KeyRelease) or not isinstance(obj, TEXT_FIELDS):
            return False
        if kind == QEvent.KeyPress:
            obj.keyPressEvent(event)
        else:
            obj.keyReleaseEvent(event)
        event.accept()  # an ignored key event goes on to the parents even when filtered out
        return True  # handled by the field; never forwarded to the layer


def keep_keys_in_fields(panel: QWidget) -> QObject:
    """Install the filter on every text field inside ``panel`` (call after building it; call
    again for fields added later). Returns the filter (owned by ``panel``)."""
    keeper = panel.findChild(_KeysStayInFields)
    if keeper is None:
        keeper = _KeysStayInFields(panel)
    for field in panel.findChildren(QWidget):
        if isinstance(field, TEXT_FIELDS):
            field.removeEventFilter(keeper)
            field.installEventFilter(keeper)
    return keeper
