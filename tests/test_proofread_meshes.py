"""Segment meshes: accuracy against analytic shapes, the level rule, the cache, the file formats
and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_connectome.errors import UserInputError
from napari_connectome.meshing import (
    MeshCache,
    mesh_segment,
    read_ply,
    write_meshes,
)
from napari_connectome.volumes.pyramid import downsample_mode

VOXEL = (8.0, 6.0, 4.0)  # anisotropic, so axis order and scaling mistakes show


def ellipsoid(shape=(44, 60, 76), radii=(14, 22, 30), ids=(5, 7)):
    """Fragments: an ellipsoid cut into two fragments (left / right half) in a background fragment
    1; returns (fragments, mask, radii)."""
    g = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    c = (np.array(shape) - 1) / 2
    d = sum(((g[k] - c[k]) / radii[k]) ** 2 for k in range(3))
    mask = d <= 1
    frag = np.where(mask, np.where(g[2] < c[2], ids[0], ids[1]), 1).astype(np.uint64)
    return frag, mask, radii


def box_of(mask):
    where = np.argwhere(mask)
    return where.min(0), where.max(0) + 1


def ellipsoid_area(a, b, c):
    """Knud Thomsen's approximation (within 1.1% of the exact surface area)."""
    p = 1.6075
    return 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def pyramid(frag, n=3):
    levels = [(frag, (1, 1, 1))]
    for k in range(1, n):
        levels.append((downsample_mode(levels[-1][0], (2, 2, 2)), (2**k,) * 3))
    return levels


def test_an_ellipsoid_meshes_closed_with_its_area_and_volume_in_nm():
    frag, mask, radii = ellipsoid()
    lo, hi = box_of(mask)
    mesh = mesh_segment([frag], [5, 7], lo, hi, VOXEL, voxels=int(mask.sum()), segment=5)
    a, b, c = (r * v for r, v in zip(radii, VOXEL))
    assert mesh.area() == pytest.approx(ellipsoid_area(a, b, c), rel=0.03)
    assert mesh.volume() == pytest.approx(4 / 3 * np.pi * a * b * c, rel=0.02)
    # closed and manifold: every edge is shared by exactly two faces, with opposite directions
    f = mesh.faces.astype(np.int64)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    fwd = {tuple(e) for e in edges.tolist()}
    assert len(fwd) == len(edges)
    assert all((v, u) in fwd for u, v in fwd)
    # vertices z, y, x in nm, inside the box (voxel centre i at i * voxel size; the voxels' faces
    # half a voxel out, smoothing may move a tip a little further)
    vs = np.array(VOXEL)
    assert np.all(mesh.vertices >= (lo - 0.75) * vs)
    assert np.all(mesh.vertices <= (hi - 0.25) * vs)
    centre = (np.array(frag.shape) - 1) / 2 * vs
    assert np.allclose(mesh.vertices.mean(0), centre, atol=VOXEL[0])
    assert mesh.level == 0
    assert mesh.segment == 5


def test_only_the_segments_fragments_are_meshed():
    frag, mask, _ = ellipsoid()
    lo, hi = box_of(mask)
    half = mesh_segment([frag], [5], lo, hi, VOXEL)
    whole = mesh_segment([frag], [5, 7], lo, hi, VOXEL)
    assert half.volume() == pytest.approx(whole.volume() / 2, rel=0.05)
    assert half.vertices[:, 2].max() < whole.vertices[:, 2].max() * 0.6


def test_the_coarsest_level_that_keeps_the_shape_is_chosen():
    frag, mask, radii = ellipsoid((100, 132, 164), (40, 55, 70))
    lo, hi = box_of(mask)
    levels = pyramid(frag, 4)
    fine = mesh_segment(levels, [5, 7], lo, hi, VOXEL, voxels=int(mask.sum()), level=0)
    mesh = mesh_segment(levels, [5, 7], lo, hi, VOXEL, voxels=int(mask.sum()))
    assert mesh.level == 2  # 141 voxels wide at level 0: level 2 is 35 wide, level 3 only 18
    assert mesh.factors == (4, 4, 4)
    assert len(mesh.vertices) < len(fine.vertices) / 8
    a, b, c = (r * v for r, v in zip(radii, VOXEL))
    assert mesh.volume() == pytest.approx(4 / 3 * np.pi * a * b * c, rel=0.03)
    assert np.allclose(mesh.vertices.mean(0), fine.vertices.mean(0), atol=VOXEL[0])


def test_a_thin_segment_is_meshed_from_a_finer_level():
    """A long thin rod is wide enough along its axis for level 2, but 2 voxels thick there: the
    rule goes back to the level where it is still solid."""
    frag = np.ones((24, 24, 200), np.uint64)
    frag[8:16, 8:16, 10:190] = 3  # 8 x 8 voxels thick, 180 long
    lo, hi = (8, 8, 10), (16, 16, 190)
    mesh = mesh_segment(pyramid(frag, 4), [3], lo, hi, VOXEL, voxels=8 * 8 * 180)
    assert mesh.level == 0
    forced = mesh_segment(pyramid(frag, 4), [3], lo, hi, VOXEL, voxels=8 * 8 * 180, level=2)
    assert forced.level == 2


def test_factors_relative_to_the_previous_level_are_refused():
    frag, mask, _ = ellipsoid()
    lo, hi = box_of(mask)
    levels = pyramid(frag, 3)
    levels[2] = (levels[2][0], (2, 2, 2))
    with pytest.raises(ValueError, match="relative to level 0"):
        mesh_segment(levels, [5], lo, hi, VOXEL)


def test_a_box_too_large_for_every_level_is_refused():
    frag, mask, _ = ellipsoid()
    lo, hi = box_of(mask)
    with pytest.raises(UserInputError, match="too large"):
        mesh_segment([frag], [5], lo, hi, VOXEL, max_read_voxels=1000)


def test_a_simplified_mesh_keeps_to_its_vertex_budget():
    frag, mask, _ = ellipsoid()
    lo, hi = box_of(mask)
    full = mesh_segment([frag], [5, 7], lo, hi, VOXEL)
    small = mesh_segment([frag], [5, 7], lo, hi, VOXEL, max_vertices=len(full.vertices) // 4)
    assert len(small.vertices) <= len(full.vertices) // 4 * 1.2
    assert small.volume() == pytest.approx(full.volume(), rel=0.03)


def test_ply_obj_and_precomputed_files(tmp_path):
    frag, mask, _ = ellipsoid()
    lo, hi = box_of(mask)
    meshes = [
        mesh_segment([frag], [5], lo, hi, VOXEL, segment=5),
        mesh_segment([frag], [7], lo, hi, VOXEL, segment=7),
    ]
    ply = write_meshes(meshes, tmp_path / "ply", "ply")
    assert sorted(p.name for p in ply.iterdir()) == ["5.ply", "7.ply"]
    v, f = read_ply(ply / "5.ply")
    assert np.array_equal(v, meshes[0].vertices[:, ::-1])  # x, y, z
    assert np.array_equal(f, meshes[0].faces[:, ::-1])  # mirrored axes, reversed winding
    header = (ply / "5.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert f"element vertex {len(v)}" in header

    obj = write_meshes(meshes, tmp_path / "obj", "obj")
    lines = (obj / "7.obj").read_text().splitlines()
    vs = np.array([ln.split()[1:] for ln in lines if ln.startswith("v ")], float)
    fs = np.array([ln.split()[1:] for ln in lines if ln.startswith("f ")], int)
    assert np.allclose(vs, meshes[1].vertices[:, ::-1], atol=1e-3)
    assert np.array_equal(fs - 1, meshes[1].faces[:, ::-1])

    pre = write_meshes(meshes, tmp_path / "pre", "precomputed")
    assert json.loads((pre / "info").read_text()) == {"@type": "neuroglancer_legacy_mesh"}
    assert json.loads((pre / "5:0").read_text()) == {"fragments": ["5:0:mesh"]}
    raw = (pre / "5:0:mesh").read_bytes()
    n = int(np.frombuffer(raw[:4], "<u4")[0])
    assert n == len(meshes[0].vertices)
    verts = np.frombuffer(raw[4 : 4 + 12 * n], "<f4").reshape(n, 3)
    tris = np.frombuffer(raw[4 + 12 * n :], "<u4").reshape(-1, 3)
    assert np.array_equal(verts, meshes[0].vertices[:, ::-1])
    assert np.array_equal(tris, meshes[0].faces[:, ::-1])

    with pytest.raises(UserInputError, match="exists"):
        write_meshes(meshes, tmp_path / "ply", "ply")
    with pytest.raises(UserInputError, match="unknown mesh format"):
        write_meshes(meshes, tmp_path / "stl", "stl")
    assert not (tmp_path / "stl").exists()


def test_the_cache_is_bounded_by_bytes_and_least_recently_used_goes_first():
    frag, mask, _ = ellipsoid()
    lo, hi = box_of(mask)
    mesh = mesh_segment([frag], [5], lo, hi, VOXEL)
    cache = MeshCache(max_bytes=int(mesh.nbytes * 2.5))
    for k in "abc":
        cache.put(k, mesh)
    assert "a" not in cache
    assert cache.get("b") is mesh
    cache.put("d", mesh)
    assert "c" not in cache
    assert "b" in cache
    assert cache.nbytes <= cache.max_bytes


# ---- a proofreading session ---------------------------------------------------------------------
@pytest.fixture
def session(tmp_path):
    from napari_connectome.proofread import ProofreadSession

    frag, _mask, _ = ellipsoid()
    frag[frag == 1] = 0
    other = np.zeros_like(frag)
    other[2:12, 2:14, 2:20] = 9  # a box in a corner: a second segment
    frag = np.where(other > 0, other, frag)
    s = ProofreadSession.create(tmp_path / "proj", frag, voxel_size_nm=VOXEL, chunks=16)
    yield s
    s.close()


def test_session_meshes_are_cached_per_segment_and_table_state(session):
    from napari_connectome.proofread.meshes import MeshCache, segment_mesh

    cache = MeshCache()
    m5 = segment_mesh(session, 5, cache=cache)
    assert segment_mesh(session, 5, cache=cache) is m5  # a cache hit is the same object
    info = session.segment_info(5)
    vs = np.array(VOXEL)
    assert np.all(m5.vertices >= (np.array(info.bbox_lo) - 0.75) * vs)
    assert np.all(m5.vertices <= (np.array(info.bbox_hi) - 0.25) * vs)
    m9 = segment_mesh(session, 9, cache=cache)
    session.merge([5, 7])
    merged = segment_mesh(session, 5, cache=cache)
    assert merged is not m5  # the table changed the segment's fragments: a new mesh
    assert merged.volume() == pytest.approx(2 * m5.volume(), rel=0.05)
    assert segment_mesh(session, 9, cache=cache) is m9  # an untouched segment keeps its mesh
    session.undo()
    assert segment_mesh(session, 5, cache=cache) is m5  # back to the same state: the same key


def test_cli_writes_meshes_of_named_segments(session, tmp_path):
    from napari_connectome.meshing.formats import read_ply

    project = session.project
    session.close()
    dest = tmp_path / "meshes"
    cmd = [sys.executable, "-m", "napari_connectome", "proofread", "mesh", str(project)]
    run = subprocess.run([*cmd, "5", "9", str(dest)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["5.ply", "9.ply"]
    v, _ = read_ply(dest / "9.ply")
    assert v[:, 0].max() <= 20 * VOXEL[2]  # x of the corner box, in nm
    run = subprocess.run(
        [*cmd, "5", str(tmp_path / "ng"), "--format", "precomputed"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "ng" / "5:0:mesh").is_file()
    run = subprocess.run([*cmd, "12345", str(tmp_path / "x")], capture_output=True, text=True)
    assert run.returncode == 2
    assert "does not exist" in run.stderr
    assert not (tmp_path / "x").exists()
