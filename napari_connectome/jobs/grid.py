"""The block grid: write regions tile the ROI (one block = one output chunk), read regions add
context.

Blocks are named by their chunk index ``(bz, by, bx)`` and numbered in C order; every id and file
name derives from that index, so results never depend on which worker finished first.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Block:
    index: Triple  # chunk index in the output
    flat: int  # position in C order
    write_start: Triple  # in input voxels
    write_stop: Triple
    read_start: Triple  # write region + overlap, clipped to the input volume
    read_stop: Triple

    @property
    def name(self) -> str:
        return "_".join(str(i) for i in self.index)

    @property
    def write_slices_in_read(self) -> tuple[slice, ...]:
        """Where the write region sits inside the block's read (segmented) array."""
        return tuple(
            slice(w0 - r0, w1 - r0)
            for w0, w1, r0 in zip(self.write_start, self.write_stop, self.read_start)
        )

    def output_slices(self, roi_start: Triple) -> tuple[slice, ...]:
        """Where the write region goes in the output array (whose origin is the ROI start)."""
        return tuple(
            slice(a - o, b - o) for a, b, o in zip(self.write_start, self.write_stop, roi_start)
        )


@dataclass(frozen=True)
class BlockGrid:
    roi_start: Triple
    roi_stop: Triple
    block_shape: Triple
    overlap: Triple
    volume_shape: Triple

    @property
    def roi_shape(self) -> Triple:
        return tuple(b - a for a, b in zip(self.roi_start, self.roi_stop))

    @property
    def grid_shape(self) -> Triple:
        return tuple(-(-s // b) for s, b in zip(self.roi_shape, self.block_shape))

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape))

    def block(self, index: Triple) -> Block:
        index = tuple(int(i) for i in index)
        flat = int(np.ravel_multi_index(index, self.grid_shape))
        ws = tuple(r + i * b for r, i, b in zip(self.roi_start, index, self.block_shape))
        we = tuple(min(s + b, e) for s, b, e in zip(ws, self.block_shape, self.roi_stop))
        rs = tuple(max(0, s - o) for s, o in zip(ws, self.overlap))
        re = tuple(min(v, e + o) for e, o, v in zip(we, self.overlap, self.volume_shape))
        return Block(index, flat, ws, we, rs, re)

    def __iter__(self) -> Iterator[Block]:
        for index in itertools.product(*(range(n) for n in self.grid_shape)):
            yield self.block(index)

    def face_neighbours(self, block: Block) -> list[Block]:
        """The up to six blocks sharing a face with ``block``, in a fixed order."""
        out = []
        for axis in range(3):
            for step in (-1, 1):
                index = list(block.index)
                index[axis] += step
                if 0 <= index[axis] < self.grid_shape[axis]:
                    out.append(self.block(tuple(index)))
        return out

    def faces(self) -> Iterator[tuple[Block, Block, int]]:
        """Every pair of face neighbours (lower, upper, axis), in a fixed order."""
        for block in self:
            for axis in range(3):
                nxt = list(block.index)
                nxt[axis] += 1
                if nxt[axis] < self.grid_shape[axis]:
                    yield block, self.block(tuple(nxt)), axis


def shared_region(a: Block, b: Block) -> tuple[Triple, Triple]:
    """Intersection of two blocks' read regions (both segmented it), in input voxels."""
    start = tuple(max(x, y) for x, y in zip(a.read_start, b.read_start))
    stop = tuple(min(x, y) for x, y in zip(a.read_stop, b.read_stop))
    return start, stop


def seam_region(a: Block, b: Block, axis: int, half_width: int) -> tuple[Triple, Triple]:
    """Where two face neighbours' segments are compared: within ``half_width`` voxels of the face
    along ``axis``, and across the face only as wide as their write regions (face neighbours share
    those on the other axes). There both blocks had the most context. Further out on the other
    axes both only saw context near their read borders, where FFN is least reliable; a merge a
    block made there once fused two neurons on FIB-25 through a chain of faces (overlap 48:
    ARAND 0.074 against one canvas; 0.015 with this region)."""
    start, stop = shared_region(a, b)
    seam = b.write_start[axis]
    start = tuple(
        max(s, seam - half_width) if k == axis else max(s, a.write_start[k])
        for k, s in enumerate(start)
    )
    stop = tuple(
        min(e, seam + half_width) if k == axis else min(e, a.write_stop[k])
        for k, e in enumerate(stop)
    )
    return start, stop
