"""Projects by reference: the project stores where its supervoxels live, never a copy of them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.proofread import EditRefused, ProofreadSession
from napari_connectome.proofread.project import create_v1_project
from napari_connectome.volumes import write_ome_zarr


def cells(shape=(32, 64, 64), size=16) -> np.ndarray:
    """16^3 cubes numbered 1..N in C order (uint32, as segmentations often are)."""
    grid = [s // size for s in shape]
    ids = np.arange(1, int(np.prod(grid)) + 1, dtype=np.uint32).reshape(grid)
    return np.kron(ids, np.ones((size,) * 3, dtype=np.uint32)).astype(np.uint32)


def membrane(shape=(32, 64, 64), x=24) -> np.ndarray:
    img = np.full(shape, 200, np.uint8)
    img[:, :, x - 1 : x + 1] = 15
    return img


def tree_digest(root: Path) -> dict[str, str]:
    """Content hash of every file below ``root``: proves a source was never written."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def seg_zarr(tmp_path) -> Path:
    dest = tmp_path / "data" / "seg.ome.zarr"
    dest.parent.mkdir()
    write_ome_zarr(cells(), dest, labels=True, chunks=16, voxel_size_nm=(8, 8, 8))
    return dest


@pytest.fixture
def em_zarr(tmp_path) -> Path:
    dest = tmp_path / "data" / "em.ome.zarr"
    dest.parent.mkdir(exist_ok=True)
    write_ome_zarr(membrane(), dest, chunks=16, voxel_size_nm=(8, 8, 8))
    return dest


def test_import_refers_to_the_source_and_copies_no_voxels(tmp_path, seg_zarr, em_zarr):
    before = tree_digest(seg_zarr.parent)
    rc = main(["proofread", "import", str(seg_zarr), str(tmp_path / "p"), "--image", str(em_zarr)])
    assert rc == 0
    meta = json.loads((tmp_path / "p" / "project.json").read_text())
    assert meta["format_version"] == 2
    assert meta["fragments"]["source"] == str(seg_zarr.resolve())
    assert meta["voxel_size_nm"] == [8.0, 8.0, 8.0]  # from the segmentation's own metadata
    # the only zarr arrays in the project are the region graph's tables, no voxel volume
    arrays = [p.parent for p in (tmp_path / "p").rglob("zarr.json")]
    assert all("region_graph" in p.parts for p in arrays)
    with ProofreadSession.open(tmp_path / "p") as s:
        assert s.shape == (32, 64, 64)
        s.merge([1, 2])
        assert s.segment_info(1).size == 2 * 16**3
        assert (s.labels() == s.table.apply(cells())).all()
        # a watershed split inside one supervoxel: the overlay holds it, the source stays as is
        plan = s.preview_split(1, [(8, 8, 18)], [(8, 8, 29)])  # both in fragment 2
        assert plan.method == "watershed"
        s.commit_split(plan)
        lab = s.labels()
        assert lab[8, 8, 18] == 1
        assert lab[8, 8, 29] not in (0, 1)
    assert tree_digest(seg_zarr.parent) == before  # the source was only ever read
    with ProofreadSession.open(tmp_path / "p") as s:  # the log replays the split on the source
        assert (s.labels() == lab).all()
        s.undo()
        assert (np.asarray(s.fragments) == cells()).all()  # undo removed the patch
        s.redo()
        assert (s.labels() == lab).all()


def test_region_graph_beside_a_job_output_is_reused_not_recomputed(tmp_path, seg_zarr):
    from napari_connectome.graph import compute_region_graph
    from napari_connectome.volumes import open_volume

    compute_region_graph(open_volume(seg_zarr), seg_zarr / "region_graph")
    rc = main(["proofread", "import", str(seg_zarr), str(tmp_path / "p")])
    assert rc == 0
    meta = json.loads((tmp_path / "p" / "project.json").read_text())
    assert meta["region_graph"]["path"] == str((seg_zarr / "region_graph").resolve())
    assert not (tmp_path / "p" / "region_graph").exists()
    with ProofreadSession.open(tmp_path / "p") as s:
        assert len(s.table.frag_ids) == 2 * 4 * 4


def test_a_source_changed_in_one_chunk_is_refused_and_nothing_is_written(tmp_path, seg_zarr):
    import zarr

    ProofreadSession.create(tmp_path / "p", str(seg_zarr)).close()
    with ProofreadSession.open(tmp_path / "p") as s:
        s.merge([1, 2])
    arr = zarr.open_array(seg_zarr / "0", mode="r+")
    arr[16:32, 16:32, 16:32] = 99  # one chunk, not one the open-time sample reads
    with ProofreadSession.open(tmp_path / "p", read_only=True) as s:
        with pytest.raises(UserInputError, match="changed since this project was made"):
            s.labels()
        with pytest.raises(UserInputError, match="changed since"):
            s.export(tmp_path / "out.ome.zarr")
    assert not (tmp_path / "out.ome.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    arr[0:16, 0:16, 0:16] = 98  # a corner chunk: refused when the project opens
    with pytest.raises(UserInputError, match="changed since"):
        ProofreadSession.open(tmp_path / "p")


def test_a_log_copied_from_a_project_on_another_volume_is_refused(tmp_path):
    a, b = cells(), cells()
    b[20, 40, 40] = 7  # differs in one voxel of one chunk
    with ProofreadSession.create(tmp_path / "a", a) as s:
        s.merge([1, 2])
    ProofreadSession.create(tmp_path / "b", b).close()
    (tmp_path / "b" / "edits.sqlite").write_bytes((tmp_path / "a" / "edits.sqlite").read_bytes())
    with pytest.raises(EditRefused, match="different fragment volume"):
        ProofreadSession.open(tmp_path / "b")


def test_hdf5_source_by_reference(tmp_path):
    import h5py

    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("seg", data=cells(), chunks=(16, 16, 16))
        f.create_dataset("raw", data=membrane(), chunks=(16, 16, 16))
    ProofreadSession.create(tmp_path / "p", f"{path}:seg", image=f"{path}:raw").close()
    with ProofreadSession.open(tmp_path / "p") as s:
        assert s.meta["fragments"]["source"] == f"{path.resolve()}:seg"
        plan = s.preview_split(2, [(8, 8, 18)], [(8, 8, 29)])
        assert plan.method == "watershed"  # boundary evidence from the referenced EM
        s.commit_split(plan)
    with h5py.File(path, "r") as f:
        assert (f["seg"][:] == cells()).all()


def test_projects_of_format_1_still_open_and_edit(tmp_path):
    create_v1_project(tmp_path / "old", cells(), image=membrane(), chunks=16)
    with ProofreadSession.open(tmp_path / "old") as s:
        assert s.format_version == 1
        s.merge([1, 2])
        s.split(1, [(8, 8, 18)], [(8, 8, 29)])
    with ProofreadSession.open(tmp_path / "old") as s:
        assert s.segment_info(1).size < 2 * 16**3
        s.undo()
        s.undo()
        assert (s.labels() == cells()).all()


def test_a_missing_source_says_where_it_was(tmp_path, seg_zarr):
    ProofreadSession.create(tmp_path / "p", str(seg_zarr)).close()
    os.rename(seg_zarr, tmp_path / "moved.ome.zarr")
    with pytest.raises(UserInputError, match="put it back"):
        ProofreadSession.open(tmp_path / "p")
    assert main(["proofread", "info", str(tmp_path / "p")]) == 2


def test_patches_show_on_coarser_levels(tmp_path, seg_zarr, em_zarr):
    ProofreadSession.create(tmp_path / "p", str(seg_zarr), image=str(em_zarr)).close()
    with ProofreadSession.open(tmp_path / "p") as s:
        assert len(s.fragment_levels) >= 2
        s.split(2, [(8, 8, 18)], [(8, 8, 29)])
        new_frag = int(np.asarray(s.fragments)[8, 8, 30])
        assert new_frag > 2 * 4 * 4
        coarse, factor = s.fragment_levels[1]
        assert factor == (2, 2, 2)
        low = np.asarray(coarse[...])
        assert low[4, 4, 15] == new_frag
        assert low[4, 4, 4] == 1
        assert low[4, 4, 9] == 2


def test_a_finished_job_opens_for_proofreading_without_recomputing_its_graph(tmp_path):
    from napari_connectome.jobs.pipeline import run_job
    from napari_connectome.jobs.spec import parse_spec
    from tests.test_jobs_helpers import cells_job_spec, write_cells_volume

    write_cells_volume(tmp_path / "cells.h5")
    out = tmp_path / "seg.ome.zarr"
    run_job(parse_spec(cells_job_spec(tmp_path / "cells.h5", out, workers=1)))
    stamp = (out / "region_graph" / "region_graph.json").stat().st_mtime_ns
    rc = main(
        [
            "proofread",
            "import",
            str(out),
            str(tmp_path / "p"),
            "--image",
            f"{tmp_path}/cells.h5:raw",
        ]
    )
    assert rc == 0
    assert not (tmp_path / "p" / "region_graph").exists()  # the job's own graph is used
    assert (out / "region_graph" / "region_graph.json").stat().st_mtime_ns == stamp
    with ProofreadSession.open(tmp_path / "p") as s:
        assert s.meta["region_graph"]["path"] == str((out / "region_graph").resolve())
        edges = s.region_graph.edges_of(np.arange(len(s.table.frag_ids)))
        a, b = int(edges["u"][0]), int(edges["v"][0])  # two segments that touch
        s.merge([a, b])
        assert s.segment_info(a).size == sum(
            int(n) for n in s.region_graph.stats(s.region_graph.rows_of([a, b]))[0]
        )


@pytest.mark.parametrize("damage", ["project.json", "edits.sqlite", "region_graph", "log row"])
def test_damaged_project_files_are_a_message_not_a_traceback(tmp_path, damage, capsys):
    import shutil
    import sqlite3

    with ProofreadSession.create(tmp_path / "p", cells()) as s:
        s.merge([1, 2])
    p = tmp_path / "p"
    if damage == "project.json":
        (p / "project.json").write_bytes(b"\x00\xff{not json")
    elif damage == "edits.sqlite":
        for extra in p.glob("edits.sqlite-*"):
            extra.unlink()
        (p / "edits.sqlite").write_bytes(b"this is not a database" * 100)
    elif damage == "region_graph":
        shutil.rmtree(p / "region_graph" / "fragments")
    else:
        db = sqlite3.connect(p / "edits.sqlite")
        db.execute("UPDATE ops SET params = '{}' WHERE kind = 'merge'")
        db.commit()
        db.close()
    assert main(["proofread", "info", str(p)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "Traceback" not in err


@pytest.mark.ssh
def test_a_project_on_a_cluster_segmentation_over_ssh(sshd_server, tmp_path, monkeypatch):
    """The segmentation stays on the "cluster" (here: read through the loopback sshd with a saved
    profile and a verified host key); the project refers to it as ssh://PROFILE/path."""
    from napari_connectome.jobs.profiles import make_profile, save_profile
    from napari_connectome.volumes.remote import close_all

    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE_DIR", str(tmp_path / "cache"))
    close_all()
    save_profile(
        make_profile(
            {
                "name": "loop", "host": sshd_server.host, "port": sshd_server.port,
                "user": sshd_server.user, "key": str(sshd_server.client_key),
                "known_hosts": str(sshd_server.known_hosts),
            }
        )
    )  # fmt: skip
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    write_ome_zarr(cells(), cluster / "seg.ome.zarr", labels=True, chunks=16)
    write_ome_zarr(membrane(), cluster / "em.ome.zarr", chunks=16)
    before = tree_digest(cluster)
    url = f"ssh://loop{cluster / 'seg.ome.zarr'}"
    rc = main(
        [
            "proofread",
            "import",
            url,
            str(tmp_path / "p"),
            "--image",
            f"ssh://loop{cluster}/em.ome.zarr",
        ]
    )
    assert rc == 0
    try:
        with ProofreadSession.open(tmp_path / "p") as s:
            assert s.meta["fragments"]["source"] == url
            s.merge([1, 2])
            s.split(1, [(8, 8, 18)], [(8, 8, 29)])  # a watershed split: overlay, not a write
            lab = s.labels()
        with ProofreadSession.open(tmp_path / "p") as s:
            assert (s.labels() == lab).all()
        assert tree_digest(cluster) == before
        # a job's output on the cluster has its region graph beside it: used where it is
        from napari_connectome.graph import compute_region_graph
        from napari_connectome.volumes import open_volume

        compute_region_graph(
            open_volume(cluster / "seg.ome.zarr"), cluster / "seg.ome.zarr" / "region_graph"
        )
        assert main(["proofread", "import", url, str(tmp_path / "q")]) == 0
        assert not (tmp_path / "q" / "region_graph").exists()
        with ProofreadSession.open(tmp_path / "q") as s:
            assert s.meta["region_graph"]["path"] == f"{url}/region_graph"
            s.merge([1, 2])
            assert s.segment_info(1).size == 2 * 16**3
    finally:
        close_all()
