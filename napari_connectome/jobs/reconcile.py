"""Reconciliation: match segments across block faces, then one global lookup table.

Fragment ids are global and compact: block k's local id i becomes ``offset[k] + i`` where ``offset``
is the running sum of segment counts in block order. Matched pairs are edges of a graph over
fragments; its connected components (scipy) are the final objects, numbered 1.. in the order of
their smallest fragment, so the table is the same whatever order blocks finished in.
"""

from __future__ import annotations

import numpy as np

# Bumped whenever matching or relabelling changes what they produce, so that a job resumed by a
# newer version neither reuses face matches cached by an older one nor keeps blocks it relabelled.
RECONCILE_VERSION = 2


def match_overlap(
    a: np.ndarray,
    b: np.ndarray,
    min_fraction: float,
    min_voxels: int,
    rule: str = "contained",
) -> np.ndarray:
    """Pairs (id in a, id in b) of segments that are the same object in a region both labelled.

    A pair needs at least ``min_voxels`` shared voxels, and shared voxels of at least
    ``min_fraction`` of the *smaller* segment's voxels in the region (``rule="contained"``: one
    segment lies inside the other there) or of *each* segment's (``rule="mutual"``: one partner
    at most when ``min_fraction > 0.5``).

    "contained" is what FFN blocks need: a neuron whose branches meet outside one block's read
    region is one segment in the neighbour but several in that block, and each branch must join it.
    """
    if rule not in ("contained", "mutual"):
        raise ValueError(f"unknown matching rule {rule!r}: use 'contained' or 'mutual'")
    a = a.ravel().astype(np.uint64)
    b = b.ravel().astype(np.uint64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), np.uint64)
    ids_a, size_a = np.unique(a[a > 0], return_counts=True)
    ids_b, size_b = np.unique(b[b > 0], return_counts=True)
    if a.max(initial=0) >= 2**32 or b.max(initial=0) >= 2**32:
        pairs, shared = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
        return _keep(pairs, shared, ids_a, size_a, ids_b, size_b, min_fraction, min_voxels, rule)
    # one 64-bit key per voxel pair (local ids are < 2**32): a 1-D unique is far faster than axis=0
    keys, shared = np.unique((a[both] << np.uint64(32)) | b[both], return_counts=True)
    pairs = np.stack([keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF)], axis=1)
    return _keep(pairs, shared, ids_a, size_a, ids_b, size_b, min_fraction, min_voxels, rule)


def _keep(pairs, shared, ids_a, size_a, ids_b, size_b, min_fraction, min_voxels, rule):
    na = size_a[np.searchsorted(ids_a, pairs[:, 0])]
    nb = size_b[np.searchsorted(ids_b, pairs[:, 1])]
    need = np.minimum(na, nb) if rule == "contained" else np.maximum(na, nb)
    keep = (shared >= min_voxels) & (shared >= min_fraction * need)
    return pairs[keep]


def fill_holes(
    final: np.ndarray,
    write_start: tuple[int, int, int],
    neighbours: list[tuple[tuple[int, int, int], np.ndarray, np.ndarray]],
    allowed: np.ndarray | None = None,
    claims: list[np.ndarray | None] | None = None,
    claim: np.ndarray | None = None,
) -> int:
    """Give voxels a block left unlabelled the final id a neighbour gave them in its context
    (and, with ``claims`` (each neighbour's FFN claim of its read region, or None) and
    ``claim`` (the block's, write region), that neighbour's FFN claim there).

    ``final``: the block's write region, final ids, filled in place. ``neighbours``: (read start,
    local labels of the read region, table local -> final id) in a fixed order; the first neighbour
    that labelled a voxel wins, so the result does not depend on completion order. ``allowed``:
    sorted final ids a hole may take (None: any). FFN drops or never reaches some voxels that a
    neighbour, growing the same neuron from elsewhere, did reach; on FIB-25 this takes the job
    from ARAND 0.028 to 0.022 against one canvas, and VI against the ground truth from 1.86 to
    1.81. Returns the number of voxels filled.
    """
    from napari_connectome.volumes.box import Box

    filled = 0
    write = Box.from_shape(final.shape, write_start)
    for k, (read_start, labels, table) in enumerate(neighbours):
        read = Box.from_shape(labels.shape, read_start)
        both = write.intersect(read)
        if both.empty:
            continue
        mine = final[both.slices_in(write)]
        theirs = labels[both.slices_in(read)]
        hole = (mine == 0) & (theirs > 0)
        ids = table[theirs[hole]]
        if allowed is not None:
            keep = np.isin(ids, allowed)
            hole[hole] = keep
            ids = ids[keep]
        mine[hole] = ids
        filled += int(hole.sum())
        if claim is not None and claims is not None and claims[k] is not None:
            claim[both.slices_in(write)][hole] = claims[k][both.slices_in(read)][hole]
    return filled


def owned_ids(final: np.ndarray, neighbours_owned: list[np.ndarray]) -> np.ndarray:
    """Sorted final ids that a hole may take: objects with voxels in this block's write region
    (``final``) or in a neighbour's (its write region through its table). A segment a neighbour
    saw only in its context and matched to nothing is neither, and would be a stray id."""
    ids = np.unique(np.concatenate([np.unique(a).ravel() for a in [final, *neighbours_owned]]))
    return ids[ids > 0]


def block_offsets(counts: list[int]) -> np.ndarray:
    """Global fragment id of local id 0 of each block (local ids start at 1)."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.uint64)[:-1]]).astype(np.uint64)


def global_lut(n_fragments: int, edges: np.ndarray) -> np.ndarray:
    """Table fragment id (0..n) -> final id (0 stays 0), from matched fragment pairs."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = n_fragments + 1
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # number components by their smallest member. scipy already does (it labels while scanning
    # nodes in order); check that in O(n) and only sort when it does not hold.
    running = np.maximum.accumulate(comp)
    if running[0] == 0 and np.all(np.diff(running) <= 1):
        return comp.astype(np.uint64)
    _, first = np.unique(comp, return_index=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    lut = rank[comp].astype(np.uint64)  # fragment 0 (background) is the smallest member of rank 0
    return lut
