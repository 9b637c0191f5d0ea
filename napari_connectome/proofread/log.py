"""The durable edit log: one SQLite row per operation, written and fsynced before the edit shows.

WAL mode with ``synchronous=FULL`` makes every committed row survive a power cut;
``locking_mode=EXCLUSIVE`` makes the first session hold the database lock for its lifetime, so a
second session on the same log is refused by SQLite itself, and a killed session's lock disappears
with its process (no stale lock files).
"""

from __future__ import annotations

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
    arrays BLOB
);
"""


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

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def append(
        self, kind: str, params: str, arrays: bytes | None = None, target: int | None = None
    ) -> LogRow:
        """Write one row durably; returns it. The caller applies the edit only after this
        returns."""
        if self.read_only:
            raise EditRefused("this project is open read-only; edits are not possible")
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO ops (time, kind, target, params, arrays) VALUES (?, ?, ?, ?, ?)",
            (now, kind, target, params, arrays),
        )
        self.db.execute("COMMIT")  # synchronous=FULL: on disk when this returns
        self.db.execute("BEGIN EXCLUSIVE")
        return LogRow(cur.lastrowid, now, kind, target, params, arrays)

    def rows(self) -> Iterator[LogRow]:
        for r in self.db.execute(
            "SELECT seq, time, kind, target, params, arrays FROM ops ORDER BY seq"
        ):
            yield LogRow(*r)

    def commit_meta(self) -> None:
        if not self.read_only:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN EXCLUSIVE")

    def close(self) -> None:
        try:
            if not self.read_only and self.db.in_transaction:
                self.db.execute("COMMIT")
        finally:
            self.db.close()
