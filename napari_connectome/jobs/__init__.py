"""Full-volume jobs: block grid, per-block segmentation (FFN), reconciliation, backends
(local/dask/slurm/pbs) and streaming.

Public API (imported lazily, so ``import napari_connectome.jobs`` stays cheap)::

    load_spec(path) / parse_spec(dict) -> JobSpec      validated job spec
    run_job(spec, client=None, progress=None)          run or resume a job here (what run-job does)
    submit(spec) -> JobRecord                          start on its backend, save in the registry
    job_status(record) -> dict                         state, blocks done/total, rate, ETA, log tail
    cancel(record) -> str                              stop it (never a process that reused its pid)
    stream_job(record, cache, on_block=...)            copy finished chunks into a local zarr
    list_records() / load_record(job_id)               the local registry of submitted jobs
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "JobSpec": "spec",
    "load_spec": "spec",
    "parse_spec": "spec",
    "run_job": "pipeline",
    "JobResult": "pipeline",
    "submit": "backends",
    "job_status": "backends",
    "cancel": "backends",
    "stream_job": "stream",
    "StreamResult": "stream",
    "JobRecord": "registry",
    "list_records": "registry",
    "load_record": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
