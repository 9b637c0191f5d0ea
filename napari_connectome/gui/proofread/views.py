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
        # When this says True (the viewer is in 3D), a request for a 3D block gets zeros (a
        # broadcast view, no memory), not a read. The proofreading tool shows meshes in 3D and
        # hides its labels layers, but napari slices them for 3D before the tool hears of the
        # switch (napari's own handlers run first). In 2D a multiscale layer also asks for 3D
        # blocks (all z of a tile, then the plane), so the key alone cannot tell.
        self.blank_volumes: Callable[[], bool] | None = None
        self.reads = 0  # __getitem__ calls that read fragments (tests: 3D makes none)
        self.volume_reads = 0  # of those, reads of a 3D block (what 3D rendering would need)

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

    def _volume_shape(self, key: Any) -> tuple[int, ...] | None:
        """The block shape a key asks for when it is a 3D block (all three axes sliced, each longer
        than one voxel); None for a plane, a line or a voxel."""
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if not all(isinstance(k, slice) for k in key):
            return None
        shape = tuple(len(range(*k.indices(n))) for k, n in zip(key, self.shape))
        return shape if min(shape) > 1 else None

    def __getitem__(self, key: Any) -> np.ndarray:
        if (
            self.blank_volumes is not None
            and (shape := self._volume_shape(key)) is not None
            and self.blank_volumes()
        ):
            return np.broadcast_to(np.zeros((), np.uint64), shape)
        if isinstance(key, int | np.integer):
            # napari probes the dtype as `data[0].dtype` on every selected-label change: a plane
            # read for nothing (in 3D as in 2D); answer lazily
            return LazyRegion(self, key)
        if self._volume_shape(key) is not None:
            # napari's multiscale slicing asks for every z of the tile on screen, then indexes
            # the plane: answer lazily so only the plane is read (what dask would do)
            return LazyRegion(self, key)
        return self._segments(key)

    def _segments(self, key: Any) -> np.ndarray:
        self.reads += 1
        frags = self._fragments(key)
        if frags.ndim == 3 and min(frags.shape) > 1:
            self.volume_reads += 1
        seg = self.session.table.apply(frags)
        if self.keep is not None:
            ids = self.keep()
            if len(ids) == 0:
                return np.zeros_like(seg)
            seg = np.where(np.isin(seg, ids), seg, np.uint64(0))
        return seg

    def __setitem__(self, key: Any, value: Any) -> None:
        """Writing voxels here would bypass the edit log (napari's brush, fill and eraser do this
        on an editable layer; the tool makes its layers read-only, see no_paint.py)."""
        from napari_connectome.errors import UserInputError

        raise UserInputError(
            "the segments layer cannot be painted: it shows the segment table applied to the "
            "fragments. Edit with the proofreading gestures (shift+click merge, ctrl+click seeds "
            "and Enter to split, Delete), which are logged and undoable"
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._segments(...)  # an explicit conversion is always served
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


class LazyRegion:
    """A block (or, for an integer key, a plane) of a :class:`SegmentView` that is read only when
    indexed or converted."""

    def __init__(self, view: SegmentView, key: Any) -> None:
        from napari_connectome.proofread.source import normalise_key

        self.view = view
        self.region, self.drop = normalise_key(key, view.shape)
        self.shape = tuple(
            s.stop - s.start for ax, s in enumerate(self.region) if ax not in self.drop
        )
        self.dtype = view.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        from napari_connectome.proofread.source import normalise_key

        sub, drop = normalise_key(key, self.shape)
        it = iter(zip(sub, range(len(sub))))
        inner, out_drop = [], []
        for ax, r in enumerate(self.region):
            if ax in self.drop:
                inner.append(r)
                out_drop.append(ax)
                continue
            s, i = next(it)
            inner.append(slice(r.start + s.start, r.start + s.stop))
            if i in drop:
                out_drop.append(ax)
        out = self.view._segments(tuple(inner))
        return out.squeeze(axis=tuple(out_drop)) if out_drop else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.view._segments(self.region)
        out = out.squeeze(axis=self.drop) if self.drop else out
        return out if dtype is None else out.astype(dtype)
