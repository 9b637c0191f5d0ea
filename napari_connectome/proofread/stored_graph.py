"""The fragment graph of a project by reference: the stored region graph plus the edits' edges.

The region-graph store (napari_connectome.graph) holds every contact of the volume on disk with a
per-fragment index, so a split reads only the edges of the segment it cuts. A watershed patch
replaces the edges of the one fragment it cuts; those replacements live here in memory (rebuilt
from the log on open), so an edit changes only its own edges and never rewrites a global array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

KEYS = ("u", "v", "area", "weight")


def _empty() -> dict[str, np.ndarray]:
    from napari_connectome.graph.kernels import empty_edges

    return empty_edges()


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["u"])]
    if not parts:
        return _empty()
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in KEYS}


def _select(d: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(d[k])[mask] for k in KEYS}


def _unique_pairs(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if len(d["u"]) < 2:
        return d
    pairs = np.stack([d["u"], d["v"]], axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    return _select(d, np.sort(first))


class StoredGraph:
    """Edges from a :class:`napari_connectome.graph.RegionGraph`, with replacements on top."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.ids = store.fragment_ids
        self.replaced: set[int] = set()  # fragments whose stored edges no longer count
        self.delta = _empty()  # edges added by patches (each touches a replaced fragment)
        self.version = 0

    def _stored(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        ids = np.asarray(ids, np.uint64)
        if len(self.ids) == 0 or len(ids) == 0:
            return _empty()
        rows = np.searchsorted(self.ids, ids)
        inside = rows < len(self.ids)
        rows, ids = rows[inside], ids[inside]
        rows = rows[self.ids[rows] == ids]  # fragments a patch created are not in the store
        if len(rows) == 0:
            return _empty()
        d = self.store.edges_of(np.unique(rows))
        if self.replaced:
            gone = np.fromiter(self.replaced, np.uint64)
            d = _select(d, ~(np.isin(d["u"], gone) | np.isin(d["v"], gone)))
        return d

    def edges_of(self, table: Any, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Every edge touching these fragments, each once."""
        ids = np.asarray(ids, np.uint64)
        parts = [self._stored(ids)]
        if len(self.delta["u"]):
            near = np.isin(self.delta["u"], ids) | np.isin(self.delta["v"], ids)
            parts.append(_select(self.delta, near))
        return _unique_pairs(_concat(parts))

    def replace(self, ids: Sequence[int], edges: dict[str, np.ndarray]) -> None:
        """Drop every edge touching ``ids`` and add ``edges``: O(the edges of ``ids``)."""
        ids_arr = np.asarray(list(ids), np.uint64)
        self.replaced.update(int(i) for i in ids_arr)
        keep = ~(np.isin(self.delta["u"], ids_arr) | np.isin(self.delta["v"], ids_arr))
        self.delta = _concat([_select(self.delta, keep), {k: edges[k] for k in KEYS}])
        self.delta = {
            "u": self.delta["u"].astype(np.uint64),
            "v": self.delta["v"].astype(np.uint64),
            "area": self.delta["area"].astype(np.int64),
            "weight": self.delta["weight"].astype(np.float64),
        }
        self.version += 1
