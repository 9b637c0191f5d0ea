"""What one block contributes to the region graph, and how contributions add up.

The definitions are those of the proofreading project's serial pass: per fragment (nonzero id) the
voxel count and the bounding box (global coordinates, ``hi`` exclusive); per pair of touching
fragments ``u < v`` the number of voxel faces they share (``area``) and the sum over those faces of
the squared mean image brightness across the face, scaled to [0, 1] (``weight``; 1 per face
without an image: EM membranes are dark, so a contact through a membrane weighs little).

A block is read without any overlap. Faces inside a block are counted from its voxels; faces
between a block and its high-side neighbour along an axis are counted from the block's last plane
and the neighbour's first plane (:func:`plane_edges`), so every face is counted exactly once and no
block decodes its neighbours' chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

DIGEST_BYTES = 16
EDGE_KEYS = ("u", "v", "area", "weight")
STAT_KEYS = ("id", "count", "lo", "hi")


def chunk_digest_of(voxels: np.ndarray) -> bytes | None:
    """Digest of one stored chunk's decoded voxels, ``None`` when it holds only background (0).

    blake2b (16 bytes) of the C-contiguous voxels in the source dtype, so an HDF5 file and a zarr
    copy of it agree; an all-zero chunk counts as absent whether or not its writer stored it.
    """
    if not voxels.any():
        return None
    return hashlib.blake2b(
        np.ascontiguousarray(voxels).tobytes(), digest_size=DIGEST_BYTES
    ).digest()


def image_scale(dtype: np.dtype | None) -> float:
    """Factor that brings image values to [0, 1]: 1/max for integer images, 1 for float ones."""
    if dtype is not None and np.issubdtype(dtype, np.integer):
        return 1.0 / float(np.iinfo(dtype).max)
    return 1.0


def empty_stats() -> dict[str, np.ndarray]:
    z = np.zeros((0, 3), np.int64)
    return {"id": np.zeros(0, np.uint64), "count": np.zeros(0, np.int64), "lo": z, "hi": z.copy()}


def empty_edges() -> dict[str, np.ndarray]:
    return {
        "u": np.zeros(0, np.uint64),
        "v": np.zeros(0, np.uint64),
        "area": np.zeros(0, np.int64),
        "weight": np.zeros(0, np.float64),
    }


def _face_weights(
    img_a: np.ndarray | None, img_b: np.ndarray | None, sel: np.ndarray, scale: float
) -> np.ndarray | None:
    """Squared mean brightness across each selected face (float32, as the serial pass)."""
    if img_a is None or img_b is None:
        return None
    w = (img_a[sel].astype(np.float32) + img_b[sel]) * np.float32(0.5 * scale)
    return w * w


def renumbered_stats(
    labels: np.ndarray, offset: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A block renumbered to local ids 1..n (0 stays 0), the local-to-fragment id table, and its
    fragment statistics (ids, voxel counts, level-0 boxes with ``hi`` exclusive), sorted by id.

    Renumbering once makes counts and boxes a bincount and a ``find_objects`` over small ids.
    """
    import fastremap
    from scipy import ndimage

    ren, mapping = fastremap.renumber(labels, start=1, preserve_zero=True, in_place=False)
    n = len(mapping) - (1 if 0 in mapping else 0)
    local_to_id = np.zeros(n + 1, np.uint64)
    if n == 0:
        return ren, local_to_id, empty_stats()
    for old, new in mapping.items():
        local_to_id[new] = old
    counts = np.bincount(ren.ravel(), minlength=n + 1)[1:].astype(np.int64)
    objs = ndimage.find_objects(ren, max_label=n)
    off = np.asarray(offset, np.int64)
    lo = np.array([[s.start for s in o] for o in objs], np.int64) + off
    hi = np.array([[s.stop for s in o] for o in objs], np.int64) + off
    ids = local_to_id[1:]
    order = np.argsort(ids)
    return (
        ren,
        local_to_id,
        {"id": ids[order], "count": counts[order], "lo": lo[order], "hi": hi[order]},
    )


def block_stats_and_edges(
    labels: np.ndarray,
    offset: Sequence[int],
    image: np.ndarray | None = None,
    scale: float = 1.0,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fragment statistics and the contacts inside one block (``labels`` uint64, no overlap).

    The block is renumbered once to small local ids; counts, boxes and face pairs are computed on
    those, and only the (few) distinct pairs are mapped back to fragment ids.
    """
    ren, local_to_id, stats = renumbered_stats(labels, offset)
    n = len(local_to_id) - 1
    if n == 0:
        return stats, empty_edges()
    width = n + 1
    kdt = np.uint32 if width * width < 2**32 else np.uint64
    runs = [
        _axis_runs(ren, image, ax, kdt(width), scale) for ax in range(3) if labels.shape[ax] > 1
    ]
    edges = _edges_from_runs(runs, kdt(width), local_to_id)
    return stats, edges


def _take(ax: int, start: int, stop: int | None) -> tuple[slice, ...]:
    sl = [slice(None)] * 3
    sl[ax] = slice(start, stop)
    return tuple(sl)


def _axis_runs(ren: np.ndarray, image: np.ndarray | None, ax: int, width, scale: float):
    """Contacts along one axis as runs: consecutive faces (in C order) between the same two
    local ids are one run, so a large contact costs one entry, not one per face. Returns
    (pair keys min * width + max, faces per run, weight per run or None)."""
    a, b = ren[_take(ax, 0, -1)], ren[_take(ax, 1, None)]
    key = (a.astype(width.dtype) * width + b).ravel()
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    lens = np.diff(np.r_[starts, key.size])
    la, lb = key[starts] // width, key[starts] % width
    keep = (la != lb) & (la != 0) & (lb != 0)
    pair = np.minimum(la[keep], lb[keep]) * width + np.maximum(la[keep], lb[keep])
    if image is None:
        return pair, lens[keep], None
    ia, ib = image[_take(ax, 0, -1)], image[_take(ax, 1, None)]
    n_faces = int(lens[keep].sum())
    if n_faces * 4 > key.size:  # most faces are contacts (2D supervoxels along z): all at once
        w = _squared_mean(ia.ravel(), ib.ravel(), scale)
        return pair, lens[keep], np.add.reduceat(w, starts, dtype=np.float64)[keep]
    starts, lens = starts[keep], lens[keep]
    first = np.cumsum(np.r_[0, lens[:-1]])  # where each kept run starts among the kept faces
    faces = np.repeat(starts - first, lens) + np.arange(n_faces)
    w = _squared_mean(ia.ravel()[faces], ib.ravel()[faces], scale)
    return pair, lens, np.add.reduceat(w, first, dtype=np.float64) if n_faces else None


def _squared_mean(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """Squared mean brightness of the two voxels of each face (float32, as the serial pass)."""
    w = (a.astype(np.float32) + b) * np.float32(0.5 * scale)
    w *= w
    return w


def _edges_from_runs(runs, width, local_to_id) -> dict[str, np.ndarray]:
    runs = [r for r in runs if len(r[0])]
    if not runs:
        return empty_edges()
    import fastremap

    key = np.concatenate([r[0] for r in runs])
    uniq, inv = fastremap.unique(key, return_inverse=True)  # several times faster than numpy's
    area = np.bincount(inv, weights=np.concatenate([r[1] for r in runs]), minlength=len(uniq))
    area = area.astype(np.int64)
    if runs[0][2] is None:
        weight = area.astype(np.float64)
    else:
        weight = np.bincount(inv, weights=np.concatenate([r[2] for r in runs]), minlength=len(uniq))
    gu = local_to_id[(uniq // width).astype(np.int64)]
    gv = local_to_id[(uniq % width).astype(np.int64)]
    return sort_edges(
        {"u": np.minimum(gu, gv), "v": np.maximum(gu, gv), "area": area, "weight": weight}
    )


def plane_edges(
    a: np.ndarray,
    b: np.ndarray,
    img_a: np.ndarray | None = None,
    img_b: np.ndarray | None = None,
    scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Contacts across the face between two adjacent planes (a block's last, its neighbour's
    first)."""
    sel = (a != b) & (a != 0) & (b != 0)
    if not sel.any():
        return empty_edges()
    u, v = a[sel].astype(np.uint64), b[sel].astype(np.uint64)
    w = _face_weights(img_a, img_b, sel, scale)
    return reduce_edges(
        {
            "u": np.minimum(u, v),
            "v": np.maximum(u, v),
            "area": np.ones(len(u), np.int64),
            "weight": np.ones(len(u), np.float64) if w is None else w.astype(np.float64),
        }
    )


def sort_edges(e: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort((e["v"], e["u"]))
    return {k: e[k][order] for k in EDGE_KEYS}


def reduce_edges(e: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum duplicate (u, v) pairs; the result is sorted by (u, v)."""
    if len(e["u"]) == 0:
        return empty_edges()
    s = sort_edges(e)
    u, v = s["u"], s["v"]
    start = np.flatnonzero(np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])])
    return {
        "u": u[start],
        "v": v[start],
        "area": np.add.reduceat(s["area"], start),
        "weight": np.add.reduceat(s["weight"], start),
    }


def reduce_stats(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add counts and join boxes of repeated ids; the result is sorted by id."""
    if len(s["id"]) == 0:
        return empty_stats()
    order = np.argsort(s["id"], kind="stable")
    ids = s["id"][order]
    start = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return {
        "id": ids[start],
        "count": np.add.reduceat(s["count"][order], start),
        "lo": np.minimum.reduceat(s["lo"][order], start, axis=0),
        "hi": np.maximum.reduceat(s["hi"][order], start, axis=0),
    }


def concat(parts: Sequence[dict[str, np.ndarray]], keys: Sequence[str]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def merge_parts(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One partial result (statistics and edges) from several."""
    stats = reduce_stats(concat(parts, STAT_KEYS)) if parts else empty_stats()
    edges = reduce_edges(concat(parts, EDGE_KEYS)) if parts else empty_edges()
    return {**stats, **edges}


def adjacency(ids: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR index fragment row -> incident edge indices: (indptr (n + 1), edge (2E))."""
    ends = np.concatenate([np.searchsorted(ids, u), np.searchsorted(ids, v)])
    edge = np.concatenate([np.arange(len(u), dtype=np.int64)] * 2)
    order = np.argsort(ends, kind="stable")
    indptr = np.searchsorted(ends[order], np.arange(len(ids) + 1)).astype(np.int64)
    return indptr, edge[order]
