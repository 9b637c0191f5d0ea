"""Remote (``ssh://``) volumes in the viewer: a dropped connection is a notification, never a
crash, and the layers redraw once it is back.

The viewer's stores read a chunk that cannot be fetched as the fill value (``on_unavailable=
"fill"``) and remember it; the session tells us (from its own thread, so through a queued Qt
signal) when the connection was lost and when it came back. A timer on the Qt thread asks, every
few seconds while chunks are missing, for a new login in a worker, and refreshes the layers of
that store once it succeeds, so what was missing fills in by itself.
"""

from __future__ import annotations

import weakref
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal, Slot

RETRY_MS = 3000
# napari's dask cache keeps every chunk it computed under the task's key, which never changes, so
# a chunk drawn empty would stay empty after a refresh. Layers whose chunks change while shown (a
# running job's output) opt out of it; after an outage the cache is cleared before the redraw.
REMOTE_LAYER_OPTIONS = {"cache": False}


class _Watcher(QObject):
    told = Signal(str, str)  # event ("lost" | "restored"), message
    start_timer = Signal()  # queued to the watcher's (Qt main) thread, where the timer must start

    def __init__(self) -> None:
        super().__init__()
        self._stores: weakref.WeakSet[Any] = weakref.WeakSet()
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._reconnecting: set[int] = set()
        self.told.connect(self._notify)
        self._timer = QTimer(self)
        self._timer.setInterval(RETRY_MS)
        self._timer.timeout.connect(self.tick)
        self.start_timer.connect(self._timer.start)

    def watch(self, store: Any) -> None:
        self._stores.add(store)
        session = store.session
        if session not in self._sessions:
            self._sessions.add(session)
            session.listeners.append(self.told.emit)  # emitted on the SFTP thread: queued

    @Slot(str, str)  # a real slot: PyQt's proxy for a plain method would stay in the thread
    def _notify(self, event: str, message: str) -> None:  # that connected it
        from napari.utils.notifications import show_info, show_warning

        if event == "lost":
            show_warning(
                f"Remote volume: {message}. Chunks not cached show as empty until it is back."
            )
        else:
            show_info(f"Remote volume: {message}; missing chunks are read again.")

    @Slot()
    def tick(self) -> None:
        """Redraw stores that missed chunks once their cluster is reachable again."""
        for store in list(self._stores):
            if not store.missed:
                continue
            session = store.session
            if session.connected:
                self._redraw(store)
            elif id(session) not in self._reconnecting and session.available:
                self._reconnect(session)

    def _reconnect(self, session: Any) -> None:
        from napari.qt.threading import create_worker

        self._reconnecting.add(id(session))
        worker = create_worker(session.reconnect, _start_thread=False, _ignore_errors=True)
        worker.finished.connect(lambda: self._reconnecting.discard(id(session)))
        worker.returned.connect(lambda ok: self.tick() if ok else None)
        worker.start()

    def _redraw(self, store: Any) -> None:
        import napari
        from napari.utils import resize_dask_cache

        store.missed.clear()
        resize_dask_cache().cache.clear()  # it holds the chunks drawn empty during the outage
        viewer = napari.current_viewer()
        if viewer is None:
            return
        prefix = store.location.label
        for layer in viewer.layers:
            source = str((layer.metadata or {}).get("source", ""))
            if source == prefix or source.startswith(prefix + "/"):
                layer.refresh()


_watcher: _Watcher | None = None


def _gone(obj: QObject) -> bool:
    try:
        obj.objectName()
    except RuntimeError:  # its C++ object was deleted (e.g. with an earlier QApplication)
        return True
    return False


def watcher() -> _Watcher:
    """The one watcher, living on the Qt main thread: a store may first be opened from a worker
    thread (a job's on-demand view), and a QObject made there would never get the queued
    notifications nor run its timer once that thread ends."""
    global _watcher
    if _watcher is None or _gone(_watcher):
        from qtpy.QtCore import QCoreApplication

        w = _Watcher()
        app = QCoreApplication.instance()
        if app is not None and w.thread() is not app.thread():
            w.moveToThread(app.thread())
        w.start_timer.emit()
        _watcher = w
    return _watcher


def open_viewer_store(source: Any) -> Any:
    """A store for showing ``source`` (an ``ssh://`` text or a RemoteLocation): chunks it cannot
    fetch read as empty (and are fetched again when the connection is back) instead of raising
    into napari's drawing."""
    from napari_connectome.volumes.remote import open_store

    store = open_store(source, on_unavailable="fill")
    watcher().watch(store)
    return store
