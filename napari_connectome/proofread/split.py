"""Planning a split: which fragments go to the new segment, and (rarely) which voxels get a new
fragment id.

1. Seeds pick fragments. When side A and side B touch different fragments, the segment's part of
   the supervoxel adjacency graph (graph.py, built at import) is cut with a minimum s-t cut
   (``scipy.sparse.csgraph.maximum_flow``). An edge's capacity sums, over the voxel faces the two
   fragments share, the squared image brightness there: EM membranes are dark, so the cheapest cut
   runs along membranes and thin contacts. No voxels are read, whatever the segment's size.
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
from napari_connectome.proofread.graph import region_edges
from napari_connectome.proofread.table import FragmentTable

Point = Sequence[int]
INF = 1 << 29


@dataclass
class SplitPlan:
    """A split ready to show and commit: ``side_b`` fragments (after patches) move to
    ``new_segment``. ``patches``/``masks`` describe the voxels a watershed cut rewrites."""

    segment: int
    new_segment: int
    side_a: np.ndarray
    side_b: np.ndarray
    patches: list[dict[str, Any]] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    edges: dict[str, np.ndarray] = field(default_factory=dict)  # graph edges before/after patches
    bbox_lo: tuple[int, int, int] = (0, 0, 0)
    bbox_hi: tuple[int, int, int] = (0, 0, 0)
    voxels_a: int = 0
    voxels_b: int = 0
    method: str = "mincut"

    def preview_labels(self, fragments: Any, table: FragmentTable) -> np.ndarray:
        """uint8 over the segment's bounding box (at ``bbox_lo``): 1 keeps the id, 2 is new."""
        box = tuple(slice(a, b) for a, b in zip(self.bbox_lo, self.bbox_hi))
        block = np.asarray(fragments[box]).astype(np.uint64)
        for p, m in zip(self.patches, self.masks):
            rel = tuple(slice(a - b, a - b + n) for a, b, n in zip(p["lo"], self.bbox_lo, m.shape))
            block[rel][m] = p["new"]
        out = np.zeros(block.shape, np.uint8)
        out[np.isin(block, self.side_a)] = 1
        out[np.isin(block, self.side_b)] = 2
        return out


def _check_seed(shape, p: Point) -> tuple[int, int, int]:
    q = tuple(round(v) for v in p)
    if len(q) != 3 or any(not 0 <= v < s for v, s in zip(q, shape)):
        raise EditRefused(f"seed {tuple(p)} lies outside the volume {tuple(shape)}")
    return q  # type: ignore[return-value]


def _watershed_cut(fragments, image, table, frag, seeds_a, seeds_b, spacing=(1.0, 1.0, 1.0)):
    """Cut one supervoxel in two by a seeded watershed; returns (mask, lo, region, region lo,
    image region): ``mask`` marks side B inside the supervoxel's bounding box at ``lo``, and
    ``region`` is the supervoxel's box grown by one voxel with the cut applied (for its edges).
    ``spacing`` (:func:`~napari_connectome.volumes.units.relative_spacing`): the distance
    transform and the smoothing count the finest axis's voxels, so thick sections are not
    blurred into each other."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    row = table.index_of(np.array([frag]))[0]
    shape = fragments.shape
    flo, fhi = table.lo[row], table.hi[row]
    elo = np.maximum(flo - 1, 0)
    ehi = np.minimum(fhi + 1, shape)
    ebox = tuple(slice(int(a), int(b)) for a, b in zip(elo, ehi))
    region = np.asarray(fragments[ebox]).astype(np.uint64)
    img = None if image is None else np.asarray(image[ebox])
    inner = tuple(slice(int(a - e), int(b - e)) for a, b, e in zip(flo, fhi, elo))
    mask = region[inner] == frag
    markers = np.zeros(mask.shape, np.int32)
    for label, seeds in ((1, seeds_a), (2, seeds_b)):
        for p in seeds:
            markers[tuple(np.asarray(p) - flo)] = label
    if img is None:
        elev = -ndimage.distance_transform_edt(mask, sampling=spacing)
    else:  # dark membranes
        sigma = [1.0 / s for s in spacing]
        elev = -ndimage.gaussian_filter(img[inner].astype(np.float32), sigma)
    lab = watershed(elev, markers, mask=mask)
    side_b = lab == 2
    if not side_b.any() or not (lab == 1).any():
        raise EditRefused(
            f"could not separate the seeds inside supervoxel {frag}; place them further apart"
        )
    return side_b, tuple(int(v) for v in flo), region, inner, img


def plan_split(
    table: FragmentTable,
    graph: Any,
    fragments: Any,
    image: Any | None,
    segment: int,
    seeds_a: Sequence[Point],
    seeds_b: Sequence[Point],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> SplitPlan:
    """Compute (but do not apply) the split of ``segment`` separating ``seeds_a`` from
    ``seeds_b``; ``spacing``: the voxels' relative size (for a watershed cut)."""
    from scipy import sparse
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    if not seeds_a or not seeds_b:
        raise EditRefused("a split needs at least one seed on each side (A and B)")
    shape = fragments.shape
    sa = [_check_seed(shape, p) for p in seeds_a]
    sb = [_check_seed(shape, p) for p in seeds_b]
    if set(sa) & set(sb):
        raise EditRefused("the same voxel is a seed of both sides; remove one of them")
    frag_at = {p: int(fragments[p]) for p in sa + sb}
    for p, f in frag_at.items():
        s = table.segment_of_fragment(f)
        if s == 0:
            raise EditRefused(f"seed {p} lies on background; put every seed on segment {segment}")
        if s != segment:
            raise EditRefused(
                f"seeds lie on segments {segment} and {s}; a split works inside one segment"
            )
    size, lo, hi = table.segment_stats(segment)
    fa = {frag_at[p] for p in sa}
    fb = {frag_at[p] for p in sb}
    shared = sorted(fa & fb)
    if len(shared) > 1:
        raise EditRefused(
            f"seeds of both sides lie in {len(shared)} supervoxels; keep side A and side B apart "
            "so that at most one supervoxel holds seeds of both"
        )
    new_segment = table.next_id()
    patches, masks, edges = [], [], {}
    near = graph.edges_of(table, table.frag_ids[table.rows_of(segment)])  # the segment's only
    eu, ev, ew = near["u"], near["v"], near["weight"]
    extra_frags = np.zeros(0, np.uint64)
    new_count = 0
    if shared:
        frag = shared[0]
        new_id = new_segment + 1
        in_a = [p for p in sa if frag_at[p] == frag]
        in_b = [p for p in sb if frag_at[p] == frag]
        side_b, plo, region, inner, img = _watershed_cut(
            fragments, image, table, frag, in_a, in_b, spacing
        )
        region[inner][side_b] = new_id
        after = region_edges(region, img, touching=(frag, new_id))
        before = graph.edges_of(table, np.array([frag], np.uint64))
        row = table.index_of(np.array([frag]))[0]
        rest = np.argwhere(region[inner] == frag)
        wb = np.argwhere(side_b)
        bmin, bmax = wb.min(0), wb.max(0) + 1
        new_count = len(wb)
        patches.append(
            {
                "old": frag,
                "new": new_id,
                "lo": (np.asarray(plo) + bmin).tolist(),
                "old_before": [
                    int(table.counts[row]), table.lo[row].tolist(), table.hi[row].tolist()
                ],
                "old_after": [
                    len(rest), (rest.min(0) + plo).tolist(), (rest.max(0) + 1 + plo).tolist()
                ],
                "new_stats": [len(wb), (wb.min(0) + plo).tolist(), (wb.max(0) + 1 + plo).tolist()],
            }
        )  # fmt: skip
        masks.append(side_b[tuple(slice(a, b) for a, b in zip(bmin, bmax))])  # tight box
        edges = {f"before_{k}": v for k, v in before.items()} | {
            f"after_{k}": v for k, v in after.items()
        }
        other = (eu != frag) & (ev != frag)
        eu = np.concatenate([eu[other], after["u"]])
        ev = np.concatenate([ev[other], after["v"]])
        ew = np.concatenate([ew[other], after["weight"]])
        fb = (fb - {frag}) | {new_id}
        extra_frags = np.array([new_id], np.uint64)

    # the segment's subgraph: edges whose two ends both belong to the segment
    seg_frags = np.sort(np.concatenate([table.frag_ids[table.rows_of(segment)], extra_frags]))
    k = len(seg_frags)

    def seg_of(ids: np.ndarray) -> np.ndarray:
        out = table.apply(ids)
        if len(extra_frags):
            out[np.isin(ids, extra_frags)] = segment
        return out

    inside = (seg_of(eu) == segment) & (seg_of(ev) == segment)
    u = np.searchsorted(seg_frags, eu[inside])
    v = np.searchsorted(seg_frags, ev[inside])
    cap = np.clip(np.round(ew[inside] * 100) + 1, 1, INF // 4).astype(np.int32)
    src, snk = k, k + 1
    a_nodes = np.searchsorted(seg_frags, np.fromiter(fa, np.uint64))
    b_nodes = np.searchsorted(seg_frags, np.fromiter(fb, np.uint64))
    rows = np.concatenate([u, v, np.full(len(a_nodes), src), b_nodes])
    cols = np.concatenate([v, u, a_nodes, np.full(len(b_nodes), snk)])
    caps = np.concatenate([cap, cap, np.full(len(a_nodes), INF), np.full(len(b_nodes), INF)])
    g = sparse.csr_matrix((caps.astype(np.int32), (rows, cols)), shape=(k + 2, k + 2))
    g.sum_duplicates()
    flow = maximum_flow(g, src, snk).flow
    residual = (g - flow).tocsr()
    residual.data = np.where(residual.data > 0, 1, 0)
    residual.eliminate_zeros()
    # side B: every node that can still push flow into the sink (reverse reachability)
    order = breadth_first_order(residual.T.tocsr(), snk, directed=True, return_predecessors=False)
    b_mask = np.zeros(k + 2, bool)
    b_mask[order] = True
    b_mask[[src, snk]] = False
    b_mask[b_nodes] = True
    if np.any(b_mask[a_nodes]):
        raise EditRefused("the seeds of side A and side B could not be separated")
    side_b = seg_frags[b_mask[:k]]
    side_a = seg_frags[~b_mask[:k]]
    existing_b = side_b[~np.isin(side_b, extra_frags)]
    voxels_b = int(table.counts[table.index_of(existing_b)].sum()) if len(existing_b) else 0
    voxels_b += new_count if len(extra_frags) and extra_frags[0] in side_b else 0
    return SplitPlan(
        segment=segment,
        new_segment=new_segment,
        side_a=side_a,
        side_b=side_b,
        patches=patches,
        masks=masks,
        edges=edges,
        bbox_lo=tuple(int(x) for x in lo),
        bbox_hi=tuple(int(x) for x in hi),
        voxels_a=size - voxels_b,
        voxels_b=voxels_b,
        method="watershed" if patches else "mincut",
    )
