"""Streaming a running job's result into a local cache zarr, block by block.

The client tails ``progress.jsonl`` (a local file or over SFTP) from a byte offset. Each block line
names the chunk file the block just wrote; the client copies that file byte for byte into the cache
(an OME-Zarr with the same metadata) and calls ``on_block``. The offset is saved in the cache after
every line, and only advanced once a line's chunk is copied, so a dropped connection or a restarted
client resumes where it stopped and misses nothing.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.events import split_lines, summarize
from napari_connectome.jobs.layout import atomic_write_bytes, atomic_write_json
from napari_connectome.jobs.registry import JobRecord
from napari_connectome.jobs.transport import Transport, open_transport, transient_errors
from napari_connectome.progress import ProgressCallback, no_progress

STATE_FILE = ".stream.json"


@dataclass
class StreamResult:
    state: str  # done | failed | cancelled | timeout | stopped
    blocks: int  # block lines handled by this call
    reconnects: int
    cache: Path


def _rp(*parts: str) -> str:
    return str(PurePosixPath(*parts))


def _copy_file(transport: Transport, remote: str, local: Path) -> None:
    data = transport.read_file(remote)
    if data is None:  # an all-zero chunk is not stored: remove any stale copy
        local.unlink(missing_ok=True)
    else:
        atomic_write_bytes(local, data)


def _init_cache(transport: Transport, output: str, cache: Path) -> dict:
    """Create the cache with the job output's metadata (or reopen it for the same output)."""
    state_path = cache / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("source") != output:
            raise UserInputError(
                f"{cache} caches another job's output ({state.get('source')}): choose another "
                "folder"
            )
        return state
    if cache.exists() and any(cache.iterdir()):
        raise UserInputError(f"{cache} exists and is not a stream cache: choose a new folder")
    group = transport.read_file(_rp(output, "zarr.json"))
    if group is None:
        return {}
    try:
        datasets = json.loads(group)["attributes"]["ome"]["multiscales"][0]["datasets"]
    except (json.JSONDecodeError, KeyError, IndexError):
        return {}  # the job is still writing the output's metadata: look again later
    files = {"zarr.json": group}
    for ds in datasets:
        arr = transport.read_file(_rp(output, ds["path"], "zarr.json"))
        if arr is None:
            return {}
        files[f"{ds['path']}/zarr.json"] = arr
    for rel, data in files.items():
        atomic_write_bytes(cache / rel, data)
    state = {"source": output, "offset": 0, "levels": [ds["path"] for ds in datasets]}
    atomic_write_json(state_path, state)
    return state


def _copy_pyramid(transport: Transport, output: str, cache: Path, levels: list[str]) -> None:
    import itertools

    import zarr

    for level in levels[1:]:
        arr = zarr.open_array(str(cache / level), mode="r")
        grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks)]
        for idx in itertools.product(*grid):
            key = arr.metadata.chunk_key_encoding.encode_chunk_key(idx)
            _copy_file(transport, _rp(output, level, key), cache / level / key)


def stream_into(
    transport_factory: Callable[[], Transport],
    output: str,
    cache: str | Path,
    *,
    on_block: Callable[[dict], None] | None = None,
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
    t_end = None if timeout_s is None else time.monotonic() + timeout_s
    transport = transport_factory()
    reconnects = handled = 0
    summary = summarize([])
    primed = False
    try:
        while True:
            if stop is not None and stop.is_set():
                return StreamResult("stopped", handled, reconnects, cache)
            try:
                state = _init_cache(transport, output, cache)
                if not state:  # the job has not created its output yet (pending)
                    final = is_finished(transport) if is_finished else None
                    if final:
                        return StreamResult(final, handled, reconnects, cache)
                    if t_end and time.monotonic() > t_end:
                        return StreamResult("timeout", handled, reconnects, cache)
                    time.sleep(poll_s)
                    continue
                if not primed:
                    # a resumed stream: what was read before counts (a finished log stays finished)
                    primed = True
                    if state["offset"]:
                        seen = transport.read_file(_rp(output, "progress.jsonl")) or b""
                        summary = summarize(split_lines(seen[: state["offset"]])[0])
                data = transport.read_file(_rp(output, "progress.jsonl"), state["offset"]) or b""
                events, used = split_lines(data)
                if not events and used == 0:
                    if summary.done:
                        return StreamResult("done", handled, reconnects, cache)
                    final = is_finished(transport) if is_finished else None
                    if final:
                        return StreamResult(final, handled, reconnects, cache)
                    if t_end and time.monotonic() > t_end:
                        return StreamResult("timeout", handled, reconnects, cache)
                    time.sleep(poll_s)
                    continue
                offset = state["offset"]
                consumed = 0
                # advance line by line so an interruption re-reads at most the current line
                for line in data[:used].splitlines(keepends=True):
                    consumed += len(line)
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        ev = json.loads(line)
                    except json.JSONDecodeError:
                        ev = {}
                    if ev.get("event") == "block" and ev.get("chunk"):
                        _copy_file(transport, _rp(output, ev["chunk"]), cache / ev["chunk"])
                    if ev.get("event") == "done":
                        _copy_pyramid(transport, output, cache, state["levels"])
                    summary.add(ev)
                    state["offset"] = offset + consumed
                    atomic_write_json(cache / STATE_FILE, state)
                    if ev.get("event") == "block":
                        handled += 1
                        ev["cached_t"] = time.time()
                        if on_block:
                            on_block(ev)
                        total = summary.blocks_total or 0
                        progress(len(summary.segmented), total, ev.get("phase", ""))
                    if ev.get("event") == "failed":
                        return StreamResult("failed", handled, reconnects, cache)
                    if stop is not None and stop.is_set() and not summary.done:
                        return StreamResult("stopped", handled, reconnects, cache)
                if summary.done:
                    return StreamResult("done", handled, reconnects, cache)
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
    finally:
        transport.close()


def stream_job(
    record: JobRecord,
    cache: str | Path,
    *,
    on_block: Callable[[dict], None] | None = None,
    progress: ProgressCallback | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    stop: threading.Event | None = None,
) -> StreamResult:
    """Stream a submitted job (from the registry) into ``cache``; see :func:`stream_into`."""
    from napari_connectome.jobs.backends import scheduler_state

    def ended(transport: Transport) -> str | None:
        state = scheduler_state(record, transport)
        if state in ("pending", "running", "unknown"):
            return None
        # the scheduler says it ended: read the log once more before giving up
        data = transport.read_file(_rp(record.output, "progress.jsonl")) or b""
        events, _ = split_lines(data)
        s = summarize(events)
        if s.done:
            return None
        return "cancelled" if state == "cancelled" else "failed"

    return stream_into(
        lambda: open_transport(record.ssh),
        record.output,
        cache,
        on_block=on_block,
        progress=progress,
        is_finished=ended,
        poll_s=poll_s,
        timeout_s=timeout_s,
        stop=stop,
    )
