"""A least-recently-used cache of meshes bounded by bytes.

Keys say what a mesh was made from (segment, a digest of its fragment ids, the source's version,
the options), so an edit that changes a segment's fragments changes its key: nothing has to be
invalidated by hand, and segments an edit did not touch keep their meshes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from napari_connectome.meshing.build import Mesh

DEFAULT_CACHE_BYTES = 256 << 20


def ids_digest(ids: np.ndarray) -> str:
    """A short digest of a set of fragment ids (order does not matter)."""
    arr = np.unique(np.asarray(ids, np.uint64))
    return hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()


class MeshCache:
    """Thread-safe (meshes are built in worker threads); the newest entry always stays, even when
    it alone exceeds the bound."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, Mesh] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Mesh | None:
        with self._lock:
            mesh = self._items.get(key)
            if mesh is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return mesh

    def put(self, key: Hashable, mesh: Mesh) -> None:
        with self._lock:
            self._items[key] = mesh
            self._items.move_to_end(key)
            while len(self._items) > 1 and self.nbytes > self.max_bytes:
                self._items.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
