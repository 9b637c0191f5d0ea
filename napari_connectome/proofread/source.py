"""Reading a project's fragments where they live: verified, patched, chunk by chunk.

A project refers to its supervoxels (a local path, an HDF5 dataset, a zarr on a cluster over SSH)
instead of copying them. Every level-0 chunk read is checked once per session against the digest
the blockwise region-graph pass recorded for it, so a source that changed since the project was
made is refused the moment any of its changed voxels would be shown, edited or exported; the
patch overlay (overlay.py) then puts the watershed splits of the log on top. Decoded chunks stay in
a small LRU, so redrawing a plane or planning a split reads each chunk once.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.proofread.overlay import PatchOverlay

CHUNK_CACHE_BYTES = 512 * 2**20


class SourceChanged(UserInputError):
    """The referenced segmentation is not the one the project was made from."""


def chunk_digest(block: np.ndarray) -> bytes:
    """The digest the region-graph pass stores per chunk: blake2b-128 of the decoded voxels."""
    return hashlib.blake2b(np.ascontiguousarray(block).tobytes(), digest_size=16).digest()


def normalise_key(key: Any, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """(3D slices with step 1, axes to drop) for numpy-style keys napari and our code use."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    out, drop = [], []
    for ax, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step != 1:
                raise IndexError("fragment volumes are read with step-1 slices")
            out.append(slice(start, max(start, stop)))
        else:
            i = int(k)
            i = i + n if i < 0 else i
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for axis {ax} with size {n}")
            out.append(slice(i, i + 1))
            drop.append(ax)
    return tuple(out), tuple(drop)


class ChunkCache:
    """Decoded chunks, least recently used out, bounded in bytes (shared by a session's levels)."""

    def __init__(self, limit_bytes: int = CHUNK_CACHE_BYTES) -> None:
        self.limit = int(limit_bytes)
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple, value: np.ndarray) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.limit and len(self._items) > 1:
                _, gone = self._items.popitem(last=False)
                self._bytes -= gone.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class _ArrayLike:
    """numpy conversion and len() for the read-only array-likes below (napari and dask use them)."""

    shape: tuple[int, ...]

    def __getitem__(self, key: Any) -> np.ndarray:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


class VerifiedFragments(_ArrayLike):
    """Level 0 of the referenced fragments as a read-only uint64 array-like.

    ``digests(index)`` gives the recorded digest of a chunk (``None``: the chunk was absent, so it
    must read as all zeros); each chunk is verified on its first read in this session.
    """

    def __init__(
        self,
        data: Any,
        chunks: Sequence[int],
        *,
        source: str,
        digests: Any | None,
        overlay: PatchOverlay,
        cache: ChunkCache,
    ) -> None:
        self.data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.dtype = np.dtype(np.uint64)
        self.ndim = 3
        self.source = source
        self.digests = digests
        self.overlay = overlay
        self.cache = cache
        self.verified: set[tuple[int, ...]] = set()
        self.reads = 0  # chunks decoded from the source (benchmarks and tests read this)

    def _chunk_region(self, idx: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, self.chunks, self.shape)
        )

    def chunk(self, idx: tuple[int, ...]) -> np.ndarray:
        """One decoded, verified level-0 chunk in the source's dtype (before patches)."""
        key = ("l0", idx)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        block = np.asarray(self.data[self._chunk_region(idx)])
        self.reads += 1
        if self.digests is not None and idx not in self.verified:
            self.verify(idx, block)
        self.cache.put(key, block)
        return block

    def verify(self, idx: tuple[int, ...], block: np.ndarray) -> None:
        want = self.digests(idx)
        ok = not block.any() if want is None else chunk_digest(block) == want
        if not ok:
            lo = [s.start for s in self._chunk_region(idx)]
            raise SourceChanged(
                f"the segmentation {self.source} changed since this project was made: the chunk "
                f"at voxel {lo} (chunk {list(idx)}) differs from the one the project's table and "
                "edit log describe. Open the original data again (or make a new project from the "
                "new segmentation); nothing was written."
            )
        self.verified.add(idx)

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """uint64 fragment ids of a region (slices with step 1), patches applied."""
        out = np.zeros(tuple(s.stop - s.start for s in region), np.uint64)
        if out.size == 0:
            return out
        ranges = [range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(region, self.chunks)]
        for idx in itertools.product(*ranges):
            creg = self._chunk_region(idx)
            inter = [
                slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(creg, region)
            ]
            src = tuple(slice(i.start - c.start, i.stop - c.start) for i, c in zip(inter, creg))
            dst = tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(inter, region))
            out[dst] = self.chunk(idx)[src]
        return self.overlay.apply(out, [s.start for s in region])

    def __getitem__(self, key: Any) -> np.ndarray:
        region, drop = normalise_key(key, self.shape)
        block = self.read(region)
        return block.squeeze(axis=drop) if drop else block

    def verify_sample(self, picks: Sequence[tuple[int, ...]]) -> None:
        for idx in picks:
            self.chunk(idx)


class CoarseFragments(_ArrayLike):
    """A coarser pyramid level of the fragments (display and meshes only), patches subsampled.

    Coarse levels are written from level 0 by the same writer, so they are not verified
    separately: a changed level 0 is caught where it is read.
    """

    def __init__(self, data: Any, factor: Sequence[int], overlay: PatchOverlay) -> None:
        self.data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(np.uint64)
        self.ndim = 3
        self.factor = tuple(int(f) for f in factor)
        self.overlay = overlay
        self.chunks = tuple(int(c[0]) for c in getattr(data, "chunks", [[s] for s in self.shape]))

    def __getitem__(self, key: Any) -> np.ndarray:
        region, drop = normalise_key(key, self.shape)
        block = np.asarray(self.data[region]).astype(np.uint64, copy=False)
        block = self.overlay.apply(block, [s.start for s in region], self.factor)
        return block.squeeze(axis=drop) if drop else block


def level_factors(level0_shape: Sequence[int], shape: Sequence[int]) -> tuple[int, int, int]:
    """Integer downsampling factors of a pyramid level (ceil-halving pyramids round up)."""
    return tuple(max(1, round(a / max(b, 1))) for a, b in zip(level0_shape, shape))  # type: ignore[return-value]


def sample_chunks(grid: Sequence[int]) -> list[tuple[int, ...]]:
    """Corners and centre of a chunk grid: verified when a project opens."""
    picks = {
        tuple(g - 1 if b else 0 for g, b in zip(grid, bits))
        for bits in itertools.product((0, 1), repeat=len(grid))
    }
    picks.add(tuple(g // 2 for g in grid))
    return sorted(picks)
