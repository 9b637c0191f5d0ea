"""Submit, watch and cancel jobs: one interface for the local, dask, slurm and pbs backends.

``local`` and ``dask`` start ``napari-connectome run-job`` as a detached process on this machine
(it makes a LocalCluster on 127.0.0.1, or connects to the scheduler). ``slurm`` and ``pbs`` stage
the spec and a batch script inside the output folder on the cluster (over SFTP, or directly when
there is no ``ssh`` section, i.e. on the login node itself) and hand the script to ``sbatch`` /
``qsub``. Each call takes an open ``transport`` (the jobs client keeps one per cluster) or opens
and closes its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

from napari_connectome.errors import UserInputError
from napari_connectome.jobs import procinfo
from napari_connectome.jobs.events import split_lines, summarize
from napari_connectome.jobs.layout import JobLayout
from napari_connectome.jobs.registry import JobRecord, new_job_id, save_record
from napari_connectome.jobs.schedulers import Scheduler, batch_script
from napari_connectome.jobs.spec import JobSpec
from napari_connectome.jobs.status import JobStatus
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
    _refuse_output_over_inputs(transport, spec)  # before anything there is deleted
    layout = JobLayout.on_cluster(out)
    spec_path = str(layout.spec)
    if transport.exists(out):
        if spec.resume:
            from napari_connectome.jobs.spec import parse_spec_text

            text = transport.read_file(spec_path)
            if text is None:
                raise UserInputError(
                    f"output {out} exists but is not a job's output: cannot resume it"
                )
            old = parse_spec_text(text, spec_path)
            if old.fingerprint() != spec.fingerprint():
                raise UserInputError(
                    f"output {out} belongs to a different job ({spec.differences(old)}): set "
                    "the same values to resume it, choose another output, or overwrite it"
                )
        elif spec.overwrite:
            if not _ours_on(transport, out):
                raise UserInputError(
                    f"output {out} exists and napari-connectome did not write it (no "
                    "napari_connectome marker in its zarr.json, not a job's output): refusing to "
                    "delete it even with --overwrite; choose another output"
                )
            transport.remove_tree(out)
        else:
            raise UserInputError(
                f"output {out} already exists on {transport.label}: set resume: true to continue "
                "that job, or pass --overwrite to replace it"
            )
    transport.makedirs(str(layout.scheduler))
    transport.write_file(spec_path, spec.to_yaml().encode())
    return spec_path


def _refuse_output_over_inputs(transport: Transport, spec: JobSpec) -> None:
    """The output may not be, lie inside or contain the input, the mask or the FFN model folder:
    real paths here, paths resolved by ``realpath -m`` on a cluster (as written when it has
    none). A model given as a zoo name is no path."""
    from napari_connectome.jobs.transport import LocalTransport
    from napari_connectome.volumes.output_safety import refuse_overlap, refuse_overlap_posix

    model = spec.segmenter.model if spec.segmenter.kind == "ffn" else None
    if isinstance(transport, LocalTransport):
        model = model if model and Path(model).expanduser().exists() else None
        refuse_overlap(spec.output, [spec.input, spec.mask, model])
        return
    model = model if model and "/" in model else None

    def resolve(paths: list[str]) -> list[str]:
        res = transport.run(["realpath", "-m", "--", *paths], timeout=60)
        lines = res.stdout.splitlines()
        return lines if res.returncode == 0 and len(lines) == len(paths) else paths

    refuse_overlap_posix(spec.output, [spec.input, spec.mask, model], resolve)


def _ours_on(transport: Transport, out: str) -> bool:
    """Whether napari-connectome wrote the folder ``out`` on the cluster: our marker in its
    ``zarr.json``, or a job's ``_job/spec.yaml`` in it (jobs always wrote one)."""
    from napari_connectome.volumes.output_safety import has_marker

    if transport.exists(str(JobLayout.on_cluster(out).spec)):
        return True
    return has_marker(transport.read_file(_p(out, "zarr.json")))


def submit(spec: JobSpec, transport: Transport | None = None) -> JobRecord:
    """Start the job where its backend says; returns the record saved in the local job registry.
    ``transport``: an open connection to the spec's cluster (slurm/pbs), kept open."""
    kind = spec.backend.kind
    job_id = new_job_id(spec.name)
    if kind in ("local", "dask"):
        from napari_connectome.jobs.pipeline import clear_unfinished_start, make_grid

        spec = spec.model_copy(update={"output": os.path.abspath(spec.output)})
        make_grid(spec)  # input, ROI and block size are checked before anything is written
        transport = open_transport(None)
        _refuse_running_driver(transport, spec)
        clear_unfinished_start(spec.output)
        created = not os.path.lexists(spec.output)  # then everything in it is ours to remove
        try:
            spec_path = stage(transport, spec)
            log = str(JobLayout(spec.output).run_log)
            with open(log, "ab") as logf:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "napari_connectome", "run-job", spec_path],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: cancel stops it and workers
                )
        except BaseException:
            if created and os.path.isdir(spec.output):
                shutil.rmtree(spec.output, ignore_errors=True)  # a failed start leaves nothing
            raise
        record = JobRecord(
            job_id,
            spec.name,
            kind,
            spec.output,
            time.time(),
            pid=proc.pid,
            pid_start=procinfo.process_start(proc.pid),
            host=procinfo.hostname(),
            log=log,
            spec=spec.model_dump(mode="json"),
        )
        save_record(record)
        return record
    ssh = spec.backend.ssh
    env = spec.backend.resources.submit_env
    own = transport is None
    transport = transport or open_transport(ssh)
    created = False
    try:
        _refuse_running_driver(transport, spec)
        fresh = not transport.exists(spec.output) or spec.overwrite
        spec_path = stage(transport, spec)
        created = fresh  # only now: a refused stage must never remove what was there
        layout = JobLayout.on_cluster(spec.output)
        workdir, script = str(layout.scheduler), str(layout.batch_script)
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
        if own:
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


def _refuse_running_driver(transport: Transport, spec: JobSpec) -> None:
    """``submit --resume`` / ``--overwrite`` while a driver still writes that output: refuse now,
    before the spec is restaged or the output deleted under it (run-job refuses too, by its lock:
    this is the early answer where the lock file can be read from here)."""
    from napari_connectome.jobs.driver_lock import live_holder, refused

    if not (spec.resume or spec.overwrite):
        return  # an existing output is refused anyway
    path = str(JobLayout.on_cluster(spec.output).driver_lock)
    holder = live_holder(lambda: transport.read_file(path))
    if holder is not None:
        raise refused(spec.output, holder)


def _job_process_alive(record: JobRecord) -> bool | None:
    """The record's process still runs *and is the job* (its pid was not given to another
    process since): same start time, or for records from before start times were kept, a
    ``run-job`` command line. None: it was started on another machine (a shared registry)."""
    if record.host and record.host != procinfo.hostname():
        return None
    pid = record.pid
    if not pid or not procinfo.pid_running(pid):
        return False
    if record.pid_start is not None and procinfo.process_start(pid) is not None:
        return procinfo.same_process(pid, record.pid_start)
    cmd = procinfo.process_cmdline(pid)
    return "run-job" in cmd and any("napari_connectome" in a for a in cmd)


def _job_ended(record: JobRecord) -> str | None:
    """``done`` / ``failed`` when the job's own log says it ended."""
    summary = read_summary(open_transport(None), record.output)
    return "done" if summary.done else "failed" if summary.failed else None


def read_summary(transport: Transport, output: str):
    """What the job's own log (``progress.jsonl``) says so far."""
    data = transport.read_file(str(JobLayout.on_cluster(output).progress)) or b""
    return summarize(split_lines(data)[0])


def scheduler_state(record: JobRecord, transport: Transport) -> str:
    if record.backend in ("local", "dask"):
        alive = _job_process_alive(record)
        return "unknown" if alive is None else "running" if alive else "done"
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


def read_status(record: JobRecord, transport: Transport) -> JobStatus:
    """State (pending/running/done/failed/cancelled), blocks done/total, rate, ETA; failed: the
    job's error and its log tail. The job's own log wins over the scheduler's word."""
    sched = scheduler_state(record, transport)
    summary = read_summary(transport, record.output)
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
    status = JobStatus(
        id=record.id,
        state=state,
        backend=record.backend,
        scheduler_id=record.scheduler_id,
        scheduler_state=sched,
        output=record.output,
        **summary.as_dict(time.time()),
    )
    if summary.done:
        status.segments = summary.done.get("segments")
        status.seams = summary.done.get("seams", {})
    if state == "failed":
        if summary.failed:
            status.error = summary.failed.get("error")
        status.log_tail = log_tail(transport, record.log)
    return status


def job_status(record: JobRecord, transport: Transport | None = None) -> dict:
    """:func:`read_status` as the JSON mapping ``napari-connectome status`` prints."""
    own = transport is None
    transport = transport or open_transport(record.ssh)
    try:
        return read_status(record, transport).as_dict()
    finally:
        if own:
            transport.close()


def cancel(record: JobRecord, transport: Transport | None = None) -> str:
    """Stop a job; returns what happened. A local job that already ended, or whose pid now names
    another process, is not signalled. ``transport``: an open connection to its cluster, kept
    open."""
    if record.backend in ("local", "dask"):
        alive = _job_process_alive(record)
        if alive is None:
            raise UserInputError(
                f"job {record.id} was started on {record.host}, not on this machine: "
                "cancel it there"
            )
        ended = _job_ended(record)
        if ended or not alive:
            why = ended or "its process is gone"
            return f"job {record.id} already ended ({why}): nothing to cancel"
        os.killpg(record.pid, signal.SIGTERM)  # its own session: the driver and its workers
        record.cancelled = True
        save_record(record)
        return f"cancelled {record.id}"
    own = transport is None
    transport = transport or open_transport(record.ssh)
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
        return f"cancelled {record.id}"
    finally:
        if own:
            transport.close()
