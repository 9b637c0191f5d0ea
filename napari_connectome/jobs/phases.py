"""A job as a list of phases run by one loop, in daisy's Task shape: each phase names the items it
works on, the task run for each, and the check that an item is already done, so a resumed job
runs only what is missing and every phase reads the same way.

The loop, per phase: ``begin()`` (driver side: its log line), list the items, drop those
``is_done`` says are done, run ``task`` for the rest (on the Dask workers, or here for a
``driver`` phase), call ``on_done(item, result)`` as each finishes (log lines, progress), then
``end(items, results)`` (driver side: e.g. the lookup table from the matched faces).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal


def _nothing(*_: Any) -> None:
    return None


def _never(_item: Any) -> bool:
    return False


@dataclass
class Phase:
    """One step of a job."""

    name: str
    items: Callable[[], Sequence[Any]]
    task: Callable[..., Any]  # workers: a module-level function (Dask pickles it by name)
    args: Callable[[Any], tuple] = lambda item: (item,)
    key: Callable[[Any], str] = str  # the Dask key of an item's task (unique per job and item)
    is_done: Callable[[Any], bool] = _never
    on_done: Callable[[Any, Any], None] = _nothing
    begin: Callable[[], None] = _nothing
    end: Callable[[list, list], None] = _nothing
    where: Literal["workers", "driver"] = "workers"


def run_phases(client: Any, phases: Sequence[Phase | Callable[[], Phase | None] | None]) -> None:
    """Run each phase to its end, in order. An entry may be a function making the phase when its
    turn comes (it needs what the phases before it computed); None (or a function returning
    None) is a phase this job skips."""
    for entry in phases:
        phase = entry() if callable(entry) and not isinstance(entry, Phase) else entry
        if phase is None:
            continue
        phase.begin()
        todo = [item for item in phase.items() if not phase.is_done(item)]
        if phase.where == "driver":
            results = []
            for item in todo:
                results.append(phase.task(*phase.args(item)))
                phase.on_done(item, results[-1])
        else:
            by_key = {phase.key(item): item for item in todo}
            results = run_all(
                client,
                phase.task,
                [(key, phase.args(item)) for key, item in by_key.items()],
                lambda key, result, by_key=by_key, phase=phase: phase.on_done(by_key[key], result),
            )
        phase.end(todo, results)


def run_all(
    client: Any, fn: Callable, args_list: list, on_done: Callable[[str, Any], None]
) -> list:
    """Run ``fn(*args)`` for every ``(key, args)`` on Dask (retried twice), calling
    ``on_done(key, result)`` as each finishes; the results in the order given."""
    from dask.distributed import as_completed

    futures = [client.submit(fn, *args, key=key, retries=2) for key, args in args_list]
    results = {}
    try:
        for fut in as_completed(futures):
            res = fut.result()
            results[fut.key] = res
            on_done(fut.key, res)
    except BaseException:
        client.cancel(futures)  # an interrupted run stops handing out blocks
        raise
    return [results[f.key] for f in futures]
