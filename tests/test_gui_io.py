"""The plugin's readers, writers and sample data, driven through a real napari viewer."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from napari_connectome.cli import main as cli
from napari_connectome.samples import synthetic_em

pytestmark = pytest.mark.gui

PLUGIN = "napari-connectome"


def test_manifest_validates():
    npe2 = [sys.executable, "-m", "npe2", "validate", PLUGIN]
    result = subprocess.run(npe2, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_synthetic_sample_opens_as_image_and_ground_truth(make_napari_viewer):
    viewer = make_napari_viewer()

    viewer.open_sample(PLUGIN, "synthetic")

    image, labels = viewer.layers
    assert image.data.dtype == np.uint8
    assert labels.data.dtype == np.uint64
    assert type(labels).__name__ == "Labels"
    assert tuple(image.scale) == (10, 10, 10)
    assert np.array_equal(labels.data, synthetic_em((96, 96, 96), 0).labels)


@pytest.mark.realdata
def test_fib25_sample_downloads_verifies_and_opens(
    make_napari_viewer, fib25_h5, tmp_path, monkeypatch
):
    monkeypatch.setenv("NAPARI_CONNECTOME_DATA_URL", fib25_h5.parent.as_uri())
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()

    viewer.open_sample(PLUGIN, "fib25")

    names = [layer.name for layer in viewer.layers]
    assert names[0] == "raw"
    assert set(names) == {"raw", "labels", "fragments"}
    assert viewer.layers["raw"].data.shape == (250, 250, 250)
    assert "CC-BY" in viewer.layers["raw"].metadata["attribution"]
    assert not viewer.layers["fragments"].visible


@pytest.mark.realdata
def test_open_the_shared_h5_through_the_plugin(make_napari_viewer, fib25_h5):
    viewer = make_napari_viewer()

    layers = viewer.open(str(fib25_h5), plugin=PLUGIN)

    by_name = {layer.name: layer for layer in layers}
    raw, labels = by_name["raw"], by_name["labels"]
    assert type(raw).__name__ == "Image"
    assert raw.data.dtype == np.uint8
    assert raw.data.shape == (250, 250, 250)
    assert type(labels).__name__ == "Labels"
    assert labels.data.dtype == np.uint64
    assert tuple(raw.scale) == tuple(labels.scale) == (10, 10, 10)
    # Lazily read: a slice shows real voxels.
    with h5py.File(fib25_h5) as f:
        expected = f["raw"][125]
    assert np.array_equal(np.asarray(raw.data[125]), expected)


@pytest.fixture
def converted(tmp_path):
    """An image and its labels converted by the CLI into multiscale OME-Zarr, as a user would."""
    vol = synthetic_em((64, 64, 64), seed=2, voxel_size_nm=(10.0, 10.0, 10.0))
    src = tmp_path / "synthetic.h5"
    with h5py.File(src, "w") as f:
        for key, arr in (("raw", vol.image), ("labels", vol.labels)):
            f.create_dataset(key, data=arr, chunks=(32, 32, 32))
            f[key].attrs["resolution_nm_zyx"] = [10, 10, 10]
    image_dest, labels_dest = tmp_path / "raw.ome.zarr", tmp_path / "seg.ome.zarr"
    assert cli(["convert", f"{src}:raw", str(image_dest), "--chunks", "16", "--levels", "3"]) == 0
    args = ["convert", f"{src}:labels", str(labels_dest), "--labels", "--chunks", "16"]
    assert cli([*args, "--levels", "3"]) == 0
    return vol, image_dest, labels_dest


def test_open_converted_ome_zarr_as_multiscale_layers(make_napari_viewer, converted):
    vol, image_dest, labels_dest = converted
    viewer = make_napari_viewer()

    (image,) = viewer.open(str(image_dest), plugin=PLUGIN)
    (labels,) = viewer.open(str(labels_dest), plugin=PLUGIN)

    assert type(image).__name__ == "Image"
    assert image.multiscale
    assert len(image.data) == 3
    assert image.data[0].shape == (64, 64, 64)
    assert image.data[1].shape == (32, 32, 32)
    assert tuple(image.scale) == (10, 10, 10)
    assert np.array_equal(np.asarray(image.data[0]), vol.image)
    assert type(labels).__name__ == "Labels"
    assert labels.multiscale
    assert np.asarray(labels.data[0]).dtype == np.uint64
    assert np.array_equal(np.asarray(labels.data[0]), vol.labels)


def test_save_labels_and_image_then_reopen(make_napari_viewer, tmp_path):
    vol = synthetic_em((32, 48, 40), seed=4)
    viewer = make_napari_viewer()
    image = viewer.add_image(vol.image, name="em", scale=(8, 6, 6), translate=(80, 0, 12))
    labels = viewer.add_labels(vol.labels.astype(np.int32), name="seg", scale=(8, 6, 6))

    labels.save(str(tmp_path / "seg.ome.zarr"), plugin=PLUGIN)
    image.save(str(tmp_path / "em.ome.zarr"), plugin=PLUGIN)
    (seg,) = viewer.open(str(tmp_path / "seg.ome.zarr"), plugin=PLUGIN)
    (em,) = viewer.open(str(tmp_path / "em.ome.zarr"), plugin=PLUGIN)

    level0 = seg.data[0] if seg.multiscale else seg.data
    assert type(seg).__name__ == "Labels"
    assert np.array_equal(np.asarray(level0), vol.labels)
    assert tuple(seg.scale) == (8, 6, 6)
    em0 = em.data[0] if em.multiscale else em.data
    assert np.array_equal(np.asarray(em0), vol.image)
    assert tuple(em.translate) == (80, 0, 12)


def test_save_refuses_an_existing_path(make_napari_viewer, tmp_path):
    from napari_connectome.errors import UserInputError
    from napari_connectome.gui._writer import write_labels

    existing = tmp_path / "seg.ome.zarr"
    existing.mkdir()
    (existing / "precious.txt").write_text("user data")
    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.ones((16, 16, 16), np.uint32))

    # Through napari: nothing written (napari reports the refusal as a warning).
    with pytest.warns(UserWarning, match="not a valid writer"):
        assert labels.save(str(existing), plugin=PLUGIN) == []
    assert sorted(p.name for p in existing.iterdir()) == ["precious.txt"]
    assert (existing / "precious.txt").read_text() == "user data"
    # The writer's own message says what happened.
    with pytest.raises(UserInputError, match="already exists"):
        write_labels(str(existing), labels.data, {"scale": (1, 1, 1)})


def test_reader_declines_paths_it_cannot_read(tmp_path):
    from napari_connectome.gui._reader import get_reader

    (tmp_path / "notes.txt").write_text("hello")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")

    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(folder)) is None
