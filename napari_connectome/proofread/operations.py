"""Edit operations: each one knows how to execute itself and how to invert itself.

An operation is fully planned before it is logged (every fragment it moves, every id it hands out,
every voxel it rewrites), so executing it again from the log gives bit-identical state. This is
PyChunkedGraph's shape: the log row is the operation, undo and redo are rows pointing at the
operation they supersede.
"""

from __future__ import annotations

import io
import json
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


class Operation:
    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Operation]]] = {}

    def __init__(self, params: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        self.params = params
        self.arrays = arrays or {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        Operation.registry[cls.kind] = cls

    # --- to override
    # -------------------------------------------------------------------------------------------
    def execute(self, state: EditState) -> None:
        raise NotImplementedError

    def invert(self, state: EditState) -> None:
        raise NotImplementedError

    def segments(self) -> list[int]:
        """Segments whose content this operation changes (checked against locks, stamped with last
        edit)."""
        return []

    def describe(self) -> str:
        return self.kind

    # --- serialisation
    # -----------------------------------------------------------------------------------------
    def dump(self) -> tuple[str, bytes | None]:
        blob = None
        if self.arrays:
            buf = io.BytesIO()
            np.savez_compressed(buf, **self.arrays)
            blob = buf.getvalue()
        return json.dumps(self.params), blob

    @staticmethod
    def load(kind: str, params: str, blob: bytes | None) -> Operation:
        arrays = {}
        if blob:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        return Operation.registry[kind](json.loads(params), arrays)


def _rows(table: FragmentTable, fragments: np.ndarray) -> np.ndarray:
    return table.index_of(fragments)


class MergeOp(Operation):
    """Every fragment of the source segments joins the target segment."""

    kind = "merge"

    def execute(self, state: EditState) -> None:
        t = state.table
        t.assign(_rows(t, self.arrays["fragments"]), self.params["target"])
        for s in [*self.params["sources"], self.params["target"]]:
            t.empty_segments.discard(s)

    def invert(self, state: EditState) -> None:
        t = state.table
        t.assign(_rows(t, self.arrays["fragments"]), self.arrays["old"])
        t.empty_segments.update(self.params["empty"])

    def segments(self) -> list[int]:
        return [self.params["target"], *self.params["sources"]]

    def describe(self) -> str:
        src = self.params["sources"]
        srcs = ", ".join(str(s) for s in src) if len(src) <= 4 else f"{len(src)} segments"
        return f"merge {srcs} into {self.params['target']}"


class DeleteOp(Operation):
    """The segment's fragments become background (the voxels keep their fragment ids)."""

    kind = "delete"

    def execute(self, state: EditState) -> None:
        t = state.table
        t.assign(_rows(t, self.arrays["fragments"]), 0)
        t.empty_segments.discard(self.params["segment"])

    def invert(self, state: EditState) -> None:
        t = state.table
        t.assign(_rows(t, self.arrays["fragments"]), self.params["segment"])
        if self.params["was_empty"]:
            t.empty_segments.add(self.params["segment"])

    def segments(self) -> list[int]:
        return [self.params["segment"]]

    def describe(self) -> str:
        return f"delete {self.params['segment']}"


class StatusOp(Operation):
    """Lock / unlock / mark done / not done: a flag on the segment, nothing else."""

    kind = "status"

    def _set(self, state: EditState, value: bool) -> None:
        st = state.table.status_of(self.params["segment"])
        setattr(st, self.params["field"], value)
        state.table.set_status(self.params["segment"], st)

    def execute(self, state: EditState) -> None:
        self._set(state, self.params["value"])

    def invert(self, state: EditState) -> None:
        self._set(state, self.params["previous"])

    def segments(self) -> list[int]:
        return [self.params["segment"]]

    def describe(self) -> str:
        word = {("locked", True): "lock", ("locked", False): "unlock"}.get(
            (self.params["field"], self.params["value"]),
            "mark done" if self.params["value"] else "mark not done",
        )
        return f"{word} {self.params['segment']}"


class NewSegmentOp(Operation):
    """A new, empty segment id, to merge fragments into."""

    kind = "new_segment"

    def execute(self, state: EditState) -> None:
        state.table.empty_segments.add(self.params["segment"])
        state.table.id_counter = max(state.table.id_counter, self.params["segment"])

    def invert(self, state: EditState) -> None:
        state.table.empty_segments.discard(self.params["segment"])

    def segments(self) -> list[int]:
        return [self.params["segment"]]

    def describe(self) -> str:
        return f"new segment {self.params['segment']}"


class SplitOp(Operation):
    """Side B's fragments move to a new segment; optional voxel patches first cut a too-coarse
    fragment.

    A patch rewrites the voxels of fragment ``old`` inside ``mask`` (at ``lo``) to a new fragment
    id ``new``; its inverse writes ``old`` back on exactly those voxels, so undo restores the
    volume bit for bit.
    """

    kind = "split"

    def _edges(self, when: str) -> dict[str, np.ndarray]:
        return {k: self.arrays[f"{when}_{k}"] for k in ("u", "v", "area", "weight")}

    def execute(self, state: EditState) -> None:
        t = state.table
        for i, p in enumerate(self.params["patches"]):
            state.apply_patch(tuple(p["lo"]), self.arrays[f"mask{i}"], p["old"], p["new"])
            row = t.index_of(np.array([p["old"]]))[0]
            t.counts[row], t.lo[row], t.hi[row] = (
                p["old_after"][0],
                p["old_after"][1],
                p["old_after"][2],
            )
            t.append_fragment(p["new"], self.params["segment"], *p["new_stats"])
            state.graph.replace([p["old"]], self._edges("after"))
        t.assign(_rows(t, self.arrays["side_b"]), self.params["new_segment"])

    def invert(self, state: EditState) -> None:
        t = state.table
        t.assign(_rows(t, self.arrays["side_b"]), self.params["segment"])
        for i, p in reversed(list(enumerate(self.params["patches"]))):
            state.graph.replace([p["old"], p["new"]], self._edges("before"))
            t.pop_fragment(p["new"])
            row = t.index_of(np.array([p["old"]]))[0]
            t.counts[row], t.lo[row], t.hi[row] = (
                p["old_before"][0],
                p["old_before"][1],
                p["old_before"][2],
            )
            state.revert_patch(tuple(p["lo"]), self.arrays[f"mask{i}"], p["old"], p["new"])

    def segments(self) -> list[int]:
        return [self.params["segment"], self.params["new_segment"]]

    def describe(self) -> str:
        how = " (watershed)" if self.params["patches"] else ""
        return f"split {self.params['segment']} -> {self.params['new_segment']}{how}"
