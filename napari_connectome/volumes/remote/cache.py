"""The on-disk chunk cache of remote volumes: bounded, least recently used out.

Layout: ``<cache dir>/chunks/<store>/<zarr key>``, one folder per remote store (named by a hash of
its login and root, :meth:`RemoteLocation.cache_name`). Each cached file keeps two stamps the
filesystem already has room for: its modification time is the *remote* file's (so a later session
can tell a chunk the cluster rewrote from the one cached), and its access time is set on every use
(so the least recently used can go first, also across restarts and on ``noatime`` mounts).

The limit counts every chunk file in all stores together, rounded up to whole 4 KiB blocks (what it
takes on disk); before a file is written, the least recently used ones are removed until it fits,
so the folder never holds more than the limit. One process owns the cache at a time (an exclusive
``flock`` on ``.lock``); a second process reading remote volumes meanwhile reads without a cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

BLOCK = 4096
LOCK_FILE = ".lock"
TMP_SUFFIX = ".partial"


def disk_size(nbytes: int) -> int:
    """What a file of ``nbytes`` takes on disk (whole 4 KiB blocks; an empty file takes none)."""
    return -(-nbytes // BLOCK) * BLOCK


class ChunkCache:
    """Files under ``root`` (relative POSIX names, already checked by the store) kept within
    ``limit_bytes``."""

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = Path(root)
        self.limit_bytes = int(limit_bytes)
        self.evictions = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, int] = OrderedDict()  # name -> bytes on disk, LRU first
        self._total = 0
        self._scanned = False
        self._lock_fd: int | None = None
        self.enabled = self._take_ownership()

    def _take_ownership(self) -> bool:
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.warning(
                "chunk cache %s is in use by another process: remote volumes are read without it",
                self.root,
            )
            return False
        self._lock_fd = fd
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        self.enabled = False

    # -- accounting -------------------------------------------------------------------------------
    def _scan(self) -> None:
        """Learn what earlier sessions left (oldest use first); remove half-written files."""
        if self._scanned:
            return
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath, name)
                if name == LOCK_FILE and path.parent == self.root:
                    continue
                if name.endswith(TMP_SUFFIX):
                    path.unlink(missing_ok=True)
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                rel = path.relative_to(self.root).as_posix()
                found.append((st.st_atime, rel, max(disk_size(st.st_size), st.st_blocks * 512)))
        found.sort()
        self._entries = OrderedDict((rel, size) for _, rel, size in found)
        self._total = sum(self._entries.values())
        self._scanned = True
        self._evict(0, keep=None)

    @property
    def total_bytes(self) -> int:
        """Bytes on disk the cached chunks take now."""
        with self._lock:
            self._scan()
            return self._total

    def _evict(self, room: int, keep: str | None) -> None:
        """Remove least recently used files until ``room`` more bytes fit under the limit."""
        while self._entries and self._total + room > self.limit_bytes:
            name, size = next(iter(self._entries.items()))
            if name == keep:
                self._entries.move_to_end(name)
                if len(self._entries) == 1:
                    break
                continue
            del self._entries[name]
            self._total -= size
            (self.root / name).unlink(missing_ok=True)
            self.evictions += 1

    # -- use --------------------------------------------------------------------------------------
    def get(self, name: str) -> tuple[bytes, float] | None:
        """The cached bytes of ``name`` and the remote modification time they were read at."""
        if not self.enabled:
            return None
        path = self.root / name
        try:
            with open(path, "rb") as f:
                data = f.read()
                st = os.fstat(f.fileno())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            with self._lock:
                if name in self._entries:
                    self._total -= self._entries.pop(name)
            return None
        with contextlib.suppress(OSError):  # evicted meanwhile: the bytes read are still right
            os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
        with self._lock:
            if name in self._entries:
                self._entries.move_to_end(name)
        return data, st.st_mtime

    def put(self, name: str, data: bytes, mtime: float | None) -> bool:
        """Cache ``data`` as ``name``; False when it can never fit (bigger than the limit)."""
        if not self.enabled:
            return False
        need = disk_size(len(data))
        if need > self.limit_bytes:
            return False
        path = self.root / name
        with self._lock:
            self._scan()
            if name in self._entries:
                self._total -= self._entries.pop(name)
            self._evict(need, keep=None)
            self._entries[name] = need  # reserved before writing: a concurrent put counts it
            self._total += need
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}{TMP_SUFFIX}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            now = time.time()
            os.utime(tmp, (now, now if mtime is None else mtime))
            with self._lock:
                if self._entries.get(name) != need:  # evicted (or replaced) while writing
                    tmp.unlink()
                    return False
                os.replace(tmp, path)
                actual = max(need, path.stat().st_blocks * 512)
                if actual > need:
                    self._entries[name] = actual
                    self._total += actual - need
                    self._evict(0, keep=name)
        except OSError as exc:  # a full or read-only cache disk: read on without caching
            tmp.unlink(missing_ok=True)
            with self._lock:
                if self._entries.get(name) == need:
                    del self._entries[name]
                    self._total -= need
            log.warning("cannot cache %s in %s: %s", name, self.root, exc)
            return False
        return True

    def discard(self, name: str) -> None:
        with self._lock:
            size = self._entries.pop(name, None)
            if size is not None:
                self._total -= size
        (self.root / name).unlink(missing_ok=True)

    def clear(self, prefix: str = "") -> None:
        """Remove every cached file whose name starts with ``prefix`` (all of them by default)."""
        with self._lock:
            self._scan()
            for name in [n for n in self._entries if n.startswith(prefix)]:
                self._total -= self._entries.pop(name)
                (self.root / name).unlink(missing_ok=True)


_caches: dict[Path, ChunkCache] = {}
_caches_lock = threading.Lock()


def default_cache() -> ChunkCache:
    """The process's chunk cache: ``<user cache dir>/chunks``, limit ``cache_gb`` from the
    settings file (re-read each call, so a changed limit applies to the next write)."""
    from napari_connectome.settings import cache_dir, chunk_cache_limit_bytes

    root = cache_dir() / "chunks"
    limit = chunk_cache_limit_bytes()
    with _caches_lock:
        cache = _caches.get(root)
        if cache is None:
            cache = _caches[root] = ChunkCache(root, limit)
        elif cache.limit_bytes != limit:
            cache.limit_bytes = limit
            with cache._lock:
                cache._scan()
                cache._evict(0, keep=None)
        return cache


def close_caches() -> None:
    """Release every cache this process owns (another process may take them over)."""
    with _caches_lock:
        caches = list(_caches.values())
        _caches.clear()
    for cache in caches:
        cache.close()
