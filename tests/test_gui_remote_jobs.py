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


def _status(widget, job_id: str, field: str = "state", default=None):
    """One field of a job's last polled JobStatus (``default`` before the first poll)."""
    status = widget.statuses.get(job_id)
    return default if status is None else getattr(status, field)


def _alive(widget, job_id: str) -> bool:
    """For waits: a stream that failed ends the test at once, with the widget's message."""
    stream = widget.streams.get(job_id)
    if stream is not None and stream.final == "error":
        raise RuntimeError(f"streaming failed: {widget.status.value}")
    return True


def _show_jobs(widget, qtbot) -> None:
    """What a user does to watch jobs: fold the saved profile away, scroll to the job list."""
    widget.profiles.editing.value = False
    qtbot.wait(100)  # the form's new height
    bar = widget.scroll.verticalScrollBar()
    bar.setValue(bar.maximum())  # as the mouse wheel would, to the end
    qtbot.wait(300)  # repainted before the screenshot


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
    qtbot.waitUntil(lambda: _status(widget, job_id, "blocks_done", 0) >= 2, timeout=60_000)
    widget.select_job(job_id)
    viewer.dims.order = (2, 0, 1)  # a z-y view: finished blocks above, the rest still empty
    _show_jobs(widget, qtbot)
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
    qtbot.waitUntil(lambda: _status(widget2, job_id) == "done", timeout=30_000)

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
    _show_jobs(widget2, qtbot)
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
    _show_jobs(widget, qtbot)
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
    qtbot.waitUntil(lambda: _status(widget, job_id) == "cancelled", timeout=30_000)
    assert any("cancel sent" in m for m in _notes_since(start))
    assert widget.statuses[job_id].blocks_done < 8
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
    assert expected in widget.connection_detail.value  # beside the button, not only a toast

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
    qtbot.waitUntil(lambda: _status(widget, job_id) == "failed", timeout=120_000)
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
    qtbot.waitUntil(lambda: _status(widget, "old-job-1") == "unreachable", timeout=60_000)
    qtbot.wait(1500)  # a few more polls (every 0.5 s)
    notes = [m for m in _notes_since(start) if "old-job-1 unreachable" in m]
    assert len(notes) == 1
    assert "cannot reach" in notes[0]
    assert widget._row(widget.records["old-job-1"])[0] == "unreachable"


# -- the dock as a new user meets it (issue 19) --
def _click(qtbot, button) -> None:
    """A real left click on a magicgui button's Qt widget."""
    from qtpy.QtCore import Qt

    qtbot.mouseClick(button.native, Qt.LeftButton)


@pytest.mark.gui
def test_the_dock_fits_a_1280x800_window_and_scrolls(make_napari_viewer, qtbot, tmp_path):
    from qtpy.QtCore import QPoint, QPointF, Qt
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Remote jobs")
    qtbot.waitUntil(lambda: widget.native.isVisible(), timeout=10_000)
    QApplication.processEvents()
    qtbot.wait(200)
    assert window.height() <= 800, window.height()
    assert window.minimumSizeHint().height() <= 800
    scroll = widget.scroll
    assert isinstance(scroll, QScrollArea)
    assert widget.native.isAncestorOf(scroll)  # docked with the dock's content
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0  # the form is taller than the dock: it scrolls, the window does not
    refresh = widget.refresh_button.native
    bottom = lambda: refresh.mapTo(scroll.viewport(), QPoint(0, refresh.height())).y()  # noqa: E731
    assert bottom() > scroll.viewport().height()  # the last buttons start out of view
    bar.setValue(0)
    qtbot.wait(300)
    _screenshot(viewer, tmp_path, "remote-jobs-first-run.png")
    viewport = scroll.viewport()
    centre = QPointF(viewport.width() / 2, viewport.height() / 2)
    for _ in range(40):  # the mouse wheel, turned down over the form
        event = QWheelEvent(
            centre,
            QPointF(viewport.mapToGlobal(centre.toPoint())),
            QPoint(0, -120),
            QPoint(0, -120),
            Qt.NoButton,
            Qt.NoModifier,
            Qt.ScrollUpdate,
            False,
        )
        QApplication.sendEvent(viewport, event)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum(), timeout=5_000)
    assert 0 < bottom() <= viewport.height()  # scrolled into view


@pytest.mark.gui
def test_first_run_hint_points_to_the_docs_and_the_try_it_script(make_napari_viewer, qtbot):
    from napari_connectome.gui.remote_jobs import TRY_IT

    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Remote jobs")
    qtbot.waitUntil(widget.native.isVisible, timeout=10_000)
    assert widget.hint.native.isVisible()
    text = widget.hint.native.text()
    assert "docs/hpc.md" in text
    assert TRY_IT in text
    assert (REPO / TRY_IT).is_file()  # the script the hint names exists
    assert (REPO / "docs" / "hpc.md").as_uri() in text  # a link to this checkout's docs
    assert widget.hint.native.openExternalLinks()

    widget.profiles.profile_name.value = "mine"
    widget.profiles.workdir.value = "/scratch/me"
    _click(qtbot, widget.profiles.save_button)
    assert list_profiles() == ["mine"]
    assert widget.hint.native.isHidden()  # set up: the hint goes
    _click(qtbot, widget.profiles.delete_button)
    assert list_profiles() == []
    assert not widget.hint.native.isHidden()


def _job_yaml(tmp_path: Path, **backend) -> Path:
    import yaml

    spec = {
        "name": "try-slurm",
        "input": "/data/synthetic.h5:raw",
        "output": "/scratch/me/jobs/result.ome.zarr",
        "segmenter": {"kind": "watershed"},
        "backend": {
            "kind": "slurm",
            "workers": 1,
            "resources": {
                "partition": "debug",
                "walltime": "00:10:00",
                "python": "/opt/nc/bin/python",
                "setup": ["module load conda"],
            },
            "ssh": {
                "host": "127.0.0.1",
                "port": 2222,
                "user": "me",
                "key": "/home/me/.ssh/id_nc",
                "known_hosts": "/home/me/.ssh/known_hosts_nc",
            },
            **backend,
        },
    }
    path = tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _import_through_the_dialog(qtbot, widget, path: Path) -> None:
    """Press Import, pick the file in the (Qt, non-native) file dialog, press its Open."""
    _click(qtbot, widget.import_button)
    dialog = widget._import_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5_000)
    dialog.selectFile(str(path))
    dialog.accept()
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5_000)


@pytest.mark.gui
def test_a_cluster_profile_is_imported_from_a_job_yaml(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Remote jobs")
    _import_through_the_dialog(qtbot, widget, _job_yaml(tmp_path))
    form = widget.profiles
    assert form.editing.value
    assert (form.profile_name.value, form.host.value, form.port.value) == (
        "try-slurm",
        "127.0.0.1",
        2222,
    )
    assert (form.user.value, form.key.value) == ("me", "/home/me/.ssh/id_nc")
    assert form.known_hosts.value == "/home/me/.ssh/known_hosts_nc"
    assert (form.scheduler.value, form.partition.value, form.walltime.value) == (
        "slurm",
        "debug",
        "00:10:00",
    )
    assert form.python.value == "/opt/nc/bin/python"
    assert form.setup.value == "module load conda"
    assert form.workdir.value == "/scratch/me/jobs"  # the folder of the spec's output
    assert "imported profile 'try-slurm'" in widget.status.value
    assert list_profiles() == []  # nothing saved before Save profile
    _click(qtbot, form.save_button)
    saved = load_profile("try-slurm")
    assert saved.ssh().model_dump() == {
        "host": "127.0.0.1",
        "port": 2222,
        "user": "me",
        "key": "/home/me/.ssh/id_nc",
        "known_hosts": "/home/me/.ssh/known_hosts_nc",
        "jump_host": None,
        "connect_timeout_s": 20.0,
    }

    # a spec that is not a cluster's, and a file that is not a spec, are said; nothing changes
    start = _n_notes()
    _import_through_the_dialog(qtbot, widget, _job_yaml(tmp_path, kind="local", ssh=None))
    assert any("backend is 'local'" in m for m in _notes_since(start))
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(b"\x00\x01 not yaml")
    start = _n_notes()
    _import_through_the_dialog(qtbot, widget, junk)
    assert any("binary file" in m for m in _notes_since(start))
    assert list_profiles() == ["try-slurm"]


@pytest.mark.gui
def test_test_connection_answers_beside_the_button(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Remote jobs")
    # a desk without Slurm (PATH without sinfo), host left empty
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    widget.profiles.workdir.value = str(tmp_path)
    status_before = widget.status.value
    _click(qtbot, widget.test_button)
    assert widget.connection.value == "enter a host"
    assert "login host" in widget.connection_detail.value
    assert "sinfo" in widget.connection_detail.value
    assert widget.status.value == status_before  # nothing at the bottom, far from the button
    assert not widget.busy  # nothing was run
    # on screen the answer sits right under the button (not at the bottom of the dock)
    from qtpy.QtCore import QPoint

    qtbot.waitUntil(widget.connection_detail.native.isVisible, timeout=5_000)
    form = widget.form.native
    form.layout().activate()  # place the label that just appeared
    button = widget.test_button.native
    button_bottom = button.mapTo(form, QPoint(0, button.height())).y()
    detail_top = widget.connection_detail.native.mapTo(form, QPoint(0, 0)).y()
    assert 0 <= detail_top - button_bottom < 30
    assert widget.status.native.mapTo(form, QPoint(0, 0)).y() - button_bottom > 300


@pytest.mark.gui
def test_a_path_and_a_layer_say_which_is_used(make_napari_viewer, volume, qtbot, tmp_path):
    viewer, layer = _open_viewer(make_napari_viewer, volume)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Remote jobs")
    assert widget.image.value is layer
    assert widget.input_note.native.isHidden()  # one input: nothing to say
    widget.profiles.workdir.value = str(tmp_path)
    assert widget.job_spec().input == layer.metadata["source"]
    assert widget.result_placement_layer() is layer

    widget.input_path.native.setFocus()
    qtbot.keyClicks(widget.input_path.native, "/scratch/other.zarr/raw")
    assert not widget.input_note.native.isHidden()
    note = widget.input_note.value
    assert "reads the path" in note
    assert f"not layer {layer.name!r}" in note
    assert widget.job_spec().input == "/scratch/other.zarr/raw"
    # the result of that job is placed by its own metadata, not over this layer
    assert widget.result_placement_layer() is None

    widget.upload.value = True
    assert "the path is not used" in widget.input_note.value
    assert widget.result_placement_layer() is layer
    widget.upload.value = False
    widget.input_path.value = ""
    assert widget.input_note.native.isHidden()


@pytest.mark.gui
@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.timeout(180)
def test_the_try_it_job_yaml_becomes_a_working_profile(
    make_napari_viewer, slurm_login_node, tmp_path, qtbot
):
    """What the first-run hint says, done: the try-it script's kind of job.yaml (Slurm over SSH to
    the loopback login node) is imported, saved and its connection tested, in a few clicks."""
    import yaml

    login = slurm_login_node
    spec = {
        "name": "try-slurm",
        "input": f"{tmp_path}/synthetic.h5:raw",
        "output": str(tmp_path / "result.ome.zarr"),
        "segmenter": {"kind": "watershed", "threshold": 110},
        "backend": {
            "kind": "slurm",
            "workers": 1,
            "resources": {
                "partition": "debug",
                "walltime": "00:10:00",
                "python": sys.executable,
                "setup": [f"export PYTHONPATH={REPO}"],
            },
            "ssh": {
                "host": login.host,
                "port": login.port,
                "user": login.user,
                "key": str(login.client_key),
                "known_hosts": str(login.known_hosts),
            },
        },
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Remote jobs")
    _import_through_the_dialog(qtbot, widget, path)
    _click(qtbot, widget.profiles.save_button)
    assert list_profiles() == ["try-slurm"]
    _click(qtbot, widget.test_button)
    qtbot.waitUntil(lambda: widget.connection.value in ("connected", "failed"), timeout=60_000)
    assert widget.connection.value == "connected", widget.connection_detail.value
    assert "debug" in widget.connection_detail.value  # sinfo's answer, under the button
    shown = widget.connection_detail.value.replace("\u200b", "")  # wrap points in paths
    assert str(tmp_path) in shown  # the work dir was found
