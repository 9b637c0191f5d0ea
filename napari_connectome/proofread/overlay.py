"""The voxels a watershed split rewrites, kept as an overlay applied on read (the source stays
read-only).

A patch says: inside the box at ``lo`` with this boolean ``mask``, voxels of fragment ``old``
read as fragment ``new``. Patches come from the edit log (each split stores its masks), so the
overlay needs no file of its own and is rebuilt by replay; undo pops the newest patch, so the
source read through the overlay is again bit-identical to the source. Reading costs one box
intersection test per patch plus the masked assignment of the patches that touch the region: it
grows with the edits near what is read, never with the volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Patch:
    lo: tuple[int, int, int]
    mask: np.ndarray  # bool, the patch's box
    old: int
    new: int

    @property
    def hi(self) -> tuple[int, int, int]:
        return tuple(a + m for a, m in zip(self.lo, self.mask.shape))  # type: ignore[return-value]


class PatchOverlay:
    """A stack of patches, newest last (undo and redo are LIFO, so a stack is exact)."""

    def __init__(self) -> None:
        self.patches: list[Patch] = []
        self.version = 0  # bumped by every change: caches of patched blocks compare it

    def __len__(self) -> int:
        return len(self.patches)

    def push(self, lo: Sequence[int], mask: np.ndarray, old: int, new: int) -> None:
        self.patches.append(Patch(tuple(int(v) for v in lo), np.asarray(mask, bool), old, new))
        self.version += 1

    def pop(self, lo: Sequence[int], new: int) -> None:
        """Remove the newest patch (it must be the one at ``lo`` writing ``new``)."""
        top = self.patches[-1] if self.patches else None
        if top is None or top.lo != tuple(int(v) for v in lo) or top.new != new:
            raise RuntimeError("corrupt log: undo of a split patch that is not the newest one")
        self.patches.pop()
        self.version += 1

    def touches(self, lo: Sequence[int], hi: Sequence[int]) -> bool:
        return any(self._overlap(p, lo, hi) for p in self.patches)

    @staticmethod
    def _overlap(p: Patch, lo: Sequence[int], hi: Sequence[int]) -> bool:
        return all(a < d and c < b for a, b, c, d in zip(p.lo, p.hi, lo, hi))

    def apply(
        self, block: np.ndarray, lo: Sequence[int], factor: Sequence[int] = (1, 1, 1)
    ) -> np.ndarray:
        """Apply every patch to ``block`` (level-0 voxels ``lo`` onwards, or a level downsampled by
        ``factor``, where the patch mask is subsampled the way the pyramid picked its voxels)."""
        if not self.patches:
            return block
        f = tuple(int(v) for v in factor)
        hi0 = [(a + n) * s for a, n, s in zip(lo, block.shape, f)]
        lo0 = [a * s for a, s in zip(lo, f)]
        out = block
        for p in self.patches:
            if not self._overlap(p, lo0, hi0):
                continue
            if out is block:
                out = block.copy()
            # the patch's voxels at this level: level voxel i covers level-0 voxels [i*f, (i+1)*f)
            plo = [-(-a // s) for a, s in zip(p.lo, f)]  # first level voxel starting inside
            phi = [-(-b // s) for b, s in zip(p.hi, f)]
            glo = [max(a, b) for a, b in zip(plo, lo)]
            ghi = [min(a, b + n) for a, b, n in zip(phi, lo, block.shape)]
            if any(a >= b for a, b in zip(glo, ghi)):
                continue
            msel = tuple(slice(a * s - q, b * s - q, s) for a, b, s, q in zip(glo, ghi, f, p.lo))
            bsel = tuple(slice(a - q, b - q) for a, b, q in zip(glo, ghi, lo))
            sub = out[bsel]
            m = p.mask[msel] & (sub == p.old)
            sub[m] = p.new
        return out
