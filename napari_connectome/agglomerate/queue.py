"""The proofreading queue: the agglomeration's decisions most likely wrong, first.

An item is one contact between two supervoxels whose affinity lies within ``band`` of the
threshold: either the rule merged across it (``merged``: is it a false merge?) or left it apart
(``apart``: is it a false split?). ``doubt`` = 1 - |affinity - threshold| / band (1 at the
threshold); items are ranked by doubt, then by contact area (a wrong large contact costs more).
The sum of the doubts left is what the queue expects to gain: the number of wrong decisions
among the remaining items if doubt were the chance of an error (docs/agglomeration.md measures
how far that holds).

A decision is an ordinary proofreading edit through a :class:`ProofreadSession` (so it is in the
durable log and undo works): *reject* reverses the rule's decision (split a merged pair by the
session's min-cut with seeds on both sides of the contact, or merge a pair left apart);
*accept* confirms it and edits nothing; *skip* leaves the item for later. Reading the queue costs
the scores table (one row per edge), never the voxels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

DEFAULT_BAND = 0.15
NEIGHBOURS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


@dataclass(frozen=True)
class QueueItem:
    kind: str  # "merged" or "apart"
    a: int  # supervoxel ids of the contact, a < b
    b: int
    point: tuple[int, int, int]  # a voxel of a or b on their brightest shared face
    affinity: float
    area: int
    doubt: float

    def describe(self) -> str:
        what = "merged" if self.kind == "merged" else "left apart"
        return (
            f"{self.a} | {self.b} {what} at affinity {self.affinity:.3f} "
            f"({self.area} faces) at z, y, x {list(self.point)}"
        )


class ProofreadQueue:
    """The ranked items of one agglomerate output (``DEST``) and the decisions made on them."""

    def __init__(self, dest: str | Path, *, band: float = DEFAULT_BAND, limit: int | None = None):
        import zarr

        dest = Path(dest)
        try:
            meta = json.loads((dest / "agglomeration.json").read_text())
            scores = zarr.open_group(str(dest / "scores"), mode="r")
            edges = zarr.open_group(str(dest / "region_graph" / "edges"), mode="r")
        except (OSError, ValueError, KeyError) as exc:
            raise UserInputError(
                f"{dest} is not an agglomerate output ({exc}); make one with "
                "`napari-connectome agglomerate SEG EM DEST`"
            ) from None
        if not 0 < band <= 1:
            raise UserInputError(f"band {band} must lie in (0, 1]")
        self.dest, self.meta, self.band = dest, meta, float(band)
        self.threshold = float(meta["threshold"])
        aff = np.asarray(scores["affinity"][:])
        near = np.flatnonzero(np.abs(aff - self.threshold) < self.band)
        area = np.asarray(scores["area"].get_orthogonal_selection(near))
        merged = np.asarray(scores["merged"].get_orthogonal_selection(near))
        point = np.asarray(scores["point"].get_orthogonal_selection((near, slice(None))))
        u = np.asarray(edges["u"].get_orthogonal_selection(near))
        v = np.asarray(edges["v"].get_orthogonal_selection(near))
        doubt = 1.0 - np.abs(aff[near] - self.threshold) / self.band
        order = np.lexsort((-area, -doubt))[:limit]
        self.items = [
            QueueItem(
                "merged" if merged[k] else "apart",
                int(u[k]),
                int(v[k]),
                tuple(int(c) for c in point[k]),
                float(aff[near][k]),
                int(area[k]),
                float(doubt[k]),
            )
            for k in order
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

    def expected_gain(self) -> float:
        """Sum of the doubts of the undecided items: the wrong decisions the queue expects there."""
        return float(
            sum(
                it.doubt
                for i, it in enumerate(self.items)
                if self.decisions.get(i) not in ("accepted", "rejected")
            )
        )

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


def apply_agglomeration(session: Any, dest: str | Path) -> int:
    """Make a project over ``DEST/supervoxels`` show the agglomerated segments: one merge edit
    per segment of more than one supervoxel (in the log, so undo works); returns the edits."""
    import zarr

    scores = zarr.open_group(str(Path(dest) / "scores"), mode="r")
    ids = np.asarray(scores["segment_ids"][:], np.uint64)
    seg_of = np.asarray(scores["segment_of"][:], np.uint64)
    order = np.argsort(seg_of, kind="stable")
    seg_sorted = seg_of[order]
    starts = np.flatnonzero(np.r_[True, seg_sorted[1:] != seg_sorted[:-1]])
    n = 0
    for s, e in zip(starts, np.r_[starts[1:], len(order)]):
        if e - s < 2:
            continue
        members = ids[order[s:e]]
        segs = sorted({session.table.segment_of_fragment(int(f)) for f in members})
        if len(segs) > 1:
            session.merge(segs)
            n += 1
    return n
