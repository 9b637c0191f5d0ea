"""The durable edit log: one SQLite row per operation, written and fsynced before the edit shows.

Every row has a status, PyChunkedGraph's operation life cycle: ``written`` when it is appended
(before anything changes), ``applied`` once the session applied it, ``failed`` when applying it
raised and everything was put back. Only ``applied`` rows are replayed on open, so an edit that
failed half-way is not resurrected by the next session; a ``written`` row on open is one whose
session died (or could not undo the half-done edit) and is repaired, never replayed. Every row
also names the user who made it. Logs from before statuses existed gain the columns on open, their
rows ``applied`` (they were all replayed then).

WAL mode with ``synchronous=FULL`` makes every committed row survive a power cut;
``locking_mode=EXCLUSIVE`` makes the first session hold the database lock for its lifetime, so a
second session on the same log is refused by SQLite itself, and a killed session's lock disappears
with its process (no stale lock files).
"""

from __future__ import annotations

import getpass
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from napari_connectome.proofread.errors import EditRefused

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,          -- an operation kind, or 'undo' / 'redo'
    target INTEGER,              -- for undo / redo: the seq of the operation undone / redone
    params TEXT NOT NULL,
    arrays BLOB,
    status TEXT NOT NULL DEFAULT 'applied',  -- see WRITTEN, APPLIED, FAILED
    user TEXT NOT NULL DEFAULT '',
    error TEXT                   -- for a failed row: what went wrong
);
"""
# columns added since the first log format, with the value old rows get
ADDED_COLUMNS = {
    "status": "TEXT NOT NULL DEFAULT 'applied'",
    "user": "TEXT NOT NULL DEFAULT ''",
    "error": "TEXT",
}
WRITTEN, APPLIED, FAILED = "written", "applied", "failed"


def current_user() -> str:
    """Who the rows' ``user`` column names: the ``user`` setting (settings.yaml), else the login
    name (``uid N`` where the system has none)."""
    from napari_connectome.settings import user_name

    name = user_name()
    if name:
        return name
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no name for this uid (a container, say)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def not_written(path: Path, exc: sqlite3.Error) -> EditRefused:
    """The log could not take a row (full disk, read-only mount, I/O error)."""
    return EditRefused(
        f"cannot write to the edit log {path} ({exc}); nothing was changed. Free space on that "
        "disk or make it writable, then try again"
    )


def damaged(path: Path, exc: Exception) -> EditRefused:
    return EditRefused(
        f"the edit log {path} is damaged ({exc}); nothing was changed. Restore it from a backup "
        "(or move it away to start the project's edits afresh)"
    )


@dataclass(frozen=True)
class LogRow:
    seq: int
    time: float
    kind: str
    target: int | None
    params: str
    arrays: bytes | None
    status: str = APPLIED
    user: str = ""
    error: str | None = None


class EditLog:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if self.path.exists() and not self.path.is_file():  # sqlite fails with "disk I/O error"
            raise damaged(self.path, ValueError("a folder or device, not a file"))
        if read_only:
            # mode=ro still reads the WAL, so edits of a killed session are seen too
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            try:
                self.db.execute("SELECT count(*) FROM ops").fetchone()
            except sqlite3.OperationalError as exc:
                self.db.close()
                raise EditRefused(
                    f"cannot read the edit log {self.path} ({exc}); if another session has the "
                    "project open, close it first"
                ) from None
            except sqlite3.DatabaseError as exc:
                self.db.close()
                raise damaged(self.path, exc) from None
            return
        self.db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            self.db.execute("BEGIN EXCLUSIVE")  # takes the lock now and keeps it until close()
            missing = [c for c in ADDED_COLUMNS if c not in self._columns()]
            for name in missing:  # a log of the first format: its rows were all applied
                self.db.execute(f"ALTER TABLE ops ADD COLUMN {name} {ADDED_COLUMNS[name]}")
            if missing:
                self.commit_meta()
        except sqlite3.OperationalError as exc:
            self.db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise EditRefused(
                    f"another session has this proofreading project open ({self.path.parent}); "
                    "close it first, or open the project read-only"
                ) from None
            raise
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            self.db.close()
            raise damaged(self.path, exc) from None

    def _columns(self) -> set[str]:
        return {r[1] for r in self.db.execute("PRAGMA table_info(ops)")}

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def append(
        self,
        kind: str,
        params: str,
        arrays: bytes | None = None,
        target: int | None = None,
        *,
        user: str = "",
    ) -> LogRow:
        """Write one row durably with status ``written``; returns it. The caller applies the edit
        only after this returns, then calls :meth:`set_status`."""
        if self.read_only:
            raise EditRefused("this project is open read-only; edits are not possible")
        now = time.time()
        try:
            cur = self.db.execute(
                "INSERT INTO ops (time, kind, target, params, arrays, status, user) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, kind, target, params, arrays, WRITTEN, user),
            )
            self._commit()  # synchronous=FULL: on disk when this returns
        except sqlite3.Error as exc:
            self._abandon()
            raise not_written(self.path, exc) from None
        return LogRow(cur.lastrowid, now, kind, target, params, arrays, WRITTEN, user)

    def set_status(self, seq: int, status: str, error: str | None = None) -> None:
        """Mark row ``seq`` applied or failed, durably."""
        try:
            self.db.execute("UPDATE ops SET status=?, error=? WHERE seq=?", (status, error, seq))
            self._commit()
        except sqlite3.Error as exc:
            self._abandon()
            raise not_written(self.path, exc) from None

    def _commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN EXCLUSIVE")

    def _abandon(self) -> None:
        """After a failed write: drop what the transaction holds and take the lock again."""
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.db.execute("BEGIN EXCLUSIVE")
        except sqlite3.Error:
            pass  # the next write reports the problem again

    def rows(self) -> Iterator[LogRow]:
        cols = self._columns()
        extra = [c if c in cols else "NULL" for c in ADDED_COLUMNS]  # a read-only old log
        query = f"SELECT seq, time, kind, target, params, arrays, {', '.join(extra)} FROM ops"
        for r in self.db.execute(query + " ORDER BY seq"):
            seq, when, kind, target, params, arrays, status, user, error = r
            yield LogRow(seq, when, kind, target, params, arrays, status or APPLIED, user or "",
                         error)  # fmt: skip

    def commit_meta(self) -> None:
        if not self.read_only:
            self._commit()

    def close(self) -> None:
        try:
            if not self.read_only and self.db.in_transaction:
                self.db.execute("COMMIT")
        finally:
            self.db.close()
