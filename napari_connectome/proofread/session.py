"""A proofreading session: the public API the GUI, the CLI, the benchmarks and notebooks all use.

Every edit follows the same path: check preconditions (raise :class:`EditRefused`, nothing
changed), plan the operation completely, append it to the log (fsynced, status ``written``), apply
it in memory (and, for a watershed split, to the fragment volume), then mark the row ``applied``.
If applying or marking raises, the edit is undone (operations are all or nothing), the row is
marked ``failed`` and the error is raised: the project is exactly as it was, now and after a
reopen. Reopening replays the ``applied`` rows, so state, undo stack and redo stack come back
exactly.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.proofread import project as proj
from napari_connectome.proofread.errors import EditRefused
from napari_connectome.proofread.log import APPLIED, FAILED, WRITTEN, EditLog, LogRow, current_user
from napari_connectome.proofread.operations import (
    DeleteOp,
    MergeOp,
    NewSegmentOp,
    Operation,
    Patch,
    RollbackFailed,
    SplitOp,
    StatusOp,
)
from napari_connectome.proofread.split import Point, SplitPlan, plan_split
from napari_connectome.proofread.table import FragmentTable, SegmentStatus


@dataclass(frozen=True)
class SegmentInfo:
    """One row of the segment table."""

    id: int
    size: int
    bbox_lo: tuple[int, int, int]
    bbox_hi: tuple[int, int, int]
    locked: bool
    done: bool
    last_edit: float
    last_op: str


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    description: str
    applied: bool  # True: on the undo stack; False: undone (on the redo stack or discarded)
    user: str = ""  # who made the edit
    time: float = 0.0  # when (unix time)


EditEvent = Literal["edit", "undo", "redo"]
# told after an edit, undo or redo was applied and its log row marked applied
EditListener = Callable[[EditEvent, Operation], None]


class ProofreadSession:
    """An open project. Use :meth:`create` / :meth:`open`; close it (or use ``with``) to release
    the log lock."""

    def __init__(self, project: Path, *, read_only: bool = False, user: str | None = None) -> None:
        self.project = Path(project)
        self.user = user or current_user()  # on every log row this session writes
        self._broken: str | None = None  # why edits are refused after a failed roll-back
        self.meta = proj.read_project_meta(self.project)
        self.format_version = int(self.meta["format_version"])
        log_path = self.project / proj.LOG
        writable = os.access(self.project, os.W_OK) and (
            not log_path.exists() or os.access(log_path, os.W_OK)
        )
        if self.format_version == 1:
            writable = writable and os.access(self.project / proj.FRAGMENTS, os.W_OK)
        self.read_only = read_only or not writable
        self.log = None
        try:
            if not (self.read_only and not log_path.exists()):
                self.log = EditLog(log_path, read_only=self.read_only)
            self.voxel_size_nm = tuple(float(v) for v in self.meta["voxel_size_nm"])
            if self.format_version == 1:
                self._open_copied()
            else:
                self._open_by_reference()
            self.volume_version = 0
            self.ops: dict[int, Operation] = {}
            self.made_by: dict[int, tuple[str, float]] = {}  # seq of self.ops -> (user, time)
            self.undo_stack: list[int] = []
            self.redo_stack: list[int] = []
            self.listeners: list[EditListener] = []  # the one event channel (the GUI redraws)
            rows = list(self.log.rows()) if self.log else []
            self._check_fingerprint(rows)
            for row in rows:
                try:
                    if row.status == APPLIED:
                        self._replay(row)
                    elif row.status == WRITTEN:
                        self._repair(row)
                except (KeyError, ValueError, IndexError, TypeError) as exc:
                    raise EditRefused(
                        f"the edit log {log_path} is damaged at edit #{row.seq} ({row.kind}: "
                        f"{type(exc).__name__} {exc}); nothing was changed. Restore the log from "
                        "a backup"
                    ) from None
        except BaseException:
            if self.log:
                self.log.close()
            raise

    def _open_copied(self) -> None:
        """Format 1: the project holds a copy of the fragments, written in place by splits."""
        import zarr

        mode = "r" if self.read_only else "r+"
        self.fragments = zarr.open_array(self.project / proj.FRAGMENTS, mode=mode)
        self.image = (
            zarr.open_array(self.project / proj.IMAGE, mode="r")
            if self.meta.get("has_image")
            else None
        )
        self.fragment_levels = [(self.fragments, (1, 1, 1))]
        self.image_levels = [] if self.image is None else [self.image]
        self.overlay = None
        self.region_graph = None
        self.table: FragmentTable = proj.load_initial_table(self.project)
        self.graph = proj.load_initial_graph(self.project)

    def _open_by_reference(self) -> None:
        """Format 2: fragments and image read where they live, verified chunk by chunk against
        the region graph's digests, with the log's watershed patches applied on read."""
        from napari_connectome.graph import RegionGraph
        from napari_connectome.proofread import reference as ref
        from napari_connectome.proofread.overlay import PatchOverlay
        from napari_connectome.proofread.source import (
            ChunkCache,
            CoarseFragments,
            VerifiedFragments,
            level_factors,
            sample_chunks,
        )
        from napari_connectome.proofread.stored_graph import StoredGraph

        gpath = ref.graph_path(self.project, self.meta)
        store = RegionGraph.open(gpath)
        if store.fingerprint != self.meta["fingerprint"]:
            raise UserInputError(
                f"the region graph {gpath} belongs to another segmentation than this project "
                "(fingerprint differs); restore the project's own one or make the project again"
            )
        text = ref.resolve_source(self.project, self.meta["fragments"])
        vol = ref.open_source_volume(text, "fragments")
        ref.check_graph_matches(store, vol, gpath)
        self.overlay = PatchOverlay()
        self.chunk_cache = ChunkCache()
        self.fragments = VerifiedFragments(
            vol.multiscale[0],
            vol.storage_chunks,
            source=text,
            digests=store.chunk_digest,
            overlay=self.overlay,
            cache=self.chunk_cache,
        )
        grid = [-(-s // c) for s, c in zip(self.fragments.shape, self.fragments.chunks)]
        self.fragments.verify_sample(sample_chunks(grid))  # a changed source is refused at once
        self.fragment_levels = [(self.fragments, (1, 1, 1))] + [
            (CoarseFragments(lv, f, self.overlay), f)
            for lv in vol.multiscale[1:]
            for f in [level_factors(vol.shape, lv.shape)]
        ]
        self.image = None
        self.image_levels: list[Any] = []
        if self.meta.get("image"):
            img_text = ref.resolve_source(self.project, self.meta["image"])
            img = ref.open_source_volume(img_text, "image")
            if tuple(img.shape) != tuple(vol.shape):
                raise UserInputError(
                    f"the project's image {img_text} now has shape {img.shape}, not {vol.shape}: "
                    "it is not the image the project was made with"
                )
            self.image = img.multiscale[0]
            self.image_levels = list(img.multiscale)
        self.region_graph = store
        ids = store.fragment_ids
        counts, lo, hi = store.stats(np.arange(len(ids)))
        self.table = FragmentTable(ids, ids.copy(), counts, lo, hi)
        self.graph = StoredGraph(store)

    # ---- life cycle
    # ------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, project: str | os.PathLike, fragments: Any, **kw: Any) -> ProofreadSession:
        """Create a project referring to ``fragments`` (a source text) or holding a copy of an
        in-memory array, and open it; see ``proofread.reference.create_project``."""
        from napari_connectome.proofread.reference import create_project

        return cls(create_project(project, fragments, **kw))

    @classmethod
    def open(
        cls, project: str | os.PathLike, *, read_only: bool = False, user: str | None = None
    ) -> ProofreadSession:
        if not Path(project).is_dir():
            raise UserInputError(f"no proofreading project at {project}")
        return cls(Path(project), read_only=read_only, user=user)

    def close(self) -> None:
        if self.log:
            self.log.close()
            self.log = None

    def __enter__(self) -> ProofreadSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_fingerprint(self, rows: list[LogRow]) -> None:
        if self.format_version == 1:
            patches = []
            for r in rows:  # every status: a failed or half-written patch is undone on disk too
                if r.kind == "split":
                    op = Operation.load(r.kind, r.params, r.arrays)
                    for p, mask in zip(op.patches, op.masks):
                        patches.append((p.lo, mask, p.old))
            current = proj.fingerprint(self.fragments, patches)
        else:  # the region graph's digest of every chunk, checked against the source on read
            current = self.meta["fingerprint"]
        logged = self.log.get_meta("fingerprint") if self.log else None
        if logged is None:
            if self.log and not self.read_only:
                self.log.set_meta("fingerprint", self.meta["fingerprint"])
                self.log.commit_meta()
            logged = self.meta["fingerprint"]
        if current != logged:
            raise EditRefused(
                f"the edit log {self.project / proj.LOG} belongs to a different fragment volume "
                "(fingerprint mismatch); use the log that was made with this project"
            )

    # ---- the fragment voxels as EditState
    # ----------------------------------------------------------------------
    def apply_patch(self, lo: Sequence[int], mask: np.ndarray, old: int, new: int) -> None:
        """A watershed split's voxels: an overlay entry (by reference) or, for a format-1 project,
        written into its own copy (idempotent, so replaying a half-written patch completes it)."""
        self.volume_version += 1  # readers caching fragment blocks must re-read
        if self.overlay is not None:
            self.overlay.push(lo, mask, old, new)
        elif not self.read_only:  # read-only replay: the writer already wrote the voxels
            self._write_in_place(lo, mask, new)

    def revert_patch(self, lo: Sequence[int], mask: np.ndarray, old: int, new: int) -> None:
        self.volume_version += 1
        if self.overlay is not None:
            self.overlay.pop(lo, new)
        elif not self.read_only:
            self._write_in_place(lo, mask, old)

    def _write_in_place(self, lo: Sequence[int], mask: np.ndarray, value: int) -> None:
        """All or nothing: a write that fails part-way (a full disk) puts the voxels it may have
        changed back; if even that fails, the session refuses further edits until reopened."""
        sl = tuple(slice(int(a), int(a) + m) for a, m in zip(lo, mask.shape))
        before = np.asarray(self.fragments[sl])
        region = before.copy()
        region[mask] = value
        try:
            self.fragments[sl] = region
        except BaseException:
            try:
                self.fragments[sl] = before
            except BaseException as exc:  # noqa: BLE001  (a failed rollback is recorded; the first error is raised)
                self._broken = f"a voxel patch could not be put back ({exc})"
            raise

    # ---- reading
    # ---------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.fragments.shape)  # type: ignore[return-value]

    def segment_at(self, point: Point) -> int:
        """The segment under a voxel; clicking background is refused (the usual select gesture)."""
        q = tuple(round(v) for v in point)
        if len(q) != 3 or any(not 0 <= v < s for v, s in zip(q, self.shape)):
            raise EditRefused(f"point {tuple(point)} lies outside the volume")
        seg = self.table.segment_of_fragment(int(self.fragments[q]))
        if seg == 0:
            raise EditRefused("that is background; click on a segment")
        return seg

    def labels(self, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """Segment ids for a region (the table applied to the fragments): what the viewer shows."""
        block = np.asarray(self.fragments[region if region is not None else ...])
        return self.table.apply(block)

    def segment_ids(self) -> np.ndarray:
        return self.table.segment_ids()

    def segment_info(self, segment: int) -> SegmentInfo:
        if not self.table.exists(segment):
            raise EditRefused(f"segment {segment} does not exist")
        size, lo, hi = self.table.segment_stats(segment)
        st = self.table.status_of(segment)
        return SegmentInfo(
            int(segment), size, tuple(map(int, lo)), tuple(map(int, hi)), st.locked, st.done,
            st.last_edit, st.last_op,
        )  # fmt: skip

    def segment_table(self) -> list[SegmentInfo]:
        ids, sizes, lo, hi = self.table.all_segment_stats()
        out = []
        for i, s in enumerate(ids.tolist()):
            st = self.table.status_of(s)
            out.append(
                SegmentInfo(s, int(sizes[i]), tuple(lo[i].tolist()), tuple(hi[i].tolist()),
                            st.locked, st.done, st.last_edit, st.last_op)
            )  # fmt: skip
        for s in sorted(self.table.empty_segments):
            st = self.table.status_of(s)
            out.append(
                SegmentInfo(
                    s, 0, (0, 0, 0), (0, 0, 0), st.locked, st.done, st.last_edit, st.last_op
                )
            )
        return out

    def segment_columns(self) -> dict[str, np.ndarray]:
        """The segment table as numpy columns (id, size, locked, done, last_edit, last_op): cheap
        for millions of segments, for widgets that list them all."""
        t = self.table
        ids, sizes = t.segment_sizes()
        if t.empty_segments:
            extra = np.array(sorted(t.empty_segments), np.uint64)
            ids = np.concatenate([ids, extra])
            sizes = np.concatenate([sizes, np.zeros(len(extra), np.int64)])
        n = len(ids)
        cols = {
            "id": ids.astype(np.int64),
            "size": sizes,
            "locked": np.zeros(n, bool),
            "done": np.zeros(n, bool),
            "last_edit": np.zeros(n, float),
            "last_op": np.full(n, "", dtype=object),
        }
        order = np.argsort(ids, kind="stable")  # ids are sorted but for the empty ones appended
        for seg, st in t.status.items():
            k = int(np.searchsorted(ids, np.uint64(seg), sorter=order))
            if k < n and ids[order[k]] == seg:
                j = order[k]
                cols["locked"][j], cols["done"][j] = st.locked, st.done
                cols["last_edit"][j], cols["last_op"][j] = st.last_edit, st.last_op
        return cols

    def history(self) -> list[HistoryEntry]:
        applied = set(self.undo_stack)
        return [
            HistoryEntry(seq, op.describe(), seq in applied, *self.made_by[seq])
            for seq, op in self.ops.items()
        ]  # fmt: skip

    # ---- edits
    # ----------------------------------------------------------------------------------------------
    def _require(self, segment: int, *, edit: bool = True) -> None:
        if not self.table.exists(segment):
            raise EditRefused(f"segment {segment} does not exist")
        if edit and self.table.status_of(segment).locked:
            raise EditRefused(f"segment {segment} is locked; unlock it (L) before editing")

    def _writable(self) -> None:
        if self.read_only or self.log is None:
            raise EditRefused("this project is open read-only; nothing can be edited")
        if self._broken:
            raise EditRefused(
                f"an edit failed and could not be undone here: {self._broken}. Close the project "
                "and open it again; that puts it back as it was before the failed edit"
            )

    def _commit(self, op: Operation) -> Operation:
        params, blob = op.dump()
        row = self.log.append(op.kind, params, blob, user=self.user)  # durable before it shows
        self._run_row(row, op, "edit")
        return op

    def _run_row(self, row: LogRow, op: Operation, event: EditEvent) -> None:
        """Apply a row just written, then mark it applied; on any failure undo what was done,
        mark it failed and re-raise, so the project stays as it was (also across a reopen)."""
        do, undo = {
            "edit": (self._apply_edit, self._unapply_edit),
            "undo": (self._apply_undo, self._apply_redo),
            "redo": (self._apply_redo, self._apply_undo),
        }[event]
        saved = self._save_bookkeeping(op)
        try:
            do(row, op)  # all or nothing
        except BaseException as exc:
            if isinstance(exc, RollbackFailed):
                self._broken = f"'{op.describe()}' could not be undone ({exc})"
            self._failed(row, exc, saved)
            raise
        try:
            self.log.set_status(row.seq, APPLIED)
        except BaseException as exc:
            try:
                undo(row, op)
            except BaseException as again:  # noqa: BLE001  (a failed rollback is recorded; the first error is raised)
                self._broken = f"'{op.describe()}' could not be undone ({again})"
            self._failed(row, exc, saved)
            raise
        self._notify(event, op)

    def _save_bookkeeping(self, op: Operation) -> tuple:
        """What an edit changes besides its operation's own steps (small: the redo stack and
        the statuses of the segments it touches), to put back if it fails."""
        t = self.table
        statuses = {s: copy.copy(t.status.get(s)) for s in op.segments()}
        return list(self.redo_stack), statuses, t.id_counter

    def _failed(self, row: LogRow, exc: BaseException, saved: tuple) -> None:
        redo, statuses, id_counter = saved
        self.ops.pop(row.seq, None)
        self.made_by.pop(row.seq, None)
        self.redo_stack[:] = redo
        for s, st in statuses.items():
            if st is None:
                self.table.status.pop(s, None)
            else:
                self.table.set_status(s, st)
        self.table.id_counter = id_counter  # a failed edit hands out no ids
        if not self._broken:  # else the row stays 'written': the next open repairs it
            with contextlib.suppress(EditRefused):  # else 'written': skipped on open all the same
                self.log.set_status(row.seq, FAILED, f"{type(exc).__name__}: {exc}")
        exc.add_note("the edit was not applied; the project is as it was before it")

    def merge(self, segments: Sequence[int]) -> Operation:
        """Merge segments into the first one (the active segment)."""
        self._writable()
        segs = [int(s) for s in segments]
        if len(segs) < 2:
            raise EditRefused("a merge needs two or more segments")
        if len(set(segs)) != len(segs):
            raise EditRefused(f"segment {segs[0]} cannot be merged with itself")
        if 0 in segs:
            raise EditRefused("that is background; merge needs segments")
        arr = np.array(segs, np.uint64)
        known = np.array([self.table.exists(x) for x in segs])  # indexed: no full-table scan
        if not known.all():
            raise EditRefused(f"segment {int(arr[~known][0])} does not exist")
        for seg in segs:
            if seg in self.table.status and self.table.status[seg].locked:
                raise EditRefused(f"segment {seg} is locked; unlock it (L) before editing")
        target, sources = segs[0], segs[1:]
        rows = self.table.rows_of_many(arr[1:])
        arrays = {"fragments": self.table.frag_ids[rows], "old": self.table.seg[rows]}
        empty = [s for s in segs if s in self.table.empty_segments]
        return self._commit(MergeOp(target, sources, empty, **arrays))

    def preview_split(
        self, segment: int, seeds_a: Sequence[Point], seeds_b: Sequence[Point]
    ) -> SplitPlan:
        """Plan a split without changing anything (for the preview); commit it with
        :meth:`commit_split`."""
        self._require(int(segment))
        from napari_connectome.volumes.units import relative_spacing

        return plan_split(
            self.table,
            self.graph,
            self.fragments,
            self.image,
            int(segment),
            seeds_a,
            seeds_b,
            relative_spacing(self.voxel_size_nm),
        )

    def preview_labels(self, plan: SplitPlan) -> np.ndarray:
        """The preview image of a plan over the segment's bounding box (1 keeps, 2 is new)."""
        return plan.preview_labels(self.fragments, self.table)

    def commit_split(self, plan: SplitPlan) -> Operation:
        self._writable()
        self._require(plan.segment)
        if plan.new_segment != self.table.next_id() or not np.all(
            self.table.seg[self.table.index_of(plan.side_a[plan.side_a < plan.new_segment])]
            == plan.segment
        ):
            raise EditRefused("the segment changed since this preview; preview the split again")
        op = SplitOp(
            segment=int(plan.segment),
            new_segment=int(plan.new_segment),
            patches=[Patch.from_json(p) for p in plan.patches],
            side_b=plan.side_b,
            masks=list(plan.masks),
            edges=dict(plan.edges),
        )
        return self._commit(op)

    def split(self, segment: int, seeds_a: Sequence[Point], seeds_b: Sequence[Point]) -> Operation:
        return self.commit_split(self.preview_split(segment, seeds_a, seeds_b))

    def delete(self, segment: int) -> Operation:
        self._writable()
        self._require(int(segment))
        rows = self.table.rows_of(segment)
        was_empty = int(segment) in self.table.empty_segments
        return self._commit(DeleteOp(int(segment), was_empty, self.table.frag_ids[rows]))

    def _status(self, segment: int, field: str, value: bool) -> Operation:
        self._writable()
        self._require(int(segment), edit=False)
        prev = getattr(self.table.status_of(segment), field)
        return self._commit(StatusOp(int(segment), field, bool(value), bool(prev)))

    def lock(self, segment: int) -> Operation:
        return self._status(segment, "locked", True)

    def unlock(self, segment: int) -> Operation:
        return self._status(segment, "locked", False)

    def toggle_lock(self, segment: int) -> Operation:
        return self._status(segment, "locked", not self.table.status_of(segment).locked)

    def mark_done(self, segment: int, done: bool = True) -> Operation:
        return self._status(segment, "done", done)

    def new_segment(self) -> int:
        self._writable()
        seg = self.table.next_id()
        self._commit(NewSegmentOp(int(seg)))
        return seg

    def _check_locks(self, op: Operation, verb: str) -> None:
        if isinstance(op, StatusOp):  # a lock must always be undoable
            return
        for s in op.segments():
            if self.table.status_of(s).locked:
                raise EditRefused(
                    f"cannot {verb} '{op.describe()}': segment {s} is locked; unlock it first"
                )

    def undo(self) -> Operation:
        self._writable()
        if not self.undo_stack:
            raise EditRefused("nothing to undo")
        op = self.ops[self.undo_stack[-1]]
        self._check_locks(op, "undo")
        row = self.log.append("undo", "{}", None, target=self.undo_stack[-1], user=self.user)
        self._run_row(row, op, "undo")
        return op

    def redo(self) -> Operation:
        self._writable()
        if not self.redo_stack:
            raise EditRefused("nothing to redo")
        op = self.ops[self.redo_stack[-1]]
        self._check_locks(op, "redo")
        row = self.log.append("redo", "{}", None, target=self.redo_stack[-1], user=self.user)
        self._run_row(row, op, "redo")
        return op

    # ---- state changes (shared by live edits and replay)
    # ----------------------------------------------------
    def _stamp(self, op: Operation, when: float) -> None:
        what = op.describe()
        for s in op.segments():
            st = self.table.status_of(s)
            self.table.set_status(s, SegmentStatus(st.locked, st.done, when, what))

    # Each of these is all or nothing: the operation's steps run first (they undo themselves
    # if one fails), the bookkeeping after them cannot fail.
    def _apply_edit(self, row: LogRow, op: Operation) -> None:
        op.execute(self)
        self.ops[row.seq] = op
        self.made_by[row.seq] = (row.user, row.time)
        self.undo_stack.append(row.seq)
        self.redo_stack.clear()
        self._stamp(op, row.time)

    def _unapply_edit(self, row: LogRow, op: Operation) -> None:
        """The inverse of :meth:`_apply_edit` (redo stack and stamps: see ``_failed``)."""
        op.invert(self)
        if self.undo_stack and self.undo_stack[-1] == row.seq:
            self.undo_stack.pop()

    def _apply_undo(self, row: LogRow, op: Operation | None = None) -> None:
        seq = self.undo_stack[-1] if self.undo_stack else None
        if seq is None or seq != row.target:
            raise RuntimeError(
                f"corrupt log: undo of {row.target} but the top of the stack is {seq}"
            )
        self.ops[seq].invert(self)
        self.redo_stack.append(self.undo_stack.pop())
        self._stamp(self.ops[seq], row.time)

    def _apply_redo(self, row: LogRow, op: Operation | None = None) -> None:
        seq = self.redo_stack[-1] if self.redo_stack else None
        if seq is None or seq != row.target:
            raise RuntimeError(
                f"corrupt log: redo of {row.target} but the top of the stack is {seq}"
            )
        self.ops[seq].execute(self)
        self.undo_stack.append(self.redo_stack.pop())
        self._stamp(self.ops[seq], row.time)

    def _replay(self, row: LogRow) -> None:
        if row.kind == "undo":
            self._apply_undo(row)
        elif row.kind == "redo":
            self._apply_redo(row)
        else:
            self._apply_edit(row, Operation.load(row.kind, row.params, row.arrays))

    def _repair(self, row: LogRow) -> None:
        """A row left ``written``: its session died while applying it, or could not undo it after
        a failure. It never counted; only the voxels a format-1 split may have half-written in
        the project's own copy need putting back (by reference, patches live in memory)."""
        if self.read_only:
            return  # nothing is written; the next writable open repairs it
        if row.kind == "split" and self.overlay is None:
            op = Operation.load(row.kind, row.params, row.arrays)
            for p, mask in zip(op.patches, op.masks):
                self._write_in_place(p.lo, mask, p.old)
        self.log.set_status(row.seq, FAILED, "not applied when its session ended")

    def _notify(self, what: EditEvent, op: Operation) -> None:
        for fn in list(self.listeners):
            fn(what, op)

    # ---- export
    # ----------------------------------------------------------------------------------------------
    def export(
        self, dest: str | os.PathLike, *, overwrite: bool = False, progress: Any = None
    ) -> Path:
        """Write the segmentation (the table applied to the fragments) to a new OME-Zarr; see
        export.py."""
        from napari_connectome.proofread.export import export_segmentation

        return export_segmentation(self, dest, overwrite=overwrite, progress=progress)
