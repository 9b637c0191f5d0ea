"""Jobs against misuse: a pid reused by another process is never cancelled, one driver per output,
specs that would eat the machine (YAML aliases) or fail on a worker are refused before anything is
written, and a start that failed leaves nothing that blocks a rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.jobs.driver_lock import DriverLock, Holder
from napari_connectome.jobs.procinfo import pid_running
from napari_connectome.jobs.registry import load_record, save_record
from tests.test_jobs_helpers import REPO, cells_job_spec, write_cells_volume


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vol") / "cells.h5"
    write_cells_volume(path, shape=(32, 48, 48), n_cells=16)
    return path


def small_job(volume, output, **extra) -> dict:
    """8 blocks, one local worker."""
    spec = cells_job_spec(volume, output, workers=1, block_shape=[16, 24, 24], overlap=[4, 4, 4])
    spec.update(extra)
    return spec


def write(tmp_path: Path, spec: dict, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def wait_for(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def status_of(job_id: str, capsys) -> dict:
    assert main(["status", job_id]) == 0
    return json.loads(capsys.readouterr().out)


def events_of(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "progress.jsonl").read_text().splitlines()]


def sleeper() -> subprocess.Popen:
    """An unrelated long-running process in its own session, as the kernel might hand out the
    finished job's pid to."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )


def test_cancel_never_signals_a_process_that_reused_the_jobs_pid(volume, tmp_path, capsys):
    assert main(["submit", write(tmp_path, small_job(volume, tmp_path / "seg.ome.zarr"))]) == 0
    job_id = capsys.readouterr().out.strip()
    wait_for(lambda: status_of(job_id, capsys)["state"] == "done", what="the job to finish")
    record = load_record(job_id)
    assert record.pid_start is not None
    wait_for(lambda: not pid_running(record.pid), what="the driver to exit")

    other = sleeper()
    try:
        record.pid = other.pid  # the kernel gave the finished job's pid to this process
        save_record(record)
        assert main(["cancel", job_id]) == 0
        assert "already ended (done): nothing to cancel" in capsys.readouterr().err
        assert other.poll() is None  # not signalled
        assert not load_record(job_id).cancelled

        # a driver killed before it wrote "done": the reused pid is not the job running either
        progress = tmp_path / "seg.ome.zarr" / "progress.jsonl"
        lines = progress.read_text().splitlines()
        progress.write_text("\n".join(line for line in lines if '"done"' not in line) + "\n")
        status = status_of(job_id, capsys)
        assert status["scheduler_state"] == "done"
        assert status["state"] == "failed"
        assert main(["cancel", job_id]) == 0
        assert "already ended (its process is gone)" in capsys.readouterr().err
        time.sleep(0.5)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_second_driver_on_a_running_output_is_refused(volume, tmp_path, capsys):
    out = tmp_path / "seg.ome.zarr"
    slow = {"kind": "plugin", "factory": "tests.test_jobs_helpers:slow_watershed"}
    slow["options"] = {"delay_s": 0.6}
    path = write(tmp_path, small_job(volume, out, segmenter=slow))
    assert main(["submit", path]) == 0
    job_id = capsys.readouterr().out.strip()
    record = load_record(job_id)
    wait_for(lambda: (out / "progress.jsonl").is_file() and events_of(out), what="the start")

    # submit --resume / --overwrite of the running job: refused at submit time, nothing touched
    for flag in ("--resume", "--overwrite"):
        assert main(["submit", flag, path]) == 2
        err = capsys.readouterr().err
        assert "being written by another job driver" in err, err
        assert f"pid {record.pid} on " in err
    # a second driver started directly (as a batch job would) is refused by the lock
    staged = out / "_job" / "spec.yaml"
    second = subprocess.run(
        [sys.executable, "-m", "napari_connectome", "run-job", "--resume", str(staged)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 2, second.stderr
    assert "being written by another job driver" in second.stderr
    assert f"pid {record.pid} on " in second.stderr
    # and so is the check `submit` runs on a cluster's login node before sbatch/qsub
    assert main(["run-job", "--check", "--resume", str(staged)]) == 2
    assert f"another job driver (pid {record.pid} on " in capsys.readouterr().err

    wait_for(lambda: status_of(job_id, capsys)["state"] == "done", what="the job to finish")
    assert [e["event"] for e in events_of(out)].count("start") == 1  # only the first one ran
    ref = tmp_path / "ref.ome.zarr"
    assert main(["run-job", write(tmp_path, small_job(volume, ref), "ref.yaml")]) == 0
    np.testing.assert_array_equal(
        zarr.open_array(str(out / "0"))[:], zarr.open_array(str(ref / "0"))[:]
    )
    assert (out / "_job" / "driver.lock").read_bytes() == b""  # released: nobody holds it


HOLD = """
import sys, time
from napari_connectome.jobs.driver_lock import DriverLock
lock = DriverLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_driver_lock_dies_with_its_process_and_is_taken_over(tmp_path):
    job_dir = tmp_path / "out" / "_job"
    job_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(job_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserInputError, match=f"another job driver \\(pid {holder.pid} on "):
            DriverLock(job_dir).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up: the record of a dead driver stays
        holder.wait()
    assert Holder.from_bytes((job_dir / "driver.lock").read_bytes()).pid == holder.pid
    lock = DriverLock(job_dir)
    lock.acquire()
    try:
        assert lock.took_over is not None
        assert lock.took_over.pid == holder.pid
        assert Holder.from_bytes((job_dir / "driver.lock").read_bytes()).pid == os.getpid()
    finally:
        lock.release()


def test_a_holder_on_another_host_is_alive_while_its_heartbeat_moves(tmp_path):
    """On a cluster file system flock may not reach across nodes: the record's heartbeat decides,
    watched for a while (no clocks compared)."""
    job_dir = tmp_path / "_job"
    job_dir.mkdir()
    path = job_dir / "driver.lock"
    other = Holder("node-17", 4242, 123, "another-boot", time.time(), time.time())
    path.write_bytes(other.to_bytes())
    # a stale record: the heartbeat does not move while watched, so the lock is taken over
    lock = DriverLock(job_dir, watch_s=0.6)
    lock.acquire()
    assert lock.took_over == other
    lock.release()

    path.write_bytes(other.to_bytes())
    beating = subprocess.Popen(  # rewrites the record's heartbeat, as a live driver elsewhere does
        [
            sys.executable,
            "-c",
            "import json, sys, time\n"
            "while True:\n"
            "    d = json.loads(open(sys.argv[1]).read()); d['heartbeat'] = time.time()\n"
            "    open(sys.argv[1], 'w').write(json.dumps(d)); time.sleep(0.1)\n",
            str(path),
        ]
    )
    try:
        with pytest.raises(UserInputError, match="pid 4242 on node-17"):
            DriverLock(job_dir, watch_s=1.0).acquire()
    finally:
        beating.kill()
        beating.wait()


BOMB = """
name: bomb
input: {input}
output: {output}
block_shape: [16, 24, 24]
segmenter:
  kind: plugin
  factory: tests.test_jobs_helpers:slow_watershed
  options:
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_yaml_alias_bombs_and_unreadable_specs_are_refused_before_anything_is_written(
    volume, tmp_path, capsys
):
    out = tmp_path / "seg.ome.zarr"
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB.format(input=f"{volume}:raw", output=out))
    for argv in (["run-job", "--check"], ["run-job"], ["submit"]):
        assert main([*argv, str(bomb)]) == 2
        err = capsys.readouterr().err
        assert "uses a YAML alias (*a) at line 11" in err, err
        assert "aliases are not allowed" in err
    assert not out.exists()

    cases = {
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR": "is a binary file, not YAML text",
        "input: caf\u00e9.h5\n".encode("latin-1"): "is not UTF-8 text",
        b"- a list\n- not a mapping\n": "expected a mapping of fields, got list",
        b"": "is empty",
        b"[" * 50_000: "nested too deeply",
    }
    for data, message in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_bytes(data)
        assert main(["run-job", "--check", str(path)]) == 2
        assert message in capsys.readouterr().err

    # a spec staged in an existing output is read the same way (submit --resume, run-job)
    good = write(tmp_path, small_job(volume, out))
    assert main(["run-job", good]) == 0
    capsys.readouterr()
    (out / "_job" / "spec.yaml").write_text(BOMB.format(input=f"{volume}:raw", output=out))
    assert main(["submit", "--resume", good]) == 2
    assert "aliases are not allowed" in capsys.readouterr().err
    assert main(["run-job", "--resume", good]) == 2
    assert "aliases are not allowed" in capsys.readouterr().err


def test_typos_and_missing_gpus_fail_at_check_time_not_on_a_worker(volume, tmp_path, capsys):
    out = tmp_path / "seg.ome.zarr"
    ffn = {"kind": "ffn", "inference": {"move_thresh": 0.8, "segment_threshold": 0.6}}
    path = write(tmp_path, small_job(volume, out, segmenter=ffn))
    for argv in (["run-job", "--check"], ["submit"]):
        assert main([*argv, path]) == 2
        err = capsys.readouterr().err
        assert "segmenter.inference.move_thresh: unknown FFN inference option" in err
        assert "valid: init_activation, pad_value, move_threshold," in err
    ffn["inference"] = {"move_threshold": 1.5}
    assert main(["run-job", "--check", write(tmp_path, small_job(volume, out, segmenter=ffn))]) == 2
    assert "move_threshold must be a probability" in capsys.readouterr().err
    # a segmentation given as the EM input: refused at check time (a worker would fail after
    # the output was made)
    import h5py

    labels = tmp_path / "labels.h5"
    with h5py.File(labels, "w") as f:
        f["ids"] = np.arange(32 * 48 * 48, dtype=np.uint64).reshape(32, 48, 48)
    ids_job = {**small_job(volume, out, segmenter={"kind": "ffn"}), "input": f"{labels}:ids"}
    for argv in (["run-job", "--check"], ["run-job"]):
        assert main([*argv, write(tmp_path, ids_job)]) == 2
        assert "the dtype of label ids, not of EM" in capsys.readouterr().err

    import torch

    if not torch.cuda.is_available():
        cuda = write(tmp_path, small_job(volume, out, segmenter={"kind": "ffn", "device": "cuda"}))
        for argv in (["run-job", "--check"], ["submit"], ["run-job"]):
            assert main([*argv, cuda]) == 2
            err = capsys.readouterr().err
            assert "segmenter.device is 'cuda' but PyTorch sees no CUDA GPU" in err, err
    assert not out.exists()


def test_sizes_that_cannot_be_meant_are_refused_with_the_reason(tmp_path, capsys):
    import h5py

    big = tmp_path / "big.h5"
    with h5py.File(big, "w") as f:  # 1024^3 voxels, never written: a few KB on disk
        f.create_dataset("raw", shape=(1024, 1024, 1024), dtype="uint8", chunks=(64, 64, 64))
    base = cells_job_spec(big, tmp_path / "seg.ome.zarr", workers=1)
    cases = [
        ({"block_shape": [1, 1, 1]}, "too small"),
        ({"block_shape": [8, 8, 8], "match": {"slab": 4}}, "2,097,152 blocks"),
        ({"block_shape": [6, 64, 64]}, "thinner than match.slab (8)"),
        ({"block_shape": [2048, 1024, 1024]}, "GiB of a worker's memory"),
        ({"backend": {"kind": "local", "workers": 100000}}, "more than any node has cores"),
        ({"backend": {"kind": "local", "workers": 4 * (os.cpu_count() or 1) + 1}}, "CPU cores"),
    ]
    for change, message in cases:
        assert main(["run-job", "--check", write(tmp_path, {**base, **change})]) == 2
        err = capsys.readouterr().err
        assert message in err, err
    assert not (tmp_path / "seg.ome.zarr").exists()


def test_a_start_that_failed_never_blocks_a_rerun(volume, tmp_path, capsys):
    from napari_connectome.testing.filesystems import fill, full_filesystem
    from napari_connectome.testing.processes import ServiceUnavailable

    def one_block(output) -> dict:
        return small_job(volume, output, block_shape=[32, 48, 48], pyramid_levels=1)

    # killed while creating the output (before the spec was written): only _job/ is left
    out = tmp_path / "seg.ome.zarr"
    (out / "_job").mkdir(parents=True)
    (out / "_job" / ".spec.yaml.x1y2.tmp").write_bytes(b"name: half")
    assert main(["run-job", write(tmp_path, one_block(out))]) == 0
    assert "left by a start that did not finish" in capsys.readouterr().err
    assert (out / "0" / "zarr.json").is_file()
    # submit too (its staging would refuse the leftover, even with --overwrite)
    staged = tmp_path / "staged.ome.zarr"
    (staged / "_job").mkdir(parents=True)
    assert main(["submit", write(tmp_path, one_block(staged), "s.yaml")]) == 0
    job_id = capsys.readouterr().out.strip()
    wait_for(lambda: status_of(job_id, capsys)["state"] == "done", what="the submitted job")

    # a folder with anything else in it is never taken for such a leftover
    other = tmp_path / "other"
    (other / "_job").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    assert main(["run-job", write(tmp_path, one_block(other), "o.yaml")]) == 2
    assert (other / "notes.txt").read_text() == "mine"

    # output creation fails (disk full): nothing is left, and the same command then works
    try:
        with full_filesystem(tmp_path / "disk", size_bytes=16 << 20) as folder:
            full = folder / "seg.ome.zarr"
            spec = write(tmp_path, one_block(full), "full.yaml")
            fill(folder)
            try:
                rc = main(["run-job", spec])
            except OSError:  # ENOSPC, where the CLI does not turn it into a message
                rc = None
            assert rc != 0
            assert not full.exists()
            (folder / ".filler").unlink()
            assert main(["run-job", spec]) == 0
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


def test_a_cluster_profile_with_yaml_aliases_is_refused(tmp_path, monkeypatch):
    from napari_connectome.jobs.profiles import load_profile, profiles_dir

    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))
    bomb = "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\nname: bomb\n"
    (profiles_dir() / "bomb.yaml").write_text(bomb)
    with pytest.raises(UserInputError, match="alias"):
        load_profile("bomb")


def test_a_refused_resume_names_what_differs(tmp_path, capsys):
    """A job started with precision fp32, resumed from a spec that leaves it at the new default
    (auto): refused, and the message says which field to set."""
    write_cells_volume(tmp_path / "cells.h5")
    out = tmp_path / "seg.ome.zarr"
    first = cells_job_spec(
        tmp_path / "cells.h5", out, workers=1, segmenter={"kind": "watershed", "precision": "fp32"}
    )
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(first))
    assert main(["run-job", str(tmp_path / "a.yaml")]) == 0
    again = cells_job_spec(tmp_path / "cells.h5", out, workers=1, resume=True)
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(again))
    capsys.readouterr()
    assert main(["run-job", str(tmp_path / "b.yaml")]) == 2
    err = capsys.readouterr().err
    assert "segmenter.precision: 'fp32' there, 'auto' here" in err
