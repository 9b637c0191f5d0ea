"""The phase loop a job runs (napari_connectome.jobs.phases), on a real in-process Dask cluster:
done items are skipped, every other item's task runs once, the hooks come in order, a phase made
when its turn comes sees what the phases before it computed, and a failing task stops the job."""

from __future__ import annotations

import pytest

from napari_connectome.jobs.phases import Phase, run_phases


def square(x: int) -> int:
    return x * x


def explode(x: int) -> int:
    raise RuntimeError(f"task {x} exploded on purpose")


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


def test_phases_skip_done_items_and_run_in_order(client):
    events: list = []
    seen: dict = {}

    def first() -> Phase:
        return Phase(
            "square",
            items=lambda: range(6),
            task=square,
            key=lambda x: f"square-{x}",
            is_done=lambda x: x % 2 == 0,  # an earlier run did the even ones
            on_done=lambda x, r: events.append(("done", x, r)),
            begin=lambda: events.append(("begin", "square")),
            end=lambda items, results: seen.update(zip(items, results)),
        )

    def second() -> Phase:  # made when its turn comes: it needs the first phase's results
        total = sum(seen.values())
        return Phase(
            "sum",
            items=lambda: [total],
            task=lambda t: t + 1,
            where="driver",
            end=lambda items, results: events.append(("end", "sum", results)),
        )

    run_phases(client, [first, None, second])
    assert events[0] == ("begin", "square")
    assert sorted(e[1:] for e in events if e[0] == "done") == [(1, 1), (3, 9), (5, 25)]
    assert seen == {1: 1, 3: 9, 5: 25}  # end() gets the items it ran and their results, in order
    assert events[-1] == ("end", "sum", [36])


def test_a_failing_task_stops_the_job_and_later_phases_never_start(client):
    started: list = []
    later = Phase("later", items=lambda: [1], task=square, begin=lambda: started.append("later"))
    failing = Phase("fails", items=lambda: [7], task=explode, key=lambda x: f"explode-{x}")
    with pytest.raises(RuntimeError, match="exploded on purpose"):
        run_phases(client, [failing, later])
    assert started == []
