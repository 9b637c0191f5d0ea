"""Starting the Dask cluster a job runs on, apart from what the job does with it.

``local`` (and ``slurm``/``pbs`` on one node): a LocalCluster on loopback, one worker process per
GPU or per two cores of the allocation. ``dask``: a client of the scheduler the spec names. A
multi-node Slurm/PBS allocation: the scheduler on this node (TLS, certificates in the job's
scheduler folder) and workers started on every node with ``srun`` / ``mpiexec``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import AbstractContextManager

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.layout import JobLayout
from napari_connectome.jobs.spec import JobSpec

LOCAL_WORKERS_PER_CORE = 4  # more worker processes than this per core only cost memory


def default_workers(spec: JobSpec) -> int:
    if spec.backend.workers:
        return spec.backend.workers
    gpus = spec.backend.resources.gpus_per_node
    if gpus:
        return gpus
    from napari_connectome.ffn.threads import allocated_cores

    return max(1, allocated_cores()[0] // 2)  # the allocation's cores, not the whole node's


def open_client(spec: JobSpec) -> AbstractContextManager:
    """A Dask client for the spec's backend: a LocalCluster on loopback, or the given scheduler.

    Inside a Slurm/PBS allocation (backends slurm/pbs) this is a LocalCluster on the node the job
    landed on, one worker per GPU (or per two cores).
    """
    from dask.distributed import Client, LocalCluster

    if spec.backend.kind == "dask":
        try:
            return Client(spec.backend.scheduler, timeout="20s")
        except OSError as exc:
            raise UserInputError(
                f"cannot reach Dask scheduler {spec.backend.scheduler}: {exc}"
            ) from None
    launch = launch_mode(spec)
    if launch != "local":
        return _AllocationCluster(spec, launch)
    cluster = LocalCluster(
        n_workers=default_workers(spec),
        threads_per_worker=spec.backend.threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    return _ClientAndCluster(Client(cluster), cluster)


def launch_mode(spec: JobSpec) -> str:
    launch = spec.backend.launch
    if launch != "auto":
        return launch
    if spec.backend.kind in ("slurm", "pbs") and spec.backend.resources.nodes > 1:
        return "srun" if spec.backend.kind == "slurm" else "mpiexec"
    return "local"


class _AllocationCluster(AbstractContextManager):
    """Scheduler here (TLS, on this node's address), workers on every node of the allocation."""

    def __init__(self, spec: JobSpec, launch: str):
        self.spec, self.launch = spec, launch

    def __enter__(self):
        import sys

        from dask.distributed import Client, LocalCluster

        from napari_connectome.jobs.node import write_tls
        from napari_connectome.jobs.schedulers import node_launch_argv

        spec = self.spec
        tls_dir = JobLayout(spec.output).scheduler / f"tls-{os.getpid()}"
        security = write_tls(tls_dir)
        host = socket.gethostbyname(socket.gethostname())
        self.cluster = LocalCluster(
            n_workers=0,
            host=host,
            protocol="tls://",
            security=security,
            dashboard_address=None,
        )
        nodes = spec.backend.resources.nodes
        workers = default_workers(spec)
        argv = node_launch_argv(
            self.launch,
            nodes,
            sys.executable,
            self.cluster.scheduler_address,
            workers,
            spec.backend.threads_per_worker,
            str(tls_dir),
        )
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self.client = Client(self.cluster, security=security)
        expected = nodes * workers
        deadline = time.monotonic() + 600
        while len(self.client.scheduler_info()["workers"]) < expected:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(
                    f"{argv[0]} starting the workers exited with {self.proc.returncode}"
                )
            if time.monotonic() > deadline:
                self.__exit__()
                started = len(self.client.scheduler_info()["workers"])
                raise RuntimeError(f"only {started} of {expected} workers started in 10 minutes")
            time.sleep(0.2)
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.cluster.close()
        shutil.rmtree(
            JobLayout(self.spec.output).scheduler / f"tls-{os.getpid()}", ignore_errors=True
        )


class _ClientAndCluster(AbstractContextManager):
    def __init__(self, client, cluster):
        self.client, self.cluster = client, cluster

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        self.cluster.close()
