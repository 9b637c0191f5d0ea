"""The inference canvas and the per-canvas segmentation logic (google/ffn ``Canvas``).

A :class:`Canvas` holds one image region: the normalised image and the object-probability map
(logits, NaN where nothing was predicted yet) as tensors on the compute device, and the segmentation
on the host (int32; -1 marks failed seeds, as in google), with the *claim* (uint8, see
:func:`commit_object`). The logic of ``segment_at`` /
``segment_all`` lives in generator functions (:func:`grow`, :func:`segment_all`) that *yield* FOV
requests instead of calling the model. A scheduler (:mod:`.runner`) advances many of them in
lockstep and answers each request from one batched forward pass, so many canvases share the device
without threads.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connectome.ffn.movement import FaceMaxQueue
from napari_connectome.ffn.options import InferenceOptions

if TYPE_CHECKING:
    import torch

PROBES_PER_STEP = 8  # queued positions whose current value is read along with every prediction


@dataclass
class FovRequest:
    """Predict at ``pos``; afterwards read the canvas at ``probes`` (flat indices)."""

    canvas: Canvas
    pos: tuple[int, int, int]
    probes: list[tuple[int, int, int]]
    feed: Any = None  # consistency iterations: logits to feed instead of the canvas
    repeats: int = 0


@dataclass
class ProbeRequest:
    """Read the current canvas values at ``probes`` (no prediction)."""

    canvas: Canvas
    probes: list[tuple[int, int, int]]


@dataclass
class FovResult:
    scores: np.ndarray  # (F,) face-maximum logits
    offsets: np.ndarray  # (F, 3) their offsets from the FOV centre
    probe_values: np.ndarray  # canvas values at the request's probes, after the update


@dataclass
class ObjectOutcome:
    """What became of one seed. ``status``: ok, weak_seed, too_small, skipped_* or no_steps."""

    seed: tuple[int, int, int]
    status: str
    steps: int = 0
    segment_id: int = 0
    voxels: int = 0
    seconds: float = 0.0
    overlaps: dict[int, int] = field(default_factory=dict)


class Canvas:
    """One image region being segmented: device tensors for image and logits, host segmentation."""

    def __init__(
        self,
        image: np.ndarray,
        *,
        fov_size: tuple[int, int, int],
        deltas: tuple[int, int, int],
        image_mean: float,
        image_stddev: float,
        options: InferenceOptions,
        mask: np.ndarray | None = None,
        segmentation: np.ndarray | None = None,
        device: str | torch.device = "cpu",
    ):
        import torch

        self.options = options
        self.th = options.logit_thresholds()
        self.fov_size = tuple(int(v) for v in fov_size)
        self.deltas = tuple(int(v) for v in deltas)
        self.margin = np.asarray(self.fov_size) // 2
        self.shape = tuple(int(v) for v in image.shape)
        self.device = torch.device(device)
        img = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, torch.float32)
        self.image = (img - float(image_mean)) / float(image_stddev)
        self.seed = torch.full(self.shape, float("nan"), dtype=torch.float32, device=self.device)
        self._seed_flat = self.seed.view(-1)
        self._strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1], dtype=np.int64)
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        if segmentation is None:
            self.segmentation = np.zeros(self.shape, dtype=np.int32)
        else:
            # int32 like google's canvas; larger ids (uint64 volumes) only need to stay > 0
            seg, top = np.asarray(segmentation), np.iinfo(np.int32).max - 1
            if seg.dtype.kind == "u" and seg.dtype.itemsize >= 4:
                seg = np.minimum(seg, np.asarray(top, seg.dtype))
            elif seg.dtype.kind == "i" and seg.dtype.itemsize >= 8:
                seg = np.clip(seg, -1, top)
            self.segmentation = seg.astype(np.int32)
        self.max_id = int(self.segmentation.max(initial=0))
        # FFN evidence for agglomeration: per voxel, the highest probability (x 255) that a later
        # accepted object gave it while another segment already held it (shared by forks; only
        # ever written where a segment is, so 0 on background)
        self.claim = np.zeros(self.shape, dtype=np.uint8)
        self.counters: Counter[str] = Counter()
        self.origins: dict[int, dict[str, Any]] = {}
        self._dirty: tuple[np.ndarray, np.ndarray] | None = None  # bbox of the last object's logits
        self.reads: list[tuple[int, int, int]] | None = (
            None  # see napari_connectome.ffn.speculative
        )

    def fork(self) -> Canvas:
        """A canvas for one more object in flight: own logits, shared image and segmentation."""
        import copy

        import torch

        twin = copy.copy(self)
        twin.seed = torch.full(self.shape, float("nan"), dtype=torch.float32, device=self.device)
        twin._seed_flat = twin.seed.view(-1)
        twin._dirty = None
        twin.reads = []
        return twin

    # -- geometry -----------------------------------------------------------------------------
    def fov_slices(self, pos) -> tuple[slice, slice, slice]:
        start = np.asarray(pos) - self.margin
        return tuple(slice(int(s), int(s) + f) for s, f in zip(start, self.fov_size))

    def in_bounds(self, pos) -> bool:
        """google ``is_valid_pos`` border rule: the whole FOV fits inside the region."""
        p = np.asarray(pos)
        return bool(np.all(p - self.margin >= 0) and np.all(p + self.margin < self.shape))

    def flat_index(self, coords: list[tuple[int, int, int]]) -> np.ndarray:
        return (np.asarray(coords, dtype=np.int64).reshape(-1, 3) @ self._strides).astype(np.int64)

    # -- object lifecycle ----------------------------------------------------------------------
    def init_seed(self, pos) -> None:
        """Forget the previous object's logits (only its bounding box) and plant the seed."""
        if self._dirty is not None:
            lo, hi = self._dirty
            self.seed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = float("nan")
        self.seed[tuple(int(v) for v in pos)] = float(self.th.init_activation)
        p = np.asarray(pos)
        self._dirty = (p.copy(), p + 1)

    def touched(self, pos) -> None:
        lo, hi = self._dirty
        start = np.asarray(pos) - self.margin
        self._dirty = (np.minimum(lo, start), np.maximum(hi, start + self.fov_size))

    def probability_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Object probabilities (0..1, NaN -> 0) in [lo, hi) as a host array, for live views."""
        import torch

        box = self.seed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        return torch.nan_to_num(torch.sigmoid(box), nan=0.0).cpu().numpy()

    def object_mask(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        box = self.seed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        return (box >= float(self.th.segment_threshold)).cpu().numpy()

    def logit_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The logits (NaN: never predicted) in [lo, hi) as a host array, read at once."""
        box = self.seed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        return box.cpu().numpy()

    def result(self) -> np.ndarray:
        """The segmentation as uint64, 0 = background (failed-seed marks removed)."""
        seg = self.segmentation.astype(np.uint64)
        seg[self.segmentation < 0] = 0
        return seg


def _next_position(
    canvas: Canvas,
    queue: FaceMaxQueue,
    known: dict[tuple[int, int, int], float],
) -> Generator[ProbeRequest, np.ndarray, tuple[int, int, int] | None]:
    """Pop queued positions until one is valid (google ``FaceMaxMovementPolicy.__next__``)."""
    mt = canvas.th.move_threshold
    c = canvas.counters
    while queue.queue:
        pos = queue.queue.popleft()
        if queue.quantize(pos) in queue.done:
            continue
        if pos not in known:
            batch = [pos, *queue.pending_unvisited(2 * PROBES_PER_STEP)]
            values = yield ProbeRequest(canvas, batch)
            known.update(zip(batch, values.tolist()))
        if known[pos] < mt:
            c["skip_threshold"] += 1
            continue
        if not canvas.in_bounds(pos) or canvas.segmentation[pos] > 0:
            c["skip_invalid_pos"] += 1
            continue
        if canvas.reads is not None:  # speculative runs: this decision assumed pos was free
            canvas.reads.append(pos)
        return pos
    return None


def grow(
    canvas: Canvas, start: tuple[int, int, int], on_step: Callable[[int, Any], None] | None = None
) -> Generator[FovRequest | ProbeRequest, Any, tuple[int, float, tuple[np.ndarray, np.ndarray]]]:
    """Grow one object from ``start`` (google ``segment_at``); returns (steps, seed logit, extent).

    The extent (min and max FOV centres) bounds where the object's logits can lie.
    """
    opts, mt = canvas.options, canvas.th.move_threshold
    canvas.init_seed(start)
    queue = FaceMaxQueue(start, canvas.deltas)
    known: dict[tuple[int, int, int], float] = {start: float(canvas.th.init_activation)}
    start_value = float(canvas.th.init_activation)
    lo = hi = np.asarray(start)
    steps = 0
    while True:
        pos = yield from _next_position(canvas, queue, known)
        if pos is None:
            break
        if start_value < mt:
            canvas.counters["seed_got_too_weak"] += 1
            break
        if canvas.mask is not None and canvas.mask[pos]:
            canvas.counters["skip_restricted_pos"] += 1
            continue
        if opts.max_steps and steps >= opts.max_steps:
            canvas.counters["max_steps_reached"] += 1
            break
        probes = [start, *queue.pending_unvisited(PROBES_PER_STEP)]
        res: FovResult = yield FovRequest(canvas, pos, probes)
        steps += 1
        canvas.touched(pos)
        lo, hi = np.minimum(lo, pos), np.maximum(hi, pos)
        vals = res.probe_values.tolist()
        start_value = vals[0]
        known = dict(zip(probes, vals))
        queue.mark_visited(pos)
        before = len(queue.queue)
        queue.push_moves(pos, res.scores, res.offsets, mt)
        for p in list(queue.queue)[before:]:
            # a move target is the face maximum, so its current value is that face's score
            known.setdefault(p, _score_of(p, pos, res))
        if on_step is not None:
            on_step(steps, pos)
    return steps, start_value, (lo, hi)


def _score_of(p, pos, res: FovResult) -> float:
    rel = tuple(int(a - b) for a, b in zip(p, pos))
    for s, o in zip(res.scores, res.offsets):
        if tuple(int(v) for v in o) == rel:
            return float(s)
    raise AssertionError("move target not among face maxima")


def commit_object(
    canvas: Canvas,
    start: tuple[int, int, int],
    steps: int,
    start_value: float,
    extent: tuple[np.ndarray, np.ndarray],
    seconds: float,
    segment_id: int | None = None,
) -> ObjectOutcome:
    """google ``segment_all``'s bookkeeping after ``segment_at``: accept or reject the object."""
    c, seg = canvas.counters, canvas.segmentation
    out = ObjectOutcome(seed=start, status="ok", steps=steps, seconds=seconds)
    if steps <= 0:
        out.status = "no_steps"
        return out
    if start_value < canvas.th.move_threshold:
        if seg[start] == 0:
            seg[start] = -1
        c["invalid_weak_seed"] += 1
        out.status = "weak_seed"
        return out
    half = np.asarray(canvas.fov_size) // 2
    lo = np.maximum(extent[0] - half, 0)
    hi = np.minimum(extent[1] + half + 1, canvas.shape)
    # one copy of the box serves the mask (as object_mask compares) and the claim
    logits = canvas.logit_box(lo, hi)
    mask = logits >= np.float32(canvas.th.segment_threshold)
    sub = seg[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    taken = sub > 0
    raw = int(mask.sum())
    ids, counts = np.unique(sub[mask], return_counts=True)
    out.overlaps = {int(i): int(n) for i, n in zip(ids, counts) if i > 0}
    mask &= sub <= 0
    if canvas.mask is not None:
        mask &= ~canvas.mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    n = int(mask.sum())
    out.voxels = n
    if n < canvas.options.min_segment_size:
        if seg[start] == 0:
            seg[start] = -1
        c["invalid_too_small"] += 1
        out.status = "too_small"
        return out
    if segment_id is None:
        canvas.max_id += 1
        while canvas.max_id in canvas.origins:
            canvas.max_id += 1
        segment_id = canvas.max_id
    sub[mask] = segment_id
    _record_claim(canvas, lo, hi, taken, logits)
    canvas.max_id = max(canvas.max_id, segment_id)
    c["voxels_segmented"] += n
    c["voxels_overlapping"] += raw - n
    c["segments"] += 1
    out.segment_id = segment_id
    canvas.origins[segment_id] = {
        "start_zyx": [int(v) for v in start],
        "iters": steps,
        "walltime_s": round(seconds, 4),
    }
    return out


def _record_claim(
    canvas: Canvas, lo: np.ndarray, hi: np.ndarray, taken: np.ndarray, logits: np.ndarray
) -> None:
    """Keep, at voxels other segments already held, the new object's probability there.

    Where FFN split one neurite, the later object's network still sees the earlier piece as its
    own (high probability across the contact); at a membrane between neurons it does not. The
    agglomeration's contact evidence reads this (docs/agglomeration.md, "The FFN claim").
    """
    if not taken.any():
        return
    z = np.nan_to_num(logits[taken], nan=-30.0).clip(-30.0, 30.0)
    q = np.rint(255.0 / (1.0 + np.exp(-z))).astype(np.uint8)
    box = canvas.claim[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    box[taken] = np.maximum(box[taken], q)


def seed_blocked(canvas: Canvas, pos: tuple[int, int, int]) -> str | None:
    """Why google's ``segment_all`` would skip this seed now, or None if it is tried."""
    seg = canvas.segmentation
    if not canvas.in_bounds(pos) or seg[pos] > 0:
        return "skipped_invalid"
    if canvas.mask is not None and canvas.mask[pos]:
        return "skipped_masked"
    mbd = np.asarray(canvas.options.min_boundary_dist)
    lo = np.maximum(np.asarray(pos) - mbd, 0)
    hi = np.asarray(pos) + mbd + 1
    if np.any(seg[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] > 0):
        return "skipped_near_segment"
    return None


def seed_is_usable(canvas: Canvas, pos: tuple[int, int, int]) -> str | None:
    """:func:`seed_blocked`, marking a seed next to a segment as tried (-1), as google does."""
    why = seed_blocked(canvas, pos)
    if why == "skipped_near_segment":
        canvas.segmentation[pos] = -1
    return why


def segment_all(
    canvas: Canvas,
    seeds: Iterable[tuple[int, int, int]],
    *,
    explicit_ids: bool = False,
    on_object: Callable[[ObjectOutcome], None] | None = None,
) -> Generator[FovRequest | ProbeRequest, Any, None]:
    """Segment ``canvas`` from ``seeds`` in order (google ``segment_all``).

    With ``explicit_ids`` the object grown from the k-th seed gets id k + 1 (user-given points).
    """
    c = canvas.counters
    for k, raw in enumerate(seeds):
        pos = tuple(int(v) for v in raw)
        c["seeds_tried"] += 1
        why = seed_is_usable(canvas, pos)
        if why is not None:
            c[why] += 1
            out = ObjectOutcome(seed=pos, status=why)
        else:
            t0 = time.perf_counter()
            steps, start_value, extent = yield from grow(canvas, pos)
            out = commit_object(
                canvas,
                pos,
                steps,
                start_value,
                extent,
                time.perf_counter() - t0,
                segment_id=k + 1 if explicit_ids else None,
            )
            c["steps"] += steps
        if on_object is not None:
            on_object(out)
