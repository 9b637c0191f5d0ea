"""FOV movement: google/ffn's ``FaceMaxMovementPolicy``, split between device and host.

After every prediction the device computes, for each of the six faces of the cuboid at +/- delta
around the FOV centre, the maximum logit and where it is (:func:`face_maxima`, batched over all
canvases, one small transfer). The host keeps the FIFO queue of candidate positions and the set of
visited positions quantised to the delta grid (:class:`FaceMaxQueue`), exactly as google/ffn does.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def face_maxima(logits: torch.Tensor, deltas: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
    """Max logit and its offset on each cuboid face, for a batch (B, D, H, W) of predictions.

    Returns ``scores`` (B, F) float32 and ``offsets`` (B, F, 3) int64 relative to the FOV centre,
    for the F faces in google's order (z-, z+, y-, y+, x-, x+; axes with delta 0 are skipped).
    """
    import torch

    b = logits.shape[0]
    center = [s // 2 for s in logits.shape[1:]]
    sub = [slice(c - d, c + d + 1) for c, d in zip(center, deltas)]
    scores, offsets = [], []
    for axis, d in enumerate(deltas):
        if d == 0:
            continue
        for off in (-d, d):
            sel = [slice(None), *sub]
            sel[axis + 1] = center[axis] + off
            face = logits[tuple(sel)].reshape(b, -1)
            val, idx = face.max(dim=1)
            # the face's two remaining axes, in order
            other = [a for a in range(3) if a != axis]
            n1 = 2 * deltas[other[1]] + 1
            i0 = idx // n1 - deltas[other[0]]
            i1 = idx % n1 - deltas[other[1]]
            rel = [None, None, None]
            rel[axis] = torch.full_like(i0, off)
            rel[other[0]] = i0
            rel[other[1]] = i1
            scores.append(val.float())
            offsets.append(torch.stack(rel, dim=1))
    return torch.stack(scores, dim=1), torch.stack(offsets, dim=1)


class FaceMaxQueue:
    """The host half of google's FaceMax policy: FIFO candidates and visited cells of one object."""

    def __init__(self, start: tuple[int, int, int], deltas: tuple[int, int, int]):
        self.start = np.asarray(start, dtype=np.int64)
        self.deltas = np.asarray(deltas, dtype=np.int64)
        self._half = self.deltas // 2
        self._div = np.maximum(self.deltas, 1)
        self.queue: deque[tuple[int, int, int]] = deque([tuple(int(v) for v in start)])
        self.done: set[tuple[int, int, int]] = set()

    def quantize(self, pos) -> tuple[int, int, int]:
        """Position on the delta grid centred on the seed (the seed lies mid-cell, as in google)."""
        q = (np.asarray(pos) - self.start + self._half) // self._div
        return (int(q[0]), int(q[1]), int(q[2]))

    def mark_visited(self, pos) -> None:
        self.done.add(self.quantize(pos))

    def push_moves(self, pos, scores: np.ndarray, offsets: np.ndarray, threshold: float) -> None:
        """Queue faces whose max clears ``threshold``, best first (google sorts score, offset)."""
        moves = {
            (float(s), tuple(int(v) for v in o)) for s, o in zip(scores, offsets) if s >= threshold
        }
        for _score, rel in sorted(moves, reverse=True):
            self.queue.append((pos[0] + rel[0], pos[1] + rel[1], pos[2] + rel[2]))

    def pending_unvisited(self, limit: int) -> list[tuple[int, int, int]]:
        """The first ``limit`` queued positions whose cell is not visited yet (host-side filter)."""
        out = []
        for p in self.queue:
            if self.quantize(p) not in self.done:
                out.append(p)
                if len(out) >= limit:
                    break
        return out
