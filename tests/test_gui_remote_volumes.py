"""Remote volumes in a real napari viewer: a user opens ``ssh://PROFILE/path`` of an OME-Zarr
(EM and its labels) on the "cluster" (the loopback sshd), only the chunks on screen travel, and a
network outage while viewing is a notification; the layer fills in by itself once it is back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_connectome.samples import synthetic_em
from tests.test_volumes_remote import relay, save_loopback_profile, user_dirs  # noqa: F401

pytestmark = [pytest.mark.gui, pytest.mark.ssh]
DOCS_IMAGES = os.environ.get("NAPARI_CONNECTOME_DOC_SCREENSHOTS")  # copy screenshots there
SHAPE = (48, 384, 384)


@pytest.fixture(scope="module")
def em_store(tmp_path_factory) -> Path:
    """EM with its segmentation as one OME-Zarr 0.5 (image + labels/seg, 3 levels, 16x64x64)."""
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image, write_labels

    vol = synthetic_em(SHAPE, seed=3, voxel_size_nm=(30.0, 8.0, 8.0))
    path = tmp_path_factory.mktemp("cluster") / "em.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    common = {
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "fmt": FormatV05(),
        "scale": {"z": 30.0, "y": 8.0, "x": 8.0},
        "scale_factors": [{"z": 1, "y": 2, "x": 2}, {"z": 1, "y": 4, "x": 4}],
        "storage_options": {"chunks": (16, 64, 64)},
    }
    write_image(vol.image, root, name="em", **common)
    write_labels(vol.labels.astype(np.uint32), root, name="seg", method="nearest", **common)
    return path


def _store(url: str):
    import gc

    from napari_connectome.volumes.remote import open_stores

    gc.collect()
    (store,) = [s for s in open_stores() if url.startswith(s.location.label)]
    return store


def _level0_chunks(group: Path) -> int:
    """Stored chunk files of a multiscale group's finest level (counted on disk)."""
    meta = zarr.open_group(str(group), mode="r").attrs["ome"]["multiscales"][0]
    level0 = group / meta["datasets"][0]["path"]
    return sum(1 for p in (level0 / "c").rglob("*") if p.is_file())


def _notes_since(start: int) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records[start:]]


def _n_notes() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def test_open_a_cluster_volume_by_url_and_read_only_what_is_shown(
    make_napari_viewer, sshd_server, em_store, tmp_path, qtbot
):
    save_loopback_profile(sshd_server, name="cluster")
    url = f"ssh://cluster{em_store}"
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1200, 900)

    layers = viewer.open(url, plugin="napari-connectome")  # the manifest's ssh://* pattern

    em, seg = layers
    assert (type(em).__name__, type(seg).__name__) == ("Image", "Labels")
    assert em.multiscale
    assert seg.multiscale
    assert em.metadata["source"] == url
    assert seg.metadata["source"] == f"{url}/labels/seg"
    assert tuple(em.scale) == (30.0, 8.0, 8.0)
    assert len(em.data) == 3
    store = _store(url)
    qtbot.waitUntil(lambda: store.counts["reads"] > 0, timeout=10_000)
    z = int(viewer.dims.point[0] // 30)
    local = synthetic_em(SHAPE, seed=3)
    np.testing.assert_array_equal(np.asarray(em.data[0][z]), local.image[z])
    np.testing.assert_array_equal(np.asarray(seg.data[0][z]), local.labels[z])
    viewer.reset_view()
    qtbot.wait(300)

    stored = _level0_chunks(em_store) + _level0_chunks(em_store / "labels" / "seg")
    assert stored == 2 * 3 * 6 * 6
    # one plane of each layer (6 x 6 chunks), and the thumbnails' coarsest level
    assert store.counts["reads"] < stored / 2, store.counts
    shot = tmp_path / "remote-volume.png"
    from imageio.v3 import imwrite

    imwrite(shot, viewer.screenshot(canvas_only=False, flash=False))
    assert shot.stat().st_size > 10_000
    if DOCS_IMAGES:
        shutil.copy(shot, Path(DOCS_IMAGES) / shot.name)


def test_a_bad_remote_url_is_a_message(make_napari_viewer, sshd_server, tmp_path):
    from napari_connectome.errors import UserInputError

    save_loopback_profile(sshd_server, name="cluster")
    viewer = make_napari_viewer()
    with pytest.raises(UserInputError, match="no zarr metadata"):
        viewer.open(f"ssh://cluster{tmp_path}/none.zarr", plugin="napari-connectome")
    with pytest.raises(UserInputError, match=r"no '\.', '\.\.'"):
        viewer.open("ssh://cluster/a/../b.zarr", plugin="napari-connectome")


def test_an_outage_while_viewing_is_a_notification_and_the_layer_fills_in_after(
    make_napari_viewer,
    relay,  # noqa: F811 (the fixture imported above)
    em_store,
    qtbot,
):
    url = f"ssh://relay{em_store}/labels/seg"
    viewer = make_napari_viewer(show=True)
    (seg,) = viewer.open(url, plugin="napari-connectome")
    store = _store(url)
    store.session.retry_s = 0.5
    qtbot.waitUntil(lambda: store.counts["reads"] > 0, timeout=10_000)
    start = _n_notes()

    relay.cut()
    viewer.dims.set_point(0, 30.0 * 40)  # a plane never shown: nothing of it is cached
    qtbot.waitUntil(lambda: bool(store.missed), timeout=10_000)
    qtbot.waitUntil(
        lambda: any("lost the connection" in m for m in _notes_since(start)), timeout=5_000
    )
    assert not np.asarray(seg._slice.image.raw).any()  # drawn empty, not a crash

    relay.restore()
    qtbot.waitUntil(lambda: any("reconnected" in m for m in _notes_since(start)), timeout=15_000)
    shown = lambda: np.asarray(seg._slice.image.raw)  # noqa: E731 (what the canvas draws)
    qtbot.waitUntil(lambda: not store.missed and shown().any(), timeout=15_000)
    z = round(viewer.dims.point[0] / 30.0)
    level = seg.data_level
    np.testing.assert_array_equal(shown(), np.asarray(seg.data[level][z])[: shown().shape[0]])
    assert store.session.logins == 2
