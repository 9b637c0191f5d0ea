"""Reading ``progress.jsonl``: the job's own account of what is done, shared by status and
stream."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def split_lines(buffer: bytes) -> tuple[list[dict], int]:
    """Complete JSON lines in ``buffer`` and how many bytes they span (a partial last line
    waits)."""
    end = buffer.rfind(b"\n") + 1
    events = []
    for raw in buffer[:end].splitlines():
        raw = raw.strip()
        if raw:
            try:
                ev = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(ev, dict):  # anything else is not an event (a damaged or foreign line)
                events.append(ev)
    return events, end


@dataclass(frozen=True)
class JobEvent:
    """One line of ``progress.jsonl``, typed. ``kind``: start | block | phase | done | failed
    (another word: a line from a newer version, kept in ``fields``)."""

    kind: str
    t: float | None = None
    phase: str | None = None  # block lines: segment | relabel; phase lines: the phase begun
    block: tuple[int, ...] | None = None  # block lines: the block's grid index
    chunk: str | None = None  # block lines: the level-0 chunk file the block wrote
    cached_t: float | None = None  # set by a stream: when the chunk reached the local cache
    fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_line(cls, ev: dict, cached_t: float | None = None) -> JobEvent:
        """The event a decoded line describes (wrong types read as absent)."""
        block = ev.get("block")
        block = tuple(block) if isinstance(block, list | tuple) else None
        chunk, phase, t = ev.get("chunk"), ev.get("phase"), ev.get("t")
        return cls(
            kind=str(ev.get("event", "")),
            t=float(t) if isinstance(t, int | float) else None,
            phase=phase if isinstance(phase, str) else None,
            block=block,
            chunk=chunk if isinstance(chunk, str) else None,
            cached_t=cached_t,
            fields=dict(ev),
        )

    def get(self, name: str, default: Any = None) -> Any:
        """Any other field of the line (``n_segments``, ``seconds``, ``error``, ...)."""
        return self.fields.get(name, default)


@dataclass
class Summary:
    blocks_total: int | None = None
    segmented: set = field(default_factory=set)
    relabelled: set = field(default_factory=set)
    phase: str | None = None
    done: dict | None = None
    failed: dict | None = None
    run_start_t: float | None = None
    run_blocks: int = 0
    last_t: float | None = None

    def add(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "start":
            # a resume keeps what earlier runs segmented and relabelled (their files stay)
            self.blocks_total = ev.get("blocks_total")
            self.phase, self.done, self.failed = "segment", None, None
            self.run_start_t, self.run_blocks = ev.get("t"), 0
        elif kind == "block":
            key = tuple(ev.get("block", ()))
            if ev.get("phase") == "segment":
                self.segmented.add(key)
                self.run_blocks += 1
            else:
                self.relabelled.add(key)
        elif kind == "phase":
            self.phase = ev.get("phase")
        elif kind == "done":
            self.done, self.phase = ev, "done"
        elif kind == "failed":
            self.failed = ev
        self.last_t = ev.get("t", self.last_t)

    def as_dict(self, now: float) -> dict:
        total = self.blocks_total
        done = len(self.segmented)
        rate = eta = None
        if self.run_start_t and self.run_blocks:
            elapsed = max(1e-6, (self.last_t or now) - self.run_start_t)
            rate = self.run_blocks / elapsed
            if total and not self.done:
                eta = max(0.0, (total - done) / rate)
        return {
            "phase": self.phase,
            "blocks_done": done,
            "blocks_total": total,
            "blocks_relabelled": len(self.relabelled),
            "rate_blocks_per_s": round(rate, 4) if rate else None,
            "eta_s": round(eta, 1) if eta is not None else None,
        }


def summarize(events: list[dict]) -> Summary:
    s = Summary()
    for ev in events:
        s.add(ev)
    return s
