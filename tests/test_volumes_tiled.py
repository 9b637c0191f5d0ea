"""The virtual tiled volume (volumes/read_tiled.py): a tile repeated with id offsets."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from napari_connectome.errors import UserInputError
from napari_connectome.graph import compute_region_graph
from napari_connectome.proofread import ProofreadSession
from napari_connectome.proofread.reference import create_project
from napari_connectome.volumes import open_volume, write_ome_zarr

TILE = (8, 16, 16)
REPS = (2, 2, 1)


def tile_labels() -> np.ndarray:
    """4^3 cubes numbered 1..32 (uint16), plus background in one corner."""
    grid = [s // 4 for s in TILE]
    ids = np.arange(1, int(np.prod(grid)) + 1, dtype=np.uint16).reshape(grid)
    out = np.kron(ids, np.ones((4, 4, 4), np.uint16)).astype(np.uint16)
    out[:2, :2, :2] = 0
    return out


def tile_image() -> np.ndarray:
    img = np.full(TILE, 200, np.uint8)
    img[:, :, 7:9] = 20  # a dark membrane through the middle of every copy
    return img


def numpy_tiling(tile: np.ndarray, reps, stride: int) -> np.ndarray:
    out = np.zeros(tuple(t * r for t, r in zip(tile.shape, reps)), np.uint64)
    for t, pos in enumerate(np.ndindex(*reps)):
        sl = tuple(slice(p * s, (p + 1) * s) for p, s in zip(pos, tile.shape))
        out[sl] = np.where(tile > 0, tile.astype(np.uint64) + np.uint64(t * stride), 0)
    return out


def write_tiled(folder: Path, tile: Path, reps, stride: int, **extra) -> Path:
    folder.mkdir(parents=True)
    meta = {"format": "napari-connectome-tiled", "tile": str(tile), "reps": list(reps)}
    (folder / "tiled.json").write_text(json.dumps({**meta, "id_stride": stride, **extra}))
    return folder


@pytest.fixture
def tiled(tmp_path) -> tuple[Path, Path, int]:
    seg_tile = tmp_path / "tiles" / "seg.ome.zarr"
    seg_tile.parent.mkdir()
    write_ome_zarr(tile_labels(), seg_tile, labels=True, chunks=8, levels=2, voxel_size_nm=(8,) * 3)
    em_tile = tmp_path / "tiles" / "em.ome.zarr"
    write_ome_zarr(tile_image(), em_tile, chunks=8, levels=2, voxel_size_nm=(8,) * 3)
    stride = int(tile_labels().max()) + 1
    seg = write_tiled(tmp_path / "seg", seg_tile, REPS, stride)
    em = write_tiled(tmp_path / "em", Path("..") / "tiles" / "em.ome.zarr", REPS, 0)  # relative
    return seg, em, stride


def test_tiling_reads_equal_to_numpy_with_offsets(tiled):
    seg, em, stride = tiled
    vol = open_volume(seg)
    want = numpy_tiling(tile_labels(), REPS, stride)
    assert vol.format == "tiled"
    assert vol.is_labels
    assert vol.dtype == np.uint64
    assert vol.shape == want.shape
    assert vol.storage_chunks == (8, 8, 8)
    assert vol.voxel_size_nm == (8.0, 8.0, 8.0)
    np.testing.assert_array_equal(vol.data.compute(), want)
    # regions across copies, single planes, and a pickled reader (what a Dask worker gets)
    np.testing.assert_array_equal(np.asarray(vol.data[5:12, 3:29, 2:9]), want[5:12, 3:29, 2:9])
    from napari_connectome.volumes.read_tiled import TiledArray

    arr = pickle.loads(pickle.dumps(TiledArray(str(seg.parent / "tiles" / "seg.ome.zarr"), 0,
                                               TILE, np.uint16, REPS, stride)))  # fmt: skip
    np.testing.assert_array_equal(arr[9], want[9])
    np.testing.assert_array_equal(arr[..., 3], want[..., 3])
    # level 1 is the tile's level 1 tiled the same way
    tile1 = open_volume(seg.parent / "tiles" / "seg.ome.zarr", level=1).data.compute()
    assert len(vol.multiscale) == 2
    np.testing.assert_array_equal(vol.multiscale[1].compute(), numpy_tiling(tile1, REPS, stride))
    img = open_volume(em)
    assert img.dtype == np.uint8
    assert not img.is_labels
    np.testing.assert_array_equal(img.data.compute(), np.tile(tile_image(), REPS))


def test_project_by_reference_on_a_tiled_volume_opens_and_merges(tiled, tmp_path):
    seg, em, stride = tiled
    compute_region_graph(open_volume(seg), seg / "region_graph", image=open_volume(em))
    project = create_project(tmp_path / "p", str(seg), image=str(em))
    meta = json.loads((project / "project.json").read_text())
    assert meta["region_graph"]["path"] == str((seg / "region_graph").resolve())  # reused
    assert not (project / "region_graph").exists()
    want = numpy_tiling(tile_labels(), REPS, stride)
    with ProofreadSession.open(project) as s:
        assert len(s.table.frag_ids) == len(np.unique(want)) - 1
        a, b = int(want[4, 4, 4]), int(want[4, 20, 4])  # the same cube in two copies (y)
        assert a != b
        assert s.segment_at((4, 4, 4)) == a
        s.merge([a, b])
        np.testing.assert_array_equal(s.labels()[4, 20], np.where(want[4, 20] == b, a, want[4, 20]))
        assert s.segment_info(a).size == 2 * 64
        s.undo()
        np.testing.assert_array_equal(s.labels(), want)
        # a split across the copies' face: the two copies' cubes touch at y = 16
        c, d = int(want[4, 15, 4]), int(want[4, 16, 4])
        s.merge([c, d])
        plan = s.preview_split(c, [(4, 15, 4)], [(4, 16, 4)])
        assert plan.method == "mincut"
        assert list(plan.side_b) == [d]


def test_bad_tiled_volumes_are_refused(tiled, tmp_path):
    seg, _, stride = tiled
    tile = seg.parent / "tiles" / "seg.ome.zarr"
    low = write_tiled(tmp_path / "low", tile, REPS, 10)  # ids up to 32 do not fit below 10
    with pytest.raises(UserInputError, match="id_stride"):
        open_volume(low).data.compute()
    with pytest.raises(UserInputError, match="reps"):
        open_volume(write_tiled(tmp_path / "r", tile, [2, 0, 1], stride))
    odd = tmp_path / "odd.ome.zarr"
    write_ome_zarr(np.ones((6, 8, 8), np.uint16), odd, labels=True, chunks=4)
    with pytest.raises(UserInputError, match="whole number"):
        open_volume(write_tiled(tmp_path / "o", odd, REPS, 2))
