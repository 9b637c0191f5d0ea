"""Following one submitted job from the viewer: its blocks stream into a local cache zarr and a
labels layer over that cache is refreshed on the Qt thread after each block.

The stream itself is the jobs client's :meth:`~napari_connectome.jobs.client.JobsClient.stream`
(the core's ``stream_job``: it tails the job's progress log, copies each finished chunk, resumes
from its saved offset, ends by the core's one end-of-stream rule), run in a napari thread worker
over the client's shared connection to the cluster. Its per-block callback fires on that worker
thread, so it only emits a Qt signal; the slot on the Qt thread touches the layer. Re-attaching
after a restart reuses the same cache folder, so nothing already copied is fetched again.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Signal

from napari_connectome.jobs.client import JobsClient
from napari_connectome.jobs.events import JobEvent
from napari_connectome.jobs.registry import JobRecord


def cache_root() -> Path:
    """Where stream caches live: ``$NAPARI_CONNECTOME_CONFIG_DIR/stream-cache`` in tests, else the
    user cache dir (a cache can be large and can always be fetched again)."""
    base = os.environ.get("NAPARI_CONNECTOME_CONFIG_DIR")
    if base:
        return Path(base) / "stream-cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-connectome")) / "streams"


def cache_path(record: JobRecord) -> Path:
    return cache_root() / f"{record.id}.ome.zarr"


def cache_level0_transform(cache: Path) -> tuple[list[float], list[float]]:
    """Scale and translation (nm) of level 0, as the job wrote them in the OME metadata."""
    meta = json.loads((cache / "zarr.json").read_text())
    ds = meta["attributes"]["ome"]["multiscales"][0]["datasets"][0]
    scale, translate = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
    for t in ds.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            scale = [float(v) for v in t["scale"]]
        elif t.get("type") == "translation":
            translate = [float(v) for v in t["translation"]]
    return scale, translate


class _Bridge(QObject):
    """Carries stream events from the worker thread to the Qt thread (queued connection)."""

    block = Signal(str, object)  # job id, the block's JobEvent
    ended = Signal(str, str)  # job id, final state (done/failed/cancelled/detached/timeout)
    error = Signal(str, object)  # job id, the exception


class JobStream:
    """One job being streamed into its cache. ``stop()`` detaches (the job keeps running)."""

    def __init__(
        self,
        record: JobRecord,
        client: JobsClient,
        on_block: Callable[[str, JobEvent], None],
        on_end: Callable[[str, str], None],
        on_error: Callable[[str, BaseException], None],
        poll_s: float = 0.5,
    ) -> None:
        self.record = record
        self.client = client
        self.cache = cache_path(record)
        self.poll_s = poll_s
        self.blocks = 0
        self.final: str | None = None
        self.skipped: list[str] = []  # progress lines / files the stream refused, and why
        self._stop = threading.Event()
        self._bridge = _Bridge()
        self._bridge.block.connect(on_block)
        # ``final`` is set on the Qt thread just before the widget hears of the end, so what the
        # widget shows and what ``final`` says never disagree
        self._bridge.ended.connect(self._set_final)
        self._bridge.ended.connect(on_end)
        self._bridge.error.connect(lambda job, exc: self._set_final(job, "error"))
        self._bridge.error.connect(on_error)
        self.worker: Any = None

    @property
    def running(self) -> bool:
        return self.worker is not None and self.final is None

    def start(self) -> None:
        from napari.qt.threading import create_worker

        self.worker = create_worker(self._run, _start_thread=False, _ignore_errors=True)
        self.worker.errored.connect(lambda exc: self._bridge.error.emit(self.record.id, exc))
        self.worker.start()

    def _set_final(self, _job: str, state: str) -> None:
        self.final = state

    def stop(self) -> None:
        """Detach: the stream ends after the line it is handling (the job keeps running)."""
        self._stop.set()

    def _run(self) -> str:
        def block(ev: JobEvent) -> None:
            self.blocks += 1
            self._bridge.block.emit(self.record.id, ev)

        result = self.client.stream(
            self.record, self.cache, on_block=block, stop=self._stop, poll_s=self.poll_s
        )
        self.skipped = result.skipped
        state = "detached" if result.state == "stopped" else result.state
        self._bridge.ended.emit(self.record.id, state)
        return state
