"""The Remote jobs widget in a real napari viewer, against the one-node Slurm cluster behind a real
sshd on loopback: a user types a cluster profile, tests the connection, submits the open volume,
watches blocks arrive in a labels layer, restarts napari and re-attaches, cancels a job, and gets a
clear notification when the cluster cannot be reached.

Jobs use the watershed segmenter slowed to a fixed time per block (``tests.test_jobs_helpers``), so
a job runs long enough to be watched and cancelled but the whole file stays within a minute or two.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.profiles import (
    ClusterProfile,
    list_profiles,
    load_profile,
    make_profile,
    save_profile,
)
from tests.test_jobs_helpers import REPO, write_cells_volume

PLUGIN = "napari-connectome"
SLOW = "tests.test_jobs_helpers:slow_watershed"
DOCS_IMAGES = os.environ.get("NAPARI_CONNECTOME_DOC_SCREENSHOTS")  # copy screenshots there


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


# -- profiles (core, no GUI) --
def test_profiles_are_saved_listed_and_turned_into_a_job_backend():
    profile = make_profile(
        {
            "name": "polaris",
            "host": "polaris.alcf.anl.gov",
            "user": "me",
            "jump_host": "me@bastion.example.org:2222",
            "scheduler": "pbs",
            "partition": "debug",
            "account": "MyProject",
            "gpus_per_node": 4,
            "setup": ["module load conda", "conda activate nc"],
            "workdir": "/eagle/MyProject/me/jobs",
        }
    )
    save_profile(profile)
    assert list_profiles() == ["polaris"]
    assert load_profile("polaris") == profile

    backend = profile.backend(workers=4)
    assert backend.kind == "pbs"
    assert backend.resources.queue == "debug"
    assert backend.resources.partition is None
    assert backend.resources.gpus_per_node == 4
    assert backend.ssh.jump_host.host == "bastion.example.org"
    assert backend.ssh.jump_host.port == 2222
    assert profile.output_path("seg").startswith("/eagle/MyProject/me/jobs/seg-")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "my cluster", "name"),
        ("workdir", "relative/dir", "absolute"),
        ("jump_host", "host:port", "user@host:port"),
        ("scheduler", "lsf", "scheduler"),
    ],
)
def test_a_bad_profile_field_is_named(field, value, message):
    with pytest.raises(UserInputError, match=message):
        make_profile({"name": "ok", field: value})
    assert list_profiles() == []


def test_a_missing_profile_names_the_saved_ones():
    save_profile(ClusterProfile(name="a"))
    with pytest.raises(UserInputError, match=r"no cluster profile 'b' \(saved: a\)"):
        load_profile("b")


def test_upload_refuses_an_existing_destination_and_leaves_nothing_when_it_fails(tmp_path):
    from napari_connectome.jobs.transport import LocalTransport
    from napari_connectome.jobs.upload import upload_volume

    data = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    (tmp_path / "taken.ome.zarr").mkdir()
    with pytest.raises(UserInputError, match="already exists"):
        upload_volume(
            data, LocalTransport(), str(tmp_path / "taken.ome.zarr"), voxel_size_nm=(1,) * 3
        )
    with pytest.raises(UserInputError, match="3D volume"):
        upload_volume(
            data[0], LocalTransport(), str(tmp_path / "a.ome.zarr"), voxel_size_nm=(1,) * 3
        )

    class Breaks(LocalTransport):
        def write_file(self, path, payload):
            if path.endswith("zarr.json") and "/0/" in path:
                raise OSError("connection dropped")
            super().write_file(path, payload)

    with pytest.raises(OSError, match="dropped"):
        upload_volume(data, Breaks(), str(tmp_path / "b.ome.zarr"), voxel_size_nm=(1,) * 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.ome.zarr"]

    src = upload_volume(
        data, LocalTransport(), str(tmp_path / "c.ome.zarr"), voxel_size_nm=(8,) * 3
    )
    np.testing.assert_array_equal(zarr.open_array(f"{src}/0", mode="r")[:], data)


# -- the widget --
@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vol") / "cells.h5"
    write_cells_volume(path)
    return path


def _open_viewer(make_napari_viewer, volume):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1500, 1000)
    (layer,) = viewer.open(str(volume), plugin=PLUGIN)
    return viewer, layer


def _widget(viewer):
    from napari_connectome.gui.remote_jobs import RemoteJobsWidget

    widget = RemoteJobsWidget(viewer, poll_interval_ms=500)
    viewer.window.add_dock_widget(widget, name="Remote jobs", area="right")
    return widget


def _type_profile(widget, login, workdir: Path, name="loopback", **changes):
    form = widget.profiles
    form.profile_name.value = name
    form.host.value = login.host
    form.port.value = changes.get("port", login.port)
    form.user.value = login.user
    form.key.value = str(login.client_key)
    form.known_hosts.value = str(changes.get("known_hosts", login.known_hosts))
    form.scheduler.value = "slurm"
    form.partition.value = "debug"
    form.walltime.value = "00:05:00"
    form.setup.value = f"export PYTHONPATH={REPO}"
    form.workdir.value = str(workdir)
    form.python.value = sys.executable
    form.save_button.clicked.emit()


def _type_job(widget, layer, delay_s: float):
    widget.image.value = layer
    widget.job_name.value = "cells"
    widget.segmenter.value = "plugin"
    widget.factory.value = SLOW
    widget.block.value = "20, 32, 32"
    widget.overlap.value = "6"
    widget.workers.value = 1
    widget.plugin_options.value = f"{{delay_s: {delay_s}}}"


def _notes_since(start: int) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records[start:]]


def _n_notes() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def _filled_blocks(layer, block=(20, 32, 32)) -> int:
    data = np.asarray(layer.data[:])
    grid = [range(0, s, b) for s, b in zip(data.shape, block)]
    return sum(
        bool(data[z : z + block[0], y : y + block[1], x : x + block[2]].any())
        for z in grid[0]
        for y in grid[1]
        for x in grid[2]
    )


def _alive(widget, job_id: str) -> bool:
    """For waits: a stream that failed ends the test at once, with the widget's message."""
    stream = widget.streams.get(job_id)
    if stream is not None and stream.final == "error":
        raise RuntimeError(f"streaming failed: {widget.status.value}")
    return True


def _screenshot(viewer, tmp_path: Path, name: str) -> Path:
    from imageio.v3 import imwrite

    path = tmp_path / name
    imwrite(path, viewer.screenshot(canvas_only=False, flash=False))
    if DOCS_IMAGES:
        shutil.copy(path, Path(DOCS_IMAGES) / name)
    return path


@pytest.mark.gui
@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.timeout(300)
def test_submit_watch_blocks_arrive_restart_and_reattach(
    make_napari_viewer, volume, slurm_login_node, tmp_path, qtbot
):
    workdir = tmp_path / "remote work"  # a space: paths only ever travel as data
    workdir.mkdir()
    viewer, layer = _open_viewer(make_napari_viewer, volume)
    widget = _widget(viewer)

    # 1. a profile for the cluster, saved, and the connection tested (host key verified)
    _type_profile(widget, slurm_login_node, workdir)
    assert list_profiles() == ["loopback"]
    widget.test_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.connection.value in ("connected", "failed"), timeout=60_000)
    assert widget.connection.value == "connected", widget.status.value
    assert "debug" in widget.status.value  # sinfo's answer: the partition is up

    # 2. submit the open volume; the labels layer fills in block by block while the job runs
    _type_job(widget, layer, delay_s=1.5)
    seen: list[tuple[int, str | None]] = []
    widget.submit_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget.streams) == 1, timeout=60_000)
    (job_id,) = widget.streams
    stream = widget.streams[job_id]
    stream._bridge.block.connect(
        lambda *_: seen.append((_filled_blocks(widget.layers[job_id]), stream.final))
    )
    qtbot.waitUntil(
        lambda: _alive(widget, job_id) and any(0 < n < 8 for n, _ in seen), timeout=120_000
    )
    out_layer = widget.layers[job_id]
    assert out_layer.scale.tolist() == layer.scale.tolist()
    qtbot.waitUntil(
        lambda: widget.statuses.get(job_id, {}).get("blocks_done", 0) >= 2, timeout=60_000
    )
    widget.select_job(job_id)
    viewer.dims.order = (2, 0, 1)  # a z-y view: finished blocks above, the rest still empty
    _screenshot(viewer, tmp_path, "remote-jobs-streaming.png")

    # 3. napari is closed while the job runs; a new session lists the job and re-attaches
    widget.detach_all()
    qtbot.waitUntil(lambda: stream.final is not None, timeout=30_000)
    assert stream.final == "detached"
    viewer2, _layer2 = _open_viewer(make_napari_viewer, volume)
    widget2 = _widget(viewer2)
    assert widget2.profiles.choice.value == "loopback"
    assert widget2.profiles.host.value == slurm_login_node.host
    assert job_id in widget2.records
    widget2.select_job(job_id)
    assert widget2.selected_job() == job_id
    widget2.attach_button.clicked.emit()
    stream2 = widget2.streams[job_id]
    qtbot.waitUntil(lambda: _alive(widget2, job_id) and stream2.final is not None, timeout=180_000)
    assert stream2.final == "done"
    qtbot.waitUntil(lambda: widget2.statuses.get(job_id, {}).get("state") == "done", timeout=30_000)

    # 4. the layer equals the job's final output, voxel for voxel
    record = widget2.records[job_id]
    final = zarr.open_array(str(Path(record.output) / "0"), mode="r")[:]
    assert final.max() > 1
    np.testing.assert_array_equal(np.asarray(widget2.layers[job_id].data[:]), final)
    row = widget2._row(record)
    assert row[0] == "done"
    assert row[1] == "8/8"
    # the seam check of the finished job: watershed blocks equal one canvas, no face cuts a cell
    from napari_connectome.gui.remote_jobs import COLUMNS

    assert row[COLUMNS.index("faces")] == "z 0.00 y 0.00 x 0.00"
    widget2.select_job(job_id)
    _screenshot(viewer2, tmp_path, "remote-jobs-done.png")

    # 5. attaching again to the finished job fetches nothing more and ends at once
    viewer2.layers.remove(widget2.layers[job_id])
    widget2.attach_button.clicked.emit()
    stream3 = widget2.streams[job_id]
    assert stream3 is not stream2
    qtbot.waitUntil(lambda: _alive(widget2, job_id) and stream3.final is not None, timeout=60_000)
    assert stream3.final == "done"
    assert stream3.blocks == 0
    np.testing.assert_array_equal(np.asarray(widget2.layers[job_id].data[:]), final)


@pytest.mark.gui
@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.timeout(300)
def test_view_a_running_job_remotely_on_demand(
    make_napari_viewer, volume, slurm_login_node, tmp_path, qtbot, monkeypatch
):
    """The on-demand choice: nothing is mirrored; the layer reads the output on the cluster over
    SFTP (ssh://, through the chunk cache) and fills in as the job's blocks land."""
    from napari_connectome.gui.remote_jobs import ON_DEMAND

    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE_DIR", str(tmp_path / "cache"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    viewer, layer = _open_viewer(make_napari_viewer, volume)
    widget = _widget(viewer)
    _type_profile(widget, slurm_login_node, workdir)
    widget.show_as.value = ON_DEMAND
    _type_job(widget, layer, delay_s=1.5)

    widget.submit_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget.live) == 1, timeout=60_000)
    (job_id,) = widget.live
    view = widget.live[job_id]
    qtbot.waitUntil(lambda: view.layer is not None, timeout=120_000)
    out = view.layer
    assert out.multiscale
    assert out.metadata["source"].startswith("ssh://")  # read over SFTP, not from a copy
    assert out.scale.tolist() == layer.scale.tolist()
    counts: list[int] = []

    def some_but_not_all() -> bool:
        shown = np.asarray(out._slice.image.raw)  # what the canvas draws
        counts.append(_filled_blocks(_Level0(out)))
        assert view.final is None or view.final == "done", widget.status.value
        return shown.any() and 0 < counts[-1] < 8

    qtbot.waitUntil(some_but_not_all, timeout=120_000)
    widget.select_job(job_id)
    assert "(live)" in widget._row(widget.records[job_id])[0]
    _screenshot(viewer, tmp_path, "remote-jobs-on-demand.png")

    qtbot.waitUntil(lambda: view.final is not None, timeout=180_000)
    assert view.final == "done", widget.status.value
    record = widget.records[job_id]
    final = zarr.open_array(str(Path(record.output) / "0"), mode="r")[:]
    assert final.max() > 1
    np.testing.assert_array_equal(np.asarray(out.data[0]), final)  # relabelled ids, not stale
    z = int(viewer.dims.point[0] // layer.scale[0])
    np.testing.assert_array_equal(np.asarray(out._slice.image.raw), final[z])
    assert widget.streams == {}  # nothing was mirrored
    assert not (Path(os.environ["NAPARI_CONNECTOME_CONFIG_DIR"]) / "stream-cache").exists()
    assert any((tmp_path / "cache" / "chunks").rglob("c/*"))  # chunks went through the cache


class _Level0:
    """A multiscale layer seen as its finest level (what _filled_blocks reads)."""

    def __init__(self, layer):
        self.data = layer.data[0]


@pytest.mark.gui
@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.timeout(300)
def test_cancel_a_running_job(make_napari_viewer, volume, slurm_login_node, tmp_path, qtbot):
    workdir = tmp_path / "work"
    workdir.mkdir()
    viewer, layer = _open_viewer(make_napari_viewer, volume)
    widget = _widget(viewer)
    _type_profile(widget, slurm_login_node, workdir)
    _type_job(widget, layer, delay_s=2.0)
    widget.submit_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget.streams) == 1, timeout=60_000)
    (job_id,) = widget.streams
    qtbot.waitUntil(
        lambda: _alive(widget, job_id) and widget.streams[job_id].blocks >= 1, timeout=120_000
    )

    start = _n_notes()
    widget.select_job(job_id)
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.streams[job_id].final is not None, timeout=60_000)
    assert widget.streams[job_id].final == "cancelled"
    qtbot.waitUntil(
        lambda: widget.statuses.get(job_id, {}).get("state") == "cancelled", timeout=30_000
    )
    assert any("cancel sent" in m for m in _notes_since(start))
    assert widget.statuses[job_id]["blocks_done"] < 8
    assert widget.submit_button.enabled


@pytest.mark.gui
@pytest.mark.ssh
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["unreachable", "host key changed"])
def test_a_cluster_that_cannot_be_reached_is_a_notification(
    fault, make_napari_viewer, volume, sshd_server, tmp_path, qtbot
):
    import asyncssh

    from napari_connectome.testing.processes import free_port

    changes = {}
    if fault == "unreachable":
        changes["port"] = free_port()  # nothing listens there
        expected = "cannot reach"
    else:
        other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        known = tmp_path / "known_hosts"
        known.write_text(f"[{sshd_server.host}]:{sshd_server.port} {other}")
        changes["known_hosts"] = known
        expected = "CHANGED"
    viewer, layer = _open_viewer(make_napari_viewer, volume)
    widget = _widget(viewer)
    _type_profile(widget, sshd_server, tmp_path, name="broken", **changes)

    start = _n_notes()
    widget.test_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.connection.value == "failed", timeout=60_000)
    notes = _notes_since(start)
    assert any(expected in m for m in notes), notes

    # submitting with the same profile fails the same way; nothing is left half done
    _type_job(widget, layer, delay_s=0.1)
    start = _n_notes()
    widget.submit_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert any(expected in m for m in _notes_since(start))
    assert widget.submit_button.enabled
    assert widget.test_button.enabled
    assert widget.records == {}
    assert widget.streams == {}
    assert list(tmp_path.glob("*.ome.zarr")) == []


@pytest.mark.gui
def test_opened_from_the_plugins_menu_and_bad_input_is_a_notification(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=False)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Remote jobs")
    assert widget.profiles.choice.value == "<new profile>"

    start = _n_notes()
    widget.profiles.profile_name.value = "has space"
    widget.profiles.save_button.clicked.emit()
    assert any("name" in m for m in _notes_since(start))
    assert list_profiles() == []

    widget.profiles.profile_name.value = "here"
    widget.profiles.workdir.value = str(tmp_path)
    start = _n_notes()
    widget.submit_button.clicked.emit()  # no image layer, no path on the cluster
    assert any("choose an image layer" in m for m in _notes_since(start))
    widget.input_path.value = f"{tmp_path}/em.h5:raw"
    widget.block.value = "64, 64"
    start = _n_notes()
    widget.submit_button.clicked.emit()
    assert any("three (z, y, x)" in m for m in _notes_since(start))
    assert not widget.busy
    assert widget.records == {}


@pytest.mark.gui
@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.timeout(180)
def test_a_job_the_scheduler_rejects_is_a_notification(
    make_napari_viewer, volume, slurm_login_node, tmp_path, qtbot
):
    workdir = tmp_path / "work"
    workdir.mkdir()
    viewer, layer = _open_viewer(make_napari_viewer, volume)
    widget = _widget(viewer)
    _type_profile(widget, slurm_login_node, workdir)
    widget.profiles.partition.value = "nonexistent"

    start = _n_notes()
    widget.test_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.connection.value == "failed", timeout=60_000)
    assert any("no partition 'nonexistent'" in m for m in _notes_since(start))

    _type_job(widget, layer, delay_s=0.1)
    start = _n_notes()
    widget.submit_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    notes = _notes_since(start)
    assert any("sbatch rejected the job" in m and "partition" in m for m in notes), notes
    assert widget.records == {}
    assert list(workdir.iterdir()) == []  # the staged output was removed again
    assert widget.submit_button.enabled


@pytest.mark.gui
@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.timeout(180)
def test_a_job_submitted_from_the_command_line_that_dies_is_listed_with_its_reason(
    make_napari_viewer, volume, slurm_login_node, tmp_path, qtbot
):
    import yaml

    from napari_connectome.cli import main

    workdir = tmp_path / "work"
    workdir.mkdir()
    viewer, _ = _open_viewer(make_napari_viewer, volume)
    widget = _widget(viewer)
    _type_profile(widget, slurm_login_node, workdir)
    spec = {
        "name": "dies",
        "input": f"{volume}:raw",
        "output": str(workdir / "dies.ome.zarr"),
        "block_shape": [20, 32, 32],
        "segmenter": {"kind": "plugin", "factory": "tests.test_jobs_helpers:failing_segmenter"},
        "backend": widget.profiles.profile().backend(workers=1).model_dump(mode="json"),
    }
    spec_file = tmp_path / "dies.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    assert main(["submit", str(spec_file)]) == 0

    start = _n_notes()
    widget.refresh_button.clicked.emit()
    assert len(widget.records) == 1
    (job_id,) = widget.records
    qtbot.waitUntil(
        lambda: widget.statuses.get(job_id, {}).get("state") == "failed", timeout=120_000
    )
    notes = _notes_since(start)
    assert any(f"{job_id} failed" in m and "exploded on purpose" in m for m in notes), notes
    assert widget._row(widget.records[job_id])[0] == "failed"
    assert widget.submit_button.enabled


@pytest.mark.gui
@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.timeout(180)
def test_a_layer_made_in_memory_is_uploaded_and_segmented(
    make_napari_viewer, volume, slurm_login_node, tmp_path, qtbot
):
    import h5py

    workdir = tmp_path / "work"
    workdir.mkdir()
    with h5py.File(volume, "r") as f:
        raw = f["raw"][:]
    viewer = make_napari_viewer(show=False)
    layer = viewer.add_image(raw, name="in memory", scale=(10, 10, 10))
    widget = _widget(viewer)
    _type_profile(widget, slurm_login_node, workdir)
    widget.image.value = layer
    widget.segmenter.value = "watershed"
    widget.block.value, widget.overlap.value, widget.workers.value = "20,32,32", "6", 1

    start = _n_notes()
    widget.submit_button.clicked.emit()  # the cluster cannot read a layer made in memory
    assert any("was not opened from a file" in m for m in _notes_since(start))

    widget.upload.value = True
    widget.submit_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget.streams) == 1, timeout=120_000)
    (job_id,) = widget.streams
    stream = widget.streams[job_id]
    qtbot.waitUntil(lambda: _alive(widget, job_id) and stream.final is not None, timeout=120_000)
    assert stream.final == "done"

    record = widget.records[job_id]
    uploaded = record.spec["input"]
    assert uploaded.endswith("-input.ome.zarr")
    np.testing.assert_array_equal(zarr.open_array(f"{uploaded}/0", mode="r")[:], raw)
    final = zarr.open_array(str(Path(record.output) / "0"), mode="r")[:]
    assert final.max() > 1
    np.testing.assert_array_equal(np.asarray(widget.layers[job_id].data[:]), final)
    assert sorted(p.name for p in workdir.iterdir()) == sorted(
        [Path(uploaded).name, Path(record.output).name]
    )


@pytest.mark.gui
@pytest.mark.ssh
@pytest.mark.timeout(120)
def test_a_listed_job_on_a_cluster_gone_says_unreachable_once(
    make_napari_viewer, sshd_server, tmp_path, qtbot
):
    import time

    from napari_connectome.jobs.registry import JobRecord, save_record
    from napari_connectome.testing.processes import free_port

    ssh = {
        "host": sshd_server.host,
        "port": free_port(),  # the login node is down
        "user": sshd_server.user,
        "key": str(sshd_server.client_key),
        "known_hosts": str(sshd_server.known_hosts),
    }
    save_record(
        JobRecord("old-job-1", "old", "slurm", "/x/out.ome.zarr", time.time(), "42", ssh=ssh)
    )
    viewer = make_napari_viewer(show=False)
    start = _n_notes()
    widget = _widget(viewer)  # lists the job and polls it at once
    assert list(widget.records) == ["old-job-1"]
    qtbot.waitUntil(
        lambda: widget.statuses.get("old-job-1", {}).get("state") == "unreachable", timeout=60_000
    )
    qtbot.wait(1500)  # a few more polls (every 0.5 s)
    notes = [m for m in _notes_since(start) if "old-job-1 unreachable" in m]
    assert len(notes) == 1
    assert "cannot reach" in notes[0]
    assert widget._row(widget.records["old-job-1"])[0] == "unreachable"
