"""The local list of submitted jobs, so ``status``/``cancel``/``stream`` (and the GUI after a
restart) find a job by its id. One JSON file per job in ``$NAPARI_CONNECTOME_CONFIG_DIR/jobs``
(default: the
user config dir, e.g. ``~/.config/napari-connectome/jobs``)."""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from napari_connectome.errors import UserInputError


@dataclass
class JobRecord:
    id: str
    name: str
    backend: str  # local | dask | slurm | pbs
    output: str  # where the result is written, on the machine that runs the job
    submitted: float
    scheduler_id: str | None = None  # slurm/pbs job id
    pid: int | None = None  # local/dask: the run-job process on this machine
    # local/dask: that process's start time (/proc/PID/stat) and host, so a later process that
    # was given the same pid is never taken for the job (status, cancel)
    pid_start: int | None = None
    host: str | None = None
    log: str | None = None  # scheduler / run-job log file (same machine as output)
    ssh: dict | None = None  # SSHSpec as a dict; None = this machine
    submit_env: dict[str, str] = field(default_factory=dict)
    spec: dict = field(default_factory=dict)
    cancelled: bool = False  # set by `cancel`: a stopped local job reads "cancelled", not "failed"


def jobs_dir() -> Path:
    base = os.environ.get("NAPARI_CONNECTOME_CONFIG_DIR")
    if base:
        root = Path(base)
    else:
        import platformdirs

        root = Path(platformdirs.user_config_dir("napari-connectome"))
    path = root / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_job_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def save_record(record: JobRecord) -> Path:
    from napari_connectome.jobs.layout import atomic_write_bytes

    path = jobs_dir() / f"{record.id}.json"
    atomic_write_bytes(path, json.dumps(asdict(record), indent=1, sort_keys=True).encode())
    return path


def list_records() -> list[JobRecord]:
    records = []
    for path in sorted(jobs_dir().glob("*.json")):
        try:
            records.append(JobRecord(**json.loads(path.read_text())))
        except (json.JSONDecodeError, TypeError):
            continue
    return sorted(records, key=lambda r: r.submitted)


def load_record(job: str) -> JobRecord:
    """A job by its id, a unique prefix of it, or its scheduler job id."""
    records = list_records()
    exact = [r for r in records if job in (r.id, r.scheduler_id)]
    matches = exact or [r for r in records if r.id.startswith(job)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = ", ".join(r.id for r in records[-5:]) or "none yet"
        raise UserInputError(
            f"no submitted job {job!r} (recent: {known}); list them with `napari-connectome jobs`"
        )
    raise UserInputError(
        f"{job!r} matches {len(matches)} jobs: give more of the id "
        f"({', '.join(r.id for r in matches)})"
    )
