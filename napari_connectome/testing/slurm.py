"""A throwaway one-node Slurm cluster (slurmctld + slurmd + munged) on 127.0.0.1.

Why: the jobs code submits with ``sbatch`` and polls ``squeue``/``scontrol``; testing that against a
real Slurm is the only way to know it works. Debian's ``slurm-wlm`` and ``munge`` start in seconds.

Everything lives in one temporary directory: its own munge key and socket, its own ``slurm.conf``
(unusual, kernel-chosen ports; state, spool and logs inside), daemons in the foreground as children.
Client commands find this cluster through ``SlurmCluster.env`` (``SLURM_CONF`` and ``PATH``)::

    with start_slurm_cluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env, check=True)

Accounting: ``sacct`` needs ``slurmdbd`` (and a MySQL server), which this cluster does not run, so
``sacct`` answers "Slurm accounting storage is disabled". Poll ``squeue`` and ``scontrol show job``
instead: finished jobs stay visible to ``scontrol`` for ``MinJobAge`` (600 s) and every finished job
is also appended to ``cluster.jobcomp_log`` (``jobcomp/filetxt``, one ``JobState=...`` line per
job).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from napari_connectome.testing.processes import (
    Daemon,
    ServiceError,
    ServiceUnavailable,
    free_port,
    make_workdir,
    require_binary,
    retry_on_port_clash,
    spawn,
    stop_all,
    wait_until,
)

INSTALL_HINT = "apt-get install slurm-wlm munge"
NODE = "localhost"
PARTITION = "debug"
FINISHED_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}
)
_HARDWARE_KEYS = (
    "CPUs",
    "Boards",
    "SocketsPerBoard",
    "CoresPerSocket",
    "ThreadsPerCore",
    "RealMemory",
)


@dataclass
class SlurmCluster:
    """A running one-node cluster.

    Attributes: ``root`` (its temp dir), ``conf`` (slurm.conf), ``env`` (environment for client
    commands: ``SLURM_CONF``, ``PATH`` with this Python's bin dir and the Slurm binaries first, no
    inherited ``SLURM_*``), ``partition`` ("debug", the default), ``node`` ("localhost"), ``cpus``,
    ``ctld_port``/``slurmd_port``, ``munge_socket``, ``log_dir``, ``jobcomp_log``.
    """

    root: Path
    conf: Path
    env: dict[str, str]
    cpus: int
    ctld_port: int
    slurmd_port: int
    munge_socket: Path
    partition: str = PARTITION
    node: str = NODE
    daemons: list[Daemon] = field(default_factory=list)
    keep: bool = False

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def jobcomp_log(self) -> Path:
        return self.log_dir / "jobcomp.txt"

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (``sbatch``, ``squeue``, ...) against this cluster."""
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=timeout
        )

    def submit(self, *sbatch_args: str) -> str:
        """``sbatch --parsable ARGS``; returns the job id."""
        out = self.run("sbatch", "--parsable", *sbatch_args).stdout.strip()
        return out.split(";")[0]

    def job_state(self, job_id: str) -> str:
        """The job's state from ``scontrol show job`` (PENDING, RUNNING, COMPLETED, ...)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id).stdout
        match = re.search(r"\bJobState=(\S+)", out)
        if match is None:
            raise ServiceError(f"scontrol shows no state for job {job_id}: {out!r}")
        return match.group(1)

    def wait_for_job(
        self, job_id: str, states: Iterable[str] = FINISHED_STATES, timeout: float = 60
    ) -> str:
        """Poll until the job reaches one of ``states``; returns that state."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state in wanted:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {state} after {timeout} s")
            time.sleep(0.2)

    def cancel_all(self, timeout: float = 15) -> None:
        """Cancel every job of this cluster and wait until none is left running."""
        ids = self.run("squeue", "--noheader", "--format=%i", check=False).stdout.split()
        if not ids:
            return
        self.run("scancel", *ids, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run("squeue", "--noheader", "--format=%i", check=False).stdout.split():
                return
            time.sleep(0.2)

    def stop(self) -> None:
        """Cancel jobs, stop slurmd, slurmctld and munged by pid, remove the temp dir."""
        try:
            if all(d.alive() for d in self.daemons):
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self.cancel_all()
        finally:
            stop_all(self.daemons)
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def node_hardware(slurmd: str = "slurmd") -> dict[str, str]:
    """This machine as ``slurmd -C`` sees it (CPUs, sockets, cores, threads, RealMemory)."""
    out = subprocess.run([slurmd, "-C"], capture_output=True, text=True, check=True, timeout=30)
    fields = dict(token.split("=", 1) for token in out.stdout.split() if "=" in token)
    return {key: fields[key] for key in _HARDWARE_KEYS if key in fields}


def write_slurm_conf(
    root: Path,
    *,
    ctld_port: int,
    slurmd_port: int,
    munge_socket: Path,
    hardware: dict[str, str],
) -> Path:
    """slurm.conf for one node on loopback, root user, no cgroups, everything under ``root``."""
    node = " ".join(f"{key}={value}" for key, value in hardware.items())
    lines = [
        f"ClusterName=nctest{ctld_port}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        # Bind slurmctld and slurmd to 127.0.0.1, not to every interface.
        "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        f"PlugStackConfig={root / 'plugstack.conf'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/linux",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root / 'log' / 'jobcomp.txt'}",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "MailProg=/bin/true",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0",  # start jobs at once, not up to 3 s later
        "MinJobAge=600",
        "KillWait=5",
        "InactiveLimit=0",
        f"NodeName={NODE} NodeHostname={NODE} NodeAddr=127.0.0.1 {node} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    (root / "plugstack.conf").write_text("")
    return conf


def client_env(conf: Path, sbatch: str) -> dict[str, str]:
    """Environment for client commands: our SLURM_CONF, no SLURM_* leaking in from an outer job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(conf)
    path = [os.path.dirname(sys.executable), os.path.dirname(sbatch), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(dict.fromkeys(p for p in path if p))
    return env


def start_slurm_cluster(
    parent: Path | None = None, *, timeout: float = 60, keep: bool = False
) -> SlurmCluster:
    """Start munged, slurmctld and slurmd; return once ``sinfo`` shows the node idle.

    ``parent``: where to make the temp dir (default: the system temp dir; keep the path short, a
    unix socket lives there). ``keep``: leave the directory (logs) after ``stop()``.
    Raises ``ServiceUnavailable`` when a program is missing, ``ServiceError`` when a daemon fails.
    """
    if os.geteuid() != 0:
        raise ServiceUnavailable(
            "the one-node test Slurm cluster runs slurmd as root (it launches the jobs): "
            "run these tests as root, e.g. in a container or CI"
        )
    return retry_on_port_clash(lambda: _start(parent, timeout=timeout, keep=keep))


def _start(parent: Path | None, *, timeout: float, keep: bool) -> SlurmCluster:
    munged = require_binary("munged", INSTALL_HINT)
    slurmctld = require_binary("slurmctld", INSTALL_HINT)
    slurmd = require_binary("slurmd", INSTALL_HINT)
    sbatch = require_binary("sbatch", INSTALL_HINT)
    require_binary("slurmstepd", INSTALL_HINT)

    root = make_workdir("nc-slurm-", parent)
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir()
    (root / "munge").chmod(0o700)
    munge_socket = root / "munge.socket"
    ctld_port = free_port()
    slurmd_port = free_port()
    while slurmd_port == ctld_port:
        slurmd_port = free_port()
    hardware = node_hardware(slurmd)
    conf = write_slurm_conf(
        root,
        ctld_port=ctld_port,
        slurmd_port=slurmd_port,
        munge_socket=munge_socket,
        hardware=hardware,
    )
    env = client_env(conf, sbatch)
    cluster = SlurmCluster(
        root=root,
        conf=conf,
        env=env,
        cpus=int(hardware.get("CPUs", "1")),
        ctld_port=ctld_port,
        slurmd_port=slurmd_port,
        munge_socket=munge_socket,
        keep=keep,
    )
    try:
        key = root / "munge" / "munge.key"  # random bytes, owner-only, as `mungekey --create` makes
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(os.urandom(1024))
        log = root / "log"
        cluster.daemons.append(
            spawn(
                "munged",
                [
                    munged,
                    "--foreground",
                    f"--key-file={key}",
                    f"--socket={munge_socket}",
                    f"--pid-file={root / 'munge' / 'munged.pid'}",
                    f"--seed-file={root / 'munge' / 'munged.seed'}",
                    f"--log-file={log / 'munged.log'}",
                ],
                log / "munged.out",
                env,
            )
        )
        wait_until(munge_socket.exists, timeout=timeout, what="munged", daemons=cluster.daemons)
        cluster.daemons.append(
            spawn(
                "slurmctld",
                [slurmctld, "-D", "-i", "-f", str(conf)],
                log / "slurmctld.out",
                env,
            )
        )
        cluster.daemons.append(
            spawn("slurmd", [slurmd, "-D", "-N", NODE, "-f", str(conf)], log / "slurmd.out", env)
        )

        def node_idle() -> bool:
            out = cluster.run("sinfo", "--noheader", "--format=%t", "--nodes", NODE, check=False)
            return out.stdout.strip() == "idle"

        wait_until(
            node_idle, timeout=timeout, what="Slurm node never became idle", daemons=cluster.daemons
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster
