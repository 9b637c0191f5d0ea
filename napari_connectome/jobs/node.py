"""Dask workers for every node of a multi-node allocation.

``run-job`` starts the scheduler on the first node (TLS, with a throwaway certificate written only
into the job's folder) and launches this module once per node (``srun`` on Slurm, ``mpiexec`` on
PBS). Each copy starts ``workers`` worker processes on its node, each seeing one GPU
(``CUDA_VISIBLE_DEVICES``), so one job uses every GPU it was given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from pathlib import Path


def tls_files(folder: Path) -> dict[str, str]:
    return {k: str(folder / f"{k}.pem") for k in ("ca", "cert", "key")}


def write_tls(folder: Path):
    """A throwaway CA-signed certificate for this job, readable by the user only."""
    from distributed.security import Security

    temp = Security.temporary()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    files = tls_files(folder)
    for name, pem in (
        ("ca", temp.tls_ca_file),
        ("cert", temp.tls_worker_cert),
        ("key", temp.tls_worker_key),
    ):
        fd = os.open(files[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pem)
    return security_from(folder)


def security_from(folder: Path):
    from distributed.security import Security

    f = tls_files(folder)
    return Security(
        tls_ca_file=f["ca"],
        tls_client_cert=f["cert"],
        tls_client_key=f["key"],
        tls_scheduler_cert=f["cert"],
        tls_scheduler_key=f["key"],
        tls_worker_cert=f["cert"],
        tls_worker_key=f["key"],
        require_encryption=True,
    )


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


async def run_node(address: str, workers: int, threads: int, tls_dir: Path) -> None:
    from distributed import Nanny

    gpus = _gpu_count()
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    host = socket.gethostname()
    nannies = []
    for i in range(workers):
        env = {}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = visible[i % gpus] if visible else str(i % gpus)
        nannies.append(
            Nanny(
                address,
                nthreads=threads,
                name=f"{host}-{i}",
                env=env,
                security=security_from(tls_dir),
                dashboard=False,
                death_timeout=120,
            )
        )
    await asyncio.gather(*nannies)
    await asyncio.gather(*(n.finished() for n in nannies))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m napari_connectome.jobs.node")
    ap.add_argument("address")
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tls-dir", required=True)
    args = ap.parse_args(argv)
    asyncio.run(run_node(args.address, args.workers, args.threads, Path(args.tls_dir)))


if __name__ == "__main__":
    main()
