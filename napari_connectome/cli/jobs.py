"""``submit``, ``status``, ``cancel``, ``stream``, ``jobs`` and ``run-job``: full-volume jobs."""

from __future__ import annotations

import argparse
import json
import sys

from napari_connectome.cli._args import positive_finite_float
from napari_connectome.cli._progress import add_progress_flags, cli_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="start a full-volume job (local, dask, slurm or pbs)")
    p.add_argument("spec", help="job spec (YAML; see examples/jobs/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--resume", action="store_true", help="continue the job that wrote the output")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="state of a submitted job as JSON")
    p.add_argument("job", help="job id (or a unique prefix, or the scheduler's job id)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="cancel a submitted job (scancel / qdel / stop the process)")
    p.add_argument("job")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "stream", help="copy a job's finished blocks into a local zarr as they finish"
    )
    p.add_argument("job")
    p.add_argument("cache", help="local OME-Zarr folder (created; rerun to resume)")
    p.add_argument(
        "--timeout", type=positive_finite_float, default=None, help="give up after this many s"
    )
    p.add_argument(
        "--poll", type=positive_finite_float, default=1.0, help="seconds between looks at the log"
    )
    add_progress_flags(p)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("jobs", help="list submitted jobs")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("run-job", help="run a job spec here (what a Slurm/PBS job runs)")
    p.add_argument("spec")
    p.add_argument("--check", action="store_true", help="only check the spec against its input")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--resume", action="store_true")
    add_progress_flags(p)
    p.set_defaults(func=cmd_run_job)


def _load(args):
    from napari_connectome.jobs.spec import load_spec

    spec = load_spec(args.spec)
    update = {}
    if getattr(args, "overwrite", False):
        update = {"overwrite": True, "resume": False}
    if getattr(args, "resume", False):
        update = {"resume": True, "overwrite": False}
    return spec.model_copy(update=update) if update else spec


def cmd_submit(args) -> int:
    from napari_connectome.jobs.backends import submit

    record = submit(_load(args))
    where = f" on {record.ssh['host']}" if record.ssh else ""
    print(record.id)
    print(f"output: {record.output}{where}", file=sys.stderr)
    if record.scheduler_id:
        print(f"{record.backend} job id: {record.scheduler_id}", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    from napari_connectome.jobs.backends import job_status
    from napari_connectome.jobs.registry import load_record

    print(json.dumps(job_status(load_record(args.job)), indent=1))
    return 0


def cmd_cancel(args) -> int:
    from napari_connectome.jobs.backends import cancel
    from napari_connectome.jobs.registry import load_record

    print(cancel(load_record(args.job)), file=sys.stderr)
    return 0


def cmd_stream(args) -> int:
    from napari_connectome.jobs.registry import load_record
    from napari_connectome.jobs.stream import stream_job

    record = load_record(args.job)
    update, close = cli_progress(args, f"stream {record.id}")
    try:
        result = stream_job(
            record, args.cache, progress=update, poll_s=args.poll, timeout_s=args.timeout
        )
    finally:
        close()
    for message in result.skipped:
        print(f"warning: {message}", file=sys.stderr)
    print(
        json.dumps(
            {
                "state": result.state,
                "blocks": result.blocks,
                "cache": str(result.cache),
                "skipped": len(result.skipped),
            }
        )
    )
    # a refused line leaves a hole in the cache: not a success, even when the job is done
    return 0 if result.state == "done" and not result.skipped else 1


def cmd_jobs(args) -> int:
    from napari_connectome.jobs.registry import list_records

    for r in list_records():
        print(f"{r.id}\t{r.backend}\t{r.scheduler_id or r.pid}\t{r.output}")
    return 0


def cmd_run_job(args) -> int:
    from napari_connectome.jobs.pipeline import make_grid, run_job, spec_warnings

    spec = _load(args)
    warnings = spec_warnings(spec)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.check:
        grid = make_grid(spec)
        if spec.resume or spec.overwrite:  # `submit` runs this check on the cluster
            from napari_connectome.jobs.driver_lock import DriverLock
            from napari_connectome.jobs.layout import JobLayout

            layout = JobLayout(spec.output)
            DriverLock(layout.job, layout.root).check_free()
        line = {"ok": True, "blocks": len(grid), "grid": list(grid.grid_shape)}
        print(json.dumps({**line, "warnings": warnings} if warnings else line))
        return 0
    update, close = cli_progress(args, f"job {spec.name}")
    try:
        result = run_job(spec, progress=update)
    finally:
        close()
    print(
        json.dumps(
            {
                "output": str(result.output),
                "blocks": result.blocks_total,
                "segmented_now": result.blocks_segmented,
                "segments": result.n_segments,
                "seconds": round(result.seconds, 2),
                "seams": result.seams,
                **_agglomerated(spec),
            }
        )
    )
    return 0


def _agglomerated(spec) -> dict:
    """Where the job's ``agglomerate:`` phase put its result, for the summary line."""
    if spec.agglomerate is None:
        return {}
    from napari_connectome.jobs.agglomerate_phase import agglomerate_output

    return {"agglomerated": str(agglomerate_output(spec))}
