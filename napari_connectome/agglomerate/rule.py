"""The agglomeration rule: mean-affinity hierarchical merging with a union-find.

Each edge of the supervoxel graph carries an affinity in [0, 1] and the number of voxel faces
it stands for. Two clusters touch through all the edges between their members; their affinity
is the face-weighted mean of those edges' affinities (like waterz's mean-affinity
agglomeration). The pair of touching clusters with the highest affinity merges first, while it
is at least ``threshold``; merging adds up the two clusters' edges to every neighbour. Ties are
broken by the smaller pair of ids, and a cluster is named by its smallest supervoxel id, so the
result depends only on the graph and the threshold (never on block order or threads).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


class UnionFind:
    """Disjoint sets over arbitrary integer ids; the root of a set is its smallest id."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            nxt = self.parent.get(x, x)
            self.parent[x] = root
            x = nxt
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        return lo


@dataclass
class Agglomeration:
    """The result: ``segment_of`` maps supervoxel ids (``ids``) to segment ids; ``merges`` lists
    every merge in order as (cluster a, cluster b, affinity) (the proofreading queue reads it);
    ``edge_segment_pair`` is, per input edge, whether it ended inside one segment."""

    ids: np.ndarray
    segment_of: np.ndarray
    merges: np.ndarray  # (n, 3) float64: a, b, affinity
    merged_edge: np.ndarray  # bool per input edge
    threshold: float


def mean_affinity_agglomerate(
    u: np.ndarray,
    v: np.ndarray,
    affinity: np.ndarray,
    area: np.ndarray,
    ids: np.ndarray,
    threshold: float,
) -> Agglomeration:
    """Merge by the rule above; ``ids``: every supervoxel (also ones without edges)."""
    uf = UnionFind()
    adj: dict[int, dict[int, list[float]]] = {}
    for a, b, s, n in zip(u.tolist(), v.tolist(), affinity.tolist(), area.tolist()):
        if a == b:
            continue
        e = adj.setdefault(a, {}).get(b)
        if e is None:
            e = [0.0, 0.0]
            adj[a][b] = e
            adj.setdefault(b, {})[a] = e
        e[0] += n
        e[1] += s * n
    heap = [(-e[1] / e[0], a, b) for a, nb in adj.items() for b, e in nb.items() if a < b]
    heapq.heapify(heap)
    merges: list[tuple[int, int, float]] = []
    while heap:
        neg, a, b = heapq.heappop(heap)
        score = -neg
        if score < threshold:
            break
        e = adj.get(a, {}).get(b)
        if e is None or e[1] / e[0] != score:
            continue  # stale: one side merged since, its new affinity was pushed then
        root = uf.union(a, b)
        gone = b if root == a else a
        merges.append((a, b, score))
        for c, f in adj.pop(gone).items():
            del adj[c][gone]
            if c == root:
                continue
            g = adj[root].get(c)
            if g is None:
                adj[root][c] = adj[c][root] = f
                g = f
            else:
                g[0] += f[0]
                g[1] += f[1]
            heapq.heappush(heap, (-g[1] / g[0], min(root, c), max(root, c)))
    ids = np.asarray(ids, np.uint64)
    seg = np.array([uf.find(int(i)) for i in ids.tolist()], np.uint64)
    su = np.array([uf.find(int(i)) for i in u.tolist()], np.uint64)
    sv = np.array([uf.find(int(i)) for i in v.tolist()], np.uint64)
    return Agglomeration(
        ids=ids,
        segment_of=seg,
        merges=np.asarray(merges, np.float64).reshape(-1, 3),
        merged_edge=su == sv,
        threshold=float(threshold),
    )
