"""The proofreading queue panel: the agglomeration's decisions most likely wrong, one by one.

Open an agglomerate output (``napari-connectome agglomerate``) and a new project folder; the
panel makes a proofreading project over its supervoxels (the agglomeration applied as merge
edits; in a worker thread with a progress bar and Cancel, nothing left behind on Cancel), then
shows one item at a time: the EM and the segments in a box around the contact, the
two sides in their own layer, the view centred on the contact, and why the item is in the queue
(its chance of being wrong and what fixing it is worth). ``Y`` accepts the rule's decision,
``N`` rejects it (an ordinary edit in the project's log: a merge, or a min-cut split along the
merge), ``K`` skips it for later, ``U`` undoes the last decision (and its edit). The panel shows
items done / left and what the queue expects to gain. What a step costs follows the box, never the
volume (napari_connectome.agglomerate.queue).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QSize, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_connectome.gui._camera import camera
from napari_connectome.gui._layers import spatial_axis_labels

BOX = 48  # voxels per axis shown around a contact
PANEL_WIDTH = 420  # pixels: the widest the panel asks to be
KEYS = {"y": "accept", "n": "reject", "k": "skip", "u": "undo"}


def _two_sides_colors() -> Any:
    """Magenta for the first side, cyan for the second, yellow for the rest of a merged segment
    (where the two contact supervoxels are one segment), nothing elsewhere."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(
        color_dict={None: "transparent", 0: "transparent", 1: "magenta", 2: "cyan", 3: "yellow"}
    )


class QueueOpenCancelled(Exception):
    """Raised from a progress report once Cancel was pressed."""


class ProofreadQueueWidget(QWidget):
    """Dock widget: ``Plugins > Connectome > Proofreading queue``."""

    reported = Signal(int, int, str)  # progress from the worker thread

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.reported.connect(self._on_progress)
        self.worker: Any = None
        self._cancel = False
        self.viewer = napari_viewer
        self.queue: Any = None
        self.session: Any = None
        self.index: int | None = None
        self.made: list[tuple[int, bool]] = []  # (item, whether it edited), newest last
        self._calibration: str | None = None  # the calibration file the queue opened with
        layout = QVBoxLayout(self)
        self.open_button = QPushButton("Open agglomerate output…")
        self.open_button.clicked.connect(self._choose)
        layout.addWidget(self.open_button)
        row = QHBoxLayout()
        row.addWidget(QLabel("Calibration:"))
        self.calibration = QLineEdit()
        self.calibration.setPlaceholderText("the shipped one")
        self.calibration.setToolTip(
            "how the queue ranks: leave empty for the shipped calibration, or give the JSON "
            "that `napari-connectome calibrate-queue` fitted on ground truth of your data"
        )
        row.addWidget(self.calibration, 1)
        browse = QPushButton("…")
        browse.setToolTip("choose a calibration file")
        browse.clicked.connect(self._choose_calibration)
        row.addWidget(browse)
        layout.addLayout(row)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.item_label = QLabel("no queue open")
        self.item_label.setWordWrap(True)
        layout.addWidget(self.item_label)
        row = QHBoxLayout()
        self.buttons = {}
        for key, verdict in KEYS.items():
            b = QPushButton(f"{verdict} ({key.upper()})")
            b.clicked.connect(lambda _=False, v=verdict: self.decide(v))
            b.setEnabled(False)
            row.addWidget(b)
            self.buttons[verdict] = b
        layout.addLayout(row)
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        layout.addWidget(self.progress_label)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        layout.addStretch(1)
        for key, verdict in KEYS.items():
            self.viewer.bind_key(key, self._key(verdict), overwrite=True)

    def sizeHint(self) -> Any:
        """At most PANEL_WIDTH wide: the item's text wraps, and the canvas keeps the window."""
        hint = super().sizeHint()
        return QSize(min(hint.width(), PANEL_WIDTH), hint.height())

    def _key(self, verdict: str):
        def handler(_viewer: Any) -> None:
            self.decide(verdict)

        handler.__doc__ = f"proofreading queue: {verdict}"
        return handler

    # ---- opening -------------------------------------------------------------------------------

    def _choose(self) -> None:
        dest = QFileDialog.getExistingDirectory(self, "Agglomerate output (DEST of agglomerate)")
        if not dest:
            return
        project = QFileDialog.getSaveFileName(self, "New proofreading project folder")[0]
        if project:
            self.open(dest, project, self.calibration.text().strip() or None)

    def _choose_calibration(self) -> None:
        path = QFileDialog.getOpenFileName(
            self, "Queue calibration (from calibrate-queue)", "", "JSON (*.json)"
        )[0]
        if path:
            self.calibration.setText(path)

    def open(
        self, dest: str | Path, project: str | Path, calibration: str | Path | None = None
    ) -> None:
        """Open the queue of ``dest`` with the project ``project`` (made if it does not exist),
        ranked by ``calibration`` (a file :mod:`~napari_connectome.agglomerate.calibrate`
        wrote; None: the shipped one).

        The queue's tables are read, and a new project is built with the agglomeration applied,
        in a worker thread with progress and Cancel; the project then opens on the Qt thread
        (its edit log belongs to that thread)."""
        from napari.qt.threading import create_worker

        from napari_connectome.agglomerate.queue import (
            ProofreadQueue,
            build_queue_project,
            check_queue_project,
        )

        if self.worker is not None:
            self.message.setText("the queue is opening; wait for it or press Cancel")
            return
        dest, project = Path(dest), Path(project)
        self._cancel = False
        ranked_by = None if calibration is None else Path(calibration).name

        def progress(n: int, total: int, message: str = "") -> None:  # on the worker thread
            if self._cancel:
                raise QueueOpenCancelled()
            self.reported.emit(int(n), int(total), str(message))  # queued to the Qt thread

        def work() -> Any:
            cal = None
            if calibration is not None:
                from napari_connectome.agglomerate.calibrate import load_calibration

                progress(0, 0, "reading the calibration")
                cal = load_calibration(calibration)
            progress(0, 0, "reading the scores")
            queue = ProofreadQueue(dest, calibration=cal)
            if project.exists():  # refused unless made from this output (its edits go there)
                check_queue_project(dest, project)
            else:
                build_queue_project(dest, project, progress=progress)
            progress(1, 1, "opening the project")
            return queue

        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda queue: self._opened(queue, project, ranked_by))
        worker.errored.connect(self._open_failed)
        worker.finished.connect(self._open_ended)
        self.worker = worker
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.open_button.setEnabled(False)
        self.message.setText("opening the queue…")
        worker.start()

    def cancel(self) -> None:
        """Stop opening: the worker stops at its next progress report; nothing stays behind."""
        if self.worker is not None:
            self._cancel = True
            self.message.setText("opening the queue: cancelling…")

    def _on_progress(self, n: int, total: int, message: str) -> None:
        if self.worker is None:
            return  # a report queued before the task ended
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(n, total))
        self.message.setText(f"opening the queue: {message} {n}/{total}")

    def _opened(self, queue: Any, project: Path, ranked_by: str | None) -> None:
        from napari_connectome.errors import UserInputError
        from napari_connectome.gui._notify import report_error
        from napari_connectome.proofread.session import ProofreadSession

        try:
            session = ProofreadSession.open(project)
        except UserInputError as exc:
            self.message.setText(report_error(exc, "open the queue"))
            return
        self.close_session()
        self.queue, self.session, self.made = queue, session, []
        self._calibration = ranked_by
        for b in self.buttons.values():
            b.setEnabled(True)
        self.message.setText(
            f"queue of {len(queue.items)} items ({self._ranked_by()}), project {project}"
        )
        try:
            self.show_item(queue.next_index())
        except UserInputError as exc:  # the project does not hold this queue's contacts
            self.close_session()
            self.queue, self.index = None, None
            for b in self.buttons.values():
                b.setEnabled(False)
            self.message.setText(report_error(exc, "open the queue"))

    def _open_failed(self, exc: BaseException) -> None:
        from napari_connectome.gui._notify import report_error

        if isinstance(exc, QueueOpenCancelled):
            self.message.setText("opening the queue cancelled; no project was written")
            return
        self.message.setText(report_error(exc, "open the queue"))

    def _open_ended(self) -> None:
        self.worker = None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.open_button.setEnabled(True)

    def close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def closeEvent(self, event: Any) -> None:
        self.cancel()
        self.close_session()
        super().closeEvent(event)

    # ---- one item ------------------------------------------------------------------------------

    def _box(self, point: tuple[int, ...]) -> tuple[slice, ...]:
        shape = np.asarray(self.session.shape)
        lo = np.clip(np.asarray(point) - BOX // 2, 0, np.maximum(shape - BOX, 0))
        hi = np.minimum(lo + BOX, shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def show_item(self, index: int | None) -> None:
        """Show item ``index``: EM, segments and the two sides in a box, the view on the contact."""
        self.index = index
        self._update_progress()
        if index is None:
            self.item_label.setText("queue finished: every item decided")
            return
        item = self.queue.items[index]
        box = self._box(item.point)
        offset = np.array([s.start for s in box], float)
        scale = np.asarray(self.session.voxel_size_nm, float)
        labels = np.asarray(self.session.labels(box))
        pa, pb = self.queue.sides(self.session, item)
        sa, sb = self.session.segment_at(pa), self.session.segment_at(pb)
        pair = np.zeros(labels.shape, np.uint8)
        if sa != sb:  # two segments: each in its colour
            pair[labels == sa] = 1
            pair[labels == sb] = 2
        else:  # one segment: the contact's two supervoxels in theirs, the rest of it apart
            frags = np.asarray(self.session.fragments[box])
            pair[labels == sa] = 3
            pair[frags == item.a] = 1
            pair[frags == item.b] = 2
        em = None if self.session.image is None else np.asarray(self.session.image[box])
        kw = {"scale": scale, "translate": offset * scale, "units": "nm"}
        kw["axis_labels"] = spatial_axis_labels(None, 3)  # the slider says z, not -3
        self._layer("queue: EM", em, "image", kw)
        self._layer("queue: segments", labels, "labels", {**kw, "opacity": 0.8})
        self.viewer.layers["queue: segments"].contour = 1  # outlines: the EM shows through
        self._layer("queue: the two sides", pair, "labels", {**kw, "opacity": 0.4})
        self.viewer.layers["queue: the two sides"].colormap = _two_sides_colors()
        self._contact_marker(item.point, kw)
        world = np.asarray(item.point, float) * scale
        for ax in range(3):
            self.viewer.dims.set_point(ax, world[ax])
        cam = camera(self.viewer)  # napari >= 0.9: viewer.scene.camera
        # the box's centre: near a face of the volume the box is shifted inside, and the ring
        # marks the contact wherever it lies in it
        cam.center = tuple((np.array([(b.start + b.stop) / 2 for b in box]) - 0.5) * scale)
        size = getattr(self.viewer, "_canvas_size", None) or (600, 600)  # frame the box
        cam.zoom = 0.9 * min(size) / (BOX * float(scale[1:].max()))
        what = "merge to check" if item.kind == "merged" else "pair left apart"
        self.item_label.setText(
            f"item {index + 1} of {len(self.queue.items)} ({what}): "
            f"{self.queue.describe(index)}; "
            + (f"both now in segment {sa}" if sa == sb else f"now in segments {sa} and {sb}")
        )

    def _contact_marker(self, point: tuple[int, ...], kw: dict) -> None:
        """A ring on the contact voxel, so the place the decision is about is visible."""
        name = "queue: contact"
        where = np.asarray([point], float)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.scale = kw["scale"]
            layer.data = where
        else:
            layer = self.viewer.add_points(
                where,
                name=name,
                scale=kw["scale"],
                units="nm",
                axis_labels=kw["axis_labels"],
                size=4,
                face_color="transparent",
                border_color="white",
                border_width=0.2,
            )
        self.viewer.layers.selection.active = self.viewer.layers["queue: segments"]  # no paint tool

    def _layer(self, name: str, data: Any, kind: str, kw: dict) -> None:
        if data is None:
            return
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.scale, layer.translate = kw["scale"], kw["translate"]
            return
        add = self.viewer.add_image if kind == "image" else self.viewer.add_labels
        add(data, name=name, **kw)

    def _update_progress(self) -> None:
        q = self.queue
        if q is None:
            return
        self.progress_label.setText(
            f"done {q.done}, left {q.left}; expected among the items left: "
            f"{q.expected_errors():.1f} wrong decisions, {1000 * q.expected_gain():.0f} mbit of VI "
            f"({self._ranked_by()})"
        )

    def _ranked_by(self) -> str:
        """Which calibration the order and the expectations come from."""
        if self._calibration is None:
            from napari_connectome.agglomerate.queue import FFN_CALIBRATION

            if self.queue is not None and self.queue.calibration == FFN_CALIBRATION:
                return "shipped calibration for our FFN's output"
            return "shipped calibration for other segmentations"
        return f"calibration {self._calibration}"

    # ---- decisions ------------------------------------------------------------------------------

    def decide(self, verdict: str) -> None:
        from napari_connectome.gui._notify import report_error

        if self.queue is None or self.session is None:
            return
        try:
            if verdict == "undo":
                self._undo()
                return
            if self.index is None:
                return
            op = self.queue.decide(self.session, self.index, verdict)
        except Exception as exc:  # noqa: BLE001  (a GUI boundary: an edit the session refused, shown)
            self.message.setText(report_error(exc, verdict))
            return
        if verdict != "skip":
            self.made.append((self.index, op is not None))
        self.message.setText("" if op is None else f"edit: {op.describe()}")
        self.show_item(self.queue.next_index(self.index))

    def _undo(self) -> None:
        if not self.made:
            self.message.setText("no decision to undo")
            return
        index, edited = self.made.pop()
        if edited:
            self.session.undo()
        self.queue.undo_decision(index)
        self.message.setText(f"undid the decision on item {index + 1}")
        self.show_item(index)
