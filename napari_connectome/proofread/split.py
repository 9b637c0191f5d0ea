"""Planning a split: which fragments go to the new segment, and (rarely) which voxels get a new
fragment id.

1. Seeds pick fragments. When side A and side B touch different fragments, the segment's fragment
   adjacency graph is cut with a minimum s-t cut (``scipy.sparse.csgraph.maximum_flow``). An
   edge's capacity sums, over the voxel faces the two fragments share, the squared image brightness
   there: EM membranes are dark, so the cheapest cut runs along membranes and thin contacts.
2. When a fragment holds seeds of both sides (the fragments are too coarse), that fragment alone is
   cut by a seeded watershed on the image (or on the distance transform without an image) inside
   its bounding box; the side-B part gets a new fragment id. Only those voxels are rewritten, and
   the operation stores them so its inverse writes the old id back.

Nothing here changes state: the result is a :class:`SplitPlan`, shown as a preview and committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_connectome.proofread.errors import EditRefused
from napari_connectome.proofread.table import FragmentTable

Point = Sequence[int]
INF = 1 << 29


@dataclass
class SplitPlan:
    """A split ready to show and commit: ``side_b`` fragments (after patches) move to
    ``new_segment``."""

    segment: int
    new_segment: int
    side_a: np.ndarray
    side_b: np.ndarray
    patches: list[dict[str, Any]] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    bbox_lo: tuple[int, int, int] = (0, 0, 0)
    preview: np.ndarray | None = (
        None  # uint8 over the segment's bbox: 1 = keeps the id, 2 = new segment
    )
    voxels_a: int = 0
    voxels_b: int = 0
    method: str = "mincut"


def _check_seed(shape, p: Point) -> tuple[int, int, int]:
    q = tuple(round(v) for v in p)
    if len(q) != 3 or any(not 0 <= v < s for v, s in zip(q, shape)):
        raise EditRefused(f"seed {tuple(p)} lies outside the volume {tuple(shape)}")
    return q  # type: ignore[return-value]


def _elevation(image_block: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    if image_block is None:
        return -ndimage.distance_transform_edt(mask)
    smooth = ndimage.gaussian_filter(image_block.astype(np.float32), 1.0)
    return -smooth  # dark membranes are ridges


def _watershed_patch(block, img, frag, seeds_a, seeds_b, new_id, lo_box):
    """Cut one fragment in two; returns (mask of side B in the fragment's bbox, its global lo)."""
    from skimage.segmentation import watershed

    inside = block == frag
    where = np.argwhere(inside)
    flo, fhi = where.min(0), where.max(0) + 1
    sl = tuple(slice(a, b) for a, b in zip(flo, fhi))
    mask = inside[sl]
    markers = np.zeros(mask.shape, np.int32)
    for label, seeds in ((1, seeds_a), (2, seeds_b)):
        for p in seeds:
            markers[tuple(np.asarray(p) - lo_box - flo)] = label
    elev = _elevation(None if img is None else img[sl], mask)
    lab = watershed(elev, markers, mask=mask)
    side_b = lab == 2
    if not side_b.any() or not (lab == 1).any():
        raise EditRefused(
            f"could not separate the seeds inside fragment {frag}; place them further apart"
        )
    del new_id
    return side_b, tuple(int(v) for v in (np.asarray(lo_box) + flo))


def plan_split(
    table: FragmentTable,
    fragments: Any,
    image: Any | None,
    segment: int,
    seeds_a: Sequence[Point],
    seeds_b: Sequence[Point],
) -> SplitPlan:
    """Compute (but do not apply) the split of ``segment`` separating ``seeds_a`` from
    ``seeds_b``."""
    from scipy import sparse
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    if not seeds_a or not seeds_b:
        raise EditRefused("a split needs at least one seed on each side (A and B)")
    shape = fragments.shape
    sa = [_check_seed(shape, p) for p in seeds_a]
    sb = [_check_seed(shape, p) for p in seeds_b]
    frag_at = {p: int(fragments[p]) for p in sa + sb}
    for p, f in frag_at.items():
        s = table.segment_of_fragment(f)
        if s == 0:
            raise EditRefused(f"seed {p} lies on background; put every seed on segment {segment}")
        if s != segment:
            raise EditRefused(
                f"seeds lie on segments {segment} and {s}; a split works inside one segment"
            )
    _, lo, hi = table.segment_stats(segment)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    block = np.asarray(fragments[box]).astype(np.uint64)
    img = None if image is None else np.asarray(image[box])

    fa = {frag_at[p] for p in sa}
    fb = {frag_at[p] for p in sb}
    patches, masks = [], []
    next_id = table.next_id()
    new_segment = next_id
    next_id += 1
    for frag in sorted(fa & fb):
        in_a = [p for p in sa if frag_at[p] == frag]
        in_b = [p for p in sb if frag_at[p] == frag]
        if set(in_a) & set(in_b):
            raise EditRefused("the same voxel is a seed of both sides; remove one of them")
        side_b, plo = _watershed_patch(block, img, frag, in_a, in_b, next_id, lo)
        row = table.index_of(np.array([frag]))[0]
        # statistics of both parts after the cut
        rel = tuple(slice(a - int(b), a - int(b) + m) for a, b, m in zip(plo, lo, side_b.shape))
        sub = block[rel]
        sub[side_b] = next_id  # the in-memory block now shows the cut
        wb = np.argwhere(side_b)
        rest = np.argwhere(block == frag)
        patches.append(
            {
                "old": frag,
                "new": next_id,
                "lo": list(plo),
                "old_before": [
                    int(table.counts[row]),
                    table.lo[row].tolist(),
                    table.hi[row].tolist(),
                ],
                "old_after": [
                    len(rest),
                    (rest.min(0) + lo).tolist(),
                    (rest.max(0) + 1 + lo).tolist(),
                ],
                "new_stats": [
                    len(wb),
                    (wb.min(0) + plo).tolist(),
                    (wb.max(0) + 1 + np.asarray(plo)).tolist(),
                ],
            }
        )
        masks.append(side_b)
        fb = (fb - {frag}) | {next_id}
        next_id += 1

    # local graph over the segment's fragments (including the ones a patch just created)
    seg_frags = np.concatenate(
        [table.frag_ids[table.rows_of(segment)], np.array([p["new"] for p in patches], np.uint64)]
    )
    seg_frags.sort()
    k = len(seg_frags)
    inseg = table.apply(block) == np.uint64(segment)
    if patches:
        inseg |= np.isin(block, np.array([p["new"] for p in patches], np.uint64))
    local = np.full(block.shape, -1, np.int32)
    local[inseg] = np.searchsorted(seg_frags, block[inseg])
    scale = 1.0
    if img is not None and np.issubdtype(img.dtype, np.integer):
        scale = 1.0 / float(np.iinfo(img.dtype).max)
    keys, weights = [], []
    for ax in range(3):
        lo_sl = tuple(slice(None, -1) if i == ax else slice(None) for i in range(3))
        hi_sl = tuple(slice(1, None) if i == ax else slice(None) for i in range(3))
        ua, vb = local[lo_sl], local[hi_sl]
        sel = (ua != vb) & (ua >= 0) & (vb >= 0)
        u, v = ua[sel].astype(np.int64), vb[sel].astype(np.int64)
        if img is not None:
            w = (img[lo_sl][sel].astype(np.float32) + img[hi_sl][sel]) * (0.5 * scale)
            w = w * w  # sharpen: bright contacts (same cell) cost far more than membranes
        else:
            w = np.ones(len(u), np.float32)
        keys.append(np.minimum(u, v) * k + np.maximum(u, v))
        weights.append(w)
    keys = np.concatenate(keys)
    weights = np.concatenate(weights)
    ukeys, inv = np.unique(keys, return_inverse=True)
    cap = np.bincount(inv, weights=weights, minlength=len(ukeys))
    cap = np.clip(np.round(cap * 100) + 1, 1, INF // 4).astype(np.int32)
    eu, ev = ukeys // k, ukeys % k
    src, snk = k, k + 1
    a_nodes = np.searchsorted(seg_frags, np.fromiter(fa, np.uint64))
    b_nodes = np.searchsorted(seg_frags, np.fromiter(fb, np.uint64))
    rows = np.concatenate([eu, ev, np.full(len(a_nodes), src), b_nodes])
    cols = np.concatenate([ev, eu, a_nodes, np.full(len(b_nodes), snk)])
    caps = np.concatenate(
        [cap, cap, np.full(len(a_nodes), INF), np.full(len(b_nodes), INF)]
    ).astype(np.int32)
    graph = sparse.csr_matrix((caps, (rows, cols)), shape=(k + 2, k + 2))
    graph.sum_duplicates()
    flow = maximum_flow(graph, src, snk).flow
    residual = (graph - flow).tocsr()
    residual.data = np.where(residual.data > 0, 1, 0)
    residual.eliminate_zeros()
    # side B: every node that can still push flow into the sink (reverse reachability in the
    # residual graph)
    order = breadth_first_order(residual.T.tocsr(), snk, directed=True, return_predecessors=False)
    b_mask = np.zeros(k + 2, bool)
    b_mask[order] = True
    b_mask[[src, snk]] = False
    b_mask[b_nodes] = True
    if np.any(b_mask[a_nodes]):
        raise EditRefused("the seeds of side A and side B could not be separated")
    side_b = seg_frags[b_mask[:k]]
    side_a = seg_frags[~b_mask[:k]]
    side_of = np.where(b_mask[:k], 2, 1).astype(np.uint8)
    preview = np.zeros(block.shape, np.uint8)
    preview[inseg] = side_of[local[inseg]]
    voxels_b = int(np.count_nonzero(preview == 2))
    return SplitPlan(
        segment=segment,
        new_segment=new_segment,
        side_a=side_a,
        side_b=side_b,
        patches=patches,
        masks=masks,
        bbox_lo=tuple(int(v) for v in lo),
        preview=preview,
        voxels_a=int(np.count_nonzero(inseg)) - voxels_b,
        voxels_b=voxels_b,
        method="watershed" if patches else "mincut",
    )
