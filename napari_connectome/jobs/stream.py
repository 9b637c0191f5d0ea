"""Streaming a running job's result into a local cache zarr, block by block.

The client tails the job's ``progress.jsonl`` (a local file or over SFTP) from a byte offset. Each
block line names the chunk file the block just wrote; the client copies that file byte for byte
into the cache (an OME-Zarr with the same metadata) and calls ``on_block`` with the typed
:class:`~napari_connectome.jobs.events.JobEvent`. The offset is saved in the cache after
every line, and only advanced once a line's chunk is copied, so a dropped connection or a restarted
client resumes where it stopped and misses nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.events import JobEvent, split_lines, summarize
from napari_connectome.jobs.layout import JobLayout, atomic_write_bytes
from napari_connectome.jobs.registry import JobRecord
from napari_connectome.jobs.remote_paths import (
    ChunkGrid,
    UntrustedPath,
    dataset_path,
    local_inside,
    remote_is_inside,
    remote_join,
)
from napari_connectome.jobs.transport import Transport, open_transport, transient_errors
from napari_connectome.progress import ProgressCallback, no_progress

STATE_FILE = ".stream.json"
PROGRESS = JobLayout.PROGRESS
log = logging.getLogger(__name__)


@dataclass
class StreamResult:
    state: str  # done | failed | cancelled | timeout | stopped
    blocks: int  # block lines handled by this call
    reconnects: int
    cache: Path
    skipped: list[str] = field(default_factory=list)  # lines / files refused, and why


class _Remote:
    """Reads files of one job output, each checked to stay inside it (symlinks resolved there)."""

    def __init__(self, transport: Transport, output: str) -> None:
        self.transport = transport
        self.output = output
        self._real_root: str | None = None

    def read(self, rel: str, offset: int = 0) -> bytes | None:
        path = remote_join(self.output, rel)
        try:
            if self._real_root is None:
                self._real_root = self.transport.realpath(self.output)
                if self._real_root is None:
                    return None  # the output folder does not exist yet
            real = self.transport.realpath(path)
            if real is None:
                return None
            if not remote_is_inside(self._real_root, real):
                raise UntrustedPath(
                    f"{path} on {self.transport.label} leads outside the job output "
                    f"{self.output} (to {real}): refusing to copy it"
                )
            return self.transport.read_file(path, offset)
        except transient_errors():
            raise
        except OSError as exc:
            raise UserInputError(
                f"cannot read {path} on {self.transport.label}: {exc.strerror or exc}. Check "
                "that the job output is readable"
            ) from None


def _local_error(path: Path, exc: OSError) -> UserInputError:
    """A local write that failed is the user's to fix (never a reason to reconnect)."""
    return UserInputError(
        f"cannot write the stream cache at {path}: {exc.strerror or exc}. Choose a cache "
        "folder you can write to, on a disk with free space (the folder is created if missing)"
    )


def _write_local(cache: Path, rel: str, data: bytes) -> None:
    target = local_inside(cache, rel)
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise _local_error(target, exc) from None


def _remove_local(cache: Path, rel: str) -> None:
    target = local_inside(cache, rel)
    try:
        target.unlink(missing_ok=True)
    except OSError as exc:
        raise _local_error(target, exc) from None


def _save_state(cache: Path, state: dict) -> None:
    _write_local(cache, STATE_FILE, json.dumps(state, sort_keys=True).encode())


def _copy_file(remote: _Remote, rel: str, cache: Path) -> None:
    """Copy the job output's file ``rel`` (checked by the caller) to the same place in the cache."""
    local_inside(cache, rel)  # refuse before reading anything
    data = remote.read(rel)
    if data is None:  # an all-zero chunk is not stored: remove any stale copy
        _remove_local(cache, rel)
    else:
        _write_local(cache, rel, data)


def _check_cache(cache: Path) -> None:
    """Refuse at once a cache that is a link, a file, someone else's folder, or cannot be
    written."""
    if cache.is_symlink():
        raise UserInputError(
            f"the stream cache {cache} is a link: a cache is written to a folder, never through a "
            "link; give the folder itself or a new folder path"
        )
    if cache.exists() and not cache.is_dir():
        raise UserInputError(
            f"the stream cache {cache} is a file, not a folder: give a new folder path"
        )
    if cache.is_dir() and not (cache / STATE_FILE).is_file() and any(cache.iterdir()):
        raise UserInputError(f"{cache} exists and is not a stream cache: choose a new folder")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _local_error(Path(exc.filename or cache), exc) from None
    try:
        fd, probe = tempfile.mkstemp(dir=cache, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _local_error(cache, exc) from None


def _load_state(cache: Path, output: str) -> dict | None:
    state_path = cache / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text())
        levels = [dataset_path(level) for level in state["levels"]]
        int(state["offset"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserInputError(
            f"{state_path} is damaged: delete the cache folder {cache} and stream again"
        ) from None
    if state.get("source") != output:
        raise UserInputError(
            f"{cache} caches another job's output ({state.get('source')}): choose another folder"
        )
    state["levels"] = levels
    return state


def _init_cache(remote: _Remote, cache: Path) -> dict:
    """Create the cache with the job output's metadata (or reopen it for the same output)."""
    state = _load_state(cache, remote.output)
    if state is not None:
        return state
    try:
        foreign = any(cache.iterdir())
    except OSError as exc:
        raise _local_error(cache, exc) from None
    if foreign:
        raise UserInputError(f"{cache} exists and is not a stream cache: choose a new folder")
    group = remote.read("zarr.json")
    if group is None:
        return {}
    try:
        datasets = json.loads(group)["attributes"]["ome"]["multiscales"][0]["datasets"]
        paths = [ds["path"] for ds in datasets]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        return {}  # the job is still writing the output's metadata: look again later
    levels = [dataset_path(path) for path in paths]
    if not levels:
        return {}
    files = {"zarr.json": group}
    for level in levels:
        arr = remote.read(f"{level}/zarr.json")
        if arr is None:
            return {}
        files[f"{level}/zarr.json"] = arr
    ChunkGrid.from_metadata(files[f"{levels[0]}/zarr.json"], f"{remote.output}/{levels[0]}")
    for rel, data in files.items():
        _write_local(cache, rel, data)
    state = {"source": remote.output, "offset": 0, "levels": levels}
    _save_state(cache, state)
    return state


def _grid(cache: Path, level: str) -> ChunkGrid:
    path = local_inside(cache, f"{level}/zarr.json")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserInputError(
            f"cannot read {path} ({exc.strerror}): delete the cache folder {cache} and stream again"
        ) from None
    return ChunkGrid.from_metadata(data, str(path))


def _copy_pyramid(remote: _Remote, cache: Path, levels: list[str], skipped: list[str]) -> None:
    for level in levels[1:]:
        for key in _grid(cache, level).chunk_keys():
            try:
                _copy_file(remote, f"{level}/{key}", cache)
            except UntrustedPath as exc:
                _skip(skipped, str(exc))


def _skip(skipped: list[str], message: str) -> None:
    log.warning("stream: %s", message)
    skipped.append(message)


def _block_chunk(ev: dict, level0: str, grid: ChunkGrid, lineno: int) -> str:
    """The cache-relative file a block line names, after checking it is a level-0 chunk key."""
    chunk = ev.get("chunk")
    prefix = f"{level0}/"
    if (
        isinstance(chunk, str)
        and chunk.startswith(prefix)
        and grid.parse(chunk[len(prefix) :]) is not None
    ):
        return chunk
    raise UntrustedPath(
        f"{PROGRESS} line {lineno} names chunk {str(chunk)[:200]!r}, which is not a chunk of "
        f"the output's level {level0} (grid {'x'.join(map(str, grid.grid))}): skipped, nothing "
        "written for it. Something other than napari-connectome wrote to the job's output folder"
    )


def cache_level(cache: str | Path, level: int = 0) -> Path | None:
    """The cache's array of one pyramid level, by the dataset path the stream checked and saved
    (None while the cache has no metadata yet). Viewers open this, never a name from the job."""
    cache = Path(cache)
    try:
        state = json.loads((cache / STATE_FILE).read_text())
        name = dataset_path(state["levels"][level])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return local_inside(cache, name)


def stream_into(
    transport_factory: Callable[[], Transport],
    output: str,
    cache: str | Path,
    *,
    on_block: Callable[[JobEvent], None] | None = None,
    progress: ProgressCallback | None = None,
    is_finished: Callable[[Transport], str | None] | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    max_reconnects: int = 20,
    stop: threading.Event | None = None,
) -> StreamResult:
    """Follow the job writing ``output`` until it is done (or ``is_finished`` says it ended).

    ``transport_factory`` opens the connection; it is called again after a dropped connection.
    ``is_finished(transport)`` returns a final state (failed/cancelled) when the job stopped without
    finishing, else None; it is asked only while the log has nothing new. Setting ``stop`` (e.g.
    when the viewer closes) ends the stream with state ``stopped``; a later call resumes it.
    """
    progress = progress or no_progress
    cache = Path(cache)
    _check_cache(cache)
    t_end = None if timeout_s is None else time.monotonic() + timeout_s
    transport = transport_factory()
    remote = _Remote(transport, output)
    reconnects = handled = 0
    skipped: list[str] = []
    summary = summarize([])
    primed = False
    lineno = 0  # lines of progress.jsonl before the saved offset
    grid: ChunkGrid | None = None

    def result(state: str) -> StreamResult:
        return StreamResult(state, handled, reconnects, cache, skipped)

    try:
        while True:
            if stop is not None and stop.is_set():
                return result("stopped")
            try:
                state = _init_cache(remote, cache)
                if not state:  # the job has not created its output yet (pending)
                    final = is_finished(transport) if is_finished else None
                    if final:
                        return result(final)
                    if t_end and time.monotonic() > t_end:
                        return result("timeout")
                    time.sleep(poll_s)
                    continue
                if grid is None:
                    grid = _grid(cache, state["levels"][0])
                if not primed:
                    # a resumed stream: what was read before counts (a finished log stays finished)
                    primed = True
                    if state["offset"]:
                        seen = (remote.read(PROGRESS) or b"")[: state["offset"]]
                        summary = summarize(split_lines(seen)[0])
                        lineno = seen.count(b"\n")
                data = remote.read(PROGRESS, state["offset"]) or b""
                events, used = split_lines(data)
                if not events and used == 0:
                    if summary.done:
                        return result("done")
                    final = is_finished(transport) if is_finished else None
                    if final:
                        return result(final)
                    if t_end and time.monotonic() > t_end:
                        return result("timeout")
                    time.sleep(poll_s)
                    continue
                offset = state["offset"]
                consumed = 0
                # advance line by line so an interruption re-reads at most the current line
                for line in data[:used].splitlines(keepends=True):
                    consumed += len(line)
                    lineno += 1
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        ev = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        ev = {}
                    if not isinstance(ev, dict):
                        ev = {}
                    if ev.get("event") == "block" and ev.get("chunk"):
                        try:
                            _copy_file(
                                remote, _block_chunk(ev, state["levels"][0], grid, lineno), cache
                            )
                        except UntrustedPath as exc:
                            _skip(skipped, str(exc))
                    if ev.get("event") == "done":
                        _copy_pyramid(remote, cache, state["levels"], skipped)
                    summary.add(ev)
                    state["offset"] = offset + consumed
                    _save_state(cache, state)
                    if ev.get("event") == "block":
                        handled += 1
                        if on_block:
                            on_block(JobEvent.from_line(ev, cached_t=time.time()))
                        total = summary.blocks_total or 0
                        progress(len(summary.segmented), total, ev.get("phase", ""))
                    if ev.get("event") == "failed":
                        return result("failed")
                    if stop is not None and stop.is_set() and not summary.done:
                        return result("stopped")
                if summary.done:
                    return result("done")
            except transient_errors():
                # dropped connection, SFTP error: reconnect and resume from the saved offset
                reconnects += 1
                if reconnects > max_reconnects:
                    raise
                time.sleep(min(5.0, 0.2 * 2**reconnects))
                with contextlib.suppress(Exception):
                    transport.close()
                try:
                    transport = transport_factory()
                except UserInputError:
                    if reconnects >= max_reconnects:
                        raise
                remote = _Remote(transport, output)
                # the lines after the saved offset are read again: count them again
                primed, lineno, summary = False, 0, summarize([])
    finally:
        transport.close()


def job_ended(record: JobRecord, transport: Transport) -> str | None:
    """The end-of-stream rule (the CLI's ``stream`` and the widget share it): ``failed`` or
    ``cancelled`` once the scheduler says the job stopped and its log has no ``done`` line; None
    while it is queued or running, and when the log says done (the stream then reads the log to
    its end and ends ``done`` itself). Asked only while the log has nothing new."""
    from napari_connectome.jobs.backends import read_summary, scheduler_state

    state = scheduler_state(record, transport)
    if state in ("pending", "running", "unknown"):
        return None
    if read_summary(transport, record.output).done:  # read once more before giving up
        return None
    return "cancelled" if state == "cancelled" else "failed"


def stream_job(
    record: JobRecord,
    cache: str | Path,
    *,
    on_block: Callable[[JobEvent], None] | None = None,
    progress: ProgressCallback | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    stop: threading.Event | None = None,
    transport_factory: Callable[[], Transport] | None = None,
) -> StreamResult:
    """Stream a submitted job (from the registry) into ``cache``; see :func:`stream_into`. The
    cache of a job on this machine may not be, lie inside or contain the job's output.
    ``transport_factory``: connections to the job's cluster (default: a login of its own; the
    jobs client passes its shared connection)."""
    if not record.ssh:
        from napari_connectome.volumes.output_safety import refuse_overlap

        refuse_overlap(cache, [record.output])
    return stream_into(
        transport_factory or (lambda: open_transport(record.ssh)),
        record.output,
        cache,
        on_block=on_block,
        progress=progress,
        is_finished=lambda transport: job_ended(record, transport),
        poll_s=poll_s,
        timeout_s=timeout_s,
        stop=stop,
    )
