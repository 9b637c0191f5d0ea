"""Split consensus of two segmentations: the supervoxels that ``agglomerate`` refines.

An FFN run is sequential: an object grown early claims the voxels a later object would have
claimed, and a false merge happens where an object leaks into its neighbour. Run the same seed
policy again in reverse order (``InferenceOptions.seed_order``) and the leaks land elsewhere,
because other objects now grow first. google/ffn's "split consensus" keeps the finer of the two:
two voxels share an object only if both runs put them in the same object. It is an
over-segmentation (more splits, far fewer merges), which is what agglomeration wants: a merge can
be undone by a score on the region graph, a merge inside a supervoxel cannot.

The rule here (our own, vectorised; :func:`split_consensus`):

1. Every voxel gets the pair (id in A, id in B). With ``unmatched="drop"`` (the default) a voxel
   counts only where both runs hold an object; ``"keep"`` also keeps voxels only one run segmented
   (pairs (a, 0) and (0, b) get ids of their own); ``"first"`` keeps (a, 0) but not (0, b), as
   google/ffn's ``split_segmentation_by_intersection`` does.
2. Each connected piece (6-connectivity) of voxels with one pair is one supervoxel, so a
   supervoxel is never two disconnected parts.
3. Pieces smaller than ``min_size`` voxels become 0 (unsegmented). They are not merged into a
   neighbour here: ``agglomerate`` fills every 0 voxel by a seeded watershed on the EM, which
   gives each small piece to the supervoxel across the weakest membrane, and without the fill they
   are left out of the supervoxels.
4. Ids are 1..N in raster order of each supervoxel's first voxel (C order), so the result depends
   only on A and B, never on their id values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

UNMATCHED = ("drop", "keep", "first")
DEFAULT_MIN_SIZE = 1000
"""Smallest supervoxel kept (voxels); smaller pieces become 0, for agglomerate's fill."""


@dataclass(frozen=True)
class ConsensusStats:
    """What the consensus did, for reports and benchmarks."""

    segments_a: int
    segments_b: int
    pairs: int  # distinct (a, b) pairs among the voxels kept by ``unmatched``
    pieces: int  # connected pieces of those pairs
    segments: int  # pieces of at least min_size voxels: the output's ids
    voxels_segmented: int  # nonzero voxels of the output
    voxels_dropped_unmatched: int  # segmented in one run only, dropped by ``unmatched``
    voxels_dropped_small: int  # in pieces below min_size
    min_size: int
    unmatched: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise UserInputError(
            f"{name} has {arr.ndim} dimension(s) {arr.shape}; a 3D (z, y, x) segmentation is needed"
        )
    if arr.dtype.kind not in "iub":
        raise UserInputError(
            f"{name} has dtype {arr.dtype}; a segmentation of integer ids is needed (EM given?)"
        )
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise UserInputError(f"{name} holds negative ids; segment ids must be >= 0")
    return arr


def _compact(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids of ``x`` as 0..K-1 (0 stays 0 where ``x`` has 0) and the number of nonzero ids."""
    values, inverse = np.unique(x.ravel(), return_inverse=True)
    if values.size and values[0] != 0:
        inverse += 1  # no 0 in x: keep 0 for "unsegmented"
        return inverse.reshape(x.shape), int(values.size)
    return inverse.reshape(x.shape), int(values.size) - 1


def split_consensus(
    a: Any, b: Any, *, min_size: int = DEFAULT_MIN_SIZE, unmatched: str = "drop"
) -> tuple[np.ndarray, ConsensusStats]:
    """The split consensus of segmentations ``a`` and ``b`` (same shape; see the module rule).

    Returns uint64 labels (0 = unsegmented, 1..N) and :class:`ConsensusStats`. Inputs are not
    modified. Raises :class:`UserInputError` for shapes that differ, non-integer or negative ids,
    a negative ``min_size`` or an unknown ``unmatched``.
    """
    import cc3d

    if unmatched not in UNMATCHED:
        raise UserInputError(f"unmatched must be one of {', '.join(UNMATCHED)}, got {unmatched!r}")
    if int(min_size) < 0:
        raise UserInputError(f"min_size must be >= 0 voxels, got {min_size}")
    a, b = _labels(a, "the first segmentation"), _labels(b, "the second segmentation")
    if a.shape != b.shape:
        raise UserInputError(
            f"the two segmentations have shapes {a.shape} and {b.shape}; a consensus needs two "
            "runs over the same region"
        )
    ca, na = _compact(a)
    cb, nb = _compact(b)
    in_a, in_b = ca > 0, cb > 0
    if unmatched == "drop":
        keep = in_a & in_b
    elif unmatched == "keep":
        keep = in_a | in_b
    else:
        keep = in_a
    # one integer per pair, 0 where not kept: (ca, cb) -> ca * (nb + 1) + cb + 1 < (na+1)(nb+1)+1
    pair = ca.astype(np.int64) * (nb + 1) + cb
    pair += 1
    pair[~keep] = 0
    n_pairs = int(np.unique(pair[keep]).size) if keep.any() else 0
    dropped_unmatched = int(np.count_nonzero((in_a | in_b) & ~keep))
    del ca, cb, in_a, in_b
    pieces, n_pieces = cc3d.connected_components(
        pair.astype(np.uint64, copy=False), connectivity=6, return_N=True
    )
    del pair
    flat = pieces.ravel()
    sizes = np.bincount(flat, minlength=n_pieces + 1)
    big = sizes >= max(int(min_size), 1)
    big[0] = False
    # number the kept pieces by their first voxel in C order (cc3d's own order is its own)
    values, first = np.unique(flat, return_index=True)
    chosen = big[values]
    ranked = values[chosen][np.argsort(first[chosen], kind="stable")]
    new_id = np.zeros(n_pieces + 1, dtype=np.uint64)
    new_id[ranked] = np.arange(1, ranked.size + 1, dtype=np.uint64)
    out = new_id[pieces]
    kept = int(sizes[big].sum())
    stats = ConsensusStats(
        segments_a=na,
        segments_b=nb,
        pairs=n_pairs,
        pieces=int(n_pieces),
        segments=int(big.sum()),
        voxels_segmented=kept,
        voxels_dropped_unmatched=dropped_unmatched,
        voxels_dropped_small=int(sizes[1:].sum()) - kept,
        min_size=int(min_size),
        unmatched=unmatched,
    )
    return out, stats


def consensus_claim(claims: Sequence[Any], labels: Any) -> Any:
    """The runs' FFN claims combined for their consensus ``labels``: the higher claim where the
    consensus keeps a supervoxel (a split one run made shows in that run's claim), 0 elsewhere."""
    claim = np.maximum.reduce([np.asarray(c, np.uint8) for c in claims])
    claim[np.asarray(labels) == 0] = 0
    return claim
