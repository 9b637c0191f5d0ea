"""Foreground daemons owned by one Python process: start, wait for readiness, stop by pid.

Test services must never outlive the run that started them, so every daemon runs in the foreground
as a child, gets SIGTERM from the kernel if its parent dies (``PR_SET_PDEATHSIG``), and is stopped
by pid (never by name: other people's daemons may run on the same machine).
Start services from the main thread: the kernel sends that signal when the starting *thread* exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


class ServiceUnavailable(RuntimeError):
    """A program the service needs is not installed; the message says what to install."""


class ServiceError(RuntimeError):
    """The service was installed but did not start; the message carries the daemons' log tails."""


def require_binary(name: str, install_hint: str) -> str:
    """Absolute path of ``name`` (searching PATH and the sbin directories daemons live in)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        raise ServiceUnavailable(f"{name} not found: {install_hint}")
    return os.path.abspath(path)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (the kernel picks it, so parallel runs do not clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_workdir(prefix: str, parent: Path | None = None, mode: int = 0o755) -> Path:
    """A fresh directory for one instance (0755: munged wants its socket dir searchable)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(mode)
    return path


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # Ctrl-C in a terminal goes to pytest, which then stops us in order


@dataclass
class Daemon:
    """One foreground daemon: its process and the file its stdout/stderr go to."""

    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last lines the daemon printed, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the child."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(timeout)
        else:
            self.process.wait()


def spawn(
    name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Daemon:
    """Start ``argv`` in the foreground with output to ``log``; it dies if this process dies."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            close_fds=True,
            preexec_fn=_die_with_parent,
        )
    return Daemon(name, process, log)


def wait_until(
    ready: Callable[[], bool], *, timeout: float, what: str, daemons: Sequence[Daemon]
) -> None:
    """Poll ``ready``; fail with the logs when a daemon exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if ready():
            return
        dead = [d for d in daemons if not d.alive()]
        if dead or time.monotonic() > deadline:
            reason = (
                f"{', '.join(d.name for d in dead)} exited (code "
                f"{', '.join(str(d.process.returncode) for d in dead)})"
                if dead
                else f"not ready after {timeout:.0f} s"
            )
            logs = "\n".join(f"--- {d.name} (pid {d.pid}) log:\n{d.tail()}" for d in daemons)
            raise ServiceError(f"{what}: {reason}\n{logs}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def stop_all(daemons: Sequence[Daemon], timeout: float = 10.0) -> None:
    """Stop daemons in reverse start order, continuing past errors so none is left running."""
    errors: list[BaseException] = []
    for daemon in reversed(daemons):
        try:
            daemon.stop(timeout)
        except Exception as exc:  # noqa: BLE001  (keep stopping the others; the first is raised)
            errors.append(exc)
    if errors:
        raise errors[0]


def retry_on_port_clash(start: Callable[[], T], attempts: int = 3) -> T:
    """Call ``start`` again (with new free ports) when a daemon lost its port to another process.

    ``free_port`` can only say a port was free a moment ago; with several test runs on one machine
    another daemon may bind it first, and the loser exits with "Address already in use".
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except ServiceError as exc:
            if attempt == attempts or "Address already in use" not in str(exc):
                raise
    raise AssertionError("unreachable")
