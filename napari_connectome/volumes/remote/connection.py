"""One persistent SFTP session per cluster login, shared by every remote volume read through it.

Why its own event loop thread: zarr calls a store from zarr's loop, napari and notebooks from
theirs; an asyncssh connection belongs to the loop that made it. Every operation is handed to the
connection's loop and awaited from whichever loop asked, so reads from all of them share one
login and run concurrently over it.

A dropped connection (the network, a restarted login node, a killed sshd) is noticed by the
operation that hits it: the session logs in again once and repeats the operation, so the caller
sees nothing. When logging in again fails, that operation and every one in the next
``retry_s`` seconds raise :class:`RemoteUnavailableError` at once (no wait for a timeout on each
chunk); the first operation after that tries again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from napari_connectome.errors import UserInputError

if TYPE_CHECKING:
    from napari_connectome.jobs.spec import SSHSpec

T = TypeVar("T")
Listener = Callable[[str, str], None]  # (event: "lost" | "restored", message)


class RemoteUnavailableError(UserInputError):
    """The cluster cannot be reached now; what is cached stays readable, and a later read tries
    to log in again."""


def transient_errors() -> tuple[type[BaseException], ...]:
    """What a dropped connection raises (not a missing file or a refused permission): the one
    definition, :func:`napari_connectome.jobs.transport.transient_errors`."""
    from napari_connectome.jobs.transport import transient_errors as dropped

    return dropped()


class SFTPSession:
    """A login to one cluster and its SFTP client, re-established when it drops."""

    def __init__(
        self,
        spec: SSHSpec,
        label: str,
        *,
        retry_s: float = 3.0,
        op_timeout_s: float = 60.0,
        keepalive_s: float = 15.0,
    ) -> None:
        self.spec = spec
        self.label = label
        self.retry_s = retry_s
        self.op_timeout_s = op_timeout_s
        self.keepalive_s = keepalive_s
        self.logins = 0  # successful logins (the first one and every reconnect)
        self.last_error: str | None = None
        self.listeners: list[Listener] = []
        self._conns: list[Any] = []
        self._sftp: Any = None
        self._down_until = 0.0
        self._was_lost = False
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name=f"sftp {label}"
        )
        self._thread.start()
        self._lock = self._submit(self._make_lock()).result()

    @staticmethod
    async def _make_lock() -> asyncio.Lock:
        return asyncio.Lock()

    def _submit(self, coro: Awaitable[T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # -- public -----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Log in now; a refusal (host key, key, address) raises :class:`UserInputError` as is."""
        self._submit(self._client(first=True)).result()

    def run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op(sftp_client)`` and wait (from a thread without a running loop)."""
        return self._submit(self._run(op)).result()

    async def arun(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op(sftp_client)`` from any event loop."""
        return await asyncio.wrap_future(self._submit(self._run(op)))

    def reconnect(self) -> bool:
        """Try to log in again now (ignoring the wait after a failure); True when connected."""
        if self.connected:
            return True
        self._down_until = 0.0
        try:
            self._submit(self._client()).result()
        except RemoteUnavailableError:
            return False
        return True

    @property
    def connected(self) -> bool:
        return self._sftp is not None

    @property
    def local_address(self) -> tuple[str, int] | None:
        """This end of the current connection (host, port), None when not connected."""
        if not self._conns:
            return None
        return tuple(self._conns[-1].get_extra_info("sockname")[:2])  # type: ignore[return-value]

    @property
    def available(self) -> bool:
        """False while the last login failed and the wait before the next try lasts."""
        return self.connected or time.monotonic() >= self._down_until

    def drop(self) -> None:
        """Cut the connection as a network fault would (tests, and a user's "reconnect")."""
        self._submit(self._drop(self._sftp)).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop.is_running():
            self._submit(self._drop(self._sftp)).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # -- on the session's loop ----------------------------------------------------------------
    async def _login(self) -> list[Any]:
        from napari_connectome.jobs.transport import ssh_connect

        options = {"keepalive_interval": self.keepalive_s, "keepalive_count_max": 3}
        conns = []
        try:
            if self.spec.jump_host is not None:
                conns.append(await ssh_connect(self.spec.jump_host, **options))
            conns.append(await ssh_connect(self.spec, conns[-1] if conns else None, **options))
        except BaseException:
            for conn in reversed(conns):
                conn.close()
            raise
        return conns

    async def _client(self, first: bool = False) -> Any:
        if self._sftp is not None:
            return self._sftp
        async with self._lock:
            if self._sftp is not None:
                return self._sftp
            if self._closed:
                raise RemoteUnavailableError(f"{self.label}: the connection was closed")
            if not first and time.monotonic() < self._down_until:
                raise RemoteUnavailableError(self._unavailable_message())
            try:
                conns = await self._login()
                sftp = await asyncio.wait_for(conns[-1].start_sftp_client(), self.op_timeout_s)
            except UserInputError as exc:
                if first:
                    raise
                return self._lost(str(exc))
            except transient_errors() as exc:
                if first:
                    raise UserInputError(f"cannot open SFTP on {self.label}: {exc}") from None
                return self._lost(f"{type(exc).__name__}: {exc}")
            self._conns, self._sftp = conns, sftp
            self.logins += 1
            self.last_error = None
            if self._was_lost:
                self._was_lost = False
                self._tell("restored", f"reconnected to {self.label}")
            return sftp

    def _lost(self, reason: str) -> Any:
        self._down_until = time.monotonic() + self.retry_s
        self.last_error = reason
        first_time = not self._was_lost
        self._was_lost = True
        message = self._unavailable_message()
        if first_time:
            self._tell("lost", message)
        raise RemoteUnavailableError(message)

    def _unavailable_message(self) -> str:
        return (
            f"lost the connection to {self.label} ({self.last_error}); what is cached stays "
            f"readable and the next read after {self.retry_s:g} s logs in again"
        )

    def _tell(self, event: str, message: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, message)
            except Exception:  # a listener's bug must not break reading
                import logging

                logging.getLogger(__name__).exception("connection listener failed")

    async def _drop(self, sftp: Any) -> None:
        """Forget the connection ``sftp`` belongs to (if it is still the current one)."""
        if sftp is None or sftp is not self._sftp:
            return
        conns, self._conns, self._sftp = self._conns, [], None
        for conn in reversed(conns):
            conn.abort()

    async def _run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            sftp = await self._client()
            try:
                return await asyncio.wait_for(op(sftp), self.op_timeout_s)
            except transient_errors() as exc:
                await self._drop(sftp)
                if attempt == 2:
                    return self._lost(f"{type(exc).__name__}: {exc}")
                # the connection dropped under us: log in again once and repeat the operation
        raise AssertionError("unreachable")  # pragma: no cover
