"""Start throwaway Slurm and OpenSSH services on loopback, for tests and benchmarks.

No pytest here: a benchmark does ``with start_slurm_cluster() as cluster: ...``. Each ``start_*``
raises ``ServiceUnavailable`` (message: what to apt-get install) when a program is missing, and
``ServiceError`` (with the daemons' logs) when one fails to start. Every daemon runs as a child in
the foreground, is stopped by pid by ``stop()`` / the ``with`` block, and gets SIGTERM if its parent
dies.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from napari_connectome.testing.processes import ServiceError, ServiceUnavailable
from napari_connectome.testing.slurm import SlurmCluster, start_slurm_cluster
from napari_connectome.testing.sshd import SshServer, start_sshd

__all__ = [
    "ServiceError",
    "ServiceUnavailable",
    "SlurmCluster",
    "SshServer",
    "start_slurm_cluster",
    "start_slurm_login_node",
    "start_sshd",
]


def start_slurm_login_node(
    cluster: SlurmCluster,
    parent: Path | None = None,
    *,
    extra_env: Mapping[str, str] | None = None,
    keep: bool = False,
) -> SshServer:
    """An sshd whose sessions use ``cluster``: ``SLURM_CONF`` and ``PATH`` as in ``cluster.env``.

    This is the "login node" that remote submission over SSH talks to: ``sbatch`` run through it
    reaches the one-node cluster, and jobs inherit ``PATH`` (this Python's bin dir first), so
    ``napari-connectome run-job`` resolves to the checkout under test.
    """
    env = {"SLURM_CONF": cluster.env["SLURM_CONF"], "PATH": cluster.env["PATH"]}
    env.update(extra_env or {})
    return start_sshd(parent, env=env, keep=keep)
