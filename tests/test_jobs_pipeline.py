"""Blockwise jobs on a real Dask LocalCluster: same result as one canvas, resumable, worker
faults."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import zarr
from skimage.metrics import adapted_rand_error

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.jobs.pipeline import run_job
from napari_connectome.jobs.segmenters import WatershedSegmenter
from napari_connectome.jobs.spec import parse_spec
from tests.test_jobs_helpers import cells_job_spec, write_cells_volume, write_raw


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("vol") / "cells.h5"
    write_cells_volume(path)
    return path


@pytest.fixture(scope="module")
def dask_client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def job(volume, output, **extra) -> dict:
    return cells_job_spec(volume, output, **extra)


def events_of(output) -> list[dict]:
    import json

    return [json.loads(line) for line in (output / "progress.jsonl").read_text().splitlines()]


def labels_of(output) -> np.ndarray:
    return zarr.open_array(str(output / "0"), mode="r")[:]


def test_blockwise_job_matches_one_canvas_and_is_an_ome_zarr(volume, tmp_path, dask_client):
    import h5py

    out = tmp_path / "seg.ome.zarr"
    result = run_job(parse_spec(job(volume, out)), client=dask_client)
    assert result.blocks_total == 2 * 2 * 2
    seg = labels_of(out)
    with h5py.File(volume) as f:
        whole = WatershedSegmenter()(f["raw"][:])
    # reconciliation neither cuts nor fuses cells at block faces
    assert adapted_rand_error(whole.astype(np.int64), seg.astype(np.int64))[0] < 0.01
    assert len(np.unique(seg[seg > 0])) == len(np.unique(whole[whole > 0]))
    # a complete OME-Zarr 0.5 labels image with a strided pyramid
    group = zarr.open_group(str(out), mode="r")
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    assert "image-label" in ome
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["0", "1"]
    np.testing.assert_array_equal(zarr.open_array(str(out / "1"))[:], seg[::2, ::2, ::2])
    lines = (out / "progress.jsonl").read_text().splitlines()
    assert sum('"phase": "segment"' in line for line in lines) == 8
    assert '"event": "done"' in lines[-1]
    # the seam check: faces cut no cell (the canvas has no boundary there either)
    assert set(result.seams) == {"z", "y", "x"}
    assert all(s["face_pairs"] > 0 and s["face_change"] == 0.0 for s in result.seams.values())
    assert events_of(out)[-1]["seams"] == result.seams


@pytest.mark.parametrize(("rule", "objects"), [("contained", 1), ("mutual", 3)])
def test_a_neuron_whose_branches_meet_in_one_block_stays_one_object(
    rule, objects, tmp_path, dask_client
):
    """A U-shaped cell across a face: the lower block sees one segment, the upper block two arms
    (they meet outside its read region). The default rule joins both arms to it; the strict
    mutual rule cuts them off."""
    image = np.full((40, 32, 64), 30, np.uint8)
    image[2:38, 8:24, 8:20] = image[2:38, 8:24, 44:56] = 200  # two arms along z
    image[2:8, 8:24, 8:56] = 200  # joined at the bottom, in the lower block only
    volume = write_raw(tmp_path / "u.h5", image)
    out = tmp_path / f"{rule}.ome.zarr"
    spec = job(volume, out, block_shape=[20, 32, 64], overlap=[4, 4, 4], match={"rule": rule})
    result = run_job(parse_spec(spec), client=dask_client)
    seg = labels_of(out)
    assert len(np.unique(seg[image > 128])) == objects
    assert not seg[image <= 128].any()
    # the seam check sees the cut: both arms cross the z face (2 x 16 x 12 voxel pairs)
    z = result.seams["z"]
    assert z["face_pairs"] == 2 * 16 * 12
    assert z["face_change"] == (0.0 if rule == "contained" else 1.0)
    assert z["interior_change"] == 0.0  # inside blocks every arm keeps its id


def test_a_merge_a_block_made_only_in_its_context_does_not_fuse_cells(tmp_path, dask_client):
    """Cells P (lower y block) and Q (upper y block) lie below the z face, where the upper z blocks
    only read context; those blocks fuse P and Q at their read border. The faces between them
    are compared only across their own write regions, so that fused context segment never links
    P to Q (comparing the whole shared region chained P - fused - fused - Q into one object)."""
    image = np.full((64, 40, 24), 30, np.uint8)
    image[20:32, 10:18, 2:8] = 200  # P: owned by block (0, 0, 0)
    image[20:32, 20:26, 14:20] = 200  # Q: owned by block (0, 1, 0)
    volume = write_raw(tmp_path / "context-merge.h5", image)
    out = tmp_path / "context-merge.ome.zarr"
    spec = job(
        volume,
        out,
        block_shape=[32, 20, 24],
        overlap=[12, 8, 0],
        segmenter={
            "kind": "plugin",
            "factory": "tests.test_jobs_helpers:merges_at_its_low_z_border",
        },
        match={"fill_holes": False},
    )
    run_job(parse_spec(spec), client=dask_client)
    seg = labels_of(out)
    p, q = seg[20:32, 10:18, 2:8], seg[20:32, 20:26, 14:20]
    assert len(np.unique(p)) == len(np.unique(q)) == 1
    assert p.min() > 0
    assert p.flat[0] != q.flat[0]


@pytest.mark.parametrize(("fill_holes", "unlabelled"), [(True, 0), (False, 3 * 16 * 16)])
def test_voxels_a_block_dropped_take_the_label_its_neighbour_gave_them(
    fill_holes, unlabelled, tmp_path, dask_client
):
    """A cell that clips the upper block by 3 slices is too small there and dropped (as FFN drops
    small objects); the lower block segmented those slices as context, so they keep the cell."""
    image = np.full((40, 32, 32), 30, np.uint8)
    image[4:23, 8:24, 8:24] = 200  # 4864 voxels; 2304 of them in the upper block's read region
    volume = write_raw(tmp_path / "clip.h5", image)
    out = tmp_path / f"fill-{fill_holes}.ome.zarr"
    spec = job(
        volume,
        out,
        block_shape=[20, 32, 32],
        overlap=[6, 6, 6],
        segmenter={
            "kind": "plugin",
            "factory": "tests.test_jobs_helpers:large_components",
            "options": {"min_size": 3000},
        },
        match={"fill_holes": fill_holes},
    )
    run_job(parse_spec(spec), client=dask_client)
    seg = labels_of(out)
    cell = seg[image > 128]
    assert int((cell == 0).sum()) == unlabelled
    assert len(np.unique(cell[cell > 0])) == 1
    assert not seg[image <= 128].any()


def test_ids_do_not_depend_on_workers_or_order(volume, tmp_path, dask_client):
    a, b = tmp_path / "a.ome.zarr", tmp_path / "b.ome.zarr"
    run_job(parse_spec(job(volume, a)), client=dask_client)
    spec_b = parse_spec(job(volume, b, backend={"kind": "local", "workers": 1}))
    run_job(spec_b)  # its own LocalCluster with one worker: blocks finish in another order
    np.testing.assert_array_equal(labels_of(a), labels_of(b))


def test_interrupted_job_resumes_only_missing_blocks_identically(volume, tmp_path, dask_client):
    ref = tmp_path / "ref.ome.zarr"
    run_job(parse_spec(job(volume, ref)), client=dask_client)
    out = tmp_path / "seg.ome.zarr"
    slow = {"kind": "plugin", "factory": "tests.test_jobs_helpers:slow_watershed"}
    slow["options"] = {"delay_s": 0.4}
    spec = parse_spec(job(volume, out, segmenter=slow))
    # interrupt: the client goes away after three blocks (as a cancelled job would)
    seen = []

    def stop_after_three(done, total, message):
        if message == "segmenting" and done >= 3:
            seen.append(done)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(spec, client=dask_client, progress=stop_after_three)
    time.sleep(1)  # running tasks finish their block (idempotent, atomic files)
    done_before = {p.name for p in (out / "_job" / "blocks").glob("*.json")}
    assert 3 <= len(done_before) < 8

    with pytest.raises(UserInputError, match="already exists"):
        run_job(spec, client=dask_client)
    result = run_job(spec.model_copy(update={"resume": True}), client=dask_client)
    assert result.blocks_segmented == 8 - len(done_before)
    np.testing.assert_array_equal(labels_of(out), labels_of(ref))

    # a block relabelled with another table (as by an older version) is relabelled on resume; the
    # rest are left alone, and the result is the same
    import json

    marker = out / "_job" / "relabel" / "0_1_0.done"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "lut": "an older table"}))
    zarr.open_array(str(out / "0"), mode="r+")[0:20, 32:64, 0:32] = 0  # what that table wrote
    run_job(spec.model_copy(update={"resume": True}), client=dask_client)
    events = events_of(out)
    last_start = max(i for i, e in enumerate(events) if e["event"] == "start")
    relabelled = [
        e["block"] for e in events[last_start:] if e["event"] == "block" and e["phase"] == "relabel"
    ]
    assert relabelled == [[0, 1, 0]]
    np.testing.assert_array_equal(labels_of(out), labels_of(ref))


def test_killed_worker_block_is_retried(volume, tmp_path, dask_client):
    ref = tmp_path / "ref.ome.zarr"
    run_job(parse_spec(job(volume, ref)), client=dask_client)
    markers = tmp_path / "markers"
    markers.mkdir()
    plugin = {
        "kind": "plugin",
        "factory": "tests.test_jobs_helpers:slow_watershed",
        "options": {"delay_s": 1.5, "marker_dir": str(markers)},
    }
    out = tmp_path / "seg.ome.zarr"
    spec = parse_spec(job(volume, out, segmenter=plugin))
    errors = []
    runner = threading.Thread(
        target=lambda: errors.extend([None]) or run_job(spec, client=dask_client), daemon=True
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not list(markers.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = sorted(markers.iterdir())[0]
    block_hash, pid = victim.name.split("-")[:2]
    os.kill(int(pid), signal.SIGKILL)  # the worker process dies in the middle of that block
    runner.join(120)
    assert not runner.is_alive()
    starts = [m.name.split("-")[0] for m in markers.iterdir()]
    assert starts.count(block_hash) >= 2  # the block was run again on another worker
    np.testing.assert_array_equal(labels_of(out), labels_of(ref))


def test_dask_backend_uses_an_existing_scheduler(
    volume, tmp_path, dask_client, monkeypatch, capsys
):
    """`submit` with backend dask: the job process connects to the running scheduler."""
    import json

    import yaml

    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))
    ref = tmp_path / "ref.ome.zarr"
    run_job(parse_spec(job(volume, ref)), client=dask_client)
    address = dask_client.scheduler.address
    out = tmp_path / "seg.ome.zarr"
    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump(job(volume, out, backend={"kind": "dask", "scheduler": address}))
    )
    assert main(["submit", str(path)]) == 0
    job_id = capsys.readouterr().out.strip()
    assert (
        main(["stream", job_id, str(tmp_path / "cache"), "--poll", "0.2", "--timeout", "120"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["state"] == "done"
    np.testing.assert_array_equal(labels_of(out), labels_of(ref))
    pids = {int(e["worker"].rsplit(":", 1)[1]) for e in events_of(out) if e.get("worker")}
    assert pids
    assert pids <= set(dask_client.run(os.getpid).values())  # the existing cluster's workers


def test_empty_mask_skips_blocks(volume, tmp_path, dask_client):
    import h5py

    mask_path = tmp_path / "mask.h5"
    with h5py.File(volume) as f:
        shape = f["raw"].shape
    mask = np.zeros(shape, np.uint8)
    mask[:20] = 1  # only the upper half of z is tissue
    with h5py.File(mask_path, "w") as f:
        f["mask"] = mask
    out = tmp_path / "seg.ome.zarr"
    run_job(parse_spec(job(volume, out, mask=f"{mask_path}:mask")), client=dask_client)
    seg = labels_of(out)
    assert seg[20:].max() == 0
    assert seg[:20].max() > 0


def test_cli_run_job_and_bad_inputs(volume, tmp_path, capsys):
    import yaml

    def write(spec, name="job.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec))
        return str(path)

    out = tmp_path / "seg.ome.zarr"
    # ROI outside the volume: exit 2, one message, nothing written
    bad = job(volume, out, roi={"start": [0, 0, 0], "stop": [100, 64, 64]})
    assert main(["run-job", write(bad)]) == 2
    assert "outside the input volume" in capsys.readouterr().err
    # a block smaller than the segmenter's field of view
    fov = {"kind": "plugin", "factory": "tests.test_jobs_helpers:slow_watershed"}
    fov["options"] = {"delay_s": 0, "min_shape": [33, 33, 33]}
    assert main(["run-job", write(job(volume, out, segmenter=fov))]) == 2
    assert "field of view" in capsys.readouterr().err
    # a wrong input path, an unknown field
    assert main(["run-job", write(job(tmp_path / "nope.h5", out))]) == 2
    assert "nope.h5" in capsys.readouterr().err
    assert main(["run-job", write({**job(volume, out), "blok_shape": [1, 2, 3]})]) == 2
    assert "blok_shape: unknown field" in capsys.readouterr().err
    assert not out.exists()

    small = job(volume, out, backend={"kind": "local", "workers": 1})
    assert main(["run-job", write(small)]) == 0
    assert (out / "0" / "zarr.json").is_file()
    # an existing output is refused unless asked
    assert main(["run-job", write(small)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["run-job", "--resume", write(small)]) == 0
    assert main(["run-job", "--overwrite", write(small)]) == 0
    # --overwrite never deletes a folder that is not a zarr or a job's output
    precious = tmp_path / "thesis"
    (precious / "chapters").mkdir(parents=True)
    assert main(["run-job", "--overwrite", write(job(volume, precious))]) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert (precious / "chapters").is_dir()
