"""The jobs client (napari_connectome.jobs.client) against the one-node Slurm cluster behind a real
sshd on loopback: one login per cluster for a submission, its polls, a stream and a cancel
(counted in sshd's own log), a dropped connection made again, an unreachable cluster said per job
without leaking a thread per poll, and the typed status and events."""

from __future__ import annotations

import ast
import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.client import JobsClient, cluster_key
from napari_connectome.jobs.events import JobEvent
from napari_connectome.jobs.layout import JobLayout
from napari_connectome.jobs.spec import SSHSpec, parse_spec
from napari_connectome.jobs.status import JobStatus
from tests.test_jobs_slurm import slurm_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    from tests.test_jobs_helpers import write_cells_volume

    path = tmp_path_factory.mktemp("vol") / "cells.h5"
    write_cells_volume(path)
    return path


def accepted_logins(server) -> int:
    """Logins sshd accepted so far, from its own log (LogLevel INFO)."""
    text = (Path(server.root) / "sshd.log").read_text(errors="replace")
    return text.count("Accepted publickey for ")


def kill_sessions(server) -> None:
    """Drop every connection to ``server`` (its per-connection sshd processes), as a network
    outage would; the listening sshd stays."""
    for session in psutil.Process(server.daemons[0].pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            session.kill()


@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.timeout(300)
def test_one_login_per_cluster_for_submit_polls_stream_and_cancel(
    volume, slurm_login_node, tmp_path
):
    slow = {"kind": "plugin", "factory": "tests.test_jobs_helpers:slow_watershed"}
    spec = parse_spec(
        slurm_spec(volume, tmp_path / "seg.ome.zarr", slurm_login_node, segmenter=slow)
    )
    before = accepted_logins(slurm_login_node)
    with JobsClient() as client:
        record = client.submit(spec)
        states, polls = [], 0
        while not states or not states[-1].final:
            (status,) = client.poll([record]).values()
            states.append(status)
            polls += 1
            time.sleep(0.2)
        assert polls >= 5  # the job ran long enough to be polled many times
        assert all(isinstance(s, JobStatus) for s in states)
        assert states[-1].state == "done", states[-1]
        assert states[-1].blocks_done == states[-1].blocks_total == 8
        assert {s.state for s in states} <= {"pending", "running", "done"}

        seen: list[JobEvent] = []
        result = client.stream(record, tmp_path / "cache.ome.zarr", on_block=seen.append)
        assert result.state == "done"
        assert {e.phase for e in seen} == {"segment", "relabel"}
        assert all(e.kind == "block" and e.chunk.startswith("0/") for e in seen)
        np.testing.assert_array_equal(
            zarr.open_array(str(tmp_path / "cache.ome.zarr" / "0"))[:],
            zarr.open_array(str(Path(record.output) / "0"))[:],
        )
        with contextlib.suppress(UserInputError):  # scancel of a finished job may refuse
            client.cancel(record)
        # the submission, every poll, the stream and the cancel: one login
        assert client.logins == 1
        assert accepted_logins(slurm_login_node) - before == 1

        # the connection drops while idle: the next poll logs in once more and still answers
        kill_sessions(slurm_login_node)
        (status,) = client.poll([record]).values()
        assert status.state == "done", status
        assert client.logins == 2
        assert accepted_logins(slurm_login_node) - before == 2

    # the CLI's JSON keeps its fields: the typed status, as a mapping, is what `status` prints
    from napari_connectome.jobs.backends import job_status

    printed = job_status(record)
    assert set(printed) == set(states[-1].as_dict())
    assert (printed["state"], printed["blocks_done"]) == ("done", 8)
    assert {"segments", "seams", "blocks_done", "scheduler_state"} <= set(printed)


@pytest.mark.ssh
@pytest.mark.timeout(120)
def test_an_unreachable_cluster_is_said_per_job_and_leaks_no_thread(sshd_server):
    from napari_connectome.jobs.registry import JobRecord
    from napari_connectome.testing.processes import free_port

    ssh = {
        "host": sshd_server.host,
        "port": free_port(),  # nothing listens there
        "user": sshd_server.user,
        "key": str(sshd_server.client_key),
        "known_hosts": str(sshd_server.known_hosts),
    }
    records = [
        JobRecord(f"gone-{i}", "gone", "slurm", "/x/out.ome.zarr", time.time(), "42", ssh=ssh)
        for i in range(2)
    ]
    with JobsClient() as client:
        client.poll(records)
        threads = threading.active_count()
        for _ in range(5):
            statuses = client.poll(records)
        assert threading.active_count() <= threads  # a refused login leaves no loop thread
        assert [s.state for s in statuses.values()] == ["unreachable", "unreachable"]
        assert all("cannot reach" in s.error for s in statuses.values())
        assert client.logins == 0


def test_a_cluster_is_one_key_however_its_ssh_settings_are_written():
    as_dict = {"host": "login.example.org", "user": "me", "port": 22}
    assert cluster_key(as_dict) == cluster_key(SSHSpec(host="login.example.org", user="me"))
    assert cluster_key(as_dict) != cluster_key({**as_dict, "port": 2222})
    assert cluster_key(None) == "local"


def test_progress_lines_read_as_typed_events():
    line = {"event": "block", "phase": "segment", "block": [0, 1, 2], "chunk": "0/c/0/1/2"}
    ev = JobEvent.from_line({**line, "t": 5, "n_segments": 3}, cached_t=7.0)
    assert (ev.kind, ev.phase, ev.block, ev.chunk, ev.t, ev.cached_t) == (
        "block",
        "segment",
        (0, 1, 2),
        "0/c/0/1/2",
        5.0,
        7.0,
    )
    assert ev.get("n_segments") == 3
    odd = JobEvent.from_line({"event": "block", "block": "x", "chunk": 3, "t": "soon"})
    assert (odd.block, odd.chunk, odd.t) == (None, None, None)  # wrong types read as absent


def test_a_status_as_json_has_the_fields_of_its_state():
    done = JobStatus(id="a", state="done", segments=4, seams={"z": {}}, blocks_total=8)
    assert {"segments", "seams"} <= set(done.as_dict())
    assert "log_tail" not in done.as_dict()
    assert "error" not in done.as_dict()
    failed = JobStatus(id="b", state="failed", log_tail="boom")
    assert failed.as_dict()["log_tail"] == "boom"
    assert "segments" not in failed.as_dict()
    assert "error" not in failed.as_dict()
    assert failed.final
    assert not JobStatus.problem("c", "unreachable", "down").final


JOB_FILE_NAMES = {
    JobLayout.PROGRESS,
    JobLayout.JOB,
    JobLayout.SPEC,
    JobLayout.STATE,
    JobLayout.DRIVER_LOCK,
    JobLayout.RUN_LOG,
    JobLayout.BATCH_SCRIPT,
    JobLayout.LUT,
}


def test_job_file_names_are_spelled_only_in_the_layout():
    """Code that finds a job's files takes their names from JobLayout (messages and docstrings
    may name them; a string that *is* one of the names, or a path built of them, may not)."""
    files = [
        *sorted((ROOT / "napari_connectome" / "jobs").glob("*.py")),
        *sorted((ROOT / "napari_connectome" / "gui").glob("remote_*.py")),
        ROOT / "napari_connectome" / "cli" / "jobs.py",
    ]
    found = []
    for path in files:
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if value in JOB_FILE_NAMES or value.startswith(f"{JobLayout.JOB}/"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {value!r}")
    assert not found, found
