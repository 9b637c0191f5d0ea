"""Meshes and skeletons of a whole segmentation for other viewers: neuroglancer precomputed meshes
read back by cloud-volume's decoder and ours, SWC skeletons stitched across blocks, on Dask."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.meshing.skeletons import read_swc, skeletonize_volume
from napari_connectome.meshing.volume_export import export_volume_meshes, read_precomputed_mesh
from napari_connectome.volumes import open_volume, write_ome_zarr

BIG = 2**60 + 5
VOXEL = (30.0, 8.0, 8.0)  # z, y, x nm
OFFSET = (60.0, 16.0, 80.0)


def _tube_volume() -> np.ndarray:
    seg = np.zeros((40, 64, 96), np.uint64)
    seg[16:26, 26:36, 4:92] = BIG  # a tube along x through every block
    seg[16:26, 6:58, 44:54] = BIG  # and a branch along y: a T
    seg[2:12, 4:20, 4:24] = 7  # a box
    return seg


@pytest.fixture(scope="module")
def seg_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshexport")
    path = root / "seg.ome.zarr"
    write_ome_zarr(
        _tube_volume(), path, voxel_size_nm=VOXEL, offset_nm=OFFSET, labels=True, chunks=16
    )
    return path


def _edges_twice(faces: np.ndarray) -> bool:
    """A closed surface: every undirected edge belongs to exactly two triangles."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return bool((counts == 2).all())


def test_precomputed_meshes_of_every_segment_read_back(seg_path, tmp_path, capsys):
    from cloudvolume.mesh import Mesh as CloudMesh

    dest = tmp_path / "meshes"
    assert main(["export-meshes", str(seg_path), str(dest), "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["segments"] == 2
    assert out["empty"] == 0
    assert json.loads((dest / "info").read_text()) == {"@type": "neuroglancer_legacy_mesh"}
    seg = _tube_volume()
    for sid in (7, BIG):
        manifest = json.loads((dest / f"{sid}:0").read_text())
        assert manifest == {"fragments": [f"{sid}:0:mesh"]}
        verts, faces = read_precomputed_mesh(dest, sid)
        # cloud-volume's own decoder of the legacy format reads the same triangles
        theirs = CloudMesh.from_precomputed((dest / f"{sid}:0:mesh").read_bytes())
        np.testing.assert_array_equal(theirs.vertices, verts)
        np.testing.assert_array_equal(theirs.faces, faces)
        assert _edges_twice(faces)
        # where neuroglancer draws the segment: voxel i spans [i, i + 1) * size + offset (x y z)
        zyx = np.argwhere(seg == np.uint64(sid))
        lo = zyx.min(0)[::-1] * np.array(VOXEL[::-1]) + np.array(OFFSET[::-1])
        hi = (zyx.max(0)[::-1] + 1) * np.array(VOXEL[::-1]) + np.array(OFFSET[::-1])
        vox = np.array(VOXEL[::-1])
        assert (verts.min(0) > lo - vox).all()
        assert (verts.min(0) < lo + vox).all()
        assert (verts.max(0) < hi + vox).all()
        assert (verts.max(0) > hi - vox).all()
        # enclosed volume (divergence theorem) close to the voxels' volume
        a, b, c = (verts[faces[:, k]].astype(np.float64) for k in range(3))
        volume = abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)
        assert volume == pytest.approx(len(zyx) * np.prod(VOXEL), rel=0.2)


def test_selected_segments_and_other_formats(seg_path, tmp_path):
    v = open_volume(seg_path)
    s = export_volume_meshes(v, tmp_path / "ply", segments=[7], fmt="ply")
    assert s.segments == 1
    assert sorted(p.name for p in (tmp_path / "ply").iterdir()) == ["7.ply"]
    with pytest.raises(UserInputError, match="do not occur"):
        export_volume_meshes(v, tmp_path / "none", segments=[12345])
    assert not (tmp_path / "none").exists()


def test_export_refuses_destinations_it_must_not_touch(seg_path, tmp_path, capsys):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    assert main(["export-meshes", str(seg_path), str(other), "--overwrite", "--quiet"]) == 2
    assert "not a folder of meshes" in capsys.readouterr().err
    assert (other / "thesis.tex").read_text() == "mine"
    assert main(["export-meshes", str(seg_path), str(seg_path / "meshes"), "--quiet"]) == 2
    assert not (seg_path / "meshes").exists()
    assert (
        main(["skeletonize", str(seg_path), str(tmp_path / "sk"), "--block-shape", "4", "16", "16"])
        == 2
    )
    assert main(["export-meshes", str(seg_path), str(tmp_path / "m"), "--segments", "0"]) == 2
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def _check_swc(path: Path, seg: np.ndarray, sid: int) -> np.ndarray:
    nodes = read_swc(path)
    assert len(nodes) > 0
    # within the segment's voxels (node at (i + 0.5) * size + offset)
    xyz = np.stack([nodes["x"], nodes["y"], nodes["z"]], axis=1)
    idx = np.floor((xyz - np.array(OFFSET[::-1])) / np.array(VOXEL[::-1])).astype(int)
    assert (seg[idx[:, 2], idx[:, 1], idx[:, 0]] == np.uint64(sid)).all()
    # one tree: a single root, every other node's parent is a node
    assert (nodes["parent"] == -1).sum() == 1
    ids = set(nodes["id"].tolist())
    assert all(p in ids for p in nodes["parent"][nodes["parent"] != -1].tolist())
    return xyz


def test_skeletons_are_stitched_across_blocks(seg_path, tmp_path, capsys):
    seg = _tube_volume()
    dest = tmp_path / "skeletons"
    rc = main(
        [
            "skeletonize",
            str(seg_path),
            str(dest),
            "--block-shape",
            "16",
            "32",
            "32",
            "--const",
            "40",
            "--quiet",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["segments"] == 2
    xyz = _check_swc(dest / f"{BIG}.swc", seg, BIG)
    # the T's arms reach (almost) their ends in x and y, across 3 x 2 blocks
    x_nm = (np.array([4, 92]) * VOXEL[2]) + OFFSET[2]
    y_nm = (np.array([6, 58]) * VOXEL[1]) + OFFSET[1]
    assert xyz[:, 0].min() < x_nm[0] + 8 * VOXEL[2]
    assert xyz[:, 0].max() > x_nm[1] - 8 * VOXEL[2]
    assert xyz[:, 1].min() < y_nm[0] + 8 * VOXEL[1]
    assert xyz[:, 1].max() > y_nm[1] - 8 * VOXEL[1]
    _check_swc(dest / "7.swc", seg, 7)


def test_skeletons_on_a_dask_cluster_of_processes(seg_path, tmp_path):
    from dask.distributed import Client, LocalCluster

    seg = _tube_volume()
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        s = skeletonize_volume(
            open_volume(seg_path), tmp_path / "sk", segments=[BIG], block_shape=(16, 32, 48),
            client=client,
        )  # fmt: skip
        m = export_volume_meshes(open_volume(seg_path), tmp_path / "m", client=client)
    assert s.segments == 1
    assert m.segments == 2
    _check_swc(tmp_path / "sk" / f"{BIG}.swc", seg, BIG)
    assert not (tmp_path / "sk" / "7.swc").exists()


def test_skeletonize_cli_subprocess_and_unknown_segment(seg_path, tmp_path):
    from napari_connectome.cli import skeletons as cli_skeletons
    from napari_connectome.meshing.skeletons import TEASAR

    assert cli_skeletons.TEASAR.items() <= TEASAR.items()  # the CLI's defaults are the library's
    proc = subprocess.run(
        [sys.executable, "-m", "napari_connectome", "skeletonize", str(seg_path),
         str(tmp_path / "s"), "--segments", "99", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "99" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()


class _BlockReadsOnly:
    """An array that refuses any read larger than one skeleton block (plus its overlap): dask
    computes a dask array handed to a task whole, which a volume of any size must never see."""

    def __init__(self, data: np.ndarray, limit: int) -> None:
        self.data, self.limit = data, limit
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        out = self.data[key]
        assert out.size <= self.limit, f"read {out.shape} at once"
        return out


def test_each_block_task_reads_its_block_only(tmp_path):
    import dask.array as da

    from napari_connectome.volumes import Volume

    seg = _tube_volume()
    reader = _BlockReadsOnly(seg, limit=17 * 33 * 33)
    data = da.from_array(reader, chunks=seg.shape)  # one dask chunk: the whole volume
    volume = Volume(
        name="seg", data=data, multiscale=[data], voxel_size_nm=VOXEL, offset_nm=OFFSET,
        axes="zyx", is_labels=True, source=str(tmp_path / "in-memory"),
    )  # fmt: skip
    s = skeletonize_volume(volume, tmp_path / "sk", block_shape=(16, 32, 32))
    assert s.segments == 2
    _check_swc(tmp_path / "sk" / f"{BIG}.swc", seg, BIG)


def test_a_segment_too_large_for_the_read_budget_is_left_out_with_a_warning(seg_path, tmp_path):
    import dataclasses

    from napari_connectome.errors import DataWarning

    v = open_volume(seg_path)
    single = dataclasses.replace(  # no pyramid, as an HDF5 segmentation
        v, multiscale=v.multiscale[:1], level_voxel_sizes=v.level_voxel_sizes[:1],
        level_offsets_nm=v.level_offsets_nm[:1],
    )  # fmt: skip
    # the box of 7 is 10 x 16 x 20 voxels (+2 margin); the T's box is far larger
    with pytest.warns(DataWarning, match="too large to mesh"):
        s = export_volume_meshes(single, tmp_path / "m", max_read_voxels=12 * 18 * 22)
    assert s.too_large == (BIG,)
    assert s.segments == 1
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["7:0", "7:0:mesh", "info"]
