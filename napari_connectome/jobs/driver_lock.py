"""One driver per job output.

Two drivers on one output (``submit``, then ``submit --resume`` while the first still runs) both
segment, match and relabel, and a block ends up with another run's provisional ids. So the driver
holds ``OUTPUT/_job/driver.lock`` while it runs:

- an exclusive ``flock`` on the file: the kernel drops it when the process dies, however it dies;
  on a local file system that alone decides;
- inside the file, who holds it (host, pid, the process's start time, this boot's id) and a
  heartbeat the holder rewrites every ``HEARTBEAT_S`` seconds: on NFS/Lustre ``flock`` may be
  local to one client or missing, so a second driver also reads the record. A holder on this host
  is alive if its pid still names the process that started at that time. One on another host is
  watched for ``WATCH_S``: alive if its heartbeat moves meanwhile (no clocks are compared, so
  skew between nodes or the desk cannot fool it).

A lock whose holder is gone (killed, cancelled, its node lost) is taken over with a message: a job
resubmitted right after ``scancel`` waits at most ``WATCH_S`` for that. A driver that ends empties
the file, which then holds nobody.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from napari_connectome.errors import UserInputError
from napari_connectome.jobs import procinfo
from napari_connectome.jobs.layout import JobLayout

LOCK_NAME = JobLayout.DRIVER_LOCK
HEARTBEAT_S = 5.0
WATCH_S = 2.5 * HEARTBEAT_S  # two heartbeats and a half: a live holder on another host beats


@dataclass
class Holder:
    host: str
    pid: int
    start: int | None  # /proc/PID/stat start time (clock ticks since boot)
    boot: str | None
    since: float
    heartbeat: float

    @classmethod
    def me(cls) -> Holder:
        now = time.time()
        pid = os.getpid()
        return cls(
            procinfo.hostname(), pid, procinfo.process_start(pid), procinfo.boot_id(), now, now
        )

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Holder | None:
        """The record in a lock file, or None for an empty (free) or unreadable one."""
        try:
            d = json.loads(data or b"")
            return cls(
                str(d["host"]),
                int(d["pid"]),
                None if d.get("start") is None else int(d["start"]),
                d.get("boot"),
                float(d["since"]),
                float(d["heartbeat"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return (
            f"pid {self.pid} on {self.host}, running since {since}, last heartbeat "
            f"{max(0.0, now - self.heartbeat):.0f} s ago"
        )

    def alive_here(self) -> bool | None:
        """On this host: whether the holder still runs (None: cannot tell from here)."""
        if self.host != procinfo.hostname():
            return None
        if self.boot and procinfo.boot_id() and self.boot != procinfo.boot_id():
            return False  # this machine rebooted since
        if self.start is None or procinfo.process_start(os.getpid()) is None:
            return None  # no /proc
        return procinfo.same_process(self.pid, self.start)


def refused(output: Path | str, holder: Holder | None) -> UserInputError:
    who = holder.describe() if holder is not None else "it is starting"
    return UserInputError(
        f"output {output} is being written by another job driver ({who}): one "
        "driver per output. Wait for it to finish (`napari-connectome status`), or stop it "
        "(`napari-connectome cancel JOB`, scancel/qdel) and then resume"
    )


def live_holder(read: Callable[[], bytes | None], watch_s: float = WATCH_S) -> Holder | None:
    """The driver a lock file names, if it still runs. ``read`` returns the file's contents (a
    local read, or one over SFTP); a holder elsewhere is watched for ``watch_s`` seconds."""
    holder = Holder.from_bytes(read())
    if holder is None:
        return None
    here = holder.alive_here()
    if here is not None:
        return holder if here else None
    deadline = time.monotonic() + watch_s
    while time.monotonic() < deadline:
        time.sleep(min(1.0, HEARTBEAT_S / 4))
        again = Holder.from_bytes(read())
        if again != holder:
            return again  # it beat (alive), or it ended (None), or another took over
    return None


class DriverLock:
    """The driver lock of one output's ``_job`` folder (see module docstring)."""

    def __init__(
        self, job_dir: Path | str, output: Path | str | None = None, watch_s: float = WATCH_S
    ):
        self.path = Path(job_dir) / LOCK_NAME
        self.output = output if output is not None else Path(job_dir).parent
        self.watch_s = watch_s
        self.took_over: Holder | None = None
        self._fd: int | None = None
        self._record: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def held(self) -> bool:
        """We hold the lock on the file that is at the path now (not on one deleted since)."""
        if self._fd is None:
            return False
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except OSError:
            return False

    def check_free(self) -> None:
        """Raise the refusal if someone else holds the lock now; writes nothing (so it also
        works on a full disk, and for checks that must not take the lock)."""
        import fcntl

        if self.held():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise refused(self.output, Holder.from_bytes(_read(fd))) from None
            except OSError:
                pass  # no flock here: the record decides
            alive = live_holder(lambda: _read(fd), self.watch_s)
            if alive is not None:
                raise refused(self.output, alive)
        finally:
            os.close(fd)

    def held_by_another(self) -> bool:
        try:
            self.check_free()
        except UserInputError:
            return True
        return False

    def acquire(self) -> None:
        """Take the lock, or raise a :class:`UserInputError` naming the driver that holds it."""
        if self.held():
            return
        self._drop()  # a lock on a file that was replaced (the output was recreated) holds nothing
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if self._take(fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the file was replaced between open and lock: try the new one
        else:
            raise UserInputError(f"cannot lock {self.path}: it keeps being replaced")
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="driver-heartbeat", daemon=True)
        self._thread.start()

    def _take(self, fd: int) -> bool:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refused(self.output, Holder.from_bytes(_read(fd))) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            # no flock on this file system: the record and its heartbeat decide alone
        if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
            return False
        old = Holder.from_bytes(_read(fd))
        if old is not None:
            alive = live_holder(lambda: _read(fd), self.watch_s)
            if alive is not None:
                raise refused(self.output, alive)
            self.took_over = old
            print(
                f"taking over the driver lock of {self.output} from a driver that is gone "
                f"({old.describe()})",
                file=sys.stderr,
            )
        self._record = Holder.me()
        _write(fd, self._record.to_bytes())
        self._fd = fd
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            fd, record = self._fd, self._record
            if fd is None or record is None:
                return
            record.heartbeat = time.time()
            with contextlib.suppress(OSError):  # a full disk must not stop the job
                _write(fd, record.to_bytes())

    def _drop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        """Leave the file empty (nobody holds it) and drop the flock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> bytes:
    return os.pread(fd, 4096, 0)


def _write(fd: int, data: bytes) -> None:
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    os.fsync(fd)
