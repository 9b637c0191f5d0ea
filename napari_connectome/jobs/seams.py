"""Seam check: do block faces cut objects more often than any other plane does?

A job has no single-canvas run to compare with, so reconciliation is judged against the job
itself. Across any plane of voxels, some neighbouring pairs (both labelled) change label because
two objects touch there; that rate is a property of the tissue and the segmenter. A face where
matching failed cuts objects that run through it, so its rate rises above the rate of the planes
inside blocks. Each block counts pairs and changes over its own interior planes and over the face
to each lower neighbour (ids through the lookup table, before holes are filled, so it measures the
matching alone); the job sums them per axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AXES = "zyx"


def plane_changes(labels: np.ndarray, axis: int) -> tuple[int, int]:
    """(pairs, changes) over every pair of neighbouring planes along ``axis`` inside ``labels``:
    pairs of face-adjacent voxels that are both labelled, and those of them whose ids differ."""
    lo = np.moveaxis(labels, axis, 0)
    a, b = lo[:-1], lo[1:]
    both = (a > 0) & (b > 0)
    return int(both.sum()), int((both & (a != b)).sum())


def face_changes(lower: np.ndarray, upper: np.ndarray) -> tuple[int, int]:
    """(pairs, changes) between two facing planes (the lower block's last, the upper's first)."""
    both = (lower > 0) & (upper > 0)
    return int(both.sum()), int((both & (lower != upper)).sum())


def block_seam_counts(final: np.ndarray, block, neighbours: list) -> dict:
    """One block's counts: ``final`` is its write region in final ids; ``neighbours`` are
    (block, local labels of its read region, table local -> final id); the lower ones (index one
    less along an axis) give the planes facing this block's first planes."""
    counts = {"face": [[0, 0] for _ in AXES], "interior": [[0, 0] for _ in AXES]}
    for ax in range(3):
        counts["interior"][ax] = list(plane_changes(final, ax))
    for nb, labels, table in neighbours:
        lower = [ax for ax in range(3) if nb.index[ax] == block.index[ax] - 1]
        if not lower:
            continue
        ax = lower[0]
        last = nb.write.stop[ax] - 1
        theirs = table[labels[nb.write.with_axis(ax, last, last + 1).slices_in(nb.read)]]
        mine = final[tuple(slice(0, 1) if a == ax else slice(None) for a in range(3))]
        counts["face"][ax] = list(face_changes(theirs, mine))
    return counts


@dataclass
class SeamCounts:
    """Per axis: [pairs, changes] on the faces between blocks and on the planes inside them."""

    face: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in AXES])
    interior: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in AXES])

    def add(self, other: dict) -> None:
        for mine, theirs in ((self.face, other["face"]), (self.interior, other["interior"])):
            for ax in range(3):
                mine[ax][0] += int(theirs[ax][0])
                mine[ax][1] += int(theirs[ax][1])

    def as_dict(self) -> dict:
        return {"face": self.face, "interior": self.interior}

    def report(self) -> dict:
        """Per axis with faces: change rate on faces, inside blocks, and their ratio (about 1 when
        matching neither cuts nor fuses; well above 1 when faces cut objects)."""
        out = {}
        for ax, name in enumerate(AXES):
            fp, fc = self.face[ax]
            ip, ic = self.interior[ax]
            if fp == 0:
                continue
            face = fc / fp
            inner = ic / ip if ip else None
            out[name] = {
                "face_change": round(face, 5),
                "interior_change": None if inner is None else round(inner, 5),
                "ratio": round(face / inner, 3) if inner else None,
                "face_pairs": fp,
            }
        return out
