"""The fragment -> segment table with per-fragment statistics.

Fragments (supervoxels) are the ids stored in the volume; segments are what the proofreader sees. A
merge or a split only rewrites entries of this table, which is why it costs microseconds and never
touches the volume. Per-fragment voxel counts and bounding boxes are computed once at import and
kept up to date by the few edits that create fragments, so the size and bounding box of any segment
are a vectorised sum, not a volume scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A dense lookup table (fragment id -> segment id) is used while the largest fragment id stays
# below this; above it, lookups fall back to a binary search over the sorted fragment ids.
DENSE_LUT_LIMIT = 1 << 25


@dataclass
class SegmentStatus:
    locked: bool = False
    done: bool = False
    last_edit: float = 0.0  # unix time of the last edit touching the segment (0 = never edited)
    last_op: str = ""


@dataclass
class FragmentTable:
    """Sorted fragment ids, their segment ids and their statistics (count, bbox lo/hi exclusive,
    z/y/x)."""

    frag_ids: np.ndarray  # uint64, sorted, without 0
    seg: np.ndarray  # uint64, segment of each fragment (0 = deleted / background)
    counts: np.ndarray  # int64 voxels per fragment
    lo: np.ndarray  # int64 (N, 3)
    hi: np.ndarray  # int64 (N, 3), exclusive
    empty_segments: set[int] = field(default_factory=set)  # segments created empty ("new segment")
    status: dict[int, SegmentStatus] = field(default_factory=dict)
    id_counter: int = 0  # every id handed out so far is <= id_counter
    _lut: np.ndarray | None = None

    def __post_init__(self) -> None:
        top = int(self.frag_ids[-1]) if len(self.frag_ids) else 0
        self.id_counter = max(self.id_counter, top, int(self.seg.max()) if len(self.seg) else 0)
        self._rebuild_lut()
        self._index_segments()

    def _index_segments(self) -> None:
        """A sorted index of the segments as they are now, plus the rows edits changed since, so
        finding a segment's rows costs its size plus the edits, not the volume's fragments."""
        self._by_seg = np.argsort(self.seg, kind="stable")
        self._seg_sorted = self.seg[self._by_seg]
        self._changed: set[int] = set()
        self._changed_arr: np.ndarray | None = np.zeros(0, np.int64)

    def _changed_rows(self) -> np.ndarray:
        if self._changed_arr is None:
            self._changed_arr = np.fromiter(self._changed, np.int64, len(self._changed))
        return self._changed_arr

    # ---- lookups
    # -------------------------------------------------------------------------------------------
    def _rebuild_lut(self) -> None:
        top = int(self.frag_ids[-1]) if len(self.frag_ids) else 0
        if top < DENSE_LUT_LIMIT:
            lut = np.zeros(max(top + 1, 1), dtype=np.uint64)
            lut[self.frag_ids.astype(np.int64)] = self.seg
            self._lut = lut
        else:
            self._lut = None

    def index_of(self, fragments: np.ndarray) -> np.ndarray:
        """Row index of each fragment id (all must exist)."""
        fragments = np.asarray(fragments, dtype=np.uint64)
        idx = np.searchsorted(self.frag_ids, fragments)
        if np.any(idx >= len(self.frag_ids)) or np.any(self.frag_ids[idx] != fragments):
            raise KeyError("unknown fragment id")
        return idx

    def apply(self, block: np.ndarray) -> np.ndarray:
        """Segment ids for a block of fragment ids (unknown ids and 0 map to 0)."""
        block = np.asarray(block)
        if self._lut is not None:
            lut = self._lut
            # uint64 ids below 2**63 have the same bits as int64: a view, not a 100 MB copy
            flat = block.view(np.int64) if block.dtype == np.uint64 else block.astype(np.int64)
            if block.size and int(flat.max()) >= len(lut):  # ids the table does not know
                out = np.zeros(block.shape, np.uint64)
                ok = flat < len(lut)
                out[ok] = lut[flat[ok]]
                return out
            return lut[flat]
        b = block.astype(np.uint64, copy=False)
        idx = np.searchsorted(self.frag_ids, b)
        idx = np.minimum(idx, len(self.frag_ids) - 1)
        hit = self.frag_ids[idx] == b
        return np.where(hit, self.seg[idx], np.uint64(0))

    def segment_of_fragment(self, fragment: int) -> int:
        if fragment == 0:
            return 0
        try:
            return int(self.seg[self.index_of(np.array([fragment]))[0]])
        except KeyError:
            return 0

    def rows_of(self, segment: int) -> np.ndarray:
        """Sorted rows of a segment's fragments (through the index: O(its size + edits))."""
        return self.rows_of_many([segment])

    def rows_of_many(self, segments) -> np.ndarray:
        segs = np.unique(np.asarray(segments, np.uint64))
        lo = np.searchsorted(self._seg_sorted, segs, side="left")
        hi = np.searchsorted(self._seg_sorted, segs, side="right")
        parts = [self._by_seg[a:b] for a, b in zip(lo, hi) if b > a]
        changed = self._changed_rows()
        if len(changed):
            parts.append(changed)
        if not parts:
            return np.zeros(0, np.int64)
        rows = np.unique(np.concatenate(parts))
        return rows[np.isin(self.seg[rows], segs)]

    def exists(self, segment: int) -> bool:
        return segment in self.empty_segments or len(self.rows_of(segment)) > 0

    def segment_ids(self) -> np.ndarray:
        ids = np.unique(self.seg)
        ids = ids[ids != 0]
        if self.empty_segments:
            ids = np.union1d(ids, np.fromiter(self.empty_segments, np.uint64))
        return ids

    def next_id(self) -> int:
        return self.id_counter + 1

    # ---- mutations (only operations call these)
    # --------------------------------------------------------------
    def assign(self, rows: np.ndarray, segments: np.ndarray | int) -> None:
        self.seg[rows] = segments
        self._changed.update(np.asarray(rows, np.int64).ravel().tolist())
        self._changed_arr = None
        if self._lut is not None:
            self._lut[self.frag_ids[rows].astype(np.int64)] = self.seg[rows]
        if np.isscalar(segments):
            self.id_counter = max(self.id_counter, int(segments))
        elif len(segments):
            self.id_counter = max(self.id_counter, int(np.max(segments)))

    def append_fragment(self, fid: int, segment: int, count: int, lo, hi) -> None:
        if len(self.frag_ids) and fid <= int(self.frag_ids[-1]):
            raise ValueError("new fragment ids must be larger than every existing one")
        self.frag_ids = np.append(self.frag_ids, np.uint64(fid))
        self.seg = np.append(self.seg, np.uint64(segment))
        self.counts = np.append(self.counts, np.int64(count))
        self.lo = np.vstack([self.lo, np.asarray(lo, np.int64)[None]])
        self.hi = np.vstack([self.hi, np.asarray(hi, np.int64)[None]])
        self.id_counter = max(self.id_counter, fid, segment)
        self._changed.add(len(self.frag_ids) - 1)
        self._changed_arr = None
        if self._lut is not None and fid < len(self._lut):
            self._lut[fid] = segment
        else:
            self._rebuild_lut()

    def pop_fragment(self, fid: int) -> None:
        if not len(self.frag_ids) or int(self.frag_ids[-1]) != fid:
            raise ValueError("only the newest fragment can be removed")
        self._changed.discard(len(self.frag_ids) - 1)
        self._changed_arr = None
        self.frag_ids, self.seg, self.counts = self.frag_ids[:-1], self.seg[:-1], self.counts[:-1]
        self.lo, self.hi = self.lo[:-1], self.hi[:-1]
        if self._lut is not None and fid < len(self._lut):
            self._lut[fid] = 0

    def status_of(self, segment: int) -> SegmentStatus:
        return self.status.get(int(segment)) or SegmentStatus()

    def set_status(self, segment: int, status: SegmentStatus) -> None:
        self.status[int(segment)] = status

    # ---- statistics
    # ------------------------------------------------------------------------------------------
    def segment_stats(self, segment: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(voxels, bbox lo, bbox hi exclusive) of one segment; an empty segment has size 0 and a
        0-size box."""
        rows = self.rows_of(segment)
        if len(rows) == 0:
            z = np.zeros(3, np.int64)
            return 0, z, z
        return int(self.counts[rows].sum()), self.lo[rows].min(0), self.hi[rows].max(0)

    def _group(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows with a segment, sorted segment ids, each such row's index into ids, sizes)."""
        keep = self.seg != 0
        ids, inv = np.unique(self.seg[keep], return_inverse=True)
        sizes = np.bincount(inv, weights=self.counts[keep], minlength=len(ids)).astype(np.int64)
        return keep, ids, inv, sizes

    def segment_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised (ids, sizes) for every non-empty segment, ids sorted."""
        _, ids, _, sizes = self._group()
        return ids, sizes

    def all_segment_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised (ids, sizes, lo, hi) for every non-empty segment."""
        keep, ids, inv, sizes = self._group()
        lo = np.full((len(ids), 3), np.iinfo(np.int64).max, np.int64)
        hi = np.zeros((len(ids), 3), np.int64)
        np.minimum.at(lo, inv, self.lo[keep])
        np.maximum.at(hi, inv, self.hi[keep])
        return ids, sizes, lo, hi

    def copy(self) -> FragmentTable:
        return FragmentTable(
            self.frag_ids.copy(),
            self.seg.copy(),
            self.counts.copy(),
            self.lo.copy(),
            self.hi.copy(),
            set(self.empty_segments),
            {k: SegmentStatus(**vars(v)) for k, v in self.status.items()},
            self.id_counter,
        )
