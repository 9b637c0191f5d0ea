"""A 10^12-voxel volume opens without reading data, and one 2D slice reads only its own chunks.

Reads are counted on zarr's real LocalStore (the store ``open_volume`` uses for a path), not timed.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from napari_connectome.volumes import open_volume

CHUNK = 250
N = 10_000


@pytest.fixture
def store_reads(monkeypatch):
    """Every key zarr reads from a local store, in order."""
    keys: list[str] = []
    original = LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        keys.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    return keys


@pytest.fixture
def teravoxel(tmp_path):
    """10000^3 uint8 (10^12 voxels) with 250^3 chunks; only two chunks hold data."""
    path = tmp_path / "huge.zarr"
    arr = zarr.create_array(path, shape=(N, N, N), chunks=(CHUNK,) * 3, dtype=np.uint8)
    arr.attrs["resolution"] = [8, 8, 8]
    block = np.random.default_rng(0).integers(1, 255, (CHUNK,) * 3, dtype=np.uint8)
    arr[5000:5250, 250:500, 9750:10000] = block
    arr[0:250, 0:250, 0:250] = 7
    return path, block


def _chunk_keys(keys):
    return [k for k in keys if re.fullmatch(r"c/\d+/\d+/\d+", k)]


def test_teravoxel_opens_without_reading_any_chunk(teravoxel, store_reads):
    path, _ = teravoxel
    vol = open_volume(path)
    assert vol.shape == (N, N, N)
    assert vol.voxel_size_nm == (8.0, 8.0, 8.0)
    assert vol.storage_chunks == (CHUNK,) * 3
    assert _chunk_keys(store_reads) == []
    assert len(store_reads) <= 5  # metadata documents only


def test_one_slice_reads_only_the_chunks_it_crosses(teravoxel, store_reads):
    path, block = teravoxel
    vol = open_volume(path)
    store_reads.clear()

    plane = vol.data[5100].compute()

    assert plane.shape == (N, N)
    np.testing.assert_array_equal(plane[250:500, 9750:], block[100])
    assert plane[:250].max() == 0
    read = _chunk_keys(store_reads)
    per_axis = N // CHUNK
    assert len(read) == per_axis * per_axis  # one row of chunks, each once
    assert {k.split("/")[1] for k in read} == {str(5100 // CHUNK)}


def test_a_small_view_reads_one_chunk(teravoxel, store_reads):
    path, block = teravoxel
    vol = open_volume(path)
    store_reads.clear()
    view = vol.data[5010, 300:400, 9800:9900].compute()
    np.testing.assert_array_equal(view, block[10, 50:150, 50:150])
    assert _chunk_keys(store_reads) == [f"c/{5010 // CHUNK}/1/{9800 // CHUNK}"]
