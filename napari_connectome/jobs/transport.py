"""Running commands and moving files on the machine where a job runs: here, or a login node over
SSH.

Commands are argv lists. Locally they go to ``subprocess`` without a shell; over SSH the remote
shell receives ``shlex.join(argv)``, so every argument arrives as one word, whatever spaces,
quotes or ``;`` it holds. Host keys are verified against ``known_hosts`` (asyncssh's default
check), never accepted blindly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.spec import SSHSpec


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class Transport(Protocol):
    label: str

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> CommandResult: ...
    def read_file(self, path: str, offset: int = 0) -> bytes | None: ...
    def realpath(self, path: str) -> str | None: ...
    def write_file(self, path: str, data: bytes) -> None: ...
    def exists(self, path: str) -> bool: ...
    def makedirs(self, path: str) -> None: ...
    def remove_tree(self, path: str) -> None: ...
    def close(self) -> None: ...


class LocalTransport:
    """This machine (the desk, or a login node where napari-connectome runs itself)."""

    label = "local"

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> CommandResult:
        try:
            proc = subprocess.run(
                argv,
                env={**os.environ, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return CommandResult(127, "", f"{argv[0]}: command not found")
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def read_file(self, path: str, offset: int = 0) -> bytes | None:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return None

    def realpath(self, path: str) -> str | None:
        """``path`` with every symlink resolved (what a read of it really opens)."""
        return os.path.realpath(path)

    def write_file(self, path: str, data: bytes) -> None:
        from napari_connectome.jobs.layout import atomic_write_bytes

        atomic_write_bytes(Path(path), data)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path)

    def close(self) -> None:
        pass


class SSHTransport:
    """A login node over SSH (asyncssh on a private event-loop thread; the API stays
    synchronous)."""

    def __init__(self, spec: SSHSpec):
        self.spec = spec
        self.label = f"{spec.user + '@' if spec.user else ''}{spec.host}:{spec.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="ssh")
        self._thread.start()
        self._conns: list = []
        self._sftp = None
        self._closed = False
        try:
            self._call(self._connect())
        except BaseException:
            self._stop_loop()  # a refused login leaves no thread behind (polls retry it)
            raise

    # -- plumbing -----------------------------------------------------------------------------
    def _call(self, coro, timeout: float | None = None):
        """Run ``coro`` on the SSH loop. A transport closed meanwhile (by another thread that
        saw the connection drop) raises ConnectionError instead of waiting forever."""
        if self._closed:
            coro.close()
            raise ConnectionError(f"{self.label}: the connection was closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                concurrent.futures.wait([future], timeout=wait)
                if future.done():
                    return future.result()
                if not self._loop.is_running():
                    future.cancel()
                    raise ConnectionError(f"{self.label}: the connection was closed")
                if deadline is not None and time.monotonic() >= deadline:
                    future.cancel()
                    raise TimeoutError(f"{self.label}: no answer in {timeout:g} s")
        except transient_errors():
            raise
        except OSError as exc:
            if exc.errno in _NETWORK_ERRNOS:  # the route or the host went away: a drop
                raise ConnectionError(f"{self.label}: {exc}") from exc
            raise
        except _sftp_file_error() as exc:
            # a file the server refused (missing, permission, its disk full): an OSError like a
            # local one, so callers treat both alike and never reconnect for it
            raise OSError(_SFTP_ERRNO.get(exc.code, errno.EIO), exc.reason, exc.code) from exc

    async def _open(self, spec: SSHSpec, tunnel=None):
        # keepalives: a connection kept open between polls (jobs client) notices a dead peer
        return await ssh_connect(spec, tunnel, keepalive_interval=30, keepalive_count_max=3)

    async def _connect(self) -> None:
        tunnel = None
        if self.spec.jump_host is not None:
            tunnel = await self._open(self.spec.jump_host)
            self._conns.append(tunnel)
        conn = await self._open(self.spec, tunnel)
        self._conns.append(conn)
        self._sftp = await conn.start_sftp_client()

    async def _disconnect(self) -> None:
        for conn in reversed(self._conns):
            conn.close()
        self._conns, self._sftp = [], None

    @property
    def _conn(self):
        return self._conns[-1]

    def close(self) -> None:
        if self._closed:
            return
        if self._loop.is_running():
            with contextlib.suppress(ConnectionError, TimeoutError):
                self._call(self._disconnect(), timeout=10)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            # the loop's resolver threads go with it (one set per login otherwise)
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    # -- operations ---------------------------------------------------------------------------
    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> CommandResult:
        if env:
            argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
        command = shlex.join(argv)

        async def go():
            return await self._conn.run(command, check=False)

        res = self._call(go(), timeout)
        rc = res.exit_status if res.exit_status is not None else 255
        return CommandResult(rc, str(res.stdout or ""), str(res.stderr or ""))

    def read_file(self, path: str, offset: int = 0) -> bytes | None:
        import asyncssh

        async def go():
            try:
                async with self._sftp.open(path, "rb") as f:
                    await f.seek(offset)
                    return await f.read()
            except asyncssh.SFTPNoSuchFile:
                return None

        return self._call(go())

    def realpath(self, path: str) -> str | None:
        """``path`` with every symlink resolved on the login node (None: a folder on the way is
        missing)."""
        import asyncssh

        async def go():
            try:
                return await self._sftp.realpath(path)
            except asyncssh.SFTPNoSuchFile:
                return None

        return self._call(go())

    def write_file(self, path: str, data: bytes) -> None:
        tmp = str(PurePosixPath(path).with_name(f".{PurePosixPath(path).name}.{os.getpid()}.tmp"))

        async def go():
            async with self._sftp.open(tmp, "wb") as f:
                await f.write(data)
            await self._sftp.posix_rename(tmp, path)

        self._call(go())

    def exists(self, path: str) -> bool:
        return self._call(self._sftp.exists(path))

    def makedirs(self, path: str) -> None:
        self._call(self._sftp.makedirs(path, exist_ok=True))

    def remove_tree(self, path: str) -> None:
        self._call(self._sftp.rmtree(path))


async def ssh_connect(spec: SSHSpec, tunnel=None, **options):
    """Log in to ``spec`` (through ``tunnel``, an open connection to a jump host) with the host
    key verified against known_hosts; every refusal is a :class:`UserInputError` saying what to
    fix. ``options`` go to ``asyncssh.connect`` (e.g. keepalives)."""
    import asyncssh

    where = f"{spec.user + '@' if spec.user else ''}{spec.host}:{spec.port}"
    known_hosts = os.path.expanduser(spec.known_hosts or "~/.ssh/known_hosts")
    if not os.path.isfile(known_hosts):
        raise UserInputError(
            f"known_hosts file {known_hosts} not found: host keys must be verified; add the "
            f"login node's key (ssh-keyscan -p {spec.port} {spec.host}, then check its fingerprint)"
        )
    kwargs = {
        "known_hosts": known_hosts,
        "connect_timeout": spec.connect_timeout_s,
        **options,
    }
    if spec.user:
        kwargs["username"] = spec.user
    if spec.key:
        if not os.path.isfile(os.path.expanduser(spec.key)):
            raise UserInputError(
                f"SSH key {spec.key} not found: fix ssh.key or remove it to use the agent"
            )
        kwargs["client_keys"] = [os.path.expanduser(spec.key)]
        kwargs["agent_path"] = None
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    try:
        return await asyncssh.connect(spec.host, spec.port, **kwargs)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise UserInputError(
            f"host key of {where} is not trusted ({exc.reason}): it is missing from "
            f"{known_hosts} or has CHANGED. Refusing to connect. If the key really changed, "
            "confirm the new fingerprint with the cluster's admins, then update known_hosts"
        ) from None
    except asyncssh.PermissionDenied:
        raise UserInputError(
            f"SSH login to {where} was refused: wrong user or key (check ssh.user and "
            "ssh.key, or load the key into your agent)"
        ) from None
    except (TimeoutError, OSError) as exc:
        raise UserInputError(f"cannot reach {where}: {exc}. Check ssh.host and ssh.port") from None
    except asyncssh.Error as exc:
        raise UserInputError(f"SSH connection to {where} failed: {exc}") from None


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the connection dropped": worth reconnecting for, unlike bad input.

    A reset, refused, aborted or timed-out connection (``ConnectionError``, ``TimeoutError``: the
    ECONNRESET, ECONNREFUSED, ECONNABORTED, EPIPE and ETIMEDOUT errnos), an unreachable network
    or host (``SSHTransport`` raises those as ``ConnectionError``), an SSH disconnect, a lost SFTP
    session. Not a file error on either side: a missing file, a refused permission or a full disk
    (a local ``OSError``, or an SFTP status that ``SSHTransport`` raises as ``OSError``) cannot be
    fixed by reconnecting, so it ends the operation at once with its message."""
    import asyncssh

    return (
        ConnectionError,
        TimeoutError,
        EOFError,
        asyncssh.DisconnectError,  # ConnectionLost too
        asyncssh.ChannelOpenError,
        asyncssh.SFTPConnectionLost,
        asyncssh.SFTPNoConnection,
    )


def _sftp_file_error() -> type[BaseException]:
    import asyncssh

    return asyncssh.SFTPError


# errnos of a route or host gone away (reset/refused/timed-out ones are ConnectionError already)
_NETWORK_ERRNOS = frozenset(
    {errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET, errno.EHOSTDOWN, errno.EHOSTUNREACH}
)
# SFTP status codes (draft-ietf-secsh-filexfer-13) as the errno a local file operation gives
_SFTP_ERRNO = {
    2: errno.ENOENT,  # no such file
    3: errno.EACCES,  # permission denied
    10: errno.ENOENT,  # no such path
    11: errno.EEXIST,  # file already exists
    12: errno.EROFS,  # write protect
    14: errno.ENOSPC,  # no space on filesystem
    15: errno.EDQUOT,  # quota exceeded
    18: errno.ENOTEMPTY,  # directory not empty
    19: errno.ENOTDIR,  # not a directory
    24: errno.EISDIR,  # file is a directory
}


def open_transport(ssh: SSHSpec | dict | None) -> Transport:
    if ssh is None:
        return LocalTransport()
    if isinstance(ssh, dict):
        ssh = SSHSpec.model_validate(ssh)
    return SSHTransport(ssh)
