"""Several objects of ONE region in flight at once, with exactly google's sequential result.

google/ffn grows the objects of a region one after another: object k's FOV may not move onto voxels
of objects 1..k-1, and its seed is skipped if it lies in or next to them. That makes one region a
batch-1 workload, which wastes a GPU. Here up to ``width`` consecutive seeds grow speculatively,
each on its own logit canvas (:meth:`Canvas.fork`; image and segmentation are shared), and are
committed strictly in seed order. Every segmentation read that steered an object (its seed box and
each FOV position it accepted as unsegmented) is recorded; when an earlier object commits and
claims any of those voxels, the later object is restarted from its seed (or skipped, if its seed is
now blocked). Segmentation only ever gains ids, so an object whose reads are all still free would
have run identically in sequence: the labels equal google's sequential ones.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

from napari_connectome.ffn.canvas import (
    Canvas,
    ObjectOutcome,
    commit_object,
    grow,
    seed_blocked,
    seed_is_usable,
)


@dataclass
class RequestBatch:
    """Several requests of one driver, answered together (a list of results, same order)."""

    items: list[Any]


@dataclass
class _Slot:
    index: int
    pos: tuple[int, int, int]
    skipped: str | None = None
    canvas: Canvas | None = None
    gen: Generator | None = None
    request: Any = None
    result: tuple | None = None  # (steps, start_value, extent) once grown
    t0: float = 0.0
    seed_box: tuple = field(default_factory=tuple)


def segment_all_speculative(
    canvas: Canvas,
    seeds: Iterable[tuple[int, int, int]],
    *,
    width: int,
    explicit_ids: bool = False,
    on_object: Callable[[ObjectOutcome], None] | None = None,
) -> Generator[RequestBatch, list, None]:
    """:func:`~.canvas.segment_all` with up to ``width`` objects growing at once (module doc)."""
    c = canvas.counters
    seed_iter = iter(enumerate(seeds))
    slots: deque[_Slot] = deque()
    pool: list[Canvas] = []
    exhausted = False

    def start(slot: _Slot) -> None:
        why = seed_is_usable(canvas, slot.pos)
        if why is not None:
            slot.skipped, slot.gen, slot.request = why, None, None
            if slot.canvas is not None:
                pool.append(slot.canvas)
                slot.canvas = None
            return
        if slot.canvas is None:
            slot.canvas = pool.pop() if pool else canvas.fork()
        slot.canvas.reads = []
        slot.t0 = time.perf_counter()
        slot.gen = grow(slot.canvas, slot.pos)
        advance(slot, None)

    def advance(slot: _Slot, value: Any) -> None:
        try:
            slot.request = slot.gen.send(value)
        except StopIteration as stop:
            slot.result, slot.request = stop.value, None

    def active() -> int:
        return sum(1 for s in slots if s.skipped is None)

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and active() < width:
            try:
                k, raw = next(seed_iter)
            except StopIteration:
                exhausted = True
                return
            c["seeds_tried"] += 1
            slot = _Slot(k, tuple(int(v) for v in raw))
            slots.append(slot)
            start(slot)

    def still_valid(slot: _Slot) -> bool:
        if seed_blocked(canvas, slot.pos) is not None:
            return False
        seg = canvas.segmentation
        return not any(seg[p] > 0 for p in slot.canvas.reads)

    fill()
    while slots:
        head = slots[0]
        if head.skipped is not None or head.result is not None:
            slots.popleft()
            if head.skipped is not None:
                c[head.skipped] += 1
                out = ObjectOutcome(seed=head.pos, status=head.skipped)
            else:
                steps, start_value, extent = head.result
                sid = head.index + 1 if explicit_ids else _next_id(canvas)
                head.canvas.max_id = canvas.max_id
                out = commit_object(
                    head.canvas,
                    head.pos,
                    steps,
                    start_value,
                    extent,
                    time.perf_counter() - head.t0,
                    segment_id=sid,
                )
                c["steps"] += steps
                pool.append(head.canvas)
                if out.segment_id:
                    canvas.max_id = max(canvas.max_id, out.segment_id)
                    for later in slots:
                        if later.skipped is None and not still_valid(later):
                            c["speculative_restarts"] += 1
                            later.result = None
                            start(later)
            if on_object is not None:
                on_object(out)
            fill()
            continue
        waiting = [s for s in slots if s.skipped is None and s.result is None]
        results = yield RequestBatch([s.request for s in waiting])
        for slot, value in zip(waiting, results):
            advance(slot, value)


def _next_id(canvas: Canvas) -> int:
    sid = canvas.max_id + 1
    while sid in canvas.origins:
        sid += 1
    return sid


def resolve_batch(runner: Any, items: list[Any]) -> list[Any]:
    """Answer every request of a :class:`RequestBatch` (probes first, then batched forwards)."""
    from napari_connectome.ffn.canvas import FovRequest, ProbeRequest

    items = list(items)
    results: list[Any] = [None] * len(items)
    todo = list(range(len(items)))
    while todo:
        probes = [i for i in todo if isinstance(items[i], ProbeRequest)]
        if probes:
            for i, v in zip(probes, runner._read_probes([items[i] for i in probes])):
                results[i] = v
        fovs = [i for i in todo if isinstance(items[i], FovRequest)]
        for j in range(0, len(fovs), runner.batch):
            chunk = fovs[j : j + runner.batch]
            for i, res in zip(chunk, runner._step([items[i] for i in chunk])):
                if isinstance(res, FovRequest):  # consistency iteration: ask again
                    items[i] = res
                else:
                    results[i] = res
        todo = [i for i in todo if results[i] is None]
    return results
