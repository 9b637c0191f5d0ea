"""Where to put training examples: partitions by local object-mask fraction, sampled evenly.

google/ffn does this offline (``compute_partitions.py`` writes a partition volume,
``build_coordinates.py`` writes a TFRecord of coordinates). Here both happen in memory at the start
of a run: the partition volume is computed per object inside its bounding box (much cheaper than
filtering the whole volume once per object), and :class:`CoordinateSampler` draws centres on the
fly, picking a partition uniformly and then a voxel in it, which is the oversampling of rare
partitions (thin processes, object borders) that Google gets by duplicating coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_connectome.errors import UserInputError

EXCLUDED = 255


def compute_partitions(
    labels: np.ndarray,
    thresholds: Sequence[float],
    lom_radius: Sequence[int],
    min_size: int = 0,
) -> np.ndarray:
    """uint8 partition index per voxel (``EXCLUDED`` for unlabelled voxels and small objects).

    The index is ``np.digitize(fraction, thresholds)`` where ``fraction`` is the share of the
    ``2*lom_radius+1`` box around the voxel that belongs to the voxel's own object.
    """
    import fastremap
    from scipy import ndimage

    if len(thresholds) > 254:
        raise UserInputError("at most 254 partition thresholds are supported")
    compact, _ = fastremap.renumber(np.asarray(labels), in_place=False)
    compact = compact.astype(np.uint32, copy=False)
    sizes = np.bincount(compact.ravel())
    out = np.full(compact.shape, EXCLUDED, np.uint8)
    box = tuple(2 * int(r) + 1 for r in lom_radius)
    thr = np.asarray(thresholds, np.float32)
    for obj, slices in enumerate(ndimage.find_objects(compact), start=1):
        if slices is None or sizes[obj] < max(min_size, 1):
            continue
        grown = tuple(
            slice(max(s.start - r, 0), min(s.stop + r, n))
            for s, r, n in zip(slices, lom_radius, compact.shape)
        )
        mask = compact[grown] == obj
        frac = ndimage.uniform_filter(mask.astype(np.float32), size=box, mode="constant")
        view = out[grown]
        view[mask] = np.digitize(frac[mask], thr).astype(np.uint8)
    return out


class CoordinateSampler:
    """Draws example centres from a partition volume, each non-empty partition equally often.

    ``lo``/``hi`` bound the centres (inclusive/exclusive, per axis) so that an example region fits
    inside the volume and stays on its side of the train/validation split. ``cap`` keeps at most
    that many candidate voxels per partition (a random subset) to bound memory on large volumes.
    """

    def __init__(
        self,
        partitions: np.ndarray,
        lo: Sequence[int],
        hi: Sequence[int],
        *,
        cap: int = 2_000_000,
        seed: int = 0,
    ):
        self.shape = partitions.shape
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        if any(b <= a for a, b in zip(lo, hi)):
            self.coords: dict[int, np.ndarray] = {}
            return
        part = partitions[sl]
        rng = np.random.default_rng(seed)
        self.coords = {}
        offset = np.asarray(lo, np.int64)
        for p in np.unique(part):
            if p == EXCLUDED:
                continue
            flat = np.flatnonzero(part == p)
            if flat.size > cap:
                flat = rng.choice(flat, cap, replace=False)
            self.coords[int(p)] = (
                np.stack(np.unravel_index(flat, part.shape), axis=1).astype(np.int32) + offset
            ).astype(np.int32)

    @property
    def partitions(self) -> list[int]:
        return sorted(self.coords)

    def __len__(self) -> int:
        return int(sum(c.shape[0] for c in self.coords.values()))

    def sample(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """One centre (z, y, x): a uniform partition, then a uniform voxel in it."""
        if not self.coords:
            raise UserInputError("no example centres available")
        keys = self.partitions
        pts = self.coords[keys[int(rng.integers(len(keys)))]]
        z, y, x = pts[int(rng.integers(pts.shape[0]))]
        return int(z), int(y), int(x)
