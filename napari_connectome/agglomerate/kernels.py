"""What one block contributes to the merge scores: filled supervoxels and contact evidence.

Two kernels, each on one block read with a halo, each returning only the block's own core:

* :func:`fill_block` gives the unsegmented voxels (0) of a segmentation to supervoxels: a seeded
  watershed on the smoothed EM (membranes are dark, so basins meet on membranes), seeded by the
  existing segments and by one new seed per blob of unsegmented voxels farther than
  ``seed_distance`` from every segment (an unsegmented neuron becomes its own supervoxel instead
  of being flooded from its neighbours). FFN leaves ~11% of FIB-25 unsegmented; see
  docs/agglomeration.md for what each choice measured.
* :func:`block_contacts` lists, per pair of touching supervoxels ``u < v``, the number of voxel
  faces between them, the sum and a histogram of the faces' boundary evidence (the lower EM rank
  of the two voxels: 0 = darkest voxel of the volume, 1 = brightest), and the position of the
  brightest face (where resegmentation looks). A face is counted by the block holding its low
  voxel, so every face counts once. With the segmentation's FFN claim (``SEG/ffn_claim``, written
  by ``segment``), also per pair the faces with FFN-segmented voxels within ``CLAIM_REACH`` on
  both sides (``claim_faces``) and those of them where a later object claimed a voxel there
  with probability >= 0.5 (``claim_hits``): FFN's own evidence that the two are one neurite.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIGMA = (
    1.0  # EM smoothing (finest voxels) before ranking and watershed: one noisy voxel is no membrane
)
RANK_BINS = 16  # histogram of face evidence per pair: percentiles reduce exactly across blocks
CONTACT_KEYS = (
    "u", "v", "area", "rank_sum", "hist", "point", "point_rank", "point_inside", "claim_faces",
    "claim_hits",
)  # fmt: skip
CLAIM_HIT = 128  # claim (x 255) at or above which a face counts as claimed across: p >= 0.5
CLAIM_REACH = 2  # voxels from a face within which FFN's segmented voxels and claim count for it


def smoothed(em: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    from scipy import ndimage

    sigma = [SIGMA / s for s in spacing]
    return ndimage.gaussian_filter(em.astype(np.float32), sigma, mode="nearest")


def fill_block(
    seg: np.ndarray,
    em: np.ndarray,
    core: tuple[slice, ...],
    *,
    seed_distance: float,
    new_id_base: int,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """The block's core with every 0 voxel given to a supervoxel (uint64).

    ``seg``/``em``: the block with its halo; ``core``: where the block lies inside them. New
    seeds get ids ``new_id_base + 1, + 2, ...`` (the caller gives each block its own range).
    ``seed_distance`` counts finest voxels (``spacing``:
    :func:`napari_connectome.volumes.units.relative_spacing`).
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    seg = seg.astype(np.uint64, copy=False)
    zero = seg == 0
    if not zero[core].any():
        return np.ascontiguousarray(seg[core])
    markers = seg.copy()
    if zero.all():
        far = zero
    else:
        far = ndimage.distance_transform_edt(zero, sampling=spacing) > seed_distance
    blobs, n = ndimage.label(far)
    if n:
        markers[far] = blobs[far].astype(np.uint64) + np.uint64(new_id_base)
    # watershed wants signed labels; ids above 2**63 do not occur (checked by the caller)
    filled = watershed(-smoothed(em, spacing), markers=markers.astype(np.int64))
    return np.ascontiguousarray(filled[core].astype(np.uint64))


def claim_near(
    claim: np.ndarray, segmented: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """The FFN claim and "FFN segmented here" spread ``CLAIM_REACH`` finest voxels (at least
    one voxel on each axis): FFN leaves the membrane between its objects unsegmented, so after
    the fill most faces between two supervoxels lie in filled voxels, next to the FFN voxels
    that carry the claim."""
    from scipy import ndimage

    size = tuple(2 * max(1, round(CLAIM_REACH / s)) + 1 for s in spacing)
    return (
        ndimage.maximum_filter(claim, size=size, mode="nearest"),
        ndimage.maximum_filter(segmented, size=size, mode="nearest"),
    )


def rank_of(
    em: np.ndarray,
    cdf: np.ndarray,
    lo: float,
    step: float,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Each voxel's rank in the volume's intensity distribution (``cdf`` over bins of ``step``
    from ``lo``), after smoothing: dataset-independent evidence in [0, 1]."""
    s = smoothed(em, spacing)
    idx = np.clip(((s - lo) / step).astype(np.int64), 0, len(cdf) - 1)
    return cdf[idx].astype(np.float32)


def block_contacts(
    labels: np.ndarray,
    rank: np.ndarray,
    n_low: Sequence[int],
    offset: Sequence[int],
    claim: np.ndarray | None = None,
    segmented: np.ndarray | None = None,
    shape: Sequence[int] | None = None,
    margin: int = 0,
) -> dict[str, np.ndarray]:
    """Contacts whose low voxel lies in the first ``n_low`` planes of each axis of ``labels``
    (the block plus one plane of its high neighbours); ``offset``: global position of
    ``labels[0, 0, 0]``. ``claim`` (uint8) and ``segmented`` (bool: the input segmentation held
    the voxel, it was not filled), both like ``labels``, give the FFN claim counts. Each
    contact's point is its brightest face at least ``margin`` voxels inside the volume
    (``shape``), or its brightest face where it has none (resegmentation grows a box around the
    point: at the volume's border no seed has a whole field of view)."""
    us, vs, rs, pos, cf, ch = [], [], [], [], [], []
    for ax in range(3):
        n = min(int(n_low[ax]), labels.shape[ax] - 1)
        if n <= 0:
            continue
        sl_a = [slice(None)] * 3
        sl_b = [slice(None)] * 3
        sl_a[ax], sl_b[ax] = slice(0, n), slice(1, n + 1)
        for other in range(3):
            if other != ax:  # the other axes: only the block itself, not the extra plane
                sl_a[other] = sl_b[other] = slice(0, int(n_low[other]))
        a, b = labels[tuple(sl_a)], labels[tuple(sl_b)]
        sel = (a != b) & (a != 0) & (b != 0)
        if not sel.any():
            continue
        ra, rb = rank[tuple(sl_a)][sel], rank[tuple(sl_b)][sel]
        us.append(np.minimum(a[sel], b[sel]))
        vs.append(np.maximum(a[sel], b[sel]))
        rs.append(np.minimum(ra, rb))
        pos.append(np.argwhere(sel) + np.asarray(offset, np.int64))
        if claim is not None and segmented is not None:
            both = segmented[tuple(sl_a)][sel] & segmented[tuple(sl_b)][sel]
            top = np.maximum(claim[tuple(sl_a)][sel], claim[tuple(sl_b)][sel])
            cf.append(both)
            ch.append(both & (top >= CLAIM_HIT))
        else:
            cf.append(np.zeros(int(sel.sum()), bool))
            ch.append(cf[-1])
    if not us:
        return empty_contacts()
    u, v = np.concatenate(us).astype(np.uint64), np.concatenate(vs).astype(np.uint64)
    r = np.concatenate(rs).astype(np.float64)
    p = np.concatenate(pos)
    faces, hits = np.concatenate(cf), np.concatenate(ch)
    inside = np.ones(len(u), bool)
    if margin > 0 and shape is not None:
        inside = np.all((p >= margin) & (p < np.asarray(shape, np.int64) - margin), axis=1)
    order = np.lexsort((-r, ~inside, v, u))  # per pair, the brightest face inside first
    u, v, r, p, inside = u[order], v[order], r[order], p[order], inside[order]
    faces, hits = faces[order].astype(np.int64), hits[order].astype(np.int64)
    start = np.flatnonzero(np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])])
    pair = np.repeat(np.arange(len(start)), np.diff(np.r_[start, len(u)]))
    bins = np.minimum((r * RANK_BINS).astype(np.int64), RANK_BINS - 1)
    hist = np.zeros((len(start), RANK_BINS), np.int64)
    np.add.at(hist, (pair, bins), 1)
    return {
        "u": u[start],
        "v": v[start],
        "area": np.diff(np.r_[start, len(u)]).astype(np.int64),
        "rank_sum": np.add.reduceat(r, start),
        "hist": hist,
        "point": p[start],
        "point_rank": r[start],
        "point_inside": inside[start],
        "claim_faces": np.add.reduceat(faces, start),
        "claim_hits": np.add.reduceat(hits, start),
    }


def empty_contacts() -> dict[str, np.ndarray]:
    return {
        "u": np.zeros(0, np.uint64),
        "v": np.zeros(0, np.uint64),
        "area": np.zeros(0, np.int64),
        "rank_sum": np.zeros(0, np.float64),
        "hist": np.zeros((0, RANK_BINS), np.int64),
        "point": np.zeros((0, 3), np.int64),
        "point_rank": np.zeros(0, np.float64),
        "point_inside": np.zeros(0, bool),
        "claim_faces": np.zeros(0, np.int64),
        "claim_hits": np.zeros(0, np.int64),
    }


def reduce_contacts(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One table from several blocks': sums per pair, the point chosen as in each block (the
    brightest face inside the margin first); sorted by (u, v)."""
    parts = [p for p in parts if len(p["u"])]
    if not parts:
        return empty_contacts()
    c = {k: np.concatenate([p[k] for p in parts]) for k in CONTACT_KEYS}
    order = np.lexsort((-c["point_rank"], ~c["point_inside"], c["v"], c["u"]))
    c = {k: c[k][order] for k in CONTACT_KEYS}
    u, v = c["u"], c["v"]
    start = np.flatnonzero(np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])])
    return {
        "u": u[start],
        "v": v[start],
        "area": np.add.reduceat(c["area"], start),
        "rank_sum": np.add.reduceat(c["rank_sum"], start),
        "hist": np.add.reduceat(c["hist"], start, axis=0),
        "point": c["point"][start],
        "point_rank": c["point_rank"][start],
        "point_inside": c["point_inside"][start],
        "claim_faces": np.add.reduceat(c["claim_faces"], start),
        "claim_hits": np.add.reduceat(c["claim_hits"], start),
    }


def percentile_from_hist(hist: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile (0..1) of each row's face evidence, from its histogram (bin centres)."""
    if len(hist) == 0:
        return np.zeros(0)
    cum = np.cumsum(hist, axis=1)
    target = q * cum[:, -1:]
    idx = np.argmax(cum >= np.maximum(target, 1), axis=1)
    return (idx + 0.5) / hist.shape[1]
