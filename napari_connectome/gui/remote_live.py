"""A job's result viewed where the job writes it ("view remotely (on demand)"), redrawn as its
blocks land; the other choice, the full mirror, is :mod:`.remote_stream`.

The output opens like any volume (on a cluster: ``ssh://`` through the chunk cache, so only the
chunks on screen travel, at every pyramid level). A timer on the Qt thread polls the job's
``progress.jsonl`` in a worker (:class:`~napari_connectome.jobs.live.OutputFollower`: each block
line makes the store forget that chunk), then refreshes the layer once per poll that saw blocks.
A job that has not created its output yet is opened at a later tick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.registry import JobRecord


def open_job_output(record: JobRecord) -> tuple[Any, Any]:
    """Worker thread: the follower (polled once, so it starts at the log's end) and the volume of
    a job's output, on the cluster or on this machine."""
    from napari_connectome.jobs.live import OutputFollower
    from napari_connectome.volumes import open_volume

    if record.ssh:
        from napari_connectome.gui.remote_volumes import open_viewer_store
        from napari_connectome.volumes.remote import location_for

        location = location_for(record.ssh, record.output)
        store = open_viewer_store(location)
        follower = OutputFollower.for_store(store)
        follower.poll()
        return follower, open_volume(location.source(), store=store)
    follower = OutputFollower.for_folder(record.output)
    follower.poll()
    return follower, open_volume(record.output)


class LiveView:
    """One job's output as a labels layer in ``viewer``, kept current while the job runs."""

    def __init__(
        self,
        viewer: Any,
        record: JobRecord,
        *,
        hint: Any = None,
        on_message: Callable[[str], None] | None = None,
        interval_ms: int = 1000,
    ) -> None:
        from qtpy.QtCore import QTimer

        self.viewer = viewer
        self.record = record
        self.hint = hint  # the image layer the job was submitted from (its scale wins)
        self.on_message = on_message or (lambda _m: None)
        self.follower: Any = None
        self.layer: Any = None
        self.blocks = 0
        self.final: str | None = None
        self._busy = False
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.tick)

    @property
    def running(self) -> bool:
        return self.final is None

    def start(self) -> None:
        self._timer.start()
        self.tick()

    def stop(self, state: str = "detached") -> None:
        self._timer.stop()
        if self.final is None:
            self.final = state

    def tick(self) -> None:
        """Open the output if it is not open yet, else poll the job's log (in a worker)."""
        if self._busy or self.final is not None:
            return
        from napari.qt.threading import create_worker

        if self.follower is None:
            worker = create_worker(
                open_job_output, self.record, _start_thread=False, _ignore_errors=True
            )
            worker.returned.connect(self._opened)
        else:
            worker = create_worker(self.follower.poll, _start_thread=False, _ignore_errors=True)
            worker.returned.connect(self._polled)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._idle)
        self._busy = True
        worker.start()

    def _idle(self) -> None:
        self._busy = False

    def _failed(self, exc: BaseException) -> None:
        if self.follower is None and isinstance(exc, UserInputError):
            # the job has not written its output yet (pending): open it at a later tick
            self.on_message(f"{self.record.id}: waiting for the output ({exc})")
            return
        from napari_connectome.gui._notify import report_error

        self.on_message(report_error(exc, f"Viewing {self.record.id}"))

    def _opened(self, result: tuple[Any, Any]) -> None:
        from napari_connectome.gui._reader import volume_layer_data
        from napari_connectome.gui.remote_volumes import REMOTE_LAYER_OPTIONS

        if self.final is not None:
            return
        self.follower, volume = result
        data, meta, _kind = volume_layer_data(
            volume, name=f"{self.record.name} [{self.record.id[-4:]}]"
        )
        if self.hint is not None and self.hint in self.viewer.layers:
            meta["scale"], meta["translate"] = list(self.hint.scale), list(self.hint.translate)
        meta["metadata"]["job"] = self.record.id
        meta.update(REMOTE_LAYER_OPTIONS)  # chunks change while the job runs
        self.layer = self.viewer.add_labels(data, **meta)
        self.on_message(f"{self.record.id}: viewing the output where the job writes it")
        self._after(None)

    def _polled(self, update: Any) -> None:
        self._after(update)

    def _after(self, update: Any) -> None:
        if self.layer is None:
            return
        if update is not None and (update.blocks or update.done):
            self.blocks += update.blocks
            if self.layer in self.viewer.layers:
                self.layer.refresh()
            self.on_message(f"{self.record.id}: {self.blocks} blocks landed")
        if self.follower.done or (update is not None and update.failed):
            self.stop("done" if self.follower.done else "failed")
            self.on_message(f"{self.record.id}: job {self.final}; the layer shows its output")
