"""A read-only zarr v3 store over SFTP: chunks are read on demand and kept in the chunk cache.

What is read, and when:
- metadata (``zarr.json``, ``.zarray``, ``.zgroup``, ``.zattrs``) is read once and kept in memory
  until :meth:`SFTPStore.refresh`;
- a chunk is read over SFTP the first time it is asked for, then from the disk cache. The first
  use of a cached chunk in a session compares the remote file's size and modification time with
  the cached copy's (one ``stat``), so a chunk the cluster rewrote since is read again;
- a chunk that does not exist remotely reads as the fill value, and is asked for again after
  ``absent_ttl_s`` seconds (a running job writes it later), or at once after ``refresh()`` or
  ``invalidate()``.

Every key is checked before it names a file, remote or local: relative, no empty, ``.`` or ``..``
parts, no backslash or NUL, so nothing reaches outside the store's root on the cluster or its
folder in the cache.

When the cluster cannot be reached, cached chunks are still served. A chunk that is not cached
raises :class:`RemoteUnavailableError` (``on_unavailable="raise"``, the default), or reads as the
fill value and is remembered in ``missed`` (``"fill"``: a viewer that redraws once reconnected).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.remote.connection import RemoteUnavailableError

if TYPE_CHECKING:
    from napari_connectome.volumes.remote.cache import ChunkCache
    from napari_connectome.volumes.remote.connection import SFTPSession
    from napari_connectome.volumes.remote.url import RemoteLocation

METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
DEFAULT_ABSENT_TTL_S = 10.0


class UntrustedKey(UserInputError):
    """A key that would name a file outside the store (``..``, an absolute path, ...)."""


def check_key(key: object, *, allow_empty: bool = False) -> str:
    """``key`` if it is a plain relative POSIX path inside the store, else :class:`UntrustedKey`."""
    if isinstance(key, str) and key == "" and allow_empty:
        return key
    ok = isinstance(key, str) and key and not key.startswith("/") and len(key) < 4096
    if ok:
        ok = "\\" not in key and "\x00" not in key
        ok = ok and all(p not in ("", ".", "..") for p in key.split("/"))
    if not ok:
        raise UntrustedKey(
            f"refusing key {key!r}: a key must be a relative path inside the store, without "
            "'.', '..' or empty parts (the metadata or a progress line naming it is damaged or "
            "was tampered with)"
        )
    return key


def _slice(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    raise TypeError(f"unexpected byte range {byte_range!r}")


def _missing_errors() -> tuple[type[BaseException], ...]:
    import asyncssh

    return (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath, asyncssh.SFTPNotADirectory)


class SFTPStore(Store):
    """The zarr store rooted at ``location.root`` on the cluster ``session`` is logged in to."""

    supports_writes = False
    supports_deletes = False
    supports_listing = True
    # one stored chunk per dask chunk (see read_zarr.dask_chunk_bytes): napari reads a view with
    # dask's slice fusion off, so a bigger dask chunk would fetch chunks that are not on screen
    dask_chunk_bytes = 0

    def __init__(
        self,
        location: RemoteLocation,
        session: SFTPSession,
        cache: ChunkCache | None,
        *,
        absent_ttl_s: float = DEFAULT_ABSENT_TTL_S,
        on_unavailable: Literal["raise", "fill"] = "raise",
    ) -> None:
        super().__init__(read_only=True)
        if on_unavailable not in ("raise", "fill"):
            raise ValueError(f"on_unavailable must be 'raise' or 'fill', not {on_unavailable!r}")
        self.location = location
        self.session = session
        self.cache = cache
        self.absent_ttl_s = absent_ttl_s
        self.on_unavailable = on_unavailable
        # reads: chunk files read over SFTP; hits: chunks served from the cache; stats: cached
        # chunks checked against the remote file; absent: chunks the cluster does not have;
        # metadata: metadata files read; lists: directory listings
        self.counts: Counter[str] = Counter()
        self.missed: set[str] = set()  # chunks shown as fill because the cluster was unreachable
        self._meta: dict[str, bytes | None] = {}
        self._absent: dict[str, float] = {}
        self._checked: set[str] = set()  # cached chunks known to match the remote this session
        self._prefix = location.cache_name()

    # -- identity ---------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, SFTPStore) and other.location.url == self.location.url

    def __hash__(self) -> int:
        return hash(self.location.url)

    def __str__(self) -> str:
        return self.location.label

    def __repr__(self) -> str:
        return f"SFTPStore({self.location.label!r})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled (for Dask worker processes) as where it reads and how, never its connection:
        a worker logs in itself, and reads without the chunk cache another process owns."""
        from napari_connectome.volumes.remote import _restore_store

        return (_restore_store, (self.location, self.absent_ttl_s, self.on_unavailable))

    def with_read_only(self, read_only: bool = False) -> SFTPStore:
        if not read_only:
            raise UserInputError(f"{self}: remote volumes are opened read-only")
        return self

    def _path(self, key: str) -> str:
        return str(PurePosixPath(self.location.root, key)) if key else self.location.root

    # -- control ----------------------------------------------------------------------------------
    def refresh(self, *, chunks: bool = False) -> None:
        """Read metadata again and ask again for chunks that were absent (``chunks=True``: also
        compare every cached chunk with the remote file again at its next use)."""
        self._meta.clear()
        self._absent.clear()
        self.missed.clear()
        if chunks:
            self._checked.clear()

    def invalidate(self, keys: Iterable[str]) -> None:
        """Forget ``keys`` (chunks the cluster just wrote): their next read goes to the cluster."""
        for key in keys:
            key = check_key(key)
            self._absent.pop(key, None)
            self._checked.discard(key)
            self.missed.discard(key)
            if self.cache is not None:
                self.cache.discard(f"{self._prefix}/{key}")

    def read_file(self, key: str, offset: int = 0) -> bytes | None:
        """Bytes of a file in the store from ``offset`` (e.g. a job's ``progress.jsonl``), never
        cached; None when it does not exist. Called from a thread, not from an event loop."""
        key = check_key(key)
        path = self._path(key)

        async def op(sftp: Any) -> bytes | None:
            try:
                async with sftp.open(path, "rb") as f:
                    return await f.read(-1, offset)
            except _missing_errors():
                return None

        return self.session.run(op)

    # -- reading ----------------------------------------------------------------------------------
    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        key = check_key(key)
        if PurePosixPath(key).name in METADATA_NAMES:
            data = await self._metadata(key)
        else:
            data = await self._chunk(key)
        return None if data is None else prototype.buffer.from_bytes(_slice(data, byte_range))

    async def _metadata(self, key: str) -> bytes | None:
        if key in self._meta:
            return self._meta[key]
        found = await self.session.arun(self._reader(key))
        self.counts["metadata"] += 1
        data = None if found is None else found[0]
        self._meta[key] = data
        return data

    def _reader(self, key: str) -> Any:
        path, label = self._path(key), self.location.source(key)

        async def op(sftp: Any) -> tuple[bytes, float] | None:
            import asyncssh

            try:
                async with sftp.open(path, "rb") as f:
                    attrs = await f.stat()
                    data = await f.read(attrs.size if attrs.size is not None else -1, 0)
            except _missing_errors():
                return None
            except asyncssh.SFTPPermissionDenied:
                raise UserInputError(
                    f"{label}: permission denied on the cluster; ask the owner to make it readable"
                ) from None
            except asyncssh.SFTPFileIsADirectory:
                return None
            return data, float(attrs.mtime or 0)

        return op

    async def _chunk(self, key: str) -> bytes | None:
        name = f"{self._prefix}/{key}"
        hit = await asyncio.to_thread(self.cache.get, name) if self.cache is not None else None
        if hit is not None:
            data, mtime = hit
            if key in self._checked:
                self.counts["hits"] += 1
                return data
            try:
                attrs = await self.session.arun(self._stat(key))
            except RemoteUnavailableError:
                self.counts["hits"] += 1
                return data  # offline: the cached copy is the best there is
            self.counts["stats"] += 1
            if attrs is not None and attrs == (len(data), int(mtime)):
                self._checked.add(key)
                self.counts["hits"] += 1
                return data
            await asyncio.to_thread(self.cache.discard, name)  # rewritten or gone remotely
        seen = self._absent.get(key)
        if seen is not None and time.monotonic() - seen < self.absent_ttl_s:
            return None
        try:
            found = await self.session.arun(self._reader(key))
        except RemoteUnavailableError:
            if self.on_unavailable == "raise":
                raise
            self.missed.add(key)
            return None
        if found is None:
            self.counts["absent"] += 1
            self._absent[key] = time.monotonic()
            return None
        self.counts["reads"] += 1
        self._absent.pop(key, None)
        self.missed.discard(key)
        data, mtime = found
        if self.cache is not None:
            await asyncio.to_thread(self.cache.put, name, data, mtime)
            self._checked.add(key)
        return data

    def _stat(self, key: str) -> Any:
        path = self._path(key)

        async def op(sftp: Any) -> tuple[int, int] | None:
            try:
                attrs = await sftp.stat(path)
            except _missing_errors():
                return None
            return int(attrs.size or 0), int(attrs.mtime or 0)

        return op

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        key = check_key(key)
        if PurePosixPath(key).name in METADATA_NAMES:
            return await self._metadata(key) is not None
        return await self.session.arun(self._stat(key)) is not None

    async def getsize(self, key: str) -> int:
        found = await self.session.arun(self._stat(check_key(key)))
        if found is None:
            raise FileNotFoundError(self.location.source(key))
        return found[0]

    # -- listing ----------------------------------------------------------------------------------
    async def _names(self, prefix: str) -> list[tuple[str, bool]]:
        """(name, is_dir) of the entries of folder ``prefix``; names that are not plain are
        skipped (a remote listing is not trusted either)."""
        import stat

        path = self._path(prefix.strip("/"))

        async def op(sftp: Any) -> list[tuple[str, bool]]:
            try:
                entries = await sftp.readdir(path)
            except _missing_errors():
                return []
            out = []
            for entry in entries:
                name = entry.filename
                if not isinstance(name, str) or name in (".", "..") or "/" in name:
                    continue
                if "\\" in name or "\x00" in name:
                    continue
                is_dir = entry.attrs.permissions is not None and stat.S_ISDIR(
                    entry.attrs.permissions
                )
                out.append((name, is_dir))
            return sorted(out)

        self.counts["lists"] += 1
        return await self.session.arun(op)

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = check_key(prefix.strip("/"), allow_empty=True)
        for name, _ in await self._names(prefix):
            yield name

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        start = prefix.rstrip("/")
        check_key(start, allow_empty=True)
        folders = [start]
        while folders:
            folder = folders.pop()
            for name, is_dir in await self._names(folder):
                key = f"{folder}/{name}" if folder else name
                if is_dir:
                    folders.append(key)
                elif key.startswith(prefix):
                    yield key

    async def list(self) -> AsyncIterator[str]:
        async for key in self.list_prefix(""):
            yield key

    # -- writing: never ---------------------------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()
