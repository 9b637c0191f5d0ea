"""The proofreading panel's long tasks: a new project from a layer, and the export.

Both run the functions ``napari-connectome proofread import`` / ``export`` run
(:func:`~napari_connectome.proofread.reference.create_project`, :meth:`ProofreadSession.export`)
in a worker thread, with a progress bar and a Cancel button. Cancel makes the next progress report
raise :class:`TaskCancelled`; both functions build their output under a hidden name and remove it on
any exception, so a cancelled task leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

NO_IMAGE = "(no EM layer)"


class TaskCancelled(Exception):
    """Raised from a progress report once Cancel was pressed."""


def layer_source(layer: Any) -> Any:
    """What a project should refer to for a layer: the file it was read from (our reader records
    it; the project then stores no copy, whatever the size), else the array itself (copied)."""
    source = (getattr(layer, "metadata", None) or {}).get("source")
    if isinstance(source, str) and source:
        return source
    return layer.data[0] if layer.multiscale else layer.data


def layer_voxel_size(layer: Any) -> tuple[float, ...] | None:
    """The layer's voxel size in nm when napari knows its units, else None (the file's own)."""
    units = [str(u) for u in getattr(layer, "units", ())]
    scale = tuple(float(s) for s in layer.scale[-3:])
    if units and all(u in ("nanometer", "nm") for u in units[-3:]):
        return scale
    return None


class ProjectTasks(QWidget):
    """'New project from this layer' and 'Export segmentation', with progress and Cancel."""

    reported = Signal(int, int, str)  # progress from the worker thread

    def __init__(self, panel: Any) -> None:
        super().__init__()
        self.reported.connect(self._on_progress)
        self.panel = panel
        self.viewer = panel.viewer
        self.worker: Any = None
        self.running = ""  # "" or what runs ("create project", "export")
        self._cancel = False
        self.last_result: Path | None = None
        self.last_error = ""
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        grid = QGridLayout()
        grid.addWidget(QLabel("new project from labels:"), 0, 0)
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("the labels layer whose ids become the project's fragments")
        grid.addWidget(self.labels_combo, 0, 1)
        grid.addWidget(QLabel("EM:"), 1, 0)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("optional: the EM image the split's watershed follows")
        grid.addWidget(self.image_combo, 1, 1)
        outer.addLayout(grid)
        row = QHBoxLayout()
        self.new_button = QPushButton("New project from this layer…")
        self.new_button.setToolTip(
            "choose a new folder; the project refers to the layer's file (or copies an in-memory "
            "layer) and computes its region graph, like 'napari-connectome proofread import'"
        )
        self.new_button.clicked.connect(lambda: self.new_project())
        self.export_button = QPushButton("Export segmentation…")
        self.export_button.setToolTip(
            "write the segmentation as it is now (every edit applied) to a new OME-Zarr, like "
            "'napari-connectome proofread export'"
        )
        self.export_button.clicked.connect(lambda: self.export())
        row.addWidget(self.new_button)
        row.addWidget(self.export_button)
        outer.addLayout(row)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        outer.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.fill_layer_choices)
        self.fill_layer_choices()
        self.update_buttons()

    # ---- choices
    # -------------------------------------------------------------------------------------
    def _own_layers(self) -> set[int]:
        tool = self.panel.tool
        if tool is None:
            return set()
        own = [tool.layer, tool.selection_layer, tool.preview_layer, tool.image_layer]
        return {id(lyr) for lyr in own if lyr is not None}

    def fill_layer_choices(self, event: Any = None) -> None:
        from napari.layers import Image, Labels

        own = self._own_layers()
        for combo, kind, extra in (
            (self.labels_combo, Labels, []),
            (self.image_combo, Image, [NO_IMAGE]),
        ):
            current = combo.currentText()
            names = [lyr.name for lyr in self.viewer.layers if isinstance(lyr, kind)]
            names = [n for n in names if id(self.viewer.layers[n]) not in own]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + names)
            if current in extra + names:
                combo.setCurrentText(current)
            elif combo is self.image_combo and len(names):
                combo.setCurrentText(names[0])
            combo.blockSignals(False)
        self.update_buttons()

    def update_buttons(self) -> None:
        busy = bool(self.running)
        self.new_button.setEnabled(not busy and self.labels_combo.count() > 0)
        self.export_button.setEnabled(not busy and self.panel.tool is not None)
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)

    # ---- tasks
    # ---------------------------------------------------------------------------------------
    def new_project(self, folder: str | os.PathLike | None = None) -> None:
        """Make a project from the chosen labels (and EM) layer in a new ``folder``; open it."""
        name = self.labels_combo.currentText()
        if not name:
            self._said("add or open a labels layer first (File > Open); its ids become fragments")
            return
        if folder is None:
            folder, _ = QFileDialog.getSaveFileName(self, "New proofreading project (a new folder)")
            if not folder:
                return
        labels = self.viewer.layers[name]
        image_name = self.image_combo.currentText()
        image = None if image_name in ("", NO_IMAGE) else self.viewer.layers[image_name]
        if image is not None and tuple(image.data.shape[-3:]) != tuple(labels.data.shape[-3:]):
            self._said(
                f"'{image_name}' has shape {tuple(image.data.shape)} but '{name}' has "
                f"{tuple(labels.data.shape)}: choose the EM layer these labels belong to, or none",
                error=True,
            )
            return
        from napari_connectome.proofread import create_project

        args = {
            "fragments": layer_source(labels),
            "image": None if image is None else layer_source(image),
            "voxel_size_nm": layer_voxel_size(labels),
        }

        def work(progress: Callable[..., None]) -> Path:
            return create_project(folder, progress=progress, **args)

        def done(project: Path) -> None:
            labels.visible = False  # the project's segments layer shows these ids from now on
            self.panel.open_project(project)
            self._said(f"project created and opened: {project}")

        self._start("create project", work, done)

    def export(self, dest: str | os.PathLike | None = None) -> None:
        """Write the segmentation as it is now to a new OME-Zarr ``dest``."""
        tool = self.panel.tool
        if tool is None:
            self._said("open a project first", error=True)
            return
        if dest is None:
            dest, _ = QFileDialog.getSaveFileName(
                self, "Export segmentation to a new OME-Zarr", "", "OME-Zarr (*.ome.zarr *.zarr)"
            )
            if not dest:
                return
        session = tool.session

        def work(progress: Callable[..., None]) -> Path:
            return session.export(dest, progress=progress)

        def done(out: Path) -> None:
            self._said(f"segmentation exported to {out}")

        tool.busy = "the export"  # the export reads the table and fragments: edits wait
        self._start("export", work, done)

    def _start(self, what: str, work: Callable[..., Any], done: Callable[[Any], None]) -> None:
        from napari.qt.threading import create_worker

        if self.running:
            self._said(f"{self.running} is running; wait for it or press Cancel", error=True)
            return
        self._cancel = False
        self.last_error = ""
        self.last_result = None

        def progress(n: int, total: int, message: str = "") -> None:  # on the worker thread
            if self._cancel:
                raise TaskCancelled()
            self.reported.emit(int(n), int(total), str(message))  # queued to the Qt thread

        worker = create_worker(work, progress, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._finished(what, result, done))
        worker.errored.connect(lambda exc: self._failed(what, exc))
        worker.finished.connect(self._ended)
        self.worker = worker
        self.running = what
        self.progress.setRange(0, 0)  # busy until the first report says how much there is
        self._said(f"{what}: starting…")
        self.update_buttons()
        worker.start()

    def _on_progress(self, n: int, total: int, message: str) -> None:
        if not self.running:
            return  # a report queued before the task ended
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(n, total))
        self.status.setText(f"{self.running}: {message} {n}/{total}".replace("  ", " "))

    def cancel(self) -> None:
        if self.running:
            self._cancel = True
            self.status.setText(f"{self.running}: cancelling…")

    def _finished(self, what: str, result: Any, done: Callable[[Any], None]) -> None:
        self.last_result = Path(result)
        self._release()
        done(result)

    def _failed(self, what: str, exc: BaseException) -> None:
        from napari_connectome.gui._notify import report_error

        self._release()
        if isinstance(exc, TaskCancelled):
            self.last_error = f"{what} cancelled; nothing was written"
            self._said(self.last_error)
            return
        self.last_error = report_error(exc, what)
        self.status.setText(self.last_error)

    def _release(self) -> None:
        tool = self.panel.tool
        if tool is not None:
            tool.busy = ""

    def _ended(self) -> None:
        self.running = ""
        self.worker = None
        self.update_buttons()

    def _said(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        if error:
            from napari.utils.notifications import show_warning

            show_warning(text)
