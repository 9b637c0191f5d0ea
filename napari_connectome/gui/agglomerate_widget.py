"""Agglomerate from the viewer: a segmentation layer and its EM layer (both opened from files)
into a new agglomerate output, then its proofreading queue.

The same core as ``napari-connectome agglomerate`` (``napari_connectome.agglomerate``): blockwise,
from the files, so what it costs follows the volume's blocks, not the viewer's memory.
It runs in a worker thread with a progress bar and Cancel (agglomerate builds its output in a
hidden sibling and removes it on Cancel: nothing is left behind). When it is done the agglomerated
labels open as a layer, and one button opens the queue of the new output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
)
from qtpy.QtCore import QObject, Signal

from napari_connectome.errors import UserInputError
from napari_connectome.gui._notify import report_error


class AgglomerateCancelled(Exception):
    """Raised from a progress report once Cancel was pressed."""


class _Relay(QObject):
    """Progress from the worker thread to the Qt thread."""

    reported = Signal(int, int, str)


def _sources(viewer: Any, kind: str) -> list[tuple[str, str]]:
    """(layer name, volume) of the layers of ``kind`` that our reader opened from files."""
    out = []
    for layer in viewer.layers:
        source = (layer.metadata or {}).get("source")
        if source and type(layer).__name__.lower() == kind:
            out.append((layer.name, str(source)))
    return out


def default_output(seg_source: str) -> Path:
    """``NAME-agglomerated.ome.zarr`` beside the segmentation's file (never inside it)."""
    path = Path(seg_source.split(":")[0] if ":" in Path(seg_source).name else seg_source)
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".h5", ".hdf5", ".n5"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.parent / f"{name}-agglomerated.ome.zarr"


class AgglomerateWidget(Container):
    """``Plugins > Connectome > Agglomerate``: SEG, EM, output, threshold, optional FFN model."""

    def __init__(self, napari_viewer: Any) -> None:
        from napari_connectome.agglomerate.run import DEFAULT_THRESHOLD

        self.viewer = napari_viewer
        self.worker: Any = None
        self.result: Path | None = None
        self._suggested: Path | None = None
        self._user_seg = self._refreshing = False
        self._cancel = False
        self._relay = _Relay()
        self._relay.reported.connect(self._on_progress)
        self.seg = ComboBox(label="segmentation", choices=self._label_choices)
        self.seg.tooltip = "a labels layer opened from a file (FFN output, a job's, Google's...)"
        self.em = ComboBox(label="EM", choices=self._image_choices)
        self.em.tooltip = "the EM volume the segmentation was made from (same shape)"
        self.output = FileEdit(label="output", mode="w", filter="*.ome.zarr")
        self.output.tooltip = "a new OME-Zarr folder (replacing one is refused)"
        self.threshold = FloatSpinBox(
            label="threshold", value=DEFAULT_THRESHOLD, min=0.0, max=1.0, step=0.05
        )
        self.threshold.tooltip = "merge while the best contact's affinity is at least this"
        self.model = LineEdit(label="resegment with")
        self.model.native.setPlaceholderText("optional: FFN model folder or zoo name")
        self.model.tooltip = (
            "FFN resegmentation of the contacts nearest the threshold (slow on a CPU). Filled "
            "in with the model that made the segmentation where it is that model's "
            "over-segmentation (segment --oversegment): then every contact is scored, nearest "
            "the threshold first; otherwise only those near the threshold. Clear it for the EM "
            "evidence (and FFN claim) alone"
        )
        self._suggested_model = ""
        self.run_button = PushButton(text="Agglomerate")
        self.cancel_button = PushButton(text="Cancel", visible=False)
        self.progress = ProgressBar(visible=False)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.queue_button = PushButton(text="Open in the proofreading queue…", enabled=False)
        super().__init__(
            widgets=[
                self.seg,
                self.em,
                self.output,
                self.threshold,
                self.model,
                self.run_button,
                self.progress,
                self.cancel_button,
                self.status,
                self.queue_button,
            ]
        )
        self.seg.changed.connect(self._seg_picked)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.queue_button.changed.connect(self._choose_project)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh)
        self._refresh()

    # ---- choices ------------------------------------------------------------------------------

    def _label_choices(self, *_: Any) -> list[tuple[str, str]]:
        """Labels layers first; then image layers, since a uint8 segmentation (Google's
        published one) opens as an image."""
        images = [(f"{name} (image layer)", src) for name, src in _sources(self.viewer, "image")]
        return _sources(self.viewer, "labels") + images

    def _image_choices(self, *_: Any) -> list[tuple[str, str]]:
        return _sources(self.viewer, "image")

    def _refresh(self, *_: Any) -> None:
        labels = [src for _, src in _sources(self.viewer, "labels")]
        self._refreshing = True
        try:
            self.seg.reset_choices()
            self.em.reset_choices()
            if labels and (not self._user_seg or self.seg.value not in self.seg.choices):
                self.seg.value = labels[0]  # a labels layer, until the user picks another
        finally:
            self._refreshing = False
        self._suggest_output()
        self._suggest_model()

    def _seg_picked(self, *_: Any) -> None:
        if not self._refreshing:
            self._user_seg = True
        self._suggest_output()
        self._suggest_model()

    def _suggest_model(self) -> None:
        """The model that made the chosen segmentation, unless the user typed one of their own."""
        from napari_connectome.agglomerate.seg_model import recorded_model

        if self.model.value.strip() not in ("", self._suggested_model):
            return
        made = recorded_model(self.seg.value) if self.seg.value else None
        ours = made is not None and made.folder is not None and made.oversegment
        self._suggested_model = str(made.folder) if ours else ""
        self.model.value = self._suggested_model

    def _suggest_output(self, *_: Any) -> None:
        """Beside the chosen segmentation, unless the user typed an output of their own."""
        text = str(self.output.value or "").strip()
        ours = text in ("", ".") or Path(text) == self._suggested
        if self.seg.value and ours:
            self._suggested = default_output(self.seg.value)
            self.output.value = self._suggested

    # ---- running ------------------------------------------------------------------------------

    def run(self, *_: Any) -> None:
        """Agglomerate in a worker thread; the Qt thread stays free."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            self.status.value = "agglomerate is running; wait for it or press Cancel"
            return
        try:
            seg, em, dest, model_text = self._inputs()
        except UserInputError as exc:
            self.status.value = report_error(exc, "Agglomerate")
            return
        threshold = float(self.threshold.value)
        self._cancel = False

        def progress(n: int, total: int, message: str = "") -> None:  # on the worker thread
            if self._cancel:
                raise AgglomerateCancelled()
            self._relay.reported.emit(int(n), int(total), str(message))

        def work() -> Path:
            from napari_connectome.agglomerate import agglomerate
            from napari_connectome.volumes import open_volume

            model, source = None, None
            if model_text:
                from napari_connectome.ffn.checkpoint import load_model
                from napari_connectome.ffn.zoo import get_model

                source = get_model(model_text)
                model = load_model(source)
            return agglomerate(
                open_volume(seg),
                open_volume(em),
                dest,
                threshold=threshold,
                model=model,
                model_name=model_text or None,
                model_source=source,
                progress=progress,
            )

        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._done)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._ended)
        self.worker = worker
        self.queue_button.enabled = False
        self.run_button.enabled = False
        self.cancel_button.visible = True
        self.progress.visible = True
        self.progress.max = 0  # busy until the first report
        self.status.value = f"agglomerating into {dest}…"
        worker.start()

    def _inputs(self) -> tuple[str, str, Path, str]:
        if not self.seg.value:
            raise UserInputError(
                "no segmentation: open a labels volume from a file (File > Open) and choose it"
            )
        if not self.em.value:
            raise UserInputError("no EM: open the EM volume the segmentation was made from")
        text = str(self.output.value or "").strip()
        if text in ("", "."):
            raise UserInputError("no output: choose a new folder, e.g. agg.ome.zarr")
        dest = Path(text).expanduser()
        if dest.exists():
            raise UserInputError(
                f"{dest} already exists: choose a new output folder (this panel never replaces "
                "one; `napari-connectome agglomerate --overwrite` replaces an output of its own)"
            )
        return self.seg.value, self.em.value, dest, self.model.value.strip()

    def cancel(self, *_: Any) -> None:
        """Stop at the next progress report; agglomerate removes its unfinished output."""
        if self.worker is not None:
            self._cancel = True
            self.status.value = "agglomerate: cancelling…"

    def _on_progress(self, n: int, total: int, message: str) -> None:
        if self.worker is None:
            return  # a report queued before the task ended
        self.progress.max = max(total, 0)
        self.progress.value = min(n, total) if total > 0 else 0
        self.status.value = f"{message} {n}/{total}" if total > 0 else message

    def _done(self, dest: Path) -> None:
        import json

        self.result = Path(dest)
        meta = json.loads((self.result / "agglomeration.json").read_text())
        self.viewer.open(str(self.result), plugin="napari-connectome")
        self.status.value = (
            f"wrote {self.result}: {meta['n_segments']} segments from {meta['n_supervoxels']} "
            f"supervoxels ({meta['n_merges']} merges, {meta['n_resegmented']} contacts "
            "resegmented); open its queue to check the likeliest errors"
        )

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, AgglomerateCancelled):
            self.status.value = "agglomerate cancelled; nothing was written"
            return
        self.status.value = report_error(exc, "Agglomerate")

    def _ended(self) -> None:
        self.worker = None
        self.run_button.enabled = True
        self.queue_button.enabled = self.result is not None  # the last output made here
        self.cancel_button.visible = False
        self.progress.visible = False

    # ---- the queue ----------------------------------------------------------------------------

    def _choose_project(self, *_: Any) -> None:
        from qtpy.QtWidgets import QFileDialog

        if self.result is None:
            return
        suggested = str(self.result.with_name(self.result.name.split(".")[0] + "-project"))
        project = QFileDialog.getSaveFileName(
            self.native, "New proofreading project folder", suggested
        )[0]
        if project:
            self.open_queue(project)

    def open_queue(self, project: str | Path) -> Any:
        """Dock the proofreading queue and open the new output's queue with ``project``."""
        from napari_connectome.gui.proofread_queue import ProofreadQueueWidget

        if self.result is None:
            raise UserInputError("agglomerate first: there is no output to open the queue of")
        panel = ProofreadQueueWidget(self.viewer)
        self.viewer.window.add_dock_widget(panel, name="Proofreading queue", area="right")
        panel.open(self.result, project)
        return panel
