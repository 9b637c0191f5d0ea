"""A throwaway OpenSSH server on 127.0.0.1 with its own host key and client key.

Why: remote job submission is plain SSH with verified host keys; the only honest test is a real
sshd. The server accepts one user (the current one) with one key, and a ``known_hosts`` file holds
its host key, so clients can (and must) verify it: asyncssh with ``known_hosts=server.known_hosts``,
the ``ssh`` CLI with ``-F server.write_client_config()`` (``StrictHostKeyChecking yes``).

``env`` adds ``SetEnv`` lines, so every session sees e.g. a test Slurm cluster's ``SLURM_CONF``:
this is how a "login node" of the one-node cluster is made (see ``start_slurm_login_node``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Mapping
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

INSTALL_HINT = "apt-get install openssh-server openssh-client"
HOST = "127.0.0.1"
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; it refuses to start without it


@dataclass
class SshServer:
    """A running sshd.

    Attributes: ``host`` ("127.0.0.1"), ``port``, ``user``, ``client_key`` (private key path;
    ``.pub`` beside it), ``known_hosts`` (a known_hosts file naming ``[127.0.0.1]:port`` and the
    host key), ``host_key_pub`` (the server's public host key), ``root`` (temp dir), ``env``
    (variables every session gets through SetEnv).
    """

    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key_pub: Path
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    daemons: list[Daemon] = field(default_factory=list)
    keep: bool = False

    @property
    def pid(self) -> int:
        return self.daemons[0].pid

    def write_client_config(self, path: Path | None = None, alias: str = "nc-test") -> Path:
        """An OpenSSH client config: ``Host alias``, host key verified strictly."""
        path = Path(path) if path is not None else self.root / "ssh_config"
        path.write_text(
            f"Host {alias}\n"
            f"    HostName {self.host}\n"
            f"    Port {self.port}\n"
            f"    User {self.user}\n"
            f'    IdentityFile "{self.client_key}"\n'
            "    IdentitiesOnly yes\n"
            f'    UserKnownHostsFile "{self.known_hosts}"\n'
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    PasswordAuthentication no\n"
            "    ConnectTimeout 10\n"
        )
        return path

    def ssh_argv(self, remote_command: str, alias: str = "nc-test") -> list[str]:
        """argv for ``ssh`` running ``remote_command`` (already shell-quoted) here."""
        config = self.write_client_config(alias=alias)
        return ["ssh", "-F", str(config), alias, remote_command]

    def connect_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``asyncssh.connect`` (host key checked against known_hosts)."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "client_keys": [str(self.client_key)],
            "known_hosts": str(self.known_hosts),
            "agent_path": None,
        }

    def stop(self) -> None:
        """Stop sshd by pid and remove the temp dir."""
        stop_all(self.daemons)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _keygen(ssh_keygen: str, path: Path, comment: str) -> None:
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def _ensure_privsep_dir() -> None:
    if PRIVSEP_DIR.is_dir():
        return
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
    except OSError as exc:
        raise ServiceUnavailable(
            f"sshd needs {PRIVSEP_DIR}, which cannot be created ({exc}): create it as root"
        ) from exc


def _quote_setenv(name: str, value: str) -> str:
    if any(c in value for c in '"\n'):
        raise ValueError(f"cannot pass {name}={value!r} through sshd SetEnv")
    return f'"{name}={value}"'


def write_sshd_config(server: SshServer, host_key: Path, authorized_keys: Path) -> Path:
    """sshd_config: loopback only, one user, public keys only, SFTP in-process."""
    lines = [
        f"ListenAddress {server.host}:{server.port}",
        f"HostKey {host_key}",
        f"PidFile {server.root / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        f"AllowUsers {server.user}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "StrictModes no",
        "UsePAM no",
        "X11Forwarding no",
        "AllowTcpForwarding yes",
        "PrintMotd no",
        "MaxStartups 50",
        "MaxSessions 50",
        "LogLevel INFO",
        "Subsystem sftp internal-sftp",
    ]
    if server.env:
        lines.append("SetEnv " + " ".join(_quote_setenv(k, v) for k, v in server.env.items()))
    config = server.root / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config


def _banner_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(
    parent: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
    keep: bool = False,
) -> SshServer:
    """Start ``sshd -D -e -f CONFIG`` on a free loopback port; return once it sends its banner.

    ``env``: variables every session gets (sshd ``SetEnv``). Raises ``ServiceUnavailable`` when
    openssh is missing, ``ServiceError`` (with sshd's log) when it does not start.
    """
    return retry_on_port_clash(lambda: _start(parent, env=env, timeout=timeout, keep=keep))


def _start(
    parent: Path | None, *, env: Mapping[str, str] | None, timeout: float, keep: bool
) -> SshServer:
    sshd = require_binary("sshd", INSTALL_HINT)
    ssh_keygen = require_binary("ssh-keygen", INSTALL_HINT)
    _ensure_privsep_dir()

    root = make_workdir("nc-sshd-", parent, mode=0o700)
    user = pwd.getpwuid(os.getuid()).pw_name
    host_key = root / "ssh_host_ed25519_key"
    client_key = root / "id_ed25519"
    _keygen(ssh_keygen, host_key, "napari-connectome-test-host")
    _keygen(ssh_keygen, client_key, "napari-connectome-test-client")
    authorized_keys = root / "authorized_keys"
    shutil.copyfile(client_key.with_suffix(".pub"), authorized_keys)
    port = free_port(HOST)
    host_key_pub = host_key.with_suffix(".pub")
    key_type, key_b64 = host_key_pub.read_text().split()[:2]
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{port} {key_type} {key_b64}\n")

    server = SshServer(
        host=HOST,
        port=port,
        user=user,
        client_key=client_key,
        known_hosts=known_hosts,
        host_key_pub=host_key_pub,
        root=root,
        env=dict(env or {}),
        keep=keep,
    )
    try:
        config = write_sshd_config(server, host_key, authorized_keys)
        test = subprocess.run(
            [sshd, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
        if test.returncode != 0:
            raise ServiceError(f"sshd rejected its config {config}: {test.stderr.strip()}")
        server.daemons.append(
            spawn("sshd", [sshd, "-D", "-e", "-f", str(config)], root / "sshd.log")
        )
        wait_until(
            lambda: _banner_ready(HOST, port),
            timeout=timeout,
            what="sshd",
            daemons=server.daemons,
        )
    except BaseException:
        server.stop()
        raise
    return server
