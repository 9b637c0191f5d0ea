"""Block seams in the queue (issue 14): agglomerating a job's output counts each edge's faces on
the job's block faces (blockwise, two planes per seam), and the queue leads first to pairs left
apart across a face where the seam check found cuts."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zarr

from napari_connectome.agglomerate import agglomerate
from napari_connectome.agglomerate.queue import ProofreadQueue, read_candidates
from napari_connectome.agglomerate.seams import (
    BlockSeams,
    excess_of_report,
    seam_cut_chance,
    seams_of_job_output,
)
from napari_connectome.errors import UserInputError
from napari_connectome.graph import RegionGraph
from napari_connectome.volumes import open_volume


def brute_seam_faces(sv: np.ndarray, planes) -> dict[tuple[int, int], list[int]]:
    """Per pair (u < v), the faces across each axis' seam planes, voxel pair by voxel pair."""
    out: dict[tuple[int, int], list[int]] = {}
    for ax in range(3):
        for p in planes[ax]:
            a = np.take(sv, p - 1, axis=ax).ravel()
            b = np.take(sv, p, axis=ax).ravel()
            for x, y in zip(a.tolist(), b.tolist()):
                if x != y and x > 0 and y > 0:
                    out.setdefault((min(x, y), max(x, y)), [0, 0, 0])[ax] += 1
    return out


def seam_table(dest) -> dict[tuple[int, int], list[int]]:
    graph = RegionGraph.open(dest / "region_graph")
    u = np.asarray(graph._array("edges/u")[:], np.uint64)
    v = np.asarray(graph._array("edges/v")[:], np.uint64)
    seam = np.asarray(zarr.open_group(str(dest / "scores"), mode="r")["seam_area"][:])
    assert seam.shape == (len(u), 3)
    return {(int(a), int(b)): s.tolist() for a, b, s in zip(u, v, seam) if s.any()}


def test_seam_faces_per_edge_equal_a_voxel_by_voxel_count_across_blocks(tmp_path):
    rng = np.random.default_rng(3)
    # blobs of 8 ids with unsegmented gaps (filled by agglomerate's watershed)
    seg = rng.integers(0, 9, (6, 6, 6)).repeat(4, 0).repeat(4, 1).repeat(4, 2).astype(np.uint64)
    em = rng.integers(0, 255, seg.shape, dtype=np.uint8)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("seg", data=seg, chunks=(8, 8, 8))
        f.create_dataset("raw", data=em, chunks=(8, 8, 8))
    # seams of a job with 10^3 blocks, agglomerated in 8^3 blocks: seam planes lie inside and on
    # the faces of agglomerate's blocks, and at the last plane of one (10 - 1 = 9 in 8..16)
    seams = BlockSeams.of_grid(seg.shape, (10, 12, 8), {"z": {"ratio": 4.0}})
    assert seams.planes == ((10, 20), (12,), (8, 16))
    assert seams.excess == (0.75, 0.0, 0.0)
    dest = tmp_path / "agg.ome.zarr"
    agglomerate(
        open_volume(f"{tmp_path / 'v.h5'}:seg"),
        open_volume(f"{tmp_path / 'v.h5'}:raw"),
        dest,
        seams=seams,
        block_shape=(8, 8, 8),
    )
    sv = np.asarray(open_volume(str(dest / "supervoxels")).data)
    assert (sv > 0).all()
    assert seam_table(dest) == brute_seam_faces(sv, seams.planes)
    meta = json.loads((dest / "agglomeration.json").read_text())
    assert BlockSeams.from_json(meta["seams"]) == seams
    # without seams (a single-canvas segmentation) there is no column and no seam chance
    plain = tmp_path / "plain.ome.zarr"
    agglomerate(
        open_volume(f"{tmp_path / 'v.h5'}:seg"), open_volume(f"{tmp_path / 'v.h5'}:raw"), plain
    )
    assert "seam_area" not in zarr.open_group(str(plain / "scores"), mode="r")
    assert read_candidates(plain).seam is None
    # seams of another volume are refused before anything is written
    with pytest.raises(UserInputError, match="another volume"):
        agglomerate(
            open_volume(f"{tmp_path / 'v.h5'}:seg"),
            open_volume(f"{tmp_path / 'v.h5'}:raw"),
            tmp_path / "other.ome.zarr",
            seams=BlockSeams.of_grid((48, 48, 48), (30, 30, 30), None),
        )
    assert not (tmp_path / "other.ome.zarr").exists()


def test_the_excess_is_the_share_of_face_changes_above_the_interior_rate():
    assert excess_of_report({"z": {"ratio": 2.0}, "x": {"ratio": 0.8}}) == (0.5, 0.0, 0.0)
    assert excess_of_report({"y": {"ratio": None}}) == (0.0, 0.0, 0.0)
    # 10 faces on z seams (excess 0.5) and 10 on x seams (excess 1) of a contact of 40 faces
    chance = seam_cut_chance(np.array([[10, 0, 10], [0, 0, 0]]), np.array([40, 40]), (0.5, 0, 1))
    assert chance.tolist() == [15 / 40, 0.0]


@pytest.fixture(scope="module")
def slabs(tmp_path_factory):
    """Four slabs along x behind dark membranes: 1 | 2 at x = 10 (a block face of the job),
    2 | 3 at x = 20 and 3 | 4 at x = 30 (inside blocks); all left apart at threshold 0.5."""
    tmp = tmp_path_factory.mktemp("slabs")
    seg = np.zeros((12, 12, 40), np.uint64)
    seg[..., :10], seg[..., 10:20], seg[..., 20:30], seg[..., 30:] = 1, 2, 3, 4
    em = np.full(seg.shape, 200, np.uint8)
    for x in (10, 20, 30):
        em[..., x - 1 : x + 1] = 20
    em += np.random.default_rng(1).integers(0, 10, seg.shape, dtype=np.uint8)
    path = tmp / "slabs.h5"
    with h5py.File(path, "w") as f:
        f["seg"], f["raw"] = seg, em

    def run(name, seams):
        dest = tmp / name
        agglomerate(
            open_volume(f"{path}:seg"),
            open_volume(f"{path}:raw"),
            dest,
            threshold=0.5,
            seams=seams,
        )
        return dest

    report = {"x": {"ratio": 5.0}}  # faces cut 5x as often as inside: 80 % of changes are cuts
    seams = BlockSeams(((), (), (10,)), excess_of_report(report))
    return run("plain.ome.zarr", None), run("job.ome.zarr", seams)


def test_the_queue_leads_first_to_a_pair_left_apart_across_a_cutting_block_face(slabs):
    plain, job = slabs
    before = {(it.a, it.b): it for it in ProofreadQueue(plain).items}
    queue = ProofreadQueue(job)
    after = {(it.a, it.b): it for it in queue.items}
    assert set(before) == set(after) == {(1, 2), (2, 3), (3, 4)}
    # 1 | 2 and 3 | 4 look alike to the contact evidence (ends of the volume, same sizes)...
    assert before[(1, 2)].p_wrong == pytest.approx(before[(3, 4)].p_wrong, abs=0.05)
    # ...but only 1 | 2 lies on a block face where the seam check found cuts
    assert after[(1, 2)].seam == pytest.approx(0.8)
    assert after[(3, 4)].seam == after[(2, 3)].seam == 0.0
    assert after[(1, 2)].p_wrong == pytest.approx(1 - (1 - before[(1, 2)].p_wrong) * 0.2)
    assert after[(3, 4)].p_wrong == pytest.approx(before[(3, 4)].p_wrong)
    assert (queue.items[0].a, queue.items[0].b) == (1, 2)
    assert "block face of the job" in queue.describe(0)
    assert "block face" not in after[(3, 4)].reason(queue.threshold)


def test_a_jobs_agglomerate_phase_weighs_its_own_block_faces(tmp_path):
    from napari_connectome.jobs.agglomerate_phase import agglomerate_output
    from napari_connectome.jobs.pipeline import run_job
    from napari_connectome.jobs.spec import parse_spec
    from tests.test_jobs_helpers import cells_job_spec, write_cells_volume

    volume = tmp_path / "cells.h5"
    write_cells_volume(volume)
    out = tmp_path / "seg.ome.zarr"
    spec = parse_spec(cells_job_spec(volume, out, workers=1, agglomerate={"threshold": 0.5}))
    result = run_job(spec)
    dest = agglomerate_output(spec)
    meta = json.loads((dest / "agglomeration.json").read_text())
    seams = BlockSeams.from_json(meta["seams"])
    # blocks of 20 x 32 x 32 over 40 x 64 x 64: one face per axis
    assert seams.planes == ((20,), (32,), (32,))
    assert seams.excess == excess_of_report(result.seams)
    sv = np.asarray(open_volume(str(dest / "supervoxels")).data)
    assert seam_table(dest) == brute_seam_faces(sv, seams.planes)
    # the finished job's folder says the same to a later `agglomerate` of it
    assert seams_of_job_output(out) == seams
    assert seams_of_job_output(volume.parent) is None
