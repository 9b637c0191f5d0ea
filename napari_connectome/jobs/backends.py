"""Submit, watch and cancel jobs: one interface for the local, dask, slurm and pbs backends.

``local`` and ``dask`` start ``napari-connectome run-job`` as a detached process on this machine
(it makes a LocalCluster on 127.0.0.1, or connects to the scheduler). ``slurm`` and ``pbs`` stage
the spec and a batch script inside the output folder on the cluster (over SFTP, or directly when
there is
no ``ssh`` section, i.e. on the login node itself) and hand the script to ``sbatch`` / ``qsub``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import PurePosixPath

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.events import split_lines, summarize
from napari_connectome.jobs.registry import JobRecord, new_job_id, save_record
from napari_connectome.jobs.schedulers import Scheduler, batch_script
from napari_connectome.jobs.spec import JobSpec
from napari_connectome.jobs.transport import Transport, open_transport


def _p(*parts: str) -> str:
    return str(PurePosixPath(*parts))


def stage(transport: Transport, spec: JobSpec) -> str:
    """Check the output folder and put the spec in it. Returns the staged spec's path."""
    out = spec.output
    if not PurePosixPath(out).is_absolute():
        raise UserInputError(
            f"output {out!r} must be an absolute path on the machine that runs the job"
        )
    parent = str(PurePosixPath(out).parent)
    if not transport.exists(parent):
        raise UserInputError(
            f"output folder {parent} does not exist on {transport.label}: create it or fix 'output'"
        )
    spec_path = _p(out, "_job", "spec.yaml")
    if transport.exists(out):
        if spec.resume:
            from napari_connectome.jobs.spec import parse_spec

            text = transport.read_file(spec_path)
            if text is None:
                raise UserInputError(
                    f"output {out} exists but is not a job's output: cannot resume it"
                )
            import yaml

            old = parse_spec(yaml.safe_load(text), spec_path)
            if old.fingerprint() != spec.fingerprint():
                raise UserInputError(
                    f"output {out} belongs to a different job (input, ROI, blocks or segmenter "
                    "differ): "
                    "choose another output, or overwrite it"
                )
        elif spec.overwrite:
            if not (transport.exists(_p(out, "zarr.json")) or transport.exists(spec_path)):
                raise UserInputError(
                    f"output {out} exists and is not a zarr or a job's output: refusing to delete "
                    "it even with --overwrite; choose another output"
                )
            transport.remove_tree(out)
        else:
            raise UserInputError(
                f"output {out} already exists on {transport.label}: set resume: true to continue "
                "that job, "
                "or pass --overwrite to replace it"
            )
    transport.makedirs(_p(out, "_job", "scheduler"))
    transport.write_file(spec_path, spec.to_yaml().encode())
    return spec_path


def submit(spec: JobSpec) -> JobRecord:
    """Start the job where its backend says; returns the record saved in the local job registry."""
    kind = spec.backend.kind
    job_id = new_job_id(spec.name)
    if kind in ("local", "dask"):
        from napari_connectome.jobs.pipeline import make_grid

        spec = spec.model_copy(update={"output": os.path.abspath(spec.output)})
        make_grid(spec)  # input, ROI and block size are checked before anything is written
        transport = open_transport(None)
        spec_path = stage(transport, spec)
        log = _p(spec.output, "_job", "scheduler", "run-job.log")
        with open(log, "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "napari_connectome", "run-job", spec_path],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel stops it and its workers
            )
        record = JobRecord(
            job_id,
            spec.name,
            kind,
            spec.output,
            time.time(),
            pid=proc.pid,
            log=log,
            spec=spec.model_dump(mode="json"),
        )
        save_record(record)
        return record
    ssh = spec.backend.ssh
    env = spec.backend.resources.submit_env
    transport = open_transport(ssh)
    created = False
    try:
        created = not transport.exists(spec.output) or spec.overwrite
        spec_path = stage(transport, spec)
        workdir = _p(spec.output, "_job", "scheduler")
        script = _p(workdir, "job.sh")
        transport.write_file(script, batch_script(spec, spec_path).encode())
        check = transport.run(["bash", script, "--check"], env=env, timeout=300)
        if check.returncode != 0:
            msg = (check.stderr.strip() or check.stdout.strip()).splitlines()
            raise UserInputError(
                f"the job does not pass its check on {transport.label}: "
                f"{msg[-1] if msg else 'exit ' + str(check.returncode)}"
            )
        sched = Scheduler(kind)
        log_pattern = _p(workdir, "job-%j.out" if kind == "slurm" else "job.out")
        res = transport.run(sched.submit_argv(spec, script, log_pattern, workdir), env=env)
        if res.returncode != 0 or not res.stdout.strip():
            raise UserInputError(
                f"{'sbatch' if kind == 'slurm' else 'qsub'} rejected the job: "
                f"{res.stderr.strip() or res.stdout.strip()}"
            )
        sched_id = sched.parse_submit(res.stdout)
    except BaseException:
        if created and transport.exists(spec.output):
            transport.remove_tree(spec.output)  # a refused submission leaves nothing behind
        raise
    finally:
        transport.close()
    record = JobRecord(
        job_id,
        spec.name,
        kind,
        spec.output,
        time.time(),
        scheduler_id=sched_id,
        log=sched.log_path(log_pattern, sched_id),
        ssh=ssh.model_dump(mode="json") if ssh else None,
        submit_env=dict(env),
        spec=spec.model_dump(mode="json"),
    )
    save_record(record)
    return record


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own finished child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def scheduler_state(record: JobRecord, transport: Transport) -> str:
    if record.backend in ("local", "dask"):
        return "running" if record.pid and _pid_alive(record.pid) else "done"
    sched = Scheduler(record.backend)
    for argv in sched.status_argvs(record.scheduler_id):
        res = transport.run(argv, env=record.submit_env)
        if res.returncode == 0:
            state = sched.parse_status(argv, res.stdout)
            if state:
                return state
    return "unknown"


def log_tail(transport: Transport, path: str | None, lines: int = 20) -> str:
    if not path:
        return ""
    data = transport.read_file(path) or b""
    return "\n".join(data[-8192:].decode(errors="replace").splitlines()[-lines:])


def job_status(record: JobRecord, transport: Transport | None = None) -> dict:
    """State (pending/running/done/failed/cancelled), blocks done/total, rate, ETA; failed: log
    tail."""
    own = transport is None
    transport = transport or open_transport(record.ssh)
    try:
        sched = scheduler_state(record, transport)
        data = transport.read_file(_p(record.output, "progress.jsonl")) or b""
        events, _ = split_lines(data)
        summary = summarize(events)
        if summary.done:
            state = "done"
        elif summary.failed:
            state = "failed"
        elif sched in ("pending", "running", "cancelled"):
            state = sched
        elif record.cancelled:
            state = "cancelled"
        else:
            state = "failed"  # the scheduler says it ended, the job never wrote "done"
        status = {
            "id": record.id,
            "backend": record.backend,
            "scheduler_id": record.scheduler_id,
            "state": state,
            "scheduler_state": sched,
            "output": record.output,
            **summary.as_dict(time.time()),
        }
        if summary.done:
            status["segments"] = summary.done.get("segments")
            status["seams"] = summary.done.get("seams", {})
        if state == "failed":
            if summary.failed:
                status["error"] = summary.failed.get("error")
            status["log_tail"] = log_tail(transport, record.log)
        return status
    finally:
        if own:
            transport.close()


def cancel(record: JobRecord) -> None:
    if record.backend in ("local", "dask"):
        if record.pid and _pid_alive(record.pid):
            os.killpg(record.pid, signal.SIGTERM)
            record.cancelled = True
            save_record(record)
        return
    transport = open_transport(record.ssh)
    try:
        sched = Scheduler(record.backend)
        res = transport.run(sched.cancel_argv(record.scheduler_id), env=record.submit_env)
        if res.returncode == 0:
            record.cancelled = True
            save_record(record)
        if res.returncode != 0:
            raise UserInputError(
                f"cancel of job {record.scheduler_id} failed: "
                f"{res.stderr.strip() or res.stdout.strip()}"
            )
    finally:
        transport.close()
