"""Viewing a running job's output where it is written, instead of mirroring it.

The output is opened like any volume (``ssh://`` on a cluster: chunks read on demand into the
chunk cache). :class:`OutputFollower` tails the job's ``progress.jsonl`` and, for every block line,
forgets the chunk the block just wrote, so the next redraw reads the new one; when the job is done
it refreshes the store (the coarser levels now exist). A viewer redraws after each poll that saw
blocks. Nothing is copied ahead: what the desk reads is what it shows.

The first poll starts at the end of the log (what was written before is read fresh anyway: a
cached chunk is compared with the remote file at its first use in a session), so make the
follower and poll it once before the volume is first read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.events import Summary, split_lines
from napari_connectome.jobs.layout import JobLayout

log = logging.getLogger(__name__)
PROGRESS = JobLayout.PROGRESS


@dataclass
class FollowUpdate:
    """What one poll saw."""

    blocks: int = 0  # block lines (chunks written) since the last poll
    chunks: list[str] = field(default_factory=list)
    done: bool = False  # the job finished (now or before)
    failed: str | None = None
    refused: int = 0  # lines naming a chunk outside the output (ignored)


class OutputFollower:
    """Follows ``progress.jsonl`` through ``read(name, offset)`` and tells the store what changed.

    ``invalidate(chunks)``: forget cached copies of those chunks (an SFTP store's
    :meth:`~napari_connectome.volumes.remote.SFTPStore.invalidate`); ``refresh()``: re-read
    metadata and chunks that were absent.
    """

    def __init__(
        self,
        read: Callable[[str, int], bytes | None],
        invalidate: Callable[[list[str]], None] | None = None,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.read = read
        self.invalidate = invalidate
        self.refresh = refresh
        self.offset: int | None = None  # None: not polled yet
        self.summary = Summary()

    @classmethod
    def for_store(cls, store: Any) -> OutputFollower:
        """Follow the job whose output is the remote store ``store``."""
        return cls(store.read_file, store.invalidate, store.refresh)

    @classmethod
    def for_folder(cls, output: str | Path) -> OutputFollower:
        """Follow a job writing ``output`` on this machine (no cache to correct)."""
        root = Path(output)

        def read(name: str, offset: int) -> bytes | None:
            try:
                with open(root / name, "rb") as f:
                    f.seek(offset)
                    return f.read()
            except FileNotFoundError:
                return None

        return cls(read)

    @property
    def done(self) -> bool:
        return self.summary.done is not None

    def poll(self) -> FollowUpdate:
        """Read what the log gained since the last poll and act on it."""
        update = FollowUpdate()
        first = self.offset is None
        data = self.read(PROGRESS, self.offset or 0) or b""
        events, used = split_lines(data)
        self.offset = (self.offset or 0) + used
        for ev in events:
            was_done = self.done
            self.summary.add(ev)
            if first:
                continue
            kind = ev.get("event")
            if kind == "block" and ev.get("chunk"):
                chunk = ev["chunk"]
                if self._forget(chunk):
                    update.chunks.append(chunk)
                    update.blocks += 1
                else:
                    update.refused += 1
            elif kind == "done" and not was_done and self.refresh is not None:
                self.refresh()
            elif kind == "failed":
                update.failed = str(ev.get("error") or "failed")
        update.done = self.done
        if first and self.summary.failed is not None and not self.done:
            update.failed = str(self.summary.failed.get("error") or "failed")
        return update

    def _forget(self, chunk: Any) -> bool:
        if not isinstance(chunk, str):
            return False
        if self.invalidate is None:
            return True
        try:
            self.invalidate([chunk])
        except UserInputError as exc:  # a line naming a file outside the output: ignored
            log.warning("ignoring a progress line: %s", exc)
            return False
        return True
