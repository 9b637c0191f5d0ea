"""The synthetic sample generator and the FIB-25 fetch (offline: file:// and loopback HTTP)."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_connectome.errors import UserInputError
from napari_connectome.samples import FIB25_FILENAME, fetch_fib25, synthetic_em


def test_synthetic_volume_is_em_like_with_dense_ground_truth():
    image, labels, voxel_size = synthetic_em((64, 64, 64), seed=3)

    assert image.shape == labels.shape == (64, 64, 64)
    assert image.dtype == np.uint8
    assert labels.dtype == np.uint64
    assert voxel_size == (10.0, 10.0, 10.0)
    # Dense: every voxel belongs to an object, ids are 1..n without gaps, many objects.
    ids = np.unique(labels)
    assert ids[0] == 1
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))
    assert len(ids) >= 8
    # Membranes: voxels at object boundaries are darker than object interiors.
    boundary = np.zeros(labels.shape, bool)
    boundary[:, :, 1:] |= labels[:, :, 1:] != labels[:, :, :-1]
    boundary[:, :, :-1] |= labels[:, :, 1:] != labels[:, :, :-1]
    assert image[boundary].mean() < image[~boundary].mean() - 30
    # 8-bit EM-like contrast, not saturated.
    assert 100 < image.mean() < 190
    assert image.std() > 15


def test_synthetic_volume_is_deterministic_per_seed():
    a = synthetic_em((48, 40, 56), seed=11)
    b = synthetic_em((48, 40, 56), seed=11)
    c = synthetic_em((48, 40, 56), seed=12)

    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_synthetic_volume_objects_are_connected():
    """Most ground-truth ids are one connected piece (the nearest-object fill keeps them whole)."""
    import cc3d

    _, labels, _ = synthetic_em((64, 64, 64), seed=5)
    pieces = cc3d.connected_components(labels, connectivity=6)
    assert len(np.unique(pieces)) <= 1.2 * len(np.unique(labels))


def test_synthetic_volume_rejects_a_tiny_shape():
    with pytest.raises(UserInputError, match="shape"):
        synthetic_em((8, 64, 64))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(cache))
    return cache


@pytest.mark.realdata
def test_fetch_fib25_from_a_file_url_verifies_and_caches(fib25_h5, cache_dir, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_DATA_URL", fib25_h5.parent.as_uri())

    path = fetch_fib25()

    assert path.parent == cache_dir
    assert path.name == FIB25_FILENAME
    with h5py.File(path) as f:
        assert f["raw"].shape == (250, 250, 250)
        assert f["raw"].dtype == np.uint8
        assert f["labels"].dtype == np.uint64
    # A second call uses the verified cache, even when the source has gone away.
    monkeypatch.setenv("NAPARI_CONNECTOME_DATA_URL", (cache_dir / "nowhere").as_uri())
    assert fetch_fib25() == path


def _serve(directory: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.realdata
def test_fetch_fib25_over_http_on_loopback(fib25_h5, tmp_path):
    server = _serve(fib25_h5.parent)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        path = fetch_fib25(base_url=url, cache_dir=tmp_path / "c")
    finally:
        server.shutdown()
    assert path.stat().st_size == fib25_h5.stat().st_size


def test_fetch_fib25_rejects_a_file_with_the_wrong_hash(tmp_path, cache_dir):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / FIB25_FILENAME).write_bytes(b"not the FIB-25 volume")
    server = _serve(mirror)
    try:
        for url in (mirror.as_uri(), f"http://127.0.0.1:{server.server_address[1]}"):
            with pytest.raises(UserInputError, match="sha256"):
                fetch_fib25(base_url=url)
    finally:
        server.shutdown()
    assert not (cache_dir / FIB25_FILENAME).exists()


def test_fetch_fib25_names_a_missing_source(tmp_path, cache_dir):
    with pytest.raises(UserInputError, match="not found"):
        fetch_fib25(base_url=(tmp_path / "empty").as_uri())
