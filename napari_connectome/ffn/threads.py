"""How many CPU threads torch uses, per context: the desk leaves Qt a core, a job takes its share.

Why: torch starts one thread per core, and each spins on its core while it waits, so a napari
worker at full width freezes the window it reports to; and Dask's worker processes start with
``OMP_NUM_THREADS=1``, so a job's FFN would use one core of the many its allocation holds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

# Variables a batch system sets to the cores it gave one task (Slurm) or one chunk (PBS Pro).
ALLOCATION_VARS = ("SLURM_CPUS_PER_TASK", "NCPUS")

_lock = threading.Lock()
_gui = {"depth": 0, "saved": 0}


def allocated_cores(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """``(cores, where from)``: the batch system's count for this task (``SLURM_CPUS_PER_TASK``,
    PBS ``NCPUS``), else the cores this process may run on (``os.sched_getaffinity``)."""
    environ = os.environ if environ is None else environ
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        affinity = os.cpu_count() or 1
    for var in ALLOCATION_VARS:
        value = str(environ.get(var, "")).strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), affinity), var
    return affinity, "sched_getaffinity"


def job_threads(workers_per_node: int, environ: Mapping[str, str] | None = None) -> int:
    """Torch threads for one of ``workers_per_node`` worker processes sharing an allocation."""
    cores, _ = allocated_cores(environ)
    return max(1, cores // max(1, int(workers_per_node)))


@contextmanager
def leave_a_core() -> Iterator[int]:
    """Torch threads for a GUI worker: all but one, so the Qt thread keeps a core; restored after.

    Nested or concurrent uses (two widgets running) share one setting; the last to leave restores
    what was there before. Yields the number of threads in use.
    """
    import torch

    with _lock:
        if _gui["depth"] == 0:
            _gui["saved"] = torch.get_num_threads()
            torch.set_num_threads(max(1, _gui["saved"] - 1))
        _gui["depth"] += 1
        n = torch.get_num_threads()
    try:
        yield n
    finally:
        with _lock:
            _gui["depth"] -= 1
            if _gui["depth"] == 0:
                torch.set_num_threads(_gui["saved"])
