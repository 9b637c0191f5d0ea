"""Session fixtures that start real services on 127.0.0.1 (loaded by conftest's ``pytest_plugins``).

Each fixture starts its daemons once per test session, stops them by pid at the end (also when tests
fail), and skips with the apt-get command to run when a program is missing; with
``NAPARI_CONNECTOME_REQUIRE_SERVICES=1`` (CI) such a skip fails instead.

``slurm_cluster`` -> ``napari_connectome.testing.slurm.SlurmCluster``, a one-node cluster:
    env           dict for ``subprocess.run([...], env=cluster.env)``: SLURM_CONF, PATH (this
                  Python's bin dir first, so jobs find ``napari-connectome``), no inherited SLURM_*
    conf          path of its slurm.conf;  root: its temp dir;  log_dir: daemon logs
    partition     "debug" (default partition);  node: "localhost";  cpus: the machine's CPU count
    run(*argv)    run a client command (CompletedProcess, check=True by default)
    submit(*args) ``sbatch --parsable ARGS`` -> job id
    job_state(id) state from ``scontrol show job`` (PENDING/RUNNING/COMPLETED/CANCELLED/...)
    wait_for_job(id, states=FINISHED_STATES, timeout=60) -> the state reached
    jobcomp_log   file with one ``JobState=...`` line per finished job
    ``sacct`` does NOT work (no slurmdbd): poll ``squeue`` / ``scontrol show job`` (finished jobs
    stay for 600 s). Jobs of earlier tests may still be queued: use your own job ids, not "the only
    job".

``sshd_server`` -> ``napari_connectome.testing.sshd.SshServer``, an OpenSSH server:
    host ("127.0.0.1"), port, user (current user), client_key (private key path), known_hosts (file
    with ``[127.0.0.1]:port`` and the host key), host_key_pub (the server's public host key)
    connect_kwargs()           ``asyncssh.connect(**server.connect_kwargs())``, host key verified
    write_client_config(path=None, alias="nc-test") -> path of an OpenSSH config with ``Host alias``
                               (StrictHostKeyChecking yes, UserKnownHostsFile = known_hosts)
    ssh_argv(remote_command)   ``["ssh", "-F", config, "nc-test", remote_command]``

``slurm_login_node`` -> ``SshServer`` whose sessions see ``slurm_cluster`` (SLURM_CONF, PATH):
    use it for "submit over SSH to Slurm" tests; the cluster itself is ``slurm_cluster``.

A jump host is one more ``napari_connectome.testing.services.start_sshd()`` (see the smoke tests).
``NAPARI_CONNECTOME_KEEP_SERVICES=1`` keeps the services' temp dirs (configs, daemon logs) after the
session, for debugging.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from napari_connectome.testing.services import (
    ServiceUnavailable,
    SlurmCluster,
    SshServer,
    start_slurm_cluster,
    start_slurm_login_node,
    start_sshd,
)

KEEP = os.environ.get("NAPARI_CONNECTOME_KEEP_SERVICES", "") not in ("", "0")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A one-node Slurm cluster on loopback for the whole session."""
    try:
        cluster = start_slurm_cluster(keep=KEEP)
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sshd_server() -> Iterator[SshServer]:
    """An OpenSSH server on 127.0.0.1 accepting ``client_key`` for the current user."""
    try:
        server = start_sshd(keep=KEEP)
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slurm_login_node(slurm_cluster: SlurmCluster) -> Iterator[SshServer]:
    """An sshd in front of ``slurm_cluster``: ``sbatch`` over SSH reaches that cluster."""
    try:
        server = start_slurm_login_node(slurm_cluster, keep=KEEP)
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator:
    """An existing folder nothing can be written into (a read-only bind mount, as root)."""
    from napari_connectome.testing.filesystems import read_only_folder

    try:
        with read_only_folder(tmp_path / "read-only") as path:
            yield path
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def full_disk_dir(tmp_path) -> Iterator:
    """An empty folder on a 256 KiB tmpfs: a write of more than that fails with ENOSPC."""
    from napari_connectome.testing.filesystems import full_filesystem

    try:
        with full_filesystem(tmp_path / "full-disk") as path:
            yield path
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
