"""napari's own editing tools switched off on the proofreading layers, with a tooltip saying why.

The segments layer shows fragments mapped through the segment table (views.py): napari's brush,
fill and eraser would write into that view, which cannot be written (the edit would bypass the
durable log, so it could be neither undone nor exported). Every change goes through the tool's
gestures instead. The seed layer is filled by ctrl+click only, for the same reason: a point napari
added by hand would not be a seed the split knows about.
"""

from __future__ import annotations

from typing import Any

WHY = {
    "labels": (
        "off on '{name}': this layer is the segment table applied to the fragments, so napari's "
        "brush, fill and eraser cannot write into it. Edit with the proofreading gestures "
        "(shift+click merge, ctrl+click seeds and Enter to split, Delete): each is in the edit "
        "log and undoable."
    ),
    "points": (
        "off on '{name}': split seeds are placed with ctrl+click (side A) and ctrl+alt+click "
        "(side B) on the segments layer, so the split knows about them."
    ),
}


def keep_read_only(viewer: Any, layer: Any) -> None:
    """Make ``layer`` non-editable for good (napari turns editability back on when data or the
    display changes) and put the reason on its greyed-out tool buttons."""
    layer.editable = False

    def stay_off(event: Any = None) -> None:
        if layer.editable:
            layer.editable = False

    layer.events.editable.connect(stay_off)
    explain_disabled_buttons(viewer, layer)


def _controls(viewer: Any, layer: Any) -> Any:
    """The layer's Qt controls (napari keeps them in a private container; None without a window)."""
    try:
        return viewer.window._qt_viewer.controls.widgets[layer]
    except (AttributeError, KeyError, RuntimeError):
        return None


def explain_disabled_buttons(viewer: Any, layer: Any) -> list[Any]:
    """Set the 'why' tooltip on the layer's editing buttons; returns the buttons changed."""
    controls = _controls(viewer, layer)
    if controls is None:
        return []
    kind = "points" if type(layer).__name__ == "Points" else "labels"
    text = WHY[kind].format(name=layer.name)
    buttons = list(getattr(controls, "_EDIT_BUTTONS", ()))
    polygon = getattr(controls, "polygon_button", None)
    if polygon is not None and polygon not in buttons:
        buttons.append(polygon)
    for button in buttons:
        button.setToolTip(text)
    return buttons
