"""Costs of the test services and of the calls the jobs code makes to them (one JSON line each).

What it tells: how long the session fixtures add to a test run (start-up), how long a trivial Slurm
job takes from ``sbatch`` to COMPLETED (the floor under every Slurm end-to-end test), and what a
status poll costs over SSH when the connection is reused versus opened per poll (a ratio measured
side by side, so it holds on a busy machine).

    .venv/bin/python benchmarks/bench_services.py --repeats 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from napari_connectome.testing.services import (
    start_slurm_cluster,
    start_slurm_login_node,
    start_sshd,
)


def emit(name: str, value: float, unit: str, **extra: object) -> None:
    print(
        json.dumps(
            {"bench": "services", "name": name, "value": round(value, 4), "unit": unit, **extra}
        )
    )


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


async def ssh_polls(server, command: str, repeats: int) -> tuple[list[float], list[float]]:
    """Per-poll latency: a fresh connection each time versus one connection reused."""
    import asyncssh

    fresh, reused = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        async with asyncssh.connect(**server.connect_kwargs()) as conn:
            await conn.run(command, check=True)
        fresh.append(time.perf_counter() - start)
    async with asyncssh.connect(**server.connect_kwargs()) as conn:
        for _ in range(repeats):
            start = time.perf_counter()
            await conn.run(command, check=True)
            reused.append(time.perf_counter() - start)
    return fresh, reused


async def sftp_throughput(server, size: int, workdir: Path) -> float:
    import asyncssh

    src = workdir / "payload.bin"
    src.write_bytes(os.urandom(size))
    async with (
        asyncssh.connect(**server.connect_kwargs()) as conn,
        conn.start_sftp_client() as sftp,
    ):
        start = time.perf_counter()
        await sftp.get(str(src), str(workdir / "copy.bin"))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sftp-mib", type=int, default=64)
    args = parser.parse_args()

    seconds, cluster = timed(start_slurm_cluster)
    emit("slurm_cluster_start", seconds, "s")
    with cluster, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        latencies = []
        for i in range(args.repeats):
            start = time.perf_counter()
            job = cluster.submit("--output", str(workdir / f"job{i}.txt"), "--wrap", "true")
            cluster.wait_for_job(job, timeout=120)
            latencies.append(time.perf_counter() - start)
        emit("sbatch_to_completed_median", statistics.median(latencies), "s", n=args.repeats)

        for name, argv in {
            "squeue_call_median": ("squeue", "--noheader"),
            "scontrol_show_job_call_median": ("scontrol", "show", "job", "--oneliner", job),
        }.items():
            calls = [timed(lambda a=argv: cluster.run(*a))[0] for _ in range(args.repeats)]
            emit(name, statistics.median(calls), "s", n=args.repeats)

        seconds, login = timed(lambda: start_slurm_login_node(cluster))
        emit("sshd_start", seconds, "s")
        with login:
            poll = f"squeue --noheader --states=all --jobs {job} --format=%T"
            fresh, reused = asyncio.run(ssh_polls(login, poll, args.repeats))
            emit("ssh_poll_fresh_connection_median", statistics.median(fresh), "s")
            emit("ssh_poll_reused_connection_median", statistics.median(reused), "s")
            emit(
                "ssh_poll_fresh_over_reused",
                statistics.median(fresh) / statistics.median(reused),
                "ratio",
                n=args.repeats,
            )

    with start_sshd() as server, tempfile.TemporaryDirectory() as tmp:
        size = args.sftp_mib * 1024 * 1024
        seconds = asyncio.run(sftp_throughput(server, size, Path(tmp)))
        emit("sftp_get_throughput", size / seconds / 1e6, "MB/s", mib=args.sftp_mib)


if __name__ == "__main__":
    main()
