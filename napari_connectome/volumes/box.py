"""One region type: an axis-aligned box of voxels, ``start`` (inclusive) to ``stop`` (exclusive).

Why: blockwise code keeps asking the same few questions of regions (how big, where inside another
array, grown by a margin but kept inside the volume, what two regions share) and the answers were
spelled out as hand-made slice tuples each time; one small frozen type answers them once. The chunk
grid helpers (:func:`grid_shape`, :func:`chunk_indices`, :func:`chunk_box`) are the one copy of
"which chunks tile this shape, in C order".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Index = tuple[int, ...]


def _ints(values: Sequence[int] | int, ndim: int) -> Index:
    if isinstance(values, (int, np.integer)):
        return (int(values),) * ndim
    out = tuple(int(v) for v in values)
    if len(out) != ndim:
        raise ValueError(f"{list(out)} has {len(out)} axes, the box {ndim}")
    return out


@dataclass(frozen=True)
class Box:
    """Voxels ``start`` .. ``stop`` per axis. A box that is empty along some axis keeps
    ``stop == start`` there (what :meth:`intersect` gives for regions that do not meet)."""

    start: Index
    stop: Index

    def __post_init__(self) -> None:
        start = tuple(int(v) for v in self.start)
        stop = tuple(int(v) for v in self.stop)
        if len(start) != len(stop):
            raise ValueError(f"box start {list(start)} and stop {list(stop)} differ in axes")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", tuple(max(a, b) for a, b in zip(start, stop)))

    @classmethod
    def from_shape(cls, shape: Sequence[int], origin: Sequence[int] | None = None) -> Box:
        """The box of an array of ``shape`` whose first voxel sits at ``origin`` (default 0)."""
        start = _ints(0 if origin is None else origin, len(shape))
        return cls(start, tuple(a + int(n) for a, n in zip(start, shape)))

    @classmethod
    def from_slices(cls, slices: Sequence[slice]) -> Box:
        """The box of bounded, step-1 slices (e.g. an ROI already checked against a shape)."""
        return cls(tuple(s.start for s in slices), tuple(s.stop for s in slices))

    @property
    def ndim(self) -> int:
        return len(self.start)

    @property
    def shape(self) -> Index:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def empty(self) -> bool:
        return any(a >= b for a, b in zip(self.start, self.stop))

    @property
    def slices(self) -> tuple[slice, ...]:
        """Index an array that covers the volume from voxel 0 with this."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    def slices_in(self, outer: Box | Sequence[int]) -> tuple[slice, ...]:
        """Index an array that covers ``outer`` (a box, or just its start) with this."""
        origin = outer.start if isinstance(outer, Box) else _ints(outer, self.ndim)
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, origin))

    def grow(self, margin: Sequence[int] | int, within: Box | Sequence[int] | None = None) -> Box:
        """``margin`` more voxels on each side per axis, clipped to ``within`` (a box, or the
        shape of a volume starting at 0) when given."""
        m = _ints(margin, self.ndim)
        grown = Box(
            tuple(a - d for a, d in zip(self.start, m)), tuple(b + d for b, d in zip(self.stop, m))
        )
        if within is None:
            return grown
        return grown.intersect(within if isinstance(within, Box) else Box.from_shape(within))

    def intersect(self, other: Box) -> Box:
        """What both boxes cover (:attr:`empty` when they do not meet)."""
        return Box(
            tuple(max(a, b) for a, b in zip(self.start, other.start)),
            tuple(min(a, b) for a, b in zip(self.stop, other.stop)),
        )

    def with_axis(self, axis: int, start: int, stop: int) -> Box:
        """The same box with ``start:stop`` along ``axis``."""
        lo, hi = list(self.start), list(self.stop)
        lo[axis], hi[axis] = start, stop
        return Box(tuple(lo), tuple(hi))


def grid_shape(shape: Sequence[int], chunks: Sequence[int]) -> Index:
    """Chunks per axis that tile ``shape`` (the last ones may be partial)."""
    return tuple(-(-int(s) // int(c)) for s, c in zip(shape, chunks))


def chunk_indices(grid: Sequence[int]) -> Iterator[Index]:
    """Every chunk index of a grid of ``grid`` chunks per axis, in C order."""
    for index in np.ndindex(*(int(n) for n in grid)):
        yield tuple(int(i) for i in index)


def chunk_box(
    index: Sequence[int],
    chunks: Sequence[int],
    shape: Sequence[int],
    origin: Sequence[int] | None = None,
) -> Box:
    """The voxels of chunk ``index`` of a grid of ``chunks`` tiling ``shape`` from ``origin``
    (default 0), clipped at the far edge."""
    o = _ints(0 if origin is None else origin, len(shape))
    start = tuple(a + int(i) * int(c) for a, i, c in zip(o, index, chunks))
    stop = tuple(min(s + int(c), a + int(n)) for s, c, a, n in zip(start, chunks, o, shape))
    return Box(start, stop)
