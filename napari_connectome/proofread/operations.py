"""Edit operations: each one knows how to execute itself and how to invert itself.

An operation is fully planned before it is logged (every fragment it moves, every id it hands out,
every voxel it rewrites), so executing it again from the log gives bit-identical state. This is
PyChunkedGraph's shape: the log row is the operation, undo and redo are rows pointing at the
operation they supersede.

Parameters are typed fields of one dataclass per kind. In the log they are a JSON object (the
scalar fields) plus an ``.npz`` blob (the array fields), under the same names the first log
format used, so old logs read unchanged.

Execution is all or nothing: an operation is a list of steps, each with its inverse, and a step
that fails has the steps before it undone, so :meth:`Operation.execute` (and
:meth:`Operation.invert`) either completes or leaves the state as it found it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

import numpy as np

from napari_connectome.proofread.graph import FragmentGraph
from napari_connectome.proofread.table import FragmentTable


class EditState(Protocol):
    """What an operation may touch: the table, the graph, and (for split patches) the voxels."""

    table: FragmentTable
    graph: FragmentGraph  # or StoredGraph: edges_of(table, ids) and replace(ids, edges)

    def apply_patch(self, lo: tuple[int, ...], mask: np.ndarray, old: int, new: int) -> None: ...

    def revert_patch(self, lo: tuple[int, ...], mask: np.ndarray, old: int, new: int) -> None: ...


Action = Callable[[EditState], None]
Step = tuple[Action, Action]  # (do, undo)


class RollbackFailed(RuntimeError):
    """A step failed and undoing the steps before it failed too: the state is unknown (the
    session then refuses edits until the project is reopened, which rebuilds it from the log)."""


def run_steps(state: EditState, steps: Sequence[Step]) -> None:
    """Do every step in order; if one raises, undo the ones done (newest first) and re-raise."""
    done: list[Action] = []
    try:
        for do, undo in steps:
            do(state)
            done.append(undo)
    except BaseException as exc:
        for undo in reversed(done):
            try:
                undo(state)
            except BaseException as again:  # noqa: BLE001  (a failed rollback is recorded; the first error is raised)
                raise RollbackFailed(f"{type(again).__name__}: {again}") from exc
        raise


@dataclass
class Operation:
    """One edit. Subclasses are dataclasses whose ``ndarray`` fields travel in the blob."""

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Operation]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        Operation.registry[cls.kind] = cls

    # --- to override
    # -------------------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        raise NotImplementedError

    def segments(self) -> list[int]:
        """Segments whose content this operation changes (checked against locks, stamped with
        the last edit)."""
        return []

    def describe(self) -> str:
        return self.kind

    # --- all or nothing
    # ----------------------------------------------------------------------------------------
    def execute(self, state: EditState) -> None:
        run_steps(state, self.steps())

    def invert(self, state: EditState) -> None:
        run_steps(state, [(undo, do) for do, undo in reversed(self.steps())])

    # --- serialisation
    # -----------------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "np.ndarray"}

    def _params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type != "np.ndarray"}

    def dump(self) -> tuple[str, bytes | None]:
        arrays = self._arrays()
        blob = None
        if arrays:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            blob = buf.getvalue()
        return json.dumps(self._params()), blob

    @classmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Operation:
        return cls(**params, **arrays)

    @staticmethod
    def load(kind: str, params: str, blob: bytes | None) -> Operation:
        arrays = {}
        if blob:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        return Operation.registry[kind].from_parts(json.loads(params), arrays)


def _assign(fragments: np.ndarray, segments: np.ndarray | int) -> Action:
    def do(state: EditState) -> None:
        t = state.table
        t.assign(t.index_of(fragments), segments)  # index_of refuses before anything changes

    return do


@dataclass
class MergeOp(Operation):
    """Every fragment of the source segments joins the target segment."""

    kind: ClassVar[str] = "merge"
    target: int
    sources: list[int]
    empty: list[int]  # segments among them that were empty ("new segment") before
    fragments: np.ndarray  # the sources' fragments
    old: np.ndarray  # their segments before

    def steps(self) -> list[Step]:
        def fill(state: EditState) -> None:
            state.table.empty_segments.difference_update([*self.sources, self.target])

        def unfill(state: EditState) -> None:
            state.table.empty_segments.update(self.empty)

        return [(_assign(self.fragments, self.target), _assign(self.fragments, self.old)),
                (fill, unfill)]  # fmt: skip

    def segments(self) -> list[int]:
        return [self.target, *self.sources]

    def describe(self) -> str:
        src = self.sources
        srcs = ", ".join(str(s) for s in src) if len(src) <= 4 else f"{len(src)} segments"
        return f"merge {srcs} into {self.target}"


@dataclass
class DeleteOp(Operation):
    """The segment's fragments become background (the voxels keep their fragment ids)."""

    kind: ClassVar[str] = "delete"
    segment: int
    was_empty: bool
    fragments: np.ndarray

    def steps(self) -> list[Step]:
        def forget(state: EditState) -> None:
            state.table.empty_segments.discard(self.segment)

        def remember(state: EditState) -> None:
            if self.was_empty:
                state.table.empty_segments.add(self.segment)

        return [(_assign(self.fragments, 0), _assign(self.fragments, self.segment)),
                (forget, remember)]  # fmt: skip

    def segments(self) -> list[int]:
        return [self.segment]

    def describe(self) -> str:
        return f"delete {self.segment}"


@dataclass
class StatusOp(Operation):
    """Lock / unlock / mark done / not done: a flag on the segment, nothing else."""

    kind: ClassVar[str] = "status"
    segment: int
    field: str  # "locked" or "done"
    value: bool
    previous: bool

    def __post_init__(self) -> None:
        if self.field not in ("locked", "done"):
            raise ValueError(f"a status edit sets 'locked' or 'done', not {self.field!r}")

    def _set(self, value: bool) -> Action:
        def do(state: EditState) -> None:
            st = state.table.status_of(self.segment)
            setattr(st, self.field, value)
            state.table.set_status(self.segment, st)

        return do

    def steps(self) -> list[Step]:
        return [(self._set(self.value), self._set(self.previous))]

    def segments(self) -> list[int]:
        return [self.segment]

    def describe(self) -> str:
        word = {("locked", True): "lock", ("locked", False): "unlock"}.get(
            (self.field, self.value), "mark done" if self.value else "mark not done"
        )
        return f"{word} {self.segment}"


@dataclass
class NewSegmentOp(Operation):
    """A new, empty segment id, to merge fragments into."""

    kind: ClassVar[str] = "new_segment"
    segment: int

    def steps(self) -> list[Step]:
        def add(state: EditState) -> None:
            state.table.empty_segments.add(self.segment)
            state.table.id_counter = max(state.table.id_counter, self.segment)

        def remove(state: EditState) -> None:
            state.table.empty_segments.discard(self.segment)

        return [(add, remove)]

    def segments(self) -> list[int]:
        return [self.segment]

    def describe(self) -> str:
        return f"new segment {self.segment}"


Stats = tuple[int, Sequence[int], Sequence[int]]  # voxels, bbox lo, bbox hi (exclusive)


@dataclass(frozen=True)
class Patch:
    """Voxels of fragment ``old`` inside a mask at ``lo`` become the new fragment ``new``, with
    both fragments' statistics before and after (so undo needs no volume read)."""

    old: int
    new: int
    lo: tuple[int, int, int]
    old_before: Stats
    old_after: Stats
    new_stats: Stats

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Patch:
        return cls(int(d["old"]), int(d["new"]), tuple(int(v) for v in d["lo"]),
                   d["old_before"], d["old_after"], d["new_stats"])  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "lo": list(self.lo),
                "old_before": self.old_before, "old_after": self.old_after,
                "new_stats": self.new_stats}  # fmt: skip


@dataclass
class SplitOp(Operation):
    """Side B's fragments move to a new segment; optional voxel patches first cut a too-coarse
    fragment.

    A patch rewrites the voxels of fragment ``old`` inside its mask to a new fragment id; its
    inverse writes ``old`` back on exactly those voxels, so undo restores the volume bit for bit.
    """

    kind: ClassVar[str] = "split"
    segment: int
    new_segment: int
    patches: list[Patch]
    side_b: np.ndarray  # fragments (after the patches) that move to new_segment
    masks: list[np.ndarray] = field(default_factory=list)  # one per patch, in the blob as mask{i}
    # graph edges of the patched fragments before / after (before_u, ..., after_weight)
    edges: dict[str, np.ndarray] = field(default_factory=dict)

    EDGE_KEYS: ClassVar[tuple[str, ...]] = ("u", "v", "area", "weight")

    def _edges(self, when: str) -> dict[str, np.ndarray]:
        return {k: self.edges[f"{when}_{k}"] for k in self.EDGE_KEYS}

    def _patch_steps(self, p: Patch, mask: np.ndarray) -> list[Step]:
        def stats(values: Stats) -> Action:
            def do(state: EditState) -> None:
                t = state.table
                row = t.index_of(np.array([p.old]))[0]
                t.counts[row], t.lo[row], t.hi[row] = values[0], values[1], values[2]

            return do

        def voxels(state: EditState) -> None:
            state.apply_patch(p.lo, mask, p.old, p.new)

        def unvoxels(state: EditState) -> None:
            state.revert_patch(p.lo, mask, p.old, p.new)

        def add(state: EditState) -> None:
            state.table.append_fragment(p.new, self.segment, *p.new_stats)

        def pop(state: EditState) -> None:
            state.table.pop_fragment(p.new)

        def cut(state: EditState) -> None:
            state.graph.replace([p.old], self._edges("after"))

        def uncut(state: EditState) -> None:
            state.graph.replace([p.old, p.new], self._edges("before"))

        return [(voxels, unvoxels), (stats(p.old_after), stats(p.old_before)), (add, pop),
                (cut, uncut)]  # fmt: skip

    def steps(self) -> list[Step]:
        out: list[Step] = []
        for p, mask in zip(self.patches, self.masks, strict=True):
            out += self._patch_steps(p, mask)
        out.append((_assign(self.side_b, self.new_segment), _assign(self.side_b, self.segment)))
        return out

    def segments(self) -> list[int]:
        return [self.segment, self.new_segment]

    def describe(self) -> str:
        how = " (watershed)" if self.patches else ""
        return f"split {self.segment} -> {self.new_segment}{how}"

    # the first log format's layout: patches as JSON, masks and edges as named arrays
    def dump(self) -> tuple[str, bytes | None]:
        params = {"segment": self.segment, "new_segment": self.new_segment,
                  "patches": [p.to_json() for p in self.patches]}  # fmt: skip
        arrays = {"side_b": self.side_b, **self.edges}
        arrays |= {f"mask{i}": m for i, m in enumerate(self.masks)}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return json.dumps(params), buf.getvalue()

    @classmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> SplitOp:
        patches = [Patch.from_json(p) for p in params["patches"]]
        return cls(
            segment=int(params["segment"]),
            new_segment=int(params["new_segment"]),
            patches=patches,
            side_b=arrays["side_b"],
            masks=[arrays[f"mask{i}"] for i in range(len(patches))],
            edges={k: v for k, v in arrays.items() if k.startswith(("before_", "after_"))},
        )
