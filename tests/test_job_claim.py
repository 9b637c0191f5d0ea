"""FFN jobs store the FFN claim beside their output, block by block, and ``agglomerate`` (the
job's own ``agglomerate:`` phase, or the command on the job's output) weighs it, the way it
weighs the claim ``segment`` writes (real painter model, real job, real files)."""

from __future__ import annotations

import json

import numpy as np
import yaml
import zarr

from napari_connectome.cli import main
from napari_connectome.ffn.inference import segment_region
from napari_connectome.ffn.segment_volume import CLAIM
from napari_connectome.jobs.grid import BlockGrid
from napari_connectome.jobs.output import create_output
from napari_connectome.jobs.pipeline import clear_unfinished_start
from tests import test_segment_cli as segment_cli_tests
from tests.test_ffn_claim import two_cubes, write_em
from tests.test_ffn_inference import CONFIG, OPTS, bright_painter

model_dir = segment_cli_tests.model_dir  # the painter model of the CLI's tests

INFERENCE = {"seed_policy": "grid", "max_steps": 1, "min_segment_size": 20}


def job(tmp_path, model_dir, **changes) -> dict:
    """Two blocks along x over the two cubes (the dark plane x = 40 in block 0)."""
    em = tmp_path / "em.h5"
    spec = {
        "name": "cubes",
        "input": f"{em if em.exists() else write_em(tmp_path)}:raw",
        "output": str(tmp_path / "job.ome.zarr"),
        "block_shape": [40, 40, 48],
        "overlap": [0, 0, 8],
        "segmenter": {
            "kind": "ffn",
            "model": str(model_dir),
            "device": "cpu",
            "inference": INFERENCE,
        },
        "backend": {"kind": "local", "workers": 1},
        "pyramid_levels": 1,
        "region_graph": False,
    }
    spec.update(changes)
    return spec


def run_job(tmp_path, spec, capsys, name="job.yaml") -> dict:
    """``run-job`` of ``spec``; returns its summary line."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    assert main(["run-job", str(path), "--quiet"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_each_block_writes_its_claim_into_the_jobs_output(model_dir, tmp_path, capsys):
    spec = job(tmp_path, model_dir)
    run_job(tmp_path, spec, capsys)
    out = tmp_path / "job.ome.zarr"
    claim = zarr.open_array(str(out / CLAIM), mode="r")
    assert claim.dtype == np.uint8
    assert claim.shape == two_cubes().shape
    assert claim.chunks == (40, 40, 48)  # one chunk per block, like level 0
    stored = np.asarray(claim[...])
    labels = np.asarray(zarr.open_array(str(out / "0"), mode="r")[...])
    # block by block: what FFN claimed in the block's read region, kept in its write region
    raw = two_cubes()
    grid = BlockGrid((0, 0, 0), raw.shape, (40, 40, 48), (0, 0, 8), raw.shape)
    opts = OPTS.updated(**INFERENCE)
    for index in [(0, 0, 0), (0, 0, 1)]:
        block = grid.block(index)
        res = segment_region(raw[block.read.slices], bright_painter(), CONFIG, opts)
        expected = res.claim[block.write_slices_in_read]
        expected = np.where(res.labels[block.write_slices_in_read] > 0, expected, 0)
        assert np.array_equal(stored[block.write.slices], expected), index
    # block 0's first object took cube 2's near end across the dark plane; a later one claims it
    assert stored[20, 20, 42] == 255
    assert (stored > 0).sum() > 100
    assert not stored[labels == 0].any()


class HolesNearTheHighXEdge:
    """A plug-in block segmenter that gives a claim: every bright voxel is one segment except
    the last 12 along x of the region it is given (holes a neighbour fills), and each labelled
    voxel is claimed with its x in the region, plus 1."""

    min_shape = (1, 1, 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.segment_with_claim(image)[0]

    def segment_with_claim(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = (image > 128).astype(np.uint64)
        labels[..., -12:] = 0
        x = np.arange(1, image.shape[2] + 1, dtype=np.uint8)
        return labels, np.broadcast_to(x, image.shape).copy()


def holes_near_the_high_x_edge() -> HolesNearTheHighXEdge:
    return HolesNearTheHighXEdge()


def test_holes_a_neighbour_fills_take_its_claim_with_its_label(tmp_path, capsys):
    import h5py

    raw = np.zeros((40, 40, 96), np.uint8)
    raw[10:30, 10:30, :] = 255  # one bar along x, through both blocks
    with h5py.File(tmp_path / "bar.h5", "w") as f:
        f["raw"] = raw
    plugin = {"kind": "plugin", "factory": "tests.test_job_claim:holes_near_the_high_x_edge"}
    bar = f"{tmp_path / 'bar.h5'}:raw"
    for fill in (True, False):
        out = tmp_path / f"fill-{fill}.ome.zarr"
        changes = {"input": bar, "output": str(out), "match": {"fill_holes": fill}}
        run_job(tmp_path, job(tmp_path, None, segmenter=plugin, **changes), capsys)
        labels = np.asarray(zarr.open_array(str(out / "0"), mode="r")[...])
        claim = np.asarray(zarr.open_array(str(out / CLAIM), mode="r")[...])
        # block 0 (read x 0..56) labels x 0..43 and claims x + 1 there; block 1 (read x
        # 40..96) labels x 40..83 and claims x - 40 + 1
        row, lab = claim[20, 20], labels[20, 20]
        assert np.array_equal(row[:44], np.arange(1, 45))
        assert np.array_equal(row[48:84], np.arange(9, 45))
        assert not row[84:].any()
        assert not lab[84:].any()
        # x 44..47: block 0's holes, which block 1 labelled in its context
        if fill:
            assert (lab[44:48] == lab[0]).all()
            assert np.array_equal(row[44:48], np.arange(5, 9))  # block 1's claim there
        else:
            assert not lab[44:48].any()
            assert not row[44:48].any()
        assert not claim[labels == 0].any()


def test_the_jobs_agglomerate_phase_and_the_command_weigh_the_jobs_claim(
    model_dir, tmp_path, capsys
):
    section = {"threshold": 0.4, "fill": False}
    spec = job(tmp_path, model_dir, agglomerate=section)
    summary = run_job(tmp_path, spec, capsys)
    out = tmp_path / "job.ome.zarr"
    phase = tmp_path / "job-agglomerated.ome.zarr"
    assert summary["agglomerated"] == str(phase)  # run-job says where the phase wrote
    meta = json.loads((phase / "agglomeration.json").read_text())
    assert meta["claim"]["source"] == str(out / CLAIM)
    scores = zarr.open_group(str(phase / "scores"), mode="r")
    assert np.nanmax(np.asarray(scores["claim"][:])) > 0.4
    # the command on the job's output finds the same claim and gives the same scores
    em = spec["input"]
    dest = tmp_path / "cmd.ome.zarr"
    rc = main(
        ["agglomerate", str(out), em, str(dest), "--no-fill", "--threshold", "0.4", "--quiet"]
    )
    assert rc == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)  # the command says which claim it weighed
    assert printed["claim"] == {"source": str(out / CLAIM), "weight": 0.5}
    again = zarr.open_group(str(dest / "scores"), mode="r")
    for column in ("claim", "claim_faces", "affinity"):
        assert np.array_equal(np.asarray(again[column][:]), np.asarray(scores[column][:]), True)
    # and --no-claim takes it out of the affinity
    dest = tmp_path / "em.ome.zarr"
    argv = ["agglomerate", str(out), em, str(dest), "--no-fill", "--no-claim", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    em_only = zarr.open_group(str(dest / "scores"), mode="r")
    assert np.array_equal(em_only["affinity"][:], em_only["mean_rank"][:])
    # the queue ranks our FFN's output with the calibration fitted on it, others with the default
    from napari_connectome.agglomerate.queue import FFN_CALIBRATION, Calibration, ProofreadQueue

    assert ProofreadQueue(phase).calibration == FFN_CALIBRATION
    assert ProofreadQueue(dest).calibration == Calibration()
    # the section's own claim settings; a resume with other ones agglomerates again
    for change, recorded in (({"claim_weight": 0.8}, 0.8), ({"claim": False}, None)):
        resumed = {**spec, "resume": True, "agglomerate": {**section, **change}}
        run_job(tmp_path, resumed, capsys, "resume.yaml")
        meta = json.loads((phase / "agglomeration.json").read_text())
        assert (meta["claim"] or {}).get("weight") == recorded
    # turning resegmentation on (or changing its limit) agglomerates again, on the job's workers
    for limit in (5, 1):
        reseg = {**section, "resegment": True, "band": 1.0, "max_reseg": limit}
        run_job(tmp_path, {**spec, "resume": True, "agglomerate": reseg}, capsys, "reseg.yaml")
        meta = json.loads((phase / "agglomeration.json").read_text())
        assert (meta["model"], meta["max_reseg"]) == (str(model_dir), limit)
        assert 1 <= meta["n_resegmented"] <= limit
    bad = {**spec, "output": str(tmp_path / "bad.ome.zarr")}
    bad["agglomerate"] = {**section, "claim_weight": 1.5}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["run-job", "--check", str(tmp_path / "bad.yaml")]) == 2
    assert "claim_weight" in capsys.readouterr().err
    assert not (tmp_path / "bad.ome.zarr").exists()


def test_jobs_without_ffn_or_started_by_an_older_version_store_no_claim(
    model_dir, tmp_path, capsys
):
    # a watershed job has no claim to store
    spec = job(tmp_path, model_dir, segmenter={"kind": "watershed"})
    run_job(tmp_path, spec, capsys)
    assert not (tmp_path / "job.ome.zarr" / CLAIM).exists()
    # an FFN output made without a claim array (an older version) is resumed without one: a
    # claim with blocks missing would read as evidence against every merge in them
    spec = job(tmp_path, model_dir, output=str(tmp_path / "old.ome.zarr"))
    run_job(tmp_path, spec, capsys)
    old = tmp_path / "old.ome.zarr"
    import shutil

    shutil.rmtree(old / CLAIM)
    info = sorted((old / "_job" / "blocks").glob("*.json"))
    assert info, "the job keeps one info file per block"
    info[-1].unlink()  # that block is segmented again on resume
    run_job(tmp_path, {**spec, "resume": True}, capsys, "resume.yaml")
    assert not (old / CLAIM).exists()
    dest = tmp_path / "agg.ome.zarr"
    assert main(["agglomerate", str(old), spec["input"], str(dest), "--quiet"]) == 0
    assert json.loads((dest / "agglomeration.json").read_text())["claim"] is None


def test_a_start_killed_after_it_made_the_claim_array_is_cleared(tmp_path, capsys):
    out = tmp_path / "seg.ome.zarr"
    (out / "_job").mkdir(parents=True)
    create_output(
        out,
        (40, 40, 96),
        (40, 40, 48),
        voxel_size_nm=(8, 8, 8),
        offset_nm=(0, 0, 0),
        levels=1,
        name="cut",
        claim=True,
    )
    assert (out / CLAIM / "zarr.json").is_file()
    clear_unfinished_start(out)
    assert "left by a start that did not finish" in capsys.readouterr().err
    assert not out.exists()


def test_check_warns_when_the_overlap_is_less_than_the_ffns_field_of_view(
    model_dir, tmp_path, capsys
):
    spec = job(tmp_path, model_dir)  # overlap 8 against the painter's 17^3 field of view
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run-job", "--check", str(tmp_path / "job.yaml")]) == 0
    captured = capsys.readouterr()
    line = json.loads(captured.out)
    assert line["ok"] is True
    assert "less than the FFN's field of view [17, 17, 17]" in line["warnings"][0]
    assert "warning: overlap [0, 0, 8]" in captured.err
    roomy = {**spec, "overlap": [17, 17, 17], "block_shape": [40, 40, 48]}
    (tmp_path / "roomy.yaml").write_text(yaml.safe_dump(roomy))
    assert main(["run-job", "--check", str(tmp_path / "roomy.yaml")]) == 0
    assert "warnings" not in json.loads(capsys.readouterr().out)
