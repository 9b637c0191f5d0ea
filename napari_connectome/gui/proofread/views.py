"""Array views napari displays: the fragment volume with the segment table applied on read.

One view per pyramid level of the fragments, so napari shows the segments as a multiscale layer and
reads only the chunks on screen, at the level the zoom needs.

The volume is never rewritten for display: napari asks for the slice it shows (a 2D plane, or the
volume in 3D), the view reads those fragment ids and maps them through the table's lookup array.
The fragment ids of the last few slices are cached (only a watershed split changes them), so after
a merge redrawing a plane is one lookup per voxel, on a 1024^3 volume as on a small one. A
``DirectLabelColormap`` with one entry per fragment would instead cost O(fragments) per edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from napari_connectome.proofread import ProofreadSession


class SegmentView:
    """Segment ids, lazily: ``view[key]`` = table applied to ``fragments[key]``."""

    def __init__(
        self,
        session: ProofreadSession,
        keep: Callable[[], np.ndarray] | None = None,
        level: int = 0,
    ) -> None:
        self.session = session
        self.keep = keep  # when set, only these segment ids are shown (the selection layer)
        self.level = level  # pyramid level of the fragments (0 = full resolution)
        self.source = session.fragment_levels[level][0]
        self.shape = tuple(self.source.shape)
        self.dtype = np.dtype(np.uint64)
        self.ndim = 3
        self.size = int(np.prod(self.shape))
        self.cache_slices = 4
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def _fragments(self, key: Any) -> np.ndarray:
        tag = (repr(key), self.session.volume_version)
        hit = self._cache.pop(tag, None)
        if hit is None:
            hit = np.asarray(self.source[key])
        self._cache[tag] = hit  # most recent last
        while len(self._cache) > self.cache_slices or (
            len(self._cache) > 1 and sum(a.nbytes for a in self._cache.values()) > 1 << 30
        ):
            self._cache.pop(next(iter(self._cache)))
        return hit

    def __getitem__(self, key: Any) -> np.ndarray:
        seg = self.session.table.apply(self._fragments(key))
        if self.keep is not None:
            ids = self.keep()
            if len(ids) == 0:
                return np.zeros_like(seg)
            seg = np.where(np.isin(seg, ids), seg, np.uint64(0))
        return seg

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]
