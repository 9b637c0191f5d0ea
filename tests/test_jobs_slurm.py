"""Slurm over SSH, end to end: the one-node Slurm cluster behind a real sshd on loopback."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
import zarr

from napari_connectome.cli import main
from napari_connectome.jobs.backends import job_status
from napari_connectome.jobs.pipeline import run_job
from napari_connectome.jobs.registry import load_record
from napari_connectome.jobs.spec import parse_spec
from napari_connectome.jobs.stream import stream_job
from tests.test_jobs_helpers import REPO, cells_job_spec, write_cells_volume

pytestmark = [pytest.mark.slurm, pytest.mark.ssh, pytest.mark.timeout(300)]

NASTY = "out dir 'q'; touch PWNED $(touch PWNED2)"


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("vol") / "cells.h5"
    write_cells_volume(path)
    return path


@pytest.fixture(scope="module")
def reference(volume, tmp_path_factory):
    """The same job run by the local backend."""
    out = tmp_path_factory.mktemp("ref") / "ref.ome.zarr"
    run_job(parse_spec(local_spec(volume, out)))
    return zarr.open_array(str(out / "0"), mode="r")[:]


def local_spec(volume, output, **extra) -> dict:
    return cells_job_spec(volume, output, workers=1, **extra)


def slurm_spec(volume, output, login, **extra) -> dict:
    backend = {
        "kind": "slurm",
        "workers": 1,
        "resources": {
            "partition": "debug",
            "walltime": "00:05:00",
            "python": sys.executable,
            "setup": [f"export PYTHONPATH={shlex.quote(str(REPO))}"],
        },
        "ssh": {
            "host": login.host,
            "port": login.port,
            "user": login.user,
            "key": str(login.client_key),
            "known_hosts": str(login.known_hosts),
        },
    }
    return local_spec(volume, output, backend=backend, **extra)


def write_spec(tmp_path: Path, spec: dict) -> str:
    path = tmp_path / f"job-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def submit(tmp_path, spec, capsys, *flags) -> str:
    assert main(["submit", *flags, write_spec(tmp_path, spec)]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def wait_for(predicate, timeout=120, every=0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def test_submit_over_ssh_streams_the_same_result_as_local(
    volume, reference, slurm_login_node, tmp_path, capsys
):
    parent = tmp_path / NASTY
    parent.mkdir()
    out = parent / "seg.ome.zarr"
    job_id = submit(tmp_path, slurm_spec(volume, out, slurm_login_node), capsys)
    record = load_record(job_id)
    assert record.scheduler_id.isdigit()
    assert record.ssh["host"] == "127.0.0.1"

    cache = tmp_path / "cache.ome.zarr"
    assert main(["stream", job_id, str(cache), "--poll", "0.2", "--timeout", "240"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "done"
    np.testing.assert_array_equal(zarr.open_array(str(cache / "0"))[:], reference)
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"))[:], reference)
    np.testing.assert_array_equal(zarr.open_array(str(cache / "1"))[:], reference[::2, ::2, ::2])

    assert main(["status", job_id]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "done"
    assert status["blocks_done"] == status["blocks_total"] == 8
    assert set(status["seams"]) == {"z", "y", "x"}  # the seam check travels with the status
    # the path with quotes, spaces, ';' and $( ) was only ever data
    leaked = [
        p
        for p in (tmp_path, parent, Path.home(), out / "_job" / "scheduler")
        if (p / "PWNED").exists()
    ]
    leaked += [
        p
        for p in (tmp_path, parent, Path.home(), out / "_job" / "scheduler")
        if (p / "PWNED2").exists()
    ]
    assert not leaked


def test_scancel_half_way_then_resume_runs_only_missing_blocks(
    volume, reference, slurm_login_node, slurm_cluster, tmp_path, capsys
):
    slow = {"kind": "plugin", "factory": "tests.test_jobs_helpers:slow_watershed"}
    slow["options"] = {"delay_s": 1.0}
    out = tmp_path / "seg.ome.zarr"
    spec = slurm_spec(volume, out, slurm_login_node, segmenter=slow)
    job_id = submit(tmp_path, spec, capsys)
    progress = out / "progress.jsonl"

    def segmented() -> int:
        text = progress.read_text() if progress.exists() else ""
        return sum('"phase": "segment"' in line for line in text.splitlines())

    wait_for(lambda: segmented() >= 2)
    assert main(["cancel", job_id]) == 0
    wait_for(lambda: job_status(load_record(job_id))["state"] == "cancelled", timeout=60)
    done_first = {p.stem for p in (out / "_job" / "blocks").glob("*.json")}
    assert 2 <= len(done_first) < 8

    # without resume the output is refused; with it, only the missing blocks run
    assert main(["submit", write_spec(tmp_path, spec)]) == 2
    assert "already exists" in capsys.readouterr().err
    second = submit(tmp_path, spec, capsys, "--resume")
    assert (
        main(["stream", second, str(tmp_path / "cache"), "--poll", "0.2", "--timeout", "240"]) == 0
    )
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    assert len(starts) == 2
    assert events[starts[1]]["already_done"] == len(done_first)
    rerun = {
        "_".join(map(str, e["block"]))
        for e in events[starts[1] :]
        if e.get("phase") == "segment" and e["event"] == "block"
    }
    assert rerun == {f"{z}_{y}_{x}" for z in (0, 1) for y in (0, 1) for x in (0, 1)} - done_first
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"))[:], reference)


def test_stream_resumes_after_the_ssh_connection_drops(
    volume, reference, slurm_login_node, tmp_path, capsys
):
    slow = {"kind": "plugin", "factory": "tests.test_jobs_helpers:slow_watershed"}
    slow["options"] = {"delay_s": 0.5}
    out = tmp_path / "seg.ome.zarr"
    job_id = submit(tmp_path, slurm_spec(volume, out, slurm_login_node, segmenter=slow), capsys)
    sshd = psutil.Process(slurm_login_node.daemons[0].pid)
    seen, dropped = [], []

    def on_block(event):
        seen.append((event.phase, event.block))
        if len(seen) == 2:
            for session in sshd.children(recursive=True):  # the sshd processes serving us
                with contextlib.suppress(psutil.NoSuchProcess):  # one may be exiting already
                    session.kill()
            dropped.append(True)

    cache = tmp_path / "cache.ome.zarr"
    result = stream_job(load_record(job_id), cache, on_block=on_block, poll_s=0.2, timeout_s=240)
    assert dropped
    assert result.state == "done"
    assert result.reconnects >= 1
    # nothing missed, nothing twice: every block of both phases exactly once
    assert sorted(seen) == sorted({(p, b) for p, b in seen})
    assert len(seen) == 16
    np.testing.assert_array_equal(zarr.open_array(str(cache / "0"))[:], reference)


def test_job_that_dies_reports_failed_with_log_tail(volume, slurm_login_node, tmp_path, capsys):
    failing = {"kind": "plugin", "factory": "tests.test_jobs_helpers:failing_segmenter"}
    out = tmp_path / "seg.ome.zarr"
    job_id = submit(tmp_path, slurm_spec(volume, out, slurm_login_node, segmenter=failing), capsys)
    status = wait_for(
        lambda: (s := job_status(load_record(job_id)))["state"] not in ("pending", "running") and s,
        timeout=120,
    )
    assert status["state"] == "failed"
    assert "segmenter exploded on purpose" in status["error"]
    assert "segmenter exploded on purpose" in status["log_tail"]


def test_scheduler_rejection_and_ssh_faults_are_clear(volume, slurm_login_node, tmp_path, capsys):
    out = tmp_path / "seg.ome.zarr"
    spec = slurm_spec(volume, out, slurm_login_node)
    spec["backend"]["resources"]["partition"] = "no-such-partition"
    assert main(["submit", write_spec(tmp_path, spec)]) == 2
    err = capsys.readouterr().err
    assert "sbatch rejected the job" in err
    assert "partition" in err.lower()
    assert not out.exists()  # a refused submission leaves nothing behind

    # a changed host key: refuse and explain
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    bad_known = tmp_path / "known_hosts"
    bad_known.write_text(
        f"[127.0.0.1]:{slurm_login_node.port} {(other.with_suffix('.pub')).read_text()}"
    )
    spec = slurm_spec(volume, out, slurm_login_node)
    spec["backend"]["ssh"]["known_hosts"] = str(bad_known)
    assert main(["submit", write_spec(tmp_path, spec)]) == 2
    assert "CHANGED" in capsys.readouterr().err

    # a key the server does not accept
    spec = slurm_spec(volume, out, slurm_login_node)
    spec["backend"]["ssh"]["key"] = str(other)
    assert main(["submit", write_spec(tmp_path, spec)]) == 2
    assert "wrong user or key" in capsys.readouterr().err

    # nobody listening
    spec = slurm_spec(volume, out, slurm_login_node)
    spec["backend"]["ssh"]["port"] = 1
    assert main(["submit", write_spec(tmp_path, spec)]) == 2
    assert "cannot reach" in capsys.readouterr().err

    # a spec that fails its check on the login node (ROI outside the volume)
    spec = slurm_spec(volume, out, slurm_login_node, roi={"start": [0, 0, 0], "stop": [999, 9, 9]})
    assert main(["submit", write_spec(tmp_path, spec)]) == 2
    assert "outside the input volume" in capsys.readouterr().err
    assert not out.exists()


def test_status_through_a_jump_host(volume, slurm_login_node, sshd_server, tmp_path, capsys):
    """The login node reached through a bastion (asyncssh tunnel), host keys verified on both."""
    out = tmp_path / "seg.ome.zarr"
    spec = slurm_spec(volume, out, slurm_login_node)
    spec["backend"]["ssh"]["jump_host"] = {
        "host": sshd_server.host,
        "port": sshd_server.port,
        "user": sshd_server.user,
        "key": str(sshd_server.client_key),
        "known_hosts": str(sshd_server.known_hosts),
    }
    job_id = submit(tmp_path, spec, capsys)
    status = wait_for(
        lambda: (s := job_status(load_record(job_id)))["state"] not in ("pending", "running") and s
    )
    assert status["state"] == "done"
    assert status["blocks_done"] == 8


def test_workers_started_on_every_node_of_the_allocation(
    volume, reference, slurm_login_node, tmp_path, capsys
):
    """launch: srun starts the node launcher in the allocation (TLS scheduler on the first node);
    the blocks run on its workers and the result equals the local backend's."""
    out = tmp_path / "seg.ome.zarr"
    spec = slurm_spec(volume, out, slurm_login_node)
    spec["backend"].update({"launch": "srun", "workers": 2})
    job_id = submit(tmp_path, spec, capsys)
    status = wait_for(
        lambda: (s := job_status(load_record(job_id)))["state"] not in ("pending", "running") and s,
        timeout=180,
    )
    assert status["state"] == "done", status
    events = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    names = {e["worker_name"] for e in events if e.get("worker_name")}
    host = __import__("socket").gethostname()
    assert names
    assert names <= {f"{host}-0", f"{host}-1"}  # the node launcher's workers, not a LocalCluster's
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"))[:], reference)
    assert not list((out / "_job" / "scheduler").glob("tls-*"))  # the throwaway certificate is gone
