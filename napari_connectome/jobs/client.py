"""The jobs client: submit, poll, cancel and stream jobs through one SSH connection per cluster.

Why: a desk asks every few seconds how its jobs are doing. A login per poll costs a key exchange
each time, fills the cluster's auth log and trips the login rate limits some sites set. The
client keeps one connection per cluster (keyed by its SSH settings) and shares it between the
polls, submissions, cancels and streams of every job there (SSH multiplexes them). A connection
that drops is forgotten at once, so the next call logs in again; a poll on a connection that died
while idle logs in once more before it calls the cluster unreachable.

Thread-safe: the Remote jobs widget calls it from several worker threads at once. Core code (no
Qt): a notebook uses it the same way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.registry import JobRecord
from napari_connectome.jobs.spec import SSHSpec
from napari_connectome.jobs.status import JobStatus
from napari_connectome.jobs.transport import (
    CommandResult,
    LocalTransport,
    Transport,
    open_transport,
    transient_errors,
)

Opener = Callable[[SSHSpec | dict | None], Transport]


def cluster_key(ssh: SSHSpec | dict | None) -> str:
    """One key per cluster login: the SSH settings, normalised (a record's dict and a spec's
    model give the same key)."""
    if ssh is None:
        return "local"
    if isinstance(ssh, dict):
        ssh = SSHSpec.model_validate(ssh)
    return ssh.model_dump_json()


class SharedTransport:
    """A :class:`~napari_connectome.jobs.transport.Transport` whose calls run on the client's
    connection to one cluster. ``close()`` leaves that connection open (it is the client's)."""

    def __init__(self, client: JobsClient, ssh: SSHSpec | dict | None) -> None:
        self._client = client
        self._ssh = ssh
        self._key = cluster_key(ssh)
        self._dropped = False  # this handle saw its connection drop
        spec = SSHSpec.model_validate(ssh) if isinstance(ssh, dict) else ssh
        self.label = f"{spec.user + '@' if spec.user else ''}{spec.host}:{spec.port}"

    def _use(self, op: Callable[[Transport], Any]) -> Any:
        try:
            transport = self._client._connection(self._key, self._ssh)
        except UserInputError as exc:
            if self._dropped:  # still down after a drop: a dropped connection to its users
                raise ConnectionError(str(exc)) from exc
            raise
        try:
            return op(transport)
        except transient_errors():
            self._dropped = True
            self._client._forget(self._key, transport)
            raise

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> CommandResult:
        return self._use(lambda t: t.run(argv, env=env, timeout=timeout))

    def read_file(self, path: str, offset: int = 0) -> bytes | None:
        return self._use(lambda t: t.read_file(path, offset))

    def realpath(self, path: str) -> str | None:
        return self._use(lambda t: t.realpath(path))

    def write_file(self, path: str, data: bytes) -> None:
        self._use(lambda t: t.write_file(path, data))

    def exists(self, path: str) -> bool:
        return self._use(lambda t: t.exists(path))

    def makedirs(self, path: str) -> None:
        self._use(lambda t: t.makedirs(path))

    def remove_tree(self, path: str) -> None:
        self._use(lambda t: t.remove_tree(path))

    def close(self) -> None:
        """Nothing to do: the connection stays open for the next call (JobsClient.close ends it)."""


class JobsClient:
    """Submit, poll, cancel and stream jobs, one kept-open connection per cluster.

    ``opener`` makes a connection (``open_transport``; tests count its calls). ``logins`` counts
    the connections made so far.
    """

    def __init__(self, opener: Opener = open_transport) -> None:
        self._opener = opener
        self._conns: dict[str, Transport] = {}
        self._login_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.logins = 0

    # -- connections ---------------------------------------------------------------------------
    def transport(self, ssh: SSHSpec | dict | None) -> Transport:
        """A handle on the cluster's shared connection (made at its first use); this machine:
        a local transport."""
        if ssh is None:
            return LocalTransport()
        return SharedTransport(self, ssh)

    def connect(self, ssh: SSHSpec | dict | None) -> Transport:
        """Like :meth:`transport`, but logged in now (a refused login raises here)."""
        handle = self.transport(ssh)
        if ssh is not None:
            self._connection(cluster_key(ssh), ssh)
        return handle

    def _connection(self, key: str, ssh: SSHSpec | dict | None) -> Transport:
        with self._lock:
            login_lock = self._login_locks.setdefault(key, threading.Lock())
        with login_lock:  # two threads needing the same cluster log in once
            with self._lock:
                if self._closed:
                    raise UserInputError("the jobs client was closed")
                transport = self._conns.get(key)
            if transport is not None:
                return transport
            transport = self._opener(ssh)
            with self._lock:
                self.logins += 1
                if self._closed:
                    transport.close()
                    raise UserInputError("the jobs client was closed")
                self._conns[key] = transport
            return transport

    def _forget(self, key: str, transport: Transport) -> None:
        """Drop a connection that failed (only if it is still the current one) and close it."""
        with self._lock:
            if self._conns.get(key) is transport:
                del self._conns[key]
        with contextlib.suppress(*transient_errors(), OSError):
            transport.close()

    def connected(self, ssh: SSHSpec | dict | None) -> bool:
        """Whether a connection to that cluster is open now."""
        with self._lock:
            return cluster_key(ssh) in self._conns

    def close(self) -> None:
        """Log out of every cluster (the jobs keep running)."""
        with self._lock:
            self._closed = True
            conns, self._conns = list(self._conns.values()), {}
        for transport in conns:
            with contextlib.suppress(*transient_errors(), OSError):
                transport.close()

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ----------------------------------------------------------------------------------
    def poll(self, records: list[JobRecord]) -> dict[str, JobStatus]:
        """The status of every job, one connection per cluster. A cluster that cannot be reached
        marks its jobs ``unreachable`` with the reason instead of failing the whole poll."""
        groups: dict[str, list[JobRecord]] = {}
        for record in records:
            groups.setdefault(cluster_key(record.ssh), []).append(record)
        out: dict[str, JobStatus] = {}
        for group in groups.values():
            out.update(self._poll_cluster(group))
        return out

    def _poll_cluster(self, group: list[JobRecord]) -> dict[str, JobStatus]:
        ssh = group[0].ssh
        kept = ssh is not None and self.connected(ssh)  # reused: may have died while idle
        try:
            transport = self.connect(ssh)
        except UserInputError as exc:
            return {r.id: JobStatus.problem(r.id, "unreachable", str(exc)) for r in group}
        out: dict[str, JobStatus] = {}
        for record in group:
            for attempt in (1, 2):
                try:
                    out[record.id] = _status(record, transport)
                    break
                except transient_errors() as exc:
                    if kept and attempt == 1:
                        kept = False  # log in once more before calling the cluster gone
                        try:
                            transport = self.connect(ssh)
                        except UserInputError as refused:
                            reason = str(refused)
                        else:
                            continue
                    else:
                        reason = f"{type(exc).__name__}: {exc}"
                    out[record.id] = JobStatus.problem(record.id, "unreachable", reason)
                    break
            kept = False
        return out

    def submit(self, spec: Any, upload: tuple[Any, tuple[float, ...]] | None = None) -> JobRecord:
        """Copy ``upload`` (a layer's array and its voxel size in nm) to ``spec.input`` on the
        cluster when given, then submit. A submission that fails removes the copy again, so a
        refused job leaves nothing behind."""
        from napari_connectome.jobs.backends import submit
        from napari_connectome.jobs.upload import upload_volume

        transport = self.transport(spec.backend.ssh)
        if upload is not None:
            data, voxel_size = upload
            upload_volume(data, transport, spec.input, voxel_size_nm=voxel_size)
        try:
            return submit(spec, transport)
        except BaseException:
            if upload is not None:
                with contextlib.suppress(*transient_errors(), OSError, UserInputError):
                    transport.remove_tree(spec.input)  # the submission's error is the one to show
            raise

    def cancel(self, record: JobRecord) -> str:
        """``scancel`` / ``qdel`` (or stop the local process); returns what happened."""
        from napari_connectome.jobs.backends import cancel

        return cancel(record, self.transport(record.ssh))

    def stream(
        self,
        record: JobRecord,
        cache: str | Path,
        *,
        on_block: Callable | None = None,
        stop: threading.Event | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Any:
        """Stream a job's finished chunks into ``cache`` over the shared connection; see
        :func:`~napari_connectome.jobs.stream.stream_job`."""
        from napari_connectome.jobs.stream import stream_job

        return stream_job(
            record,
            cache,
            on_block=on_block,
            stop=stop,
            poll_s=poll_s,
            timeout_s=timeout_s,
            transport_factory=lambda: self.connect(record.ssh),
        )


def _status(record: JobRecord, transport: Transport) -> JobStatus:
    from napari_connectome.jobs.backends import read_status

    try:
        return read_status(record, transport)
    except UserInputError as exc:
        return JobStatus.problem(record.id, "unknown", str(exc))
    except OSError as exc:
        if isinstance(exc, transient_errors()):
            raise
        # this machine's files (a local job's output unreadable): said, asked again next poll
        return JobStatus.problem(record.id, "unknown", f"{type(exc).__name__}: {exc}")
