"""The FFN claim (issue 14's "FFN probability at the contact"): what a later object's network
gives the voxels another segment already holds, recorded by the canvas, written by ``segment``
and ``consensus``, and read by ``agglomerate`` as merge evidence (real painter model, real files).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zarr

from napari_connectome.agglomerate.queue import ProofreadQueue
from napari_connectome.cli import main
from napari_connectome.ffn.inference import segment_region
from napari_connectome.ffn.segment_volume import CLAIM
from tests import test_segment_cli as segment_cli_tests
from tests.test_ffn_inference import CONFIG, OPTS, bright_painter

model_dir = segment_cli_tests.model_dir  # the painter model of the CLI's tests

SEEDS = ["20,20,24", "20,20,52"]  # cube 1 first, then cube 2


def two_cubes() -> np.ndarray:
    """Two bright boxes 1 voxel apart along x: one neurite that FFN cuts at the gap."""
    raw = np.zeros((40, 40, 96), np.uint8)
    raw[12:28, 12:28, 4:40] = 255  # cube 1: x 4..39
    raw[12:28, 12:28, 41:64] = 255  # cube 2: x 41..63 (the dark plane x = 40 between)
    return raw


def run(*argv) -> int:
    return main([str(a) for a in argv])


def write_em(tmp_path):
    """The two cubes as an HDF5 'EM' file."""
    em = tmp_path / "em.h5"
    with h5py.File(em, "w") as f:
        f.create_dataset("raw", data=two_cubes()).attrs["resolution_nm_zyx"] = [8, 8, 8]
    return em


def segment(em, dest, model_dir, seeds=SEEDS, *extra) -> int:
    """``segment`` of the two cubes from ``seeds`` in order."""
    flags = [a for s in seeds for a in ("--seed", s)]
    return run("segment", f"{em}:raw", dest, "--model", model_dir, *flags, "--quiet", *extra)


def test_a_later_object_claims_the_earlier_ones_voxels_within_its_fields_of_view():
    img = two_cubes()
    seeds = [tuple(int(c) for c in s.split(",")) for s in SEEDS]
    res = segment_region(img, bright_painter(), CONFIG, OPTS, seeds=seeds)
    labels, claim = res.labels, res.claim
    first, second = res.outcomes
    assert claim.dtype == np.uint8
    assert claim.shape == img.shape
    # the painter paints every bright voxel of its field of view, across the dark plane too:
    # object 1 took the near end of cube 2, and object 2's network claims those voxels back
    assert (labels[20, 20, 4:40] == 1).all()
    assert labels[20, 20, 41] == 1
    assert (labels[20, 20, 50:64] == 2).all()
    assert second.overlaps == {1: int((claim > 0).sum())}
    assert second.overlaps[1] > 100
    claimed = claim > 0
    assert (claim[claimed] == 255).all()  # probability ~1 there
    assert (labels[claimed] == 1).all()
    assert (np.argwhere(claimed)[:, 2] >= 41).all()
    # nothing was claimed where no later object reached, nor in the last object
    assert not claimed[labels == 2].any()
    assert not claimed[labels == 0].any()
    assert not claimed[:, :, :40].any()
    assert first.overlaps == {}


def test_segment_writes_the_claim_and_agglomerate_weighs_it(model_dir, tmp_path, capsys):
    em = write_em(tmp_path)
    seg = tmp_path / "seg.ome.zarr"
    assert segment(em, seg, model_dir) == 0
    claim = zarr.open_array(str(seg / CLAIM), mode="r")
    assert claim.shape == two_cubes().shape
    assert claim.dtype == np.uint8
    assert int(np.asarray(claim[...]).max()) == 255

    def agglomerate(name, *flags):
        dest = tmp_path / f"{name}.ome.zarr"
        # --model none: the claim is what this test weighs (the painter that made SEG would
        # resegment by default, tests/test_seg_model.py)
        model = () if "--reuse" in flags else ("--model", "none")
        rc = run("agglomerate", seg, f"{em}:raw", dest, "--quiet", *model, *flags)
        assert rc == 0, capsys.readouterr().err
        capsys.readouterr()
        scores = zarr.open_group(str(dest / "scores"), mode="r")
        labels = np.asarray(zarr.open_array(str(dest / "0"), mode="r")[...])
        meta = json.loads((dest / "agglomeration.json").read_text())
        return scores, labels, meta

    def joined(labels):
        return labels[20, 20, 30] == labels[20, 20, 50]

    # the claim alone decides: the two cubes are one (no fill: every face between them lies in
    # FFN's voxels; faces in filled voxels farther than CLAIM_REACH keep the EM evidence)
    flags = ("--no-fill", "--threshold", "0.4")
    scores, labels, meta = agglomerate("claim", "--claim-weight", "1", *flags)
    assert meta["claim"]["weight"] == 1.0
    seg_ids = np.asarray(zarr.open_array(str(seg / "0"), mode="r")[...])
    assert 0 < seg_ids[20, 20, 30] != seg_ids[20, 20, 50] > 0  # FFN cut them at the gap
    area, faces = np.asarray(scores["area"][:]), np.asarray(scores["claim_faces"][:])
    assert (faces <= area).all()
    assert faces.max() > 0
    # about half the faces between the two lie within reach of object 2's claim
    assert (faces == area).all()
    best = np.nanargmax(np.asarray(scores["claim"][:]))
    assert scores["claim"][best] > 0.4
    assert scores["affinity"][best] == scores["claim"][best]
    assert joined(labels)
    # the proofreading queue says so in the merge's reason
    queue = ProofreadQueue(tmp_path / "claim.ome.zarr")
    merge = next(item for item in queue.items if item.kind == "merged")
    assert merge.claim == scores["claim"][best]
    assert f"FFN claimed across {merge.claim:.0%} of the widest edge's faces" in merge.reason(0.4)
    # without it the scores carry no claim, and the affinity is the EM evidence alone
    scores, labels, meta = agglomerate("em", "--no-claim", *flags)
    assert meta["claim"] is None
    assert np.isnan(np.asarray(scores["claim"][:])).all()
    assert np.array_equal(scores["affinity"][:], scores["mean_rank"][:])
    assert all(
        "FFN claimed" not in it.reason(0.4) for it in ProofreadQueue(tmp_path / "em.ome.zarr").items
    )
    # --reuse keeps the claim columns; changing the claim with --reuse is refused
    scores, _, _ = agglomerate("reused", "--reuse", tmp_path / "claim.ome.zarr")
    assert np.nanmax(np.asarray(scores["claim"][:])) > 0.4
    dest = tmp_path / "refused.ome.zarr"
    flags = ("--reuse", tmp_path / "claim.ome.zarr", "--no-claim", "--quiet")
    assert run("agglomerate", seg, f"{em}:raw", dest, *flags) == 2
    assert "--no-claim" in capsys.readouterr().err
    assert not dest.exists()


def test_consensus_keeps_the_higher_claim_of_the_two_runs(model_dir, tmp_path, capsys):
    em = write_em(tmp_path)
    paths = [tmp_path / "a.ome.zarr", tmp_path / "b.ome.zarr"]
    assert segment(em, paths[0], model_dir, SEEDS) == 0
    assert segment(em, paths[1], model_dir, SEEDS[::-1]) == 0
    cons = tmp_path / "cons.ome.zarr"
    assert run("consensus", *paths, cons, "--min-size", "1") == 0, capsys.readouterr().err
    a, b, c = (np.asarray(zarr.open_array(str(p / CLAIM), mode="r")[...]) for p in (*paths, cons))
    labels = np.asarray(zarr.open_array(str(cons / "0"), mode="r")[...])
    # run a: cube 2 came later and claimed the voxels past the gap that cube 1's object took;
    # run b: the other way round
    assert a[20, 20, 42] == 255
    assert a[20, 20, 38] == 0
    assert b[20, 20, 38] == 255
    assert b[20, 20, 42] == 0
    assert np.array_equal(c, np.where(labels > 0, np.maximum(a, b), 0))


@pytest.mark.parametrize("shape", [(40, 40, 95), (8, 8, 8)])
def test_a_claim_of_another_shape_is_refused_and_nothing_is_written(
    shape, model_dir, tmp_path, capsys
):
    em = write_em(tmp_path)
    seg = tmp_path / "seg.ome.zarr"
    assert segment(em, seg, model_dir) == 0
    zarr.create_array(str(seg / CLAIM), shape=shape, dtype="uint8", overwrite=True)
    dest = tmp_path / "agg.ome.zarr"
    assert run("agglomerate", seg, f"{em}:raw", dest, "--quiet") == 2
    err = capsys.readouterr().err
    assert "belongs to another segmentation" in err
    assert "--no-claim" in err
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["em.h5", "seg.ome.zarr"]


def test_segment_overwrite_replaces_an_output_with_its_claim(model_dir, tmp_path, capsys):
    em = write_em(tmp_path)
    seg = tmp_path / "seg.ome.zarr"
    assert segment(em, seg, model_dir, SEEDS[:1]) == 0
    assert segment(em, seg, model_dir, SEEDS, "--overwrite") == 0
    assert int(np.asarray(zarr.open_array(str(seg / CLAIM), mode="r")[...]).max()) == 255
    # a claim folder that is not an array of ours makes the output the user's
    (seg / CLAIM / "notes.txt").write_text("mine")
    assert segment(em, seg, model_dir, SEEDS[:1], "--overwrite") == 2
    assert "other files were put" in capsys.readouterr().err
    assert (seg / CLAIM / "notes.txt").read_text() == "mine"
