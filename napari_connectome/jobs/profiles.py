"""Cluster profiles: how to reach one cluster and what to ask its scheduler for, saved once and
reused for every job (by the Remote jobs widget, or from a notebook).

A profile is a YAML file in ``$NAPARI_CONNECTOME_CONFIG_DIR/profiles`` (default: the user config
dir, e.g. ``~/.config/napari-connectome/profiles``), beside the job registry. It turns into the
``backend`` section of a job spec (:meth:`ClusterProfile.backend`), so a job submitted from a
profile is exactly a job submitted with ``napari-connectome submit``.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.spec import BackendSpec, JobSpec, Resources, SSHSpec
from napari_connectome.jobs.transport import Transport, open_transport


class ClusterProfile(BaseModel):
    """One cluster. ``host`` empty = this machine is the login node (no SSH)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    host: str = ""
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    key: str | None = None  # private key file; None = the SSH agent / default keys
    known_hosts: str | None = None  # None = ~/.ssh/known_hosts
    jump_host: str | None = None  # "user@host:port" of a bastion in front of the login node
    scheduler: Literal["slurm", "pbs"] = "slurm"
    partition: str | None = None  # Slurm partition, or PBS queue
    account: str | None = None
    walltime: str = "01:00:00"
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    setup: list[str] = Field(default_factory=list)  # shell lines run first (module load ...)
    workdir: str = ""  # absolute folder on the cluster where job outputs are created
    python: str = "python3"  # Python on the cluster that has napari-connectome installed
    submit_env: dict[str, str] = Field(default_factory=dict)  # env for sbatch/squeue (SLURM_CONF)

    @field_validator("name")
    @classmethod
    def _simple_name(cls, v: str) -> str:
        if not v or len(v) > 64 or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("use 1-64 letters, digits, '-', '_' or '.'")
        return v

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if v and not PurePosixPath(v).is_absolute():
            raise ValueError(f"must be an absolute path on the cluster, got {v!r}")
        return v

    @field_validator("jump_host")
    @classmethod
    def _jump(cls, v: str | None) -> str | None:
        if v:
            parse_address(v)
        return v or None

    def ssh(self) -> SSHSpec | None:
        """The SSH section of a job spec (None when the profile is this machine)."""
        if not self.host:
            return None
        jump = None
        if self.jump_host:
            user, host, port = parse_address(self.jump_host)
            jump = SSHSpec(
                host=host, port=port, user=user, key=self.key, known_hosts=self.known_hosts
            )
        return SSHSpec(
            host=self.host,
            port=self.port,
            user=self.user or None,
            key=self.key or None,
            known_hosts=self.known_hosts or None,
            jump_host=jump,
        )

    def backend(self, workers: int | None = None) -> BackendSpec:
        """The ``backend`` section of a job spec that runs on this cluster."""
        queue = {"partition": self.partition} if self.scheduler == "slurm" else {}
        if self.scheduler == "pbs":
            queue = {"queue": self.partition}
        resources = Resources(
            nodes=self.nodes,
            gpus_per_node=self.gpus_per_node,
            account=self.account or None,
            walltime=self.walltime,
            setup=list(self.setup),
            python=self.python,
            submit_env=dict(self.submit_env),
            **queue,
        )
        return BackendSpec(
            kind=self.scheduler, workers=workers, resources=resources, ssh=self.ssh()
        )

    def output_path(self, job_name: str) -> str:
        """A fresh output folder for a job in the profile's work dir."""
        if not self.workdir:
            raise UserInputError(
                f"profile {self.name!r} has no work dir: set the folder on the cluster where "
                "results are written"
            )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return str(PurePosixPath(self.workdir, f"{job_name}-{stamp}.ome.zarr"))

    @property
    def label(self) -> str:
        if not self.host:
            return "this machine"
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


def parse_address(text: str) -> tuple[str | None, str, int]:
    """``[user@]host[:port]`` -> (user, host, port)."""
    user, _, rest = text.rpartition("@")
    host, _, port = rest.partition(":")
    if not host or (port and not port.isdigit()):
        raise ValueError(f"jump host must look like user@host:port, got {text!r}")
    return user or None, host, int(port or 22)


# Resources a profile does not hold: a job from the profile gets their defaults
_NOT_IN_PROFILE = ("cpus_per_node", "memory", "filesystems", "extra_args")


def profile_from_spec(spec: JobSpec, name: str | None = None) -> tuple[ClusterProfile, list[str]]:
    """The cluster profile a job spec's backend describes (slurm/pbs, its SSH settings and
    resources); the work dir is the folder holding the spec's output. Also returns the spec's
    settings a profile cannot hold (set to non-defaults there), so a caller can say so."""
    backend = spec.backend
    if backend.kind not in ("slurm", "pbs"):
        raise UserInputError(
            f"the job spec's backend is {backend.kind!r}: a cluster profile comes from a spec "
            "with backend.kind slurm or pbs (e.g. examples/jobs/slurm-ssh.yaml, or the job.yaml "
            "examples/jobs/try_slurm_over_ssh.py writes)"
        )
    res, ssh = backend.resources, backend.ssh
    defaults = Resources()
    dropped = [f"resources.{k}" for k in _NOT_IN_PROFILE if getattr(res, k) != getattr(defaults, k)]
    jump = None
    if ssh is not None and ssh.jump_host is not None:
        j = ssh.jump_host
        if (j.key, j.known_hosts) != (ssh.key, ssh.known_hosts):
            dropped.append("ssh.jump_host.key/known_hosts (a profile uses the login's for both)")
        jump = f"{j.user + '@' if j.user else ''}{j.host}:{j.port}"
    raw = name or spec.name
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)[:64] or "imported"
    data = {
        "name": clean,
        "scheduler": backend.kind,
        "partition": res.partition if backend.kind == "slurm" else res.queue,
        "account": res.account,
        "walltime": res.walltime,
        "nodes": res.nodes,
        "gpus_per_node": res.gpus_per_node,
        "setup": list(res.setup),
        "python": res.python,
        "submit_env": dict(res.submit_env),
        "workdir": str(PurePosixPath(spec.output).parent),
        "jump_host": jump,
    }
    if ssh is not None:
        data.update(
            host=ssh.host, port=ssh.port, user=ssh.user, key=ssh.key, known_hosts=ssh.known_hosts
        )
    return make_profile(data), dropped


def profiles_dir() -> Path:
    from napari_connectome.jobs.registry import jobs_dir

    path = jobs_dir().parent / "profiles"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_profile(data: dict) -> ClusterProfile:
    """Validate profile fields; a wrong value is one line naming the field."""
    try:
        return ClusterProfile.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "profile"
            parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        raise UserInputError("invalid cluster profile: " + "; ".join(parts)) from None


def save_profile(profile: ClusterProfile) -> Path:
    import yaml

    from napari_connectome.jobs.layout import atomic_write_bytes

    path = profiles_dir() / f"{profile.name}.yaml"
    text = yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True), sort_keys=False)
    atomic_write_bytes(path, text.encode())
    return path


def load_profile(name: str) -> ClusterProfile:
    import yaml

    path = profiles_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_profiles()) or "none yet"
        raise UserInputError(f"no cluster profile {name!r} (saved: {known})")
    from napari_connectome.jobs.spec import load_yaml_text

    try:
        data = load_yaml_text(path.read_bytes(), f"cluster profile {path}")  # no aliases
    except yaml.YAMLError as exc:
        raise UserInputError(f"cluster profile {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"cluster profile {path} is not a mapping of fields")
    return make_profile(data)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def delete_profile(name: str) -> None:
    (profiles_dir() / f"{name}.yaml").unlink(missing_ok=True)


def _scheduler_argv(profile: ClusterProfile) -> list[str]:
    if profile.scheduler == "pbs":
        return ["qstat", "-B"]
    argv = ["sinfo", "--noheader", "--format=%P %a %D %t"]
    return [*argv, f"--partition={profile.partition}"] if profile.partition else argv


def _python_check(profile: ClusterProfile) -> list[str]:
    """bash runs the profile's set-up lines, then the Python; the Python's path arrives as ``$0``,
    never spliced into the script."""
    script = "\n".join(
        [*profile.setup, 'exec "$0" -c "import napari_connectome as m; print(m.__file__)"']
    )
    return ["bash", "-c", script, profile.python]


def check_connection(profile: ClusterProfile, transport: Transport | None = None) -> dict[str, str]:
    """Log in (host key verified), ask the scheduler, check the work dir and the cluster's Python.

    Returns what each check saw; the first failing check raises :class:`UserInputError` naming it.
    """
    own = transport is None
    transport = transport or open_transport(profile.ssh())
    try:
        found: dict[str, str] = {"login": transport.label}
        res = transport.run(_scheduler_argv(profile), env=profile.submit_env, timeout=60)
        what = shlex.join(_scheduler_argv(profile))
        if res.returncode == 127 and not profile.host:
            raise UserInputError(
                f"enter a host: this machine has no `{_scheduler_argv(profile)[0]}` (an empty "
                "login host means napari runs on the cluster's login node itself)"
            )
        if res.returncode != 0:
            reason = res.stderr.strip() or res.stdout.strip() or f"exit {res.returncode}"
            raise UserInputError(
                f"logged in to {profile.label}, but `{what}` failed: {reason.splitlines()[-1]}"
            )
        if profile.scheduler == "slurm" and not res.stdout.strip():
            raise UserInputError(
                f"{profile.label}: Slurm knows no partition {profile.partition!r}: fix the "
                "partition (see `sinfo` on the login node)"
            )
        found["scheduler"] = res.stdout.strip().splitlines()[0] if res.stdout.strip() else "ok"
        if profile.workdir:
            if not transport.exists(profile.workdir):
                raise UserInputError(
                    f"work dir {profile.workdir} does not exist on {profile.label}: create it "
                    "or fix the profile"
                )
            found["workdir"] = profile.workdir
        res = transport.run(_python_check(profile), env=profile.submit_env, timeout=120)
        if res.returncode != 0:
            reason = res.stderr.strip() or res.stdout.strip() or f"exit {res.returncode}"
            raise UserInputError(
                f"{profile.label}: {profile.python} cannot import napari_connectome "
                f"({reason.splitlines()[-1]}): install it there or fix python / set-up lines"
            )
        found["python"] = profile.python
        return found
    finally:
        if own:
            transport.close()
