"""Agglomeration (issue 14): the rule, blockwise contact evidence, and the `agglomerate`
command on a crop of FIB-25 with Google's published segmentation; bad input writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from napari_connectome.agglomerate import UnionFind, kernels, mean_affinity_agglomerate
from napari_connectome.agglomerate.run import contacts_task
from napari_connectome.cli import main
from napari_connectome.graph import RegionGraph
from napari_connectome.graph.sources import ArrayReader
from napari_connectome.volumes import open_volume
from napari_connectome.volumes.units import relative_spacing

CROP = (slice(60, 124), slice(60, 124), slice(60, 124))  # 64^3: ~1 s per pass


@pytest.fixture(scope="module")
def crop(google_ffn_dir, fib25_h5, tmp_path_factory) -> Path:
    """EM, ground truth and Google's segmentation over one 64^3 crop, in one HDF5 file."""
    return write_crop(tmp_path_factory.mktemp("agg") / "crop.h5", google_ffn_dir, fib25_h5)


def write_crop(path: Path, google_ffn_dir: Path, fib25_h5: Path) -> Path:
    seg = np.load(google_ffn_dir / "sample-training2.npz")["segmentation"][CROP]
    with h5py.File(fib25_h5, "r") as f, h5py.File(path, "w") as out:
        for name, data in (("raw", f["raw"][CROP]), ("gt", f["labels"][CROP]), ("seg", seg)):
            ds = out.create_dataset(name, data=data, chunks=(32, 32, 32))
            ds.attrs["resolution_nm_zyx"] = [10, 10, 10]
    return path


def run(*argv) -> int:
    return main([str(a) for a in argv])


def only(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ---- the rule ---------------------------------------------------------------------------------


def test_union_find_roots_are_smallest_ids():
    uf = UnionFind()
    uf.union(7, 3)
    uf.union(9, 7)
    uf.union(20, 21)
    assert uf.find(9) == 3
    assert uf.find(7) == 3
    assert uf.find(21) == 20
    assert uf.find(5) == 5


def brute_force(u, v, aff, area, ids, threshold):
    """The rule written the slow way: recompute every cluster pair's mean from scratch."""
    seg = {int(i): int(i) for i in ids}
    while True:
        pairs: dict[tuple[int, int], list[float]] = {}
        for a, b, s, n in zip(u, v, aff, area):
            ca, cb = seg[int(a)], seg[int(b)]
            if ca != cb:
                key = (min(ca, cb), max(ca, cb))
                e = pairs.setdefault(key, [0.0, 0.0])
                e[0] += n
                e[1] += s * n
        if not pairs:
            break
        (a, b), best = max(pairs.items(), key=lambda kv: (kv[1][1] / kv[1][0], -kv[0][0]))
        if best[1] / best[0] < threshold:
            break
        root, gone = min(a, b), max(a, b)
        seg = {k: (root if c == gone else c) for k, c in seg.items()}
    return np.array([seg[int(i)] for i in ids], np.uint64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_affinity_equals_the_slow_definition_and_ignores_edge_order(seed):
    rng = np.random.default_rng(seed)
    ids = np.arange(1, 41, dtype=np.uint64)
    pairs = {tuple(sorted(rng.choice(ids, 2, replace=False))) for _ in range(120)}
    u, v = (np.array(x, np.uint64) for x in zip(*sorted(pairs)))
    aff = rng.random(len(u))
    area = rng.integers(1, 50, len(u))
    want = brute_force(u, v, aff, area, ids, 0.5)
    got = mean_affinity_agglomerate(u, v, aff, area, ids, 0.5)
    assert np.array_equal(got.segment_of, want)
    assert (got.merges[:, 2] >= 0.5).all()
    perm = rng.permutation(len(u))
    again = mean_affinity_agglomerate(u[perm], v[perm], aff[perm], area[perm], ids, 0.5)
    assert np.array_equal(again.segment_of, want)
    none = mean_affinity_agglomerate(u, v, aff, area, ids, 1.0 + 1e-9)
    assert np.array_equal(none.segment_of, ids)


# ---- blockwise evidence -----------------------------------------------------------------------


def test_contacts_blockwise_equal_one_block(crop):
    with h5py.File(crop, "r") as f:
        em, seg = f["raw"][:], f["seg"][:].astype(np.uint64)
    cdf = np.cumsum(np.bincount(em.ravel(), minlength=256)) / em.size
    table = (0.0, 1.0, 256)
    shape = seg.shape
    whole = contacts_task(
        ArrayReader(seg), ArrayReader(em), tuple(slice(0, s) for s in shape), shape, cdf, table
    )
    parts = [
        contacts_task(ArrayReader(seg), ArrayReader(em), sl, shape, cdf, table)
        for sl in (
            tuple(slice(a, a + 32) for a in corner)
            for corner in np.ndindex(2, 2, 2)
            for corner in [tuple(32 * c for c in corner)]
        )
    ]
    got = kernels.reduce_contacts(parts)
    assert len(whole["u"]) > 20
    for key in ("u", "v", "area", "hist"):
        assert np.array_equal(got[key], whole[key]), key
    assert np.allclose(got["rank_sum"], whole["rank_sum"])
    # every contact point lies on a face between the pair's two supervoxels
    for (a, b), p in zip(zip(got["u"], got["v"]), got["point"]):
        assert seg[tuple(p)] in (a, b)
    # with a margin (resegmentation's box), blocks and one block agree on the points' kind, and a
    # pair whose faces reach inside the margin gets a point there
    margin = 12
    whole = contacts_task(
        ArrayReader(seg), ArrayReader(em), tuple(slice(0, s) for s in shape), shape, cdf, table,
        margin=margin,
    )  # fmt: skip
    got = kernels.reduce_contacts(
        [
            contacts_task(ArrayReader(seg), ArrayReader(em), sl, shape, cdf, table, margin=margin)
            for sl in (
                tuple(slice(32 * c, 32 * c + 32) for c in corner) for corner in np.ndindex(2, 2, 2)
            )
        ]
    )
    for key in ("point_rank", "point_inside"):  # (ties among faces may pick other points)
        assert np.array_equal(got[key], whole[key]), key
    inside = np.all((got["point"] >= margin) & (got["point"] < np.asarray(shape) - margin), axis=1)
    assert np.array_equal(inside, got["point_inside"])
    assert 0 < inside.sum() < len(inside)  # some pairs touch only near the border
    plain = kernels.reduce_contacts(parts)
    assert (np.any(plain["point"] != got["point"], axis=1) <= got["point_inside"]).all()
    moved = np.any(plain["point"] != got["point"], axis=1)
    assert moved.any()  # brightest at the border before, now the brightest face inside
    assert (got["point_rank"][moved] <= plain["point_rank"][moved]).all()


# ---- the command --------------------------------------------------------------------------------


def test_agglomerate_command_writes_labels_supervoxels_and_scored_graph(crop, tmp_path, capsys):
    dest = tmp_path / "agg.ome.zarr"
    rc = run("agglomerate", f"{crop}:seg", f"{crop}:raw", dest, "--threshold", "0.4", "--quiet")
    assert rc == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    meta = json.loads((dest / "agglomeration.json").read_text())
    assert printed["n_segments"] == meta["n_segments"] < meta["n_supervoxels"]
    with h5py.File(crop, "r") as f:
        seg = f["seg"][:]
    labels = np.asarray(open_volume(str(dest)).data)
    sv = np.asarray(open_volume(str(dest / "supervoxels")).data)
    # unsegmented voxels were filled; segmented ones kept their ids
    assert meta["unsegmented_voxels"] == int((seg == 0).sum()) > 0
    assert (sv > 0).all()
    assert np.array_equal(sv[seg > 0], seg[seg > 0].astype(np.uint64))
    # the region graph is the supervoxels' own; the scores are aligned with its edges
    graph = RegionGraph.open(dest / "region_graph")
    graph.check_source(open_volume(str(dest / "supervoxels")))
    scores = zarr.open_group(str(dest / "scores"), mode="r")
    assert scores["affinity"].shape == (graph.n_edges,) == (meta["n_edges"],)
    aff = scores["affinity"][:]
    assert ((aff >= 0) & (aff <= 1)).all()
    # the labels are the supervoxels mapped through the table, and the table follows the rule
    ids, seg_of = scores["segment_ids"][:], scores["segment_of"][:]
    assert np.array_equal(labels, seg_of[np.searchsorted(ids, sv)])
    u = np.asarray(graph._array("edges/u")[:])
    v = np.asarray(graph._array("edges/v")[:])
    want = mean_affinity_agglomerate(u, v, aff, scores["area"][:], ids, 0.4)
    assert np.array_equal(want.segment_of, seg_of)
    assert len(scores["merges"][:]) == meta["n_merges"] > 0
    # every merge was at or above the threshold; what stays apart touches below it
    assert (scores["merges"][:][:, 2] >= 0.4).all()


def sections(tmp_path: Path, seg_nm, em_nm) -> Path:
    """Two segments 8 sections apart with unsegmented voxels between them, as HDF5 with the
    given voxel sizes (None: no attribute)."""
    seg = np.zeros((16, 32, 32), np.uint32)
    seg[:4], seg[12:] = 1, 2
    em = np.random.default_rng(0).integers(150, 200, seg.shape, dtype=np.uint8)
    path = tmp_path / "sections.h5"
    with h5py.File(path, "w") as f:
        for name, data, nm in (("seg", seg, seg_nm), ("raw", em, em_nm)):
            ds = f.create_dataset(name, data=data, chunks=(16, 32, 32))
            if nm is not None:
                ds.attrs["resolution_nm_zyx"] = nm
    return path


def test_serial_section_voxels_count_in_nm_not_in_sections():
    """Four sections of 40 nm between two segments are 160 nm of unsegmented tissue: far
    enough (more than 12 voxels of 10 nm) for a supervoxel of its own; counted as four
    voxels they are not."""
    seg = np.zeros((16, 32, 32), np.uint64)
    seg[:4], seg[12:] = 1, 2
    em = np.full(seg.shape, 180, np.uint8)
    core = (slice(None),) * 3
    same = kernels.fill_block(seg, em, core, seed_distance=12, new_id_base=100)
    assert set(np.unique(same)) == {1, 2}
    spacing = relative_spacing((40, 10, 10))
    assert spacing == (4.0, 1.0, 1.0)
    thick = kernels.fill_block(seg, em, core, seed_distance=12, new_id_base=100, spacing=spacing)
    assert set(np.unique(thick)) == {1, 2, 101}
    assert (thick[7:9] == 101).all()
    assert relative_spacing(None) == relative_spacing((0, 1, 1)) == (1, 1, 1)


@pytest.mark.parametrize(
    ("seg_nm", "em_nm", "n_supervoxels", "used"),
    [
        ([40, 10, 10], [40, 10, 10], 3, [40, 10, 10]),
        (None, [40, 10, 10], 3, [40, 10, 10]),  # SEG without a size takes the EM's
        ([10, 10, 10], [10, 10, 10], 2, [10, 10, 10]),
    ],
)
def test_agglomerate_measures_in_the_voxel_size_the_files_give(
    tmp_path, capsys, seg_nm, em_nm, n_supervoxels, used
):
    path = sections(tmp_path, seg_nm, em_nm)
    dest = tmp_path / "agg.ome.zarr"
    assert run("agglomerate", f"{path}:seg", f"{path}:raw", dest, "--quiet") == 0
    meta = json.loads((dest / "agglomeration.json").read_text())
    assert meta["n_supervoxels"] == n_supervoxels
    assert meta["voxel_size_nm"] == used
    assert open_volume(str(dest)).voxel_size_nm == tuple(used)
    if seg_nm is None:  # not the reader's "1 nm assumed" for SEG, but what is used
        err = capsys.readouterr().err
        assert "the EM's [40.0, 10.0, 10.0] nm is used for SEG too" in err
        assert "1 nm per axis is assumed" not in err


def test_segmentation_and_em_of_different_voxel_sizes_are_warned_about(tmp_path, capsys):
    path = sections(tmp_path, [40, 10, 10], [10, 10, 10])
    dest = tmp_path / "agg.ome.zarr"
    assert run("agglomerate", f"{path}:seg", f"{path}:raw", dest, "--quiet") == 0
    err = capsys.readouterr().err
    assert "[40.0, 10.0, 10.0] nm but EM" in err
    assert "SEG's is used" in err
    assert json.loads((dest / "agglomeration.json").read_text())["voxel_size_nm"] == [40, 10, 10]


def test_overwrite_replaces_an_agglomerate_output_but_not_one_the_user_added_to(
    crop, tmp_path, capsys
):
    dest = tmp_path / "agg.ome.zarr"
    argv = ("agglomerate", f"{crop}:seg", f"{crop}:raw", dest, "--quiet")
    assert run(*argv) == 0, capsys.readouterr().err
    assert run(*argv, "--threshold", "0.5", "--overwrite") == 0, capsys.readouterr().err
    assert json.loads((dest / "agglomeration.json").read_text())["threshold"] == 0.5
    for extra in (dest / "scores" / "notes.txt", dest / "supervoxels" / "notes.txt"):
        extra.write_text("mine")
        assert run(*argv, "--overwrite") == 2
        assert "other files were put" in capsys.readouterr().err
        assert extra.read_text() == "mine"
        extra.unlink()


def test_an_output_made_with_relative_paths_opens_its_queue_from_any_folder(
    crop, tmp_path, capsys, monkeypatch
):
    from napari_connectome.agglomerate.queue import ProofreadQueue, build_queue_project

    work = tmp_path / "work"
    work.mkdir()
    (work / "crop.h5").symlink_to(crop)
    monkeypatch.chdir(work)
    rc = run("agglomerate", "crop.h5:seg", "crop.h5:raw", "agg.ome.zarr", "--quiet")
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((work / "agg.ome.zarr" / "agglomeration.json").read_text())
    assert meta["em"] == f"{work / 'crop.h5'}:raw"  # absolute, the link kept as typed
    assert meta["input"] == f"{work / 'crop.h5'}:seg"
    monkeypatch.chdir(tmp_path)  # the proofreader opens it from elsewhere
    queue = ProofreadQueue(work / "agg.ome.zarr")
    assert queue.items
    build_queue_project(work / "agg.ome.zarr", tmp_path / "project")
    assert (tmp_path / "project").is_dir()


def test_blocks_on_a_local_dask_cluster_give_the_same_result(crop, tmp_path):
    from dask.distributed import Client, LocalCluster

    from napari_connectome.agglomerate import agglomerate

    seg, em = open_volume(f"{crop}:seg"), open_volume(f"{crop}:raw")
    one = agglomerate(seg, em, tmp_path / "one.ome.zarr", fill=False)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        seen = []
        many = agglomerate(
            seg,
            em,
            tmp_path / "many.ome.zarr",
            fill=False,
            block_shape=(32, 32, 32),
            client=client,
            progress=lambda d, t, m="": seen.append((d, t, m)),
        )
    a = zarr.open_group(str(one / "scores"), mode="r")
    b = zarr.open_group(str(many / "scores"), mode="r")
    for key in ("area", "segment_of", "merged"):
        assert np.array_equal(a[key][:], b[key][:]), key
    assert np.allclose(a["affinity"][:], b["affinity"][:])
    assert (8, 8, "agglomerate: contact evidence") in seen


def test_ffn_resegmentation_scores_the_contacts_nearest_the_threshold(crop, tmp_path, google_model):
    import torch

    torch.set_num_threads(1)
    dest = tmp_path / "reseg.ome.zarr"
    rc = run(
        "agglomerate", f"{crop}:seg", f"{crop}:raw", dest,
        "--model", google_model, "--max-reseg", "1", "--band", "1", "--quiet",
    )  # fmt: skip
    assert rc == 0
    meta = json.loads((dest / "agglomeration.json").read_text())
    scores = zarr.open_group(str(dest / "scores"), mode="r")
    reseg = scores["reseg"][:]
    done = np.flatnonzero(np.isfinite(reseg))
    assert meta["n_resegmented"] == len(done) == 1
    assert 0.0 <= reseg[done[0]] <= 1.0
    k = done[0]
    mean = scores["mean_rank"][:]
    assert scores["affinity"][k] == pytest.approx(0.5 * (mean[k] + reseg[k]))


def test_only_contacts_a_score_could_move_across_the_threshold_are_resegmented():
    from napari_connectome.agglomerate.reseg import can_cross, mix

    e = np.array([0.0, 0.29, 0.3, 0.65, 0.79, 0.8, 1.0])
    assert can_cross(e, 0.65).tolist() == [False, False, True, True, True, True, True]
    assert can_cross(e, 0.4).tolist() == [True, True, True, True, True, False, False]
    for t in (0.4, 0.65):  # each one that can: a score of 1 merges it, a score of 0 does not
        ok = can_cross(e, t)
        assert (mix(e[ok], np.ones(ok.sum())) >= t).all()
        assert (mix(e[ok], np.zeros(ok.sum())) < t).all()
        assert ((mix(e[~ok], np.ones((~ok).sum())) >= t) == (mix(e[~ok], 0 * e[~ok]) >= t)).all()
    assert mix(e, np.full(len(e), np.nan)).tolist() == e.tolist()  # not scored: evidence


def test_resegmentation_runs_on_the_dask_workers_and_scores_what_one_pass_would(crop, tmp_path):
    from dask.distributed import Client, LocalCluster, get_task_stream

    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.zoo import default_model

    seg, em = open_volume(f"{crop}:seg"), open_volume(f"{crop}:raw")
    source = default_model()  # fib25-small: a 17^3 FOV, quick on a CPU
    common = {
        "model": load_model(source),
        "model_name": "default",
        "model_source": source,
        "fill": False,
        "band": 1.0,
        "max_reseg": 24,
        "batch": 2,
        "device": "cpu",
    }
    here = agglomerate(seg, em, tmp_path / "here.ome.zarr", **common)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as stream,
    ):
        seen = []
        there = agglomerate(
            seg,
            em,
            tmp_path / "there.ome.zarr",
            block_shape=(32, 32, 32),
            client=client,
            progress=lambda d, t, m="": seen.append((d, t, m)),
            **common,
        )
    a = np.asarray(zarr.open_group(str(here / "scores"), mode="r")["reseg"][:])
    b = np.asarray(zarr.open_group(str(there / "scores"), mode="r")["reseg"][:])
    # the same contacts, in order of nearness to the threshold, until 24 are scored
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    assert np.isfinite(a).sum() == 24
    assert np.allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=0.02)
    # only contacts whose verdict a score could change: the mix of evidence e and score r,
    # (e + r) / 2, can reach the threshold 0.65 only from e >= 0.3
    scores = zarr.open_group(str(here / "scores"), mode="r")
    evidence = 2 * np.asarray(scores["affinity"][:]) - np.nan_to_num(a)
    assert (evidence[np.isfinite(a)] >= 0.3 - 1e-9).all()
    tasks = [t for t in stream.data if "resegment_task" in str(t["key"])]
    assert len(tasks) >= 2  # spread over the workers, each loading the model from its folder
    assert len({t["worker"] for t in tasks}) == 2
    reseg_progress = [s for s in seen if s[2] == "agglomerate: FFN resegmentation"]
    assert reseg_progress[-1][:2] == (24, 24)


@pytest.fixture(scope="module")
def google_model(google_ffn_dir, tmp_path_factory) -> Path:
    from napari_connectome.ffn.checkpoint import import_google_checkpoint

    model_dir = tmp_path_factory.mktemp("model") / "google-fib25"
    import_google_checkpoint(google_ffn_dir / "model.ckpt-27465036", model_dir)
    return model_dir


# ---- bad input: exit 2, a message that says what to do, nothing written -------------------------


def test_bad_input_is_refused_and_writes_nothing(crop, tmp_path, capsys, google_model):
    other = tmp_path / "other.h5"
    with h5py.File(crop, "r") as f, h5py.File(other, "w") as out:
        out["raw"] = f["raw"][:48]
        out["float"] = f["seg"][:].astype(np.float32)
        out["small_seg"] = f["seg"][:40, :40, :40]
        out["small_raw"] = f["raw"][:40, :40, :40]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "agg.ome.zarr"
    cases = {
        "between 0 and 1": ["--threshold", "1.5"],
        "shape": [],
        "integer ids": [],
        "field of view": ["--model", google_model],
        "the dtype of label ids": [],
        "unknown device": ["--model", google_model, "--device", "tpu"],
    }
    if not __import__("torch").cuda.is_available():
        cases["no CUDA GPU"] = ["--model", google_model, "--device", "cuda"]
    argvs = {
        "between 0 and 1": [f"{crop}:seg", f"{crop}:raw"],
        "shape": [f"{crop}:seg", f"{other}:raw"],
        "integer ids": [f"{other}:float", f"{crop}:raw"],
        "field of view": [f"{other}:small_seg", f"{other}:small_raw"],
        "the dtype of label ids": [f"{crop}:seg", f"{crop}:gt"],  # ground truth given as EM
        "unknown device": [f"{crop}:seg", f"{crop}:raw"],
        "no CUDA GPU": [f"{crop}:seg", f"{crop}:raw"],
    }
    for why, extra in cases.items():
        rc = run("agglomerate", *argvs[why], dest, *extra, "--quiet")
        err = capsys.readouterr().err
        assert rc == 2, (why, err)
        assert why in err, (why, err)
        assert only(out_dir) == [], why
    # an existing output is not replaced without --overwrite, nor one we did not write with it
    (out_dir / "mine").mkdir()
    (out_dir / "mine" / "notes.txt").write_text("keep")
    for extra in ([], ["--overwrite"]):
        rc = run("agglomerate", f"{crop}:seg", f"{crop}:raw", out_dir / "mine", *extra, "--quiet")
        assert rc == 2
        assert only(out_dir) == ["mine"]
        assert (out_dir / "mine" / "notes.txt").read_text() == "keep"
    # the output may not lie inside an input
    zarr_in = tmp_path / "in.zarr"
    zarr.create_array(str(zarr_in), data=np.zeros((64, 64, 64), np.uint32))
    rc = run("agglomerate", zarr_in, f"{crop}:raw", zarr_in / "agg", "--quiet")
    assert rc == 2
    assert "inside the input" in capsys.readouterr().err


def test_reuse_runs_only_the_rule_and_equals_a_full_run(crop, tmp_path, capsys):
    """--reuse PREVIOUS at a new threshold gives what a full run at that threshold gives, leaves
    PREVIOUS as it was, and refuses an output of another segmentation."""
    first, full, again = (
        tmp_path / "t04.ome.zarr",
        tmp_path / "t07.ome.zarr",
        tmp_path / "re.ome.zarr",
    )
    base = [f"{crop}:seg", f"{crop}:raw"]
    assert run("agglomerate", *base, first, "--threshold", "0.4", "--quiet") == 0
    assert run("agglomerate", *base, full, "--threshold", "0.7", "--quiet") == 0
    before = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    capsys.readouterr()
    rc = run("agglomerate", *base, again, "--threshold", "0.7", "--reuse", first, "--quiet")
    assert rc == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["reused"] == str(first.resolve())
    meta = json.loads((again / "agglomeration.json").read_text())
    assert meta["threshold"] == 0.7
    assert set(meta["seconds"]) == {"check", "agglomerate", "total"}  # no fill, graph or scores
    for name in ("", "supervoxels"):
        a = np.asarray(open_volume(str(again / name)).data)
        b = np.asarray(open_volume(str(full / name)).data)
        assert np.array_equal(a, b), name
    for key in ("segment_of", "merged", "affinity"):
        a = zarr.open_group(str(again / "scores"), mode="r")[key][:]
        b = zarr.open_group(str(full / "scores"), mode="r")[key][:]
        assert np.array_equal(a, b), key
    after = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    assert after == before  # the earlier output is untouched (its files are only linked)
    # another segmentation (one id changed), flags of skipped passes, a folder that is no output
    other = tmp_path / "other.h5"
    with h5py.File(crop, "r") as f, h5py.File(other, "w") as out:
        seg = f["seg"][:]
        seg[seg == seg.max()] = seg.max() + 1
        out["seg"] = seg
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cases = {
        "another segmentation": [f"{other}:seg", f"{crop}:raw", "--reuse", first],
        "--no-fill would change nothing": [*base, "--reuse", first, "--no-fill"],
        "no readable agglomeration.json": [*base, "--reuse", tmp_path],
        "does not exist": [*base, "--reuse", tmp_path / "missing"],
        "--band, --device would change nothing": [
            *base, "--reuse", first, "--band", "1", "--device", "cpu",
        ],
        "without a model there is no FFN resegmentation, so --max-reseg, --device": [
            *base, "--max-reseg", "5", "--device", "cuda",
        ],
    }  # fmt: skip
    for why, argv in cases.items():
        rc = run("agglomerate", *argv[:2], out_dir / "x.ome.zarr", *argv[2:], "--quiet")
        err = capsys.readouterr().err
        assert rc == 2, (why, err)
        assert why in err, (why, err)
        assert only(out_dir) == [], why


# ---- in a job -----------------------------------------------------------------------------------


def test_a_job_with_an_agglomerate_section_agglomerates_its_output(tmp_path):
    from napari_connectome.jobs.agglomerate_phase import agglomerate_output
    from napari_connectome.jobs.pipeline import run_job
    from napari_connectome.jobs.spec import parse_spec
    from tests.test_jobs_helpers import cells_job_spec, write_cells_volume

    volume = tmp_path / "cells.h5"
    write_cells_volume(volume)
    out = tmp_path / "seg.ome.zarr"
    spec = parse_spec(cells_job_spec(volume, out, workers=1, agglomerate={"threshold": 0.5}))
    assert agglomerate_output(spec) == tmp_path / "seg-agglomerated.ome.zarr"
    run_job(spec)
    dest = agglomerate_output(spec)
    meta = json.loads((dest / "agglomeration.json").read_text())
    assert meta["threshold"] == 0.5
    assert meta["input"].startswith(str(out))
    events = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "agglomerate" for e in events)
    sv = np.asarray(open_volume(str(dest / "supervoxels")).data)
    labels = np.asarray(open_volume(str(dest)).data)
    seg = np.asarray(open_volume(str(out)).data)
    assert sv.shape == labels.shape == seg.shape
    assert np.array_equal(sv[seg > 0], seg[seg > 0])
    with pytest.raises(ValueError, match="less than or equal to 1"):
        parse_spec(cells_job_spec(volume, out, agglomerate={"threshold": 2}))
