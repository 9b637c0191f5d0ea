"""A job's last phase computes its output's region graph on the job's own Dask workers."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zarr

from napari_connectome.graph import RegionGraph, compute_region_graph
from napari_connectome.jobs.pipeline import run_job
from napari_connectome.jobs.spec import parse_spec
from tests.test_jobs_helpers import cells_job_spec, write_cells_volume


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("vol") / "cells.h5"
    write_cells_volume(path)
    return path


@pytest.fixture(scope="module")
def dask_client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def events_of(output) -> list[dict]:
    return [json.loads(line) for line in (output / "progress.jsonl").read_text().splitlines()]


def test_a_finished_job_has_the_region_graph_of_its_output(volume, tmp_path, dask_client):
    with h5py.File(volume) as f:
        shape = f["raw"].shape
        raw = f["raw"][4:40, :, 8:64]
    mask = np.zeros(shape, np.uint8)
    mask[:24] = 1  # no tissue below z = 24: the output's last chunk row stays empty
    with h5py.File(tmp_path / "mask.h5", "w") as f:
        f["mask"] = mask
    out = tmp_path / "seg.ome.zarr"
    roi = {"start": [4, 0, 8], "stop": [40, 64, 64]}
    spec = parse_spec(cells_job_spec(volume, out, roi=roi, mask=f"{tmp_path / 'mask.h5'}:mask"))
    run_job(spec, client=dask_client)

    g = RegionGraph.open(out / "region_graph")
    assert g.meta["has_image"]
    assert g.meta["shape"] == [36, 64, 56]
    assert g.meta["chunks"] == [20, 32, 32]  # the output's chunks: one per job block
    # the same pass run afterwards on the finished output (in this process) gives the same store
    labels = zarr.open_array(str(out / "0"), mode="r")
    after = RegionGraph.open(compute_region_graph(labels, tmp_path / "after", image=raw))
    assert after.fingerprint == g.fingerprint
    np.testing.assert_array_equal(after.fragment_ids, g.fragment_ids)
    rows = np.arange(g.n_fragments)
    for a, b in zip(after.stats(rows), g.stats(rows)):
        np.testing.assert_array_equal(a, b)
    ea, eb = after.edges_of(rows), g.edges_of(rows)
    for key in ("u", "v", "area", "weight", "index"):
        np.testing.assert_array_equal(ea[key], eb[key])
    assert g.n_fragments == len(np.unique(labels[:])) - 1 > 5
    assert g.chunk_digest((1, 0, 0)) is None  # masked out: never stored, never read

    events = events_of(out)
    kinds = [(e["event"], e.get("phase")) for e in events]
    assert ("phase", "region_graph") in kinds
    assert kinds.index(("phase", "region_graph")) < kinds.index(("done", None))
    (line,) = [e for e in events if e["event"] == "region_graph"]
    assert line["n_fragments"] == g.n_fragments
    assert line["fingerprint"] == g.fingerprint

    # a resumed, finished job leaves its graph alone
    created = g.meta["created"]
    run_job(spec.model_copy(update={"resume": True}), client=dask_client)
    assert RegionGraph.open(out / "region_graph").meta["created"] == created
    assert [e["event"] for e in events_of(out)].count("region_graph") == 1


def test_the_phase_can_be_switched_off(volume, tmp_path, dask_client):
    out = tmp_path / "seg.ome.zarr"
    run_job(parse_spec(cells_job_spec(volume, out, region_graph=False)), client=dask_client)
    assert not (out / "region_graph").exists()
    assert "region_graph" not in {e.get("phase") for e in events_of(out)}
