"""The proofreading queue: the agglomeration's decisions ranked by what checking them is expected
to gain.

An item is one decision of the rule between two groups of supervoxels: two agglomerated segments
that touch and were left apart (``apart``: a false split?), or one merge of the rule's merge tree
(``merged``: a false merge?). Every touching pair and every merge is a candidate, not only the
contacts near the threshold. Each gets

* ``p_wrong``, the chance the rule decided it wrongly, from a logistic model of features of the
  contact (:class:`Calibration`, :data:`FEATURES`): the affinity's distance to the threshold, the
  contact area relative to the smaller side's cross-section (two pieces of one neurite cut across
  share a wide face; two neurons touching through membranes share a thin one), the brightest
  tenth of the widest edge's faces (cytoplasm across a false split, membrane between neurons),
  the contact area and the two sides' sizes; and
* ``gain``, what fixing it changes, in bits of variation of information (VI): joining (or
  separating) sides of n_a and n_b voxels changes VI by (n_a + n_b) H2(n_a / (n_a + n_b)) / N,
  N the volume's segmented voxels, so a sliver weighs little and two halves of a big neurite a lot.

The shape rule: neurites are long and rarely end inside a small volume, so a side whose bounding
box touches no face of the volume (it ends inside on every side) is likely a piece cut off a
neurite, and one whose box spans the volume a long neurite. Each side's box is the union of its
supervoxels' boxes (the fragments table), for merges tracked while the merge tree is replayed;
two features (:data:`SHAPE_FEATURES`) say whether the smaller side ends inside and how far its box
reaches. Every item's reason says what the rule sees; the ranking uses the two features only with
a calibration fitted with them (``fit_calibration(..., shape=True)``): on FIB-25 they moved the
cross-fitted figures both ways by a few items and thousandths of a bit (docs/agglomeration.md),
so the default calibration leaves them out.

The seam check: a blockwise job segments blocks apart and matches objects across their faces;
where matching failed, a neurite is cut at a block face. Agglomerating a job's output keeps each
edge's faces on block faces and the job's seam check (:mod:`.seams`), and a pair left apart
whose contact lies on faces where the check found more changes than inside blocks is wrong with
the chance ``seam`` the check gives, on top of the contact evidence:
``p_wrong = 1 - (1 - p_same) * (1 - seam)``. The reason then says so.

Items are ranked by ``p_wrong * gain ** gain_weight``: with ``gain_weight`` 1 that is the expected
VI gain of looking at the item, with 0 the chance of an error alone; the default
(:data:`GAIN_WEIGHT`, 0.25) keeps most of the first items real errors while still leading to the
big fixes first (docs/agglomeration.md has the measurements). Every item says why it is there
(:meth:`QueueItem.describe`, shown in the panel). Building the queue reads
the scores table, the region graph's edge and fragment tables and the merge list (one row per
edge, fragment or merge), never the voxels.

A decision is an ordinary proofreading edit through a :class:`ProofreadSession` (so it is in the
durable log and undo works): *reject* reverses the rule's decision (merge a pair left apart, or
split a merged pair by the session's min-cut with seeds on both sides of the contact); *accept*
confirms it and edits nothing; *skip* leaves the item for later. A decision reads a 3^3 box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.progress import ProgressCallback, no_progress

DEFAULT_BAND = (
    0.15  # kept for callers of the band-only queue: only contacts this near the threshold
)
NEIGHBOURS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
FEATURES = (
    "affinity - threshold",
    "log(1 + area / min(n_a, n_b)^(2/3))",
    "log10 min(n_a, n_b)",
    "p90 of the widest edge",
    "log10(1 + area)",
    "log10 max(n_a, n_b)",
)
SHAPE_FEATURES = (  # the shape rule's, after FEATURES in a calibration fitted with shape=True
    "the smaller side ends inside the volume on every side (0/1)",
    "the smaller side's longest box extent / the volume's extent on that axis",
)
LONG_REACH = 0.9  # the reason text calls a side whose box spans this much of the volume long
THIN_AXIS = 0.3  # an axis this much shorter (nm) than the longest does not count for the reach
SEAM_NOTE = 0.05  # the reason text names the seam check from this chance of a cut on
GAIN_WEIGHT = 0.25  # rank by p_wrong * gain ** GAIN_WEIGHT (docs/agglomeration.md: why 0.25)


@dataclass(frozen=True)
class Calibration:
    """P(the two sides are one neuron) = sigmoid(bias + weights . features) (:data:`FEATURES`,
    followed by :data:`SHAPE_FEATURES` when it has weights for them).

    The default was fitted (:func:`fit_calibration`) on FIB-25 training_sample2 with Google's
    published segmentation agglomerated at 0.65 against its ground truth; the benchmark's figures
    use cross-fitting instead (each half of the volume ranked by a model fitted on the other
    half). Fit your own with ground truth of your data: `napari-connectome calibrate-queue`
    (:mod:`.calibrate`)."""

    bias: float = 0.553
    weights: tuple[float, ...] = (-4.052, 2.267, 0.240, 5.230, -1.276, -1.253)

    @property
    def shape(self) -> bool:
        """Whether it weighs the shape rule's features too."""
        return len(self.weights) == len(FEATURES) + len(SHAPE_FEATURES)

    def p_same(self, x: np.ndarray) -> np.ndarray:
        z = self.bias + np.asarray(x, float) @ np.asarray(self.weights, float)
        return 1.0 / (1.0 + np.exp(-z))

    def as_dict(self) -> dict:
        names = [*FEATURES, *(SHAPE_FEATURES if self.shape else ())]
        return {"bias": self.bias, "weights": list(self.weights), "features": names}


# fitted (fit_calibration) on 8 held-out crops of FIB-25 training_sample2 (62 x 125 x 125 each,
# z >= 125) segmented by the shipped fib25-small in both seed orders, their split consensus
# agglomerated with the FFN claim, with and without resegmentation: 2,177 candidates
# (benchmarks/bench_queue_ffn_calibration.py; leave-one-crop-out it put 80% real errors among
# the first 40 items against the default's 32.5%)
FFN_CALIBRATION = Calibration(7.055, (4.888, 2.305, 0.188, -1.328, -0.993, -1.485))


def default_calibration(meta: dict) -> Calibration:
    """The calibration for an agglomeration: :data:`FFN_CALIBRATION` where it weighed an FFN
    claim (our own FFN's output: ``segment``, ``consensus``, a job), else :class:`Calibration`
    (fitted on Google's published segmentation, which carries none)."""
    return FFN_CALIBRATION if meta.get("claim") else Calibration()


@dataclass(frozen=True)
class Candidates:
    """Every decision of the rule as arrays, one row per candidate item: ``merged`` (a merge of
    the merge tree) or not (two agglomerated segments left apart); ``a``, ``b`` the supervoxels of
    the contact shown (its widest edge), ``point`` a voxel on their brightest face; ``affinity``
    the rule's affinity between the two sides (face-weighted mean over their edges), ``area`` the
    faces between them, ``n_a``, ``n_b`` the voxels of the two sides; ``inside`` whether the
    smaller side's box touches no face of the volume, ``reach`` its longest box extent over the
    volume's extent on that axis (the shape rule; None: unknown, taken as 0); ``seam`` the
    chance that a contact left apart is a cut by a job's block face (:mod:`.seams`; 0 for
    merges; None: not a job's output); ``claim`` the shown edge's FFN claim (the share of its
    faces a later FFN object claimed across; NaN where FFN says nothing, None: no claim)."""

    merged: np.ndarray
    a: np.ndarray
    b: np.ndarray
    point: np.ndarray
    affinity: np.ndarray
    area: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray
    p90: np.ndarray
    total_voxels: int
    inside: np.ndarray | None = None
    reach: np.ndarray | None = None
    seam: np.ndarray | None = None
    claim: np.ndarray | None = None

    def features(self, threshold: float, shape: bool = False) -> np.ndarray:
        """One row per candidate: :data:`FEATURES`, then :data:`SHAPE_FEATURES` if ``shape``."""
        small = np.maximum(np.minimum(self.n_a, self.n_b), 1).astype(float)
        base = np.stack(
            [
                self.affinity - threshold,
                np.log1p(self.area / small ** (2 / 3)),
                np.log10(small),
                self.p90,
                np.log10(1.0 + self.area),
                np.log10(np.maximum(np.maximum(self.n_a, self.n_b), 1)),
            ],
            axis=1,
        )
        if not shape:
            return base
        zero = np.zeros(len(small))
        inside = zero if self.inside is None else self.inside.astype(float)
        reach = zero if self.reach is None else self.reach.astype(float)
        return np.c_[base, inside, reach]

    def gain(self) -> np.ndarray:
        """Bits of VI that fixing each decision changes, if it is wrong and the sides are pure."""
        na, nb = self.n_a.astype(float), self.n_b.astype(float)
        t = np.maximum(na + nb, 1)
        q = np.clip(na / t, 1e-12, 1 - 1e-12)
        h2 = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
        return t * h2 / max(self.total_voxels, 1)


def _open(dest: Path) -> tuple[dict, Any, Any, Any]:
    import zarr

    try:
        meta = json.loads((dest / "agglomeration.json").read_text())
        scores = zarr.open_group(str(dest / "scores"), mode="r")
        edges = zarr.open_group(str(dest / "region_graph" / "edges"), mode="r")
        frags = zarr.open_group(str(dest / "region_graph" / "fragments"), mode="r")
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(
            f"{dest} is not an agglomerate output ({exc}); make one with "
            "`napari-connectome agglomerate SEG EM DEST`"
        ) from None
    return meta, scores, edges, frags


def read_candidates(dest: str | Path) -> Candidates:
    """The candidates of an agglomerate output ``DEST`` (tables only, no voxels)."""
    meta, scores, edges, frags = _open(Path(dest))
    u = np.asarray(edges["u"][:], np.uint64)
    v = np.asarray(edges["v"][:], np.uint64)
    aff = np.asarray(scores["affinity"][:], float)
    area = np.asarray(scores["area"][:], np.int64)
    merged = np.asarray(scores["merged"][:], bool)
    point = np.asarray(scores["point"][:], np.int64).reshape(-1, 3)
    p90 = np.asarray(scores["p90"][:], float)
    ids = np.asarray(scores["segment_ids"][:], np.uint64)
    seg_of = np.asarray(scores["segment_of"][:], np.uint64)
    merges = np.asarray(scores["merges"][:], float).reshape(-1, 3)
    edge_cut = _edge_seam_cuts(meta, scores, len(u))
    edge_claim = _edge_claim(scores, area)
    frag_ids = np.asarray(frags["id"][:], np.uint64)
    counts = np.asarray(frags["count"][:], np.int64)
    lo = np.asarray(frags["lo"][:], np.int64).reshape(-1, 3)
    hi = np.asarray(frags["hi"][:], np.int64).reshape(-1, 3)
    if len(frag_ids) != len(ids) or not np.array_equal(frag_ids, ids):
        raise UserInputError(
            f"{dest}: the scores and the region graph hold different supervoxels; "
            "run agglomerate again"
        )
    _, seg_index = np.unique(seg_of, return_inverse=True)
    seg_size = np.bincount(seg_index, weights=counts)
    seg_lo = np.full((len(seg_size), 3), np.iinfo(np.int64).max, np.int64)
    seg_hi = np.full((len(seg_size), 3), np.iinfo(np.int64).min, np.int64)
    np.minimum.at(seg_lo, seg_index, lo)
    np.maximum.at(seg_hi, seg_index, hi)
    iu, iv = np.searchsorted(ids, u), np.searchsorted(ids, v)
    su, sv = seg_index[iu], seg_index[iv]
    apart = _apart_pairs(su, sv, aff, area, seg_size, (seg_lo, seg_hi), edge_cut)
    tree = _merge_tree(merges, ids, counts, iu, iv, merged, area, aff, (lo, hi))
    rows = [*apart, *tree]
    if not rows:
        empty = np.zeros(0, np.int64)
        return Candidates(
            empty.astype(bool), empty.astype(np.uint64), empty.astype(np.uint64),
            np.zeros((0, 3), np.int64), empty.astype(float), empty, empty, empty,
            empty.astype(float), int(counts.sum()),
        )  # fmt: skip
    kind, edge, a_ff, a_rea, na, nb, box_lo, box_hi, cut = (np.asarray(c) for c in zip(*rows))
    edge = edge.astype(np.int64)
    inside, reach = _shape_rule(
        box_lo.reshape(-1, 3),
        box_hi.reshape(-1, 3),
        _volume_shape(meta, hi),
        meta.get("voxel_size_nm"),
    )
    return Candidates(
        merged=kind.astype(bool),
        a=u[edge],
        b=v[edge],
        point=point[edge],
        affinity=a_ff.astype(float),
        area=a_rea.astype(np.int64),
        n_a=na.astype(np.int64),
        n_b=nb.astype(np.int64),
        p90=p90[edge],
        total_voxels=int(counts.sum()),
        inside=inside,
        reach=reach,
        seam=None if edge_cut is None else np.clip(cut / np.maximum(a_rea, 1), 0.0, 1.0),
        claim=None if edge_claim is None else edge_claim[edge],
    )


def _edge_claim(scores: Any, area: np.ndarray) -> np.ndarray | None:
    """Per edge, the FFN claim where the affinity used it (else NaN); None without a claim."""
    from napari_connectome.agglomerate.run import claim_applies

    if "claim" not in scores or "claim_faces" not in scores:
        return None
    claim = np.asarray(scores["claim"][:], float)
    faces = np.asarray(scores["claim_faces"][:], np.int64)
    if not len(claim) == len(faces) == len(area) or not np.isfinite(claim).any():
        return None
    return np.where(claim_applies(claim, faces, area), claim, np.nan)


def _edge_seam_cuts(meta: dict, scores: Any, n_edges: int) -> np.ndarray | None:
    """Per edge, the faces the seam check expects to be cuts (:mod:`.seams`); None for a
    segmentation that was not made blockwise."""
    from napari_connectome.agglomerate.seams import BlockSeams

    if not meta.get("seams") or "seam_area" not in scores:
        return None
    excess = np.asarray(BlockSeams.from_json(meta["seams"]).excess, float)
    seam_area = np.asarray(scores["seam_area"][:], np.int64).reshape(-1, 3)
    if len(seam_area) != n_edges:
        raise UserInputError(
            "scores/seam_area does not have one row per edge: run agglomerate again"
        )
    return seam_area @ excess


def _volume_shape(meta: dict, hi: np.ndarray) -> np.ndarray:
    """The volume's shape from the metadata (older outputs without it: the fragments' extent)."""
    shape = meta.get("shape")
    if shape is not None and len(shape) == 3:
        return np.asarray(shape, np.int64)
    return hi.max(axis=0) if len(hi) else np.ones(3, np.int64)


def _shape_rule(
    lo: np.ndarray, hi: np.ndarray, shape: np.ndarray, voxel_size_nm: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per box (the smaller side's): does it touch no face of the volume, and its longest extent
    over the volume's extent on that axis. Axes under THIN_AXIS of the longest extent in nm
    (a slab of a few serial sections) do not count for the extent: every object crosses them."""
    inside = np.all((lo > 0) & (hi < shape), axis=1)
    size = np.ones(3)
    if voxel_size_nm is not None and len(voxel_size_nm) == 3:
        size = np.asarray(voxel_size_nm, float)
    nm = np.maximum(shape, 1) * size
    counted = nm >= THIN_AXIS * nm.max()
    share = (hi - lo) / np.maximum(shape, 1)
    reach = share[:, counted].max(axis=1) if len(lo) else np.zeros(0)
    return inside, reach


def _smaller_box(na, nb, box_a, box_b) -> tuple[tuple, tuple]:
    """The box (lo, hi) of the side with fewer voxels (a on ties)."""
    return box_a if na <= nb else box_b


def _apart_pairs(su, sv, aff, area, seg_size, seg_box, edge_cut=None) -> list[tuple]:
    """One row per pair of touching agglomerated segments: (False, widest edge, affinity, area,
    n_a, n_b, the smaller side's box lo, hi, faces the seam check expects to be cuts)."""
    cross = np.flatnonzero(su != sv)
    if not len(cross):
        return []
    lo, hi = np.minimum(su[cross], sv[cross]), np.maximum(su[cross], sv[cross])
    key = lo.astype(np.int64) * (int(hi.max()) + 1) + hi
    uniq, inv = np.unique(key, return_inverse=True)
    faces = np.bincount(inv, weights=area[cross])
    mean = np.bincount(inv, weights=aff[cross] * area[cross]) / np.maximum(faces, 1)
    cuts = (
        np.zeros(len(uniq))
        if edge_cut is None
        else np.bincount(inv, weights=edge_cut[cross], minlength=len(uniq))
    )
    order = np.lexsort((-area[cross], inv))  # per pair, its widest edge first
    first = order[np.r_[True, inv[order][1:] != inv[order][:-1]]]
    widest = np.empty(len(uniq), np.int64)
    widest[inv[first]] = cross[first]
    pa, pb = lo[first], hi[first]
    pa_of, pb_of = np.empty(len(uniq), np.int64), np.empty(len(uniq), np.int64)
    pa_of[inv[first]], pb_of[inv[first]] = pa, pb
    seg_lo, seg_hi = seg_box
    small = np.where(seg_size[pa_of] <= seg_size[pb_of], pa_of, pb_of)
    return list(
        zip(
            [False] * len(uniq),
            widest.tolist(),
            mean.tolist(),
            faces.tolist(),
            seg_size[pa_of].tolist(),
            seg_size[pb_of].tolist(),
            seg_lo[small].tolist(),
            seg_hi[small].tolist(),
            cuts.tolist(),
        )
    )


def _merge_tree(merges, ids, counts, iu, iv, merged, area, aff, boxes) -> list[tuple]:
    """One row per merge of the rule, replayed in order: (True, widest edge between the two
    clusters, the merge's affinity, faces between them, n_a, n_b, the smaller cluster's box lo,
    hi); each cluster's box is the union of its members' boxes, kept up as the merges join them."""
    from napari_connectome.agglomerate.rule import UnionFind

    if not len(merges):
        return []
    inner = np.flatnonzero(merged & (iu != iv))
    incident: dict[int, list[int]] = {}
    for e, x, y in zip(inner.tolist(), iu[inner].tolist(), iv[inner].tolist()):
        incident.setdefault(x, []).append(e)
        incident.setdefault(y, []).append(e)
    row_of = {int(i): r for r, i in enumerate(ids.tolist())}
    uf = UnionFind()
    members: dict[int, list[int]] = {}
    size: dict[int, int] = {}
    lo, hi = boxes
    box: dict[int, tuple[list[int], list[int]]] = {}
    rows = []
    for fa, fb, score in merges.tolist():
        ra, rb = uf.find(row_of[int(fa)]), uf.find(row_of[int(fb)])
        if ra == rb:
            continue
        ma, mb = members.get(ra, [ra]), members.get(rb, [rb])
        small, other = (ma, rb) if len(ma) <= len(mb) else (mb, ra)
        best, faces = -1, 0
        for x in small:
            for e in incident.get(x, ()):
                y = int(iv[e]) if int(iu[e]) == x else int(iu[e])
                if uf.find(y) == other:
                    faces += int(area[e])
                    if best < 0 or area[e] > area[best]:
                        best = e
        na = size.get(ra, int(counts[ra]))
        nb = size.get(rb, int(counts[rb]))
        ba = box.get(ra) or (lo[ra].tolist(), hi[ra].tolist())
        bb = box.get(rb) or (lo[rb].tolist(), hi[rb].tolist())
        if best >= 0:
            rows.append(
                (True, best, float(score), faces, na, nb, *_smaller_box(na, nb, ba, bb), 0.0)
            )
        root = uf.union(ra, rb)
        members[root] = ma + mb
        size[root] = na + nb
        box[root] = (
            [min(x, y) for x, y in zip(ba[0], bb[0])],
            [max(x, y) for x, y in zip(ba[1], bb[1])],
        )
        members.pop(ra if root == rb else rb, None)
    return rows


def fit_calibration(
    cand: Candidates, same: np.ndarray, threshold: float, *, l2: float = 1e-2, shape: bool = False
) -> Calibration:
    """Fit :class:`Calibration` by L2-regularised logistic regression (Newton's method) on
    candidates whose truth ``same`` (the two sides are one neuron) is known; ``shape`` adds the
    shape rule's features."""
    w = fit_features(cand.features(threshold, shape), np.asarray(same, float), l2=l2)
    return Calibration(float(w[0]), tuple(float(c) for c in w[1:]))


def fit_features(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2) -> np.ndarray:
    """Bias and weights of an L2-regularised logistic regression of ``y`` (0/1) on the rows of
    ``x``, by Newton's method (the bias is not regularised)."""
    x = np.c_[np.ones(len(y)), np.asarray(x, float)]
    y = np.asarray(y, float)
    w = np.zeros(x.shape[1])
    reg = l2 * np.diag(np.r_[0, np.ones(len(w) - 1)])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + reg @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass(frozen=True)
class QueueItem:
    kind: str  # "merged" or "apart"
    a: int  # supervoxel ids of the contact shown, a < b
    b: int
    point: tuple[int, int, int]  # a voxel of a or b on their brightest shared face
    affinity: float
    area: int
    n_a: int  # voxels of the two sides
    n_b: int
    p_wrong: float  # the chance the rule's decision is wrong
    gain: float  # bits of VI fixing it changes
    inside: bool = False  # the smaller side's box touches no face of the volume (shape rule)
    reach: float = 0.0  # the smaller side's longest box extent / the volume's on that axis
    seam: float = 0.0  # the seam check's chance that this contact is a cut by a block face
    claim: float = float("nan")  # share of the shown edge's faces FFN claimed across (NaN: none)

    @property
    def expected(self) -> float:
        return self.p_wrong * self.gain

    def reason(self, threshold: float) -> str:
        """Why the item is in the queue, in words."""
        small = max(min(self.n_a, self.n_b), 1)
        wide = self.area / small ** (2 / 3)
        if self.kind == "merged":
            what = (
                f"merged at affinity {self.affinity:.2f} (threshold {threshold:.2f}); "
                f"a split would separate {self.n_a:,} and {self.n_b:,} voxels"
            )
        else:
            what = (
                f"left apart at affinity {self.affinity:.2f} (threshold {threshold:.2f}); "
                f"a merge would join {self.n_a:,} and {self.n_b:,} voxels"
            )
        if self.inside:
            shape = (
                f"; the smaller side ends inside the volume on every side (its box spans "
                f"{self.reach:.0%} of the volume at most; neurites rarely end inside)"
            )
        elif self.reach >= LONG_REACH:
            shape = f"; the smaller side spans {self.reach:.0%} of the volume: a long neurite"
        else:
            shape = "; the smaller side reaches the volume's boundary"
        seam = ""
        if self.seam >= SEAM_NOTE:
            seam = (
                f"; the contact lies on a block face of the job, where the seam check expects "
                f"a cut {self.seam:.0%} of the time"
            )
        claim = ""
        if np.isfinite(self.claim):
            claim = f"; FFN claimed across {self.claim:.0%} of the widest edge's faces"
        return (
            f"{what}; contact {self.area:,} faces ({wide:.1f}x the smaller side's cross-section)"
            f"{claim}{shape}{seam}; chance the rule is wrong {self.p_wrong:.0%}, "
            f"worth {1000 * self.gain:.1f} mbit of VI if so"
        )

    def describe(self, threshold: float | None = None) -> str:
        head = f"supervoxels {self.a} | {self.b} at z, y, x {list(self.point)}"
        return head if threshold is None else f"{head}: {self.reason(threshold)}"


class ProofreadQueue:
    """The ranked items of one agglomerate output (``DEST``) and the decisions made on them.

    ``band`` keeps only candidates whose affinity lies within it of the threshold (None: all);
    ``limit`` keeps the first items; ``calibration`` replaces the default model of ``p_wrong``
    (:func:`default_calibration`: one for our FFN's output, one for other segmentations);
    ``gain_weight`` sets the ranking (module docstring); ``seams`` False leaves a job's seam
    check out (the contact evidence alone, as for one canvas)."""

    def __init__(
        self,
        dest: str | Path,
        *,
        band: float | None = None,
        limit: int | None = None,
        calibration: Calibration | None = None,
        gain_weight: float = GAIN_WEIGHT,
        seams: bool = True,
    ):
        dest = Path(dest)
        meta, _, _, _ = _open(dest)
        if band is not None and not 0 < band <= 1:
            raise UserInputError(f"band {band} must lie in (0, 1]")
        if not 0 <= gain_weight <= 1:
            raise UserInputError(f"gain_weight {gain_weight} must lie in [0, 1]")
        if limit is not None and limit < 1:
            raise UserInputError(f"limit {limit} must be at least 1")
        self.dest, self.meta, self.band = dest, meta, band
        self.threshold = float(meta["threshold"])
        self.calibration = calibration or default_calibration(meta)
        n_w = len(self.calibration.weights)
        if n_w not in (len(FEATURES), len(FEATURES) + len(SHAPE_FEATURES)):
            raise UserInputError(
                f"the calibration has {n_w} weights: it needs one per feature "
                f"({len(FEATURES)}, or {len(FEATURES) + len(SHAPE_FEATURES)} with the shape "
                "rule's); fit one with fit_calibration"
            )
        cand = read_candidates(dest)
        x = cand.features(self.threshold, self.calibration.shape)
        p_same = self.calibration.p_same(x)
        seam = cand.seam if seams and cand.seam is not None else np.zeros(len(p_same))
        # left apart is wrong if the contact evidence or the seam check says one neuron
        p_wrong = np.where(cand.merged, 1.0 - p_same, 1.0 - (1.0 - p_same) * (1.0 - seam))
        gain = cand.gain()
        keep = np.ones(len(gain), bool)
        if band is not None:
            keep = np.abs(cand.affinity - self.threshold) < band
        idx = np.flatnonzero(keep)
        rank = p_wrong * gain**gain_weight
        order = idx[np.lexsort((-cand.area[idx], -p_wrong[idx], -rank[idx]))]
        self.items = [
            QueueItem(
                "merged" if cand.merged[k] else "apart",
                int(cand.a[k]),
                int(cand.b[k]),
                tuple(int(c) for c in cand.point[k]),
                float(cand.affinity[k]),
                int(cand.area[k]),
                int(cand.n_a[k]),
                int(cand.n_b[k]),
                float(p_wrong[k]),
                float(gain[k]),
                bool(cand.inside[k]) if cand.inside is not None else False,
                float(cand.reach[k]) if cand.reach is not None else 0.0,
                float(seam[k]),
                float(cand.claim[k]) if cand.claim is not None else float("nan"),
            )
            for k in order[:limit]
        ]
        self.decisions: dict[int, str] = {}  # item index -> accepted / rejected / skipped

    # ---- where the proofreader is ------------------------------------------------------------

    def next_index(self, after: int = -1) -> int | None:
        """The first undecided item after ``after`` (wrapping round to skipped ones)."""
        n = len(self.items)
        for i in [*range(after + 1, n), *range(after + 1)]:
            if self.decisions.get(i) in (None, "skipped"):
                return i
        return None

    @property
    def done(self) -> int:
        return sum(1 for d in self.decisions.values() if d in ("accepted", "rejected"))

    @property
    def left(self) -> int:
        return len(self.items) - self.done

    def _undecided(self) -> list[QueueItem]:
        return [
            it
            for i, it in enumerate(self.items)
            if self.decisions.get(i) not in ("accepted", "rejected")
        ]

    def expected_gain(self) -> float:
        """Expected VI gain (bits) of the undecided items: sum of p_wrong * gain."""
        return float(sum(it.expected for it in self._undecided()))

    def expected_errors(self) -> float:
        """The wrong decisions the queue expects among the undecided items: sum of p_wrong."""
        return float(sum(it.p_wrong for it in self._undecided()))

    def describe(self, index: int) -> str:
        return self.items[index].describe(self.threshold)

    # ---- decisions -----------------------------------------------------------------------------

    def sides(self, session: Any, item: QueueItem) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """A voxel in ``a`` and one in ``b`` across their contact (reads a 3x3x3 box)."""
        p = np.asarray(item.point)
        lo = np.maximum(p - 1, 0)
        hi = np.minimum(p + 2, session.shape)
        box = np.asarray(session.fragments[tuple(slice(a, b) for a, b in zip(lo, hi))])
        here = int(box[tuple(p - lo)])
        other = item.b if here == item.a else item.a
        for d in NEIGHBOURS:
            q = p + d
            if np.all(q >= lo) and np.all(q < hi) and int(box[tuple(q - lo)]) == other:
                pa, pb = (p, q) if here == item.a else (q, p)
                return tuple(int(c) for c in pa), tuple(int(c) for c in pb)
        raise UserInputError(
            f"the contact {item.a} | {item.b} is not at {list(item.point)} in this project's "
            "fragments: open the project made from this agglomerate output"
        )

    def decide(self, session: Any, index: int, verdict: str) -> Any:
        """Record ``verdict`` (accept / reject / skip) on item ``index``; a reject is an edit
        through ``session`` (returned), the others edit nothing."""
        item = self.items[index]
        op = None
        if verdict == "reject":
            pa, pb = self.sides(session, item)
            sa, sb = session.segment_at(pa), session.segment_at(pb)
            if item.kind == "merged" and sa == sb:
                op = session.split(sa, [pa], [pb])
            elif item.kind == "apart" and sa != sb:
                op = session.merge([sa, sb])
            self.decisions[index] = "rejected"
        elif verdict == "accept":
            self.decisions[index] = "accepted"
        elif verdict == "skip":
            self.decisions[index] = "skipped"
        else:
            raise ValueError(f"verdict must be accept, reject or skip, not {verdict!r}")
        return op

    def undo_decision(self, index: int) -> None:
        self.decisions.pop(index, None)


def build_queue_project(
    dest: str | Path, project: str | Path, *, progress: ProgressCallback | None = None
) -> Path:
    """Make the proofreading project of an agglomerate output: it refers to ``DEST/supervoxels``,
    the EM and ``DEST/region_graph``, with the agglomeration applied as merge edits. Built under a
    hidden sibling of ``project`` and renamed into place when complete; any exception (also a
    cancel raised from ``progress``) removes the hidden folder, so nothing is left behind."""
    import shutil
    import tempfile

    from napari_connectome.proofread.reference import create_project
    from napari_connectome.proofread.session import ProofreadSession

    dest, project = Path(dest), Path(project)
    meta, _, _, _ = _open(dest)
    if project.exists() or project.is_symlink():
        raise UserInputError(f"{project} exists: choose a new folder for the project")
    if not project.parent.is_dir():
        raise UserInputError(f"{project.parent} is not a folder: make it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{project.name}.tmp-", dir=project.parent))
    try:
        inner = tmp / project.name
        create_project(
            inner,
            str(dest / "supervoxels"),
            image=meta["em"],
            region_graph=dest / "region_graph",
            progress=progress,
        )
        with ProofreadSession.open(inner) as session:
            apply_agglomeration(session, dest, progress=progress)
        (inner / QUEUE_SOURCE).write_text(json.dumps(_queue_source(dest), indent=2) + "\n")
        inner.rename(project)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return project


QUEUE_SOURCE = "queue_source.json"  # in a queue's project: the agglomerate output it was made from


def _queue_source(dest: Path) -> dict:
    """What ties a queue project to its agglomerate output: the output's folder and a digest of
    its agglomeration.json (another threshold or another SEG gives another digest)."""
    import hashlib
    import os

    text = (dest / "agglomeration.json").read_bytes()
    return {
        "agglomerate_output": os.path.realpath(dest),
        "agglomeration_sha256": hashlib.sha256(text).hexdigest(),
    }


def check_queue_project(dest: str | Path, project: str | Path) -> None:
    """Refuse to open ``project`` with the queue of ``dest`` unless it was made from it: the
    queue's items name supervoxels, merges and points of that output, and a project of another
    output (or of another agglomeration of the same supervoxels) would take edits meant for it.
    A project that does not record its output (made before) is checked by its region graph."""
    from napari_connectome.graph import RegionGraph

    dest, project = Path(dest), Path(project)
    _open(dest)  # refuses a folder that is not an agglomerate output
    marker = project / QUEUE_SOURCE
    if marker.is_file():
        try:
            made_from = json.loads(marker.read_text())
        except ValueError:
            made_from = {}
        if made_from.get("agglomeration_sha256") == _queue_source(dest)["agglomeration_sha256"]:
            return
        raise UserInputError(
            f"the project {project} was made from the agglomerate output "
            f"{made_from.get('agglomerate_output', '(unknown)')}, not from {dest} as it is now "
            "(another output, or the same folder agglomerated again): choose a new project "
            "folder for this queue, or open that output"
        )
    try:
        recorded = json.loads((project / "project.json").read_text()).get("fingerprint")
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{project} is not a proofreading project ({exc})") from None
    if recorded != RegionGraph.open(dest / "region_graph").fingerprint:
        raise UserInputError(
            f"the project {project} was not made from the agglomerate output {dest} (its "
            "region graph differs): choose a new project folder for this queue"
        )


def apply_agglomeration(
    session: Any, dest: str | Path, *, progress: ProgressCallback | None = None
) -> int:
    """Make a project over ``DEST/supervoxels`` show the agglomerated segments: one merge edit
    per segment of more than one supervoxel (in the log, so undo works); returns the edits."""
    import zarr

    scores = zarr.open_group(str(Path(dest) / "scores"), mode="r")
    ids = np.asarray(scores["segment_ids"][:], np.uint64)
    seg_of = np.asarray(scores["segment_of"][:], np.uint64)
    order = np.argsort(seg_of, kind="stable")
    seg_sorted = seg_of[order]
    starts = np.flatnonzero(np.r_[True, seg_sorted[1:] != seg_sorted[:-1]])
    progress = progress or no_progress
    n = 0
    ends = np.r_[starts[1:], len(order)]
    every = max(1, len(starts) // 100)
    for k, (s, e) in enumerate(zip(starts, ends)):
        if k % every == 0:
            progress(k, len(starts), "applying the agglomeration")
        if e - s < 2:
            continue
        members = ids[order[s:e]]
        segs = sorted({session.table.segment_of_fragment(int(f)) for f in members})
        if len(segs) > 1:
            session.merge(segs)
            n += 1
    progress(len(starts), len(starts), "applying the agglomeration")
    return n
