"""Volumes on a cluster, read over SFTP on demand through a bounded local chunk cache.

``open_volume("ssh://PROFILE/abs/path/seg.ome.zarr")`` returns the same multiscale
:class:`~napari_connectome.volumes.Volume` as a local path; only the chunks a read crosses travel.
:func:`open_store` gives the store itself (to refresh it, invalidate chunks a job rewrote, or read
the job's ``progress.jsonl``). One SFTP login per cluster is shared by every store in the process.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Literal

from napari_connectome.volumes.remote.cache import ChunkCache, close_caches, default_cache
from napari_connectome.volumes.remote.connection import RemoteUnavailableError, SFTPSession
from napari_connectome.volumes.remote.store import (
    DEFAULT_ABSENT_TTL_S,
    SFTPStore,
    UntrustedKey,
    check_key,
)
from napari_connectome.volumes.remote.url import (
    RemoteLocation,
    is_ssh_url,
    location_for,
    parse_ssh_url,
)

__all__ = [
    "ChunkCache",
    "RemoteLocation",
    "RemoteUnavailableError",
    "SFTPSession",
    "SFTPStore",
    "UntrustedKey",
    "check_key",
    "close_all",
    "default_cache",
    "is_ssh_url",
    "location_for",
    "open_store",
    "open_stores",
    "parse_ssh_url",
    "session_for",
]

_sessions: dict[str, SFTPSession] = {}
_sessions_lock = threading.Lock()
_stores: weakref.WeakSet[SFTPStore] = weakref.WeakSet()


def session_for(location: RemoteLocation) -> SFTPSession:
    """The process's login to ``location``'s cluster (made now, host key verified, when there is
    none yet; a refusal raises :class:`~napari_connectome.errors.UserInputError`)."""
    key = location.ssh.model_dump_json()
    with _sessions_lock:
        session = _sessions.get(key)
        if session is not None:
            return session
        session = SFTPSession(location.ssh, location.address)
        try:
            session.connect()
        except BaseException:
            session.close()
            raise
        _sessions[key] = session
        return session


def open_store(
    location: RemoteLocation | str,
    *,
    cache: ChunkCache | Literal["default"] | None = "default",
    absent_ttl_s: float = DEFAULT_ABSENT_TTL_S,
    on_unavailable: Literal["raise", "fill"] = "raise",
) -> SFTPStore:
    """A read-only zarr store over ``location`` (an ``ssh://`` SOURCE or a parsed location).

    ``cache``: the user's chunk cache (default), another :class:`ChunkCache`, or None (no disk
    cache). ``on_unavailable``: what a chunk that is not cached does while the cluster cannot be
    reached: raise :class:`RemoteUnavailableError`, or read as the fill value (a viewer's choice).
    """
    if isinstance(location, str):
        location = parse_ssh_url(location)
    session = session_for(location)
    store = SFTPStore(
        location,
        session,
        default_cache() if cache == "default" else cache,
        absent_ttl_s=absent_ttl_s,
        on_unavailable=on_unavailable,
    )
    _stores.add(store)
    return store


def _restore_store(
    location: RemoteLocation, absent_ttl_s: float, on_unavailable: Literal["raise", "fill"]
) -> SFTPStore:
    """A store unpickled in another process (a Dask worker): its own login, the user's cache when
    this process can own it (``ChunkCache.enabled``), else none."""
    return open_store(location, absent_ttl_s=absent_ttl_s, on_unavailable=on_unavailable)


def open_stores() -> list[SFTPStore]:
    """Every remote store still in use in this process (what a viewer watches)."""
    return list(_stores)


def close_all() -> None:
    """Log out of every cluster and release the chunk cache (at exit; tests start the next one
    from scratch)."""
    with _sessions_lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for session in sessions:
        session.close()
    close_caches()


atexit.register(close_all)
