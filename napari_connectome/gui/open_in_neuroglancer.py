"""Open in neuroglancer: the selected layers (as opened from their files) served on 127.0.0.1 and
shown in neuroglancer, with the selected label as the selected segment.

The same core as ``napari-connectome neuroglancer`` (:mod:`napari_connectome.viewers`); a layer
counts when our reader opened it (its ``metadata["source"]`` names the volume). Serving stops with
Stop, when the widget closes, or when napari quits.
"""

from __future__ import annotations

import webbrowser
from typing import Any

from magicgui.widgets import CheckBox, Container, Label, LineEdit, PushButton

from napari_connectome.errors import UserInputError
from napari_connectome.gui._notify import report_error


class OpenInNeuroglancerWidget(Container):
    """Open / Stop, the link, and whether to open it in the web browser."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.link: Any = None
        self.open_button = PushButton(text="Open in neuroglancer")
        self.open_button.tooltip = (
            "serve the selected layers (all layers opened from files if none is selected) on "
            "127.0.0.1 and open neuroglancer on them"
        )
        self.stop_button = PushButton(text="Stop serving", enabled=False)
        self.browser = CheckBox(text="open in the web browser", value=True)
        self.url = LineEdit(label="link")
        self.url.native.setReadOnly(True)
        self.status = Label(value="")
        super().__init__(
            widgets=[self.open_button, self.stop_button, self.browser, self.url, self.status]
        )
        self.open_button.changed.connect(self.open_link)
        self.stop_button.changed.connect(self.stop)
        self.native.destroyed.connect(_stopper(self))

    def _layers(self) -> list[Any]:
        chosen = list(self.viewer.layers.selection) or list(self.viewer.layers)
        layers = [lay for lay in chosen if (lay.metadata or {}).get("source")]
        if not layers:
            raise UserInputError(
                "no layer opened from a file is selected: open an OME-Zarr, zarr, N5, HDF5 or "
                "TIFF volume with napari-connectome first (neuroglancer reads files, not memory)"
            )
        return layers

    def open_link(self, *_: Any) -> str | None:
        """Serve the layers and show the link; returns it (None when refused)."""
        from napari_connectome.viewers.neuroglancer_link import make_link

        self.stop()
        try:
            layers = self._layers()
            segments = [
                int(lay.selected_label)
                for lay in layers
                if hasattr(lay, "selected_label") and int(lay.selected_label) > 0
            ]
            link = make_link(
                [lay.metadata["source"] for lay in layers],
                segments=sorted(set(segments)),
                names=[lay.name for lay in layers],
                discover=False,
            )
            link.start()
        except Exception as exc:  # noqa: BLE001  (a GUI boundary: shown in napari, never a traceback only)
            self.status.value = report_error(exc, "Open in neuroglancer")
            return None
        self.link = link
        self.url.value = link.url
        self.url.native.setCursorPosition(0)  # show where it points: http://127.0.0.1:...
        self.url.tooltip = link.url
        self.stop_button.enabled = True
        served = sum(sv.folder is not None for sv in link.volumes)
        self.status.value = (
            f"serving {len(link.volumes)} layer(s) on 127.0.0.1 ({served} as files); Stop ends it"
        )
        if self.browser.value:
            webbrowser.open(link.url)
        return link.url

    def stop(self, *_: Any) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.stop()
            self.status.value = "stopped serving"
        self.stop_button.enabled = False


def _stopper(widget: OpenInNeuroglancerWidget):
    """A callback for the Qt widget's destruction that does not keep the widget alive."""
    import weakref

    ref = weakref.ref(widget)

    def stop(*_: Any) -> None:
        w = ref()
        if w is not None and w.link is not None:
            w.link.stop()
            w.link = None

    return stop
