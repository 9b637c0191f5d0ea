"""Which process a pid is: a pid alone names a different process once the job's has ended and
the kernel handed the number to someone else, so records keep the process start time too.

Linux only (``/proc``); elsewhere the start time is unknown and callers fall back to weaker checks.
"""

from __future__ import annotations

import contextlib
import os
import socket
from functools import cache


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), or
    None when there is no such process (or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # field 2 (the command name) is in parentheses and may hold spaces or ')': split after the last
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]
    except (IndexError, ValueError):
        return None


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :][:1].decode()


def process_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


@cache
def boot_id() -> str | None:
    """This boot's id: a pid and start time from before a reboot name nothing now."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def hostname() -> str:
    return socket.gethostname()


def pid_running(pid: int) -> bool:
    """Some live (not zombie) process has this pid now; reaps it if it is our finished child."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _state(pid) not in ("Z", "X")


def same_process(pid: int, start: int | None) -> bool:
    """Process ``pid`` is alive and is the one that started at ``start`` (not a later process
    that was given the same pid)."""
    if not pid_running(pid):
        return False
    now = process_start(pid)
    if start is None or now is None:
        return False  # cannot tell: callers with no start time use their own weaker check
    return now == start
