"""What is known about one submitted job at one moment, typed: the scheduler's word and the job's
own log (``progress.jsonl``) combined. ``napari-connectome status`` prints :meth:`JobStatus.as_dict`
as JSON; the Remote jobs widget reads the attributes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

State = Literal["pending", "running", "done", "failed", "cancelled", "unknown", "unreachable"]
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})


@dataclass
class JobStatus:
    """One job's state. ``unknown``: the scheduler could not say and the log does not either;
    ``unreachable``: its cluster did not answer (``error`` says why; asked again next poll)."""

    id: str
    state: State
    backend: str | None = None
    scheduler_id: str | None = None
    scheduler_state: str | None = None
    output: str | None = None
    phase: str | None = None
    blocks_done: int = 0
    blocks_total: int | None = None
    blocks_relabelled: int = 0
    rate_blocks_per_s: float | None = None
    eta_s: float | None = None
    segments: int | None = None  # done: objects in the job's lookup table
    seams: dict = field(default_factory=dict)  # done: the seam check per axis
    error: str | None = None
    log_tail: str | None = None  # failed: the end of the scheduler's log

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def problem(cls, job_id: str, state: State, error: str) -> JobStatus:
        """A job whose status could not be read (unreachable cluster, unknown record)."""
        return cls(id=job_id, state=state, error=error)

    def as_dict(self) -> dict:
        """The JSON ``status`` prints: the fields a state has (done: segments and seams; failed:
        error and log tail), as before the type existed."""
        out = asdict(self)
        if self.state != "done":
            del out["segments"], out["seams"]
        if self.state != "failed":
            del out["log_tail"]
        if self.error is None:
            del out["error"]
        return out
