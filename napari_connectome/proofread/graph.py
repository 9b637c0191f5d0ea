"""The supervoxel adjacency graph with boundary evidence, built once at import.

Each edge (u < v) records how many voxel faces the two supervoxels share (``area``) and the sum,
over those faces, of the squared mean image brightness across the face (``weight``): EM membranes
are dark, so a contact through a membrane weighs little. Building it in the same pass as the
statistics makes a split a graph problem over the segment's edges, independent of how large the
segment's bounding box is; only a watershed split recomputes the edges around the one supervoxel
it cuts, and stores before/after so its inverse is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def region_edges(
    block: np.ndarray,
    image: np.ndarray | None,
    core: tuple[int, ...] | None = None,
    touching: tuple[int, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Contacts of a block. With ``core``, only faces whose first voxel lies in ``block[:core]``
    count, so blocks read with a one-voxel overlap on their high side tile without double counts.
    With ``touching``, only contacts of those supervoxels are kept (a local update)."""
    core = tuple(block.shape) if core is None else core
    scale = 1.0
    if image is not None and np.issubdtype(image.dtype, np.integer):
        scale = 1.0 / float(np.iinfo(image.dtype).max)
    us, vs, ws = [], [], []
    for ax in range(3):
        n = min(core[ax], block.shape[ax] - 1)
        if n <= 0:
            continue
        sl_u = [slice(0, c) for c in core]
        sl_u[ax] = slice(0, n)
        sl_v = list(sl_u)
        sl_v[ax] = slice(1, n + 1)
        u, v = block[tuple(sl_u)], block[tuple(sl_v)]
        sel = (u != v) & (u != 0) & (v != 0)
        if touching is not None:
            near = np.zeros(u.shape, bool)
            for t in touching:
                near |= (u == t) | (v == t)
            sel &= near
        u, v = u[sel], v[sel]
        if image is not None:
            w = (image[tuple(sl_u)][sel].astype(np.float32) + image[tuple(sl_v)][sel]) * (
                0.5 * scale
            )
            w = w * w
        else:
            w = np.ones(len(u), np.float32)
        us.append(np.minimum(u, v))
        vs.append(np.maximum(u, v))
        ws.append(w)
    if not us:
        return _empty()
    return reduce_edges(
        np.concatenate(us).astype(np.uint64),
        np.concatenate(vs).astype(np.uint64),
        np.ones(sum(len(x) for x in us), np.int64),
        np.concatenate(ws).astype(np.float64),
    )


def _empty() -> dict[str, np.ndarray]:
    return {
        "u": np.zeros(0, np.uint64),
        "v": np.zeros(0, np.uint64),
        "area": np.zeros(0, np.int64),
        "weight": np.zeros(0, np.float64),
    }


def reduce_edges(u, v, area, weight) -> dict[str, np.ndarray]:
    """Sum duplicate (u, v) pairs."""
    if len(u) == 0:
        return _empty()
    order = np.lexsort((v, u))
    u, v, area, weight = u[order], v[order], area[order], weight[order]
    start = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])]
    idx = np.flatnonzero(start)
    return {
        "u": u[idx],
        "v": v[idx],
        "area": np.add.reduceat(area, idx),
        "weight": np.add.reduceat(weight, idx),
    }


@dataclass
class FragmentGraph:
    u: np.ndarray
    v: np.ndarray
    area: np.ndarray
    weight: np.ndarray
    version: int = 0  # bumped by every change, invalidates the incidence index
    _index: tuple | None = None

    def incident(self, frag_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Indices of the edges touching the fragments at these table rows (``frag_ids`` is the
        table's sorted id array). A CSR index built on first use makes this O(edges touched), so a
        split costs the same on a 1024^3 volume as on a small one."""
        key = (self.version, len(frag_ids))
        if self._index is None or self._index[0] != key:
            ends = np.concatenate(
                [np.searchsorted(frag_ids, self.u), np.searchsorted(frag_ids, self.v)]
            )
            edge = np.concatenate([np.arange(len(self.u)), np.arange(len(self.u))])
            order = np.argsort(ends, kind="stable")
            indptr = np.searchsorted(ends[order], np.arange(len(frag_ids) + 1))
            self._index = (key, indptr, edge[order])
        _, indptr, edge = self._index
        starts, lens = indptr[rows], indptr[rows + 1] - indptr[rows]
        total = int(lens.sum())
        if total == 0:
            return np.zeros(0, np.int64)
        offsets = np.repeat(starts - np.cumsum(np.r_[0, lens[:-1]]), lens) + np.arange(total)
        return np.unique(edge[offsets])

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> FragmentGraph:
        return cls(d["u"], d["v"], d["area"], d["weight"])

    def as_arrays(self, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        m = slice(None) if mask is None else mask
        return {"u": self.u[m], "v": self.v[m], "area": self.area[m], "weight": self.weight[m]}

    def touching(self, ids) -> np.ndarray:
        ids = np.asarray(list(ids), np.uint64)
        return np.isin(self.u, ids) | np.isin(self.v, ids)

    def remove(self, mask: np.ndarray) -> None:
        self.version += 1
        keep = ~mask
        self.u, self.v, self.area, self.weight = (
            self.u[keep],
            self.v[keep],
            self.area[keep],
            self.weight[keep],
        )

    def edges_of(self, table: Any, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Every edge touching these fragments (each edge once)."""
        return self.as_arrays(self.incident(table.frag_ids, table.index_of(ids)))

    def replace(self, ids: Sequence[int], edges: dict[str, np.ndarray]) -> None:
        """Drop every edge touching ``ids`` and add ``edges`` (what a watershed patch does)."""
        self.remove(self.touching(ids))
        self.add(edges)

    def add(self, d: dict[str, np.ndarray]) -> None:
        self.version += 1
        self.u = np.concatenate([self.u, d["u"].astype(np.uint64)])
        self.v = np.concatenate([self.v, d["v"].astype(np.uint64)])
        self.area = np.concatenate([self.area, d["area"].astype(np.int64)])
        self.weight = np.concatenate([self.weight, d["weight"].astype(np.float64)])
