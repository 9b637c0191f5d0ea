"""`napari-connectome calibrate-queue`: the queue's ranking fitted on ground truth of the user's
own data, written as JSON, and read back by the queue; the truth of each decision is checked
against the voxels; bad input writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_connectome.agglomerate import agglomerate
from napari_connectome.agglomerate.calibrate import judge_output, load_calibration
from napari_connectome.agglomerate.queue import Calibration, ProofreadQueue
from napari_connectome.errors import UserInputError
from napari_connectome.volumes import open_volume
from tests.test_agglomerate import run, write_crop


@pytest.fixture(scope="module")
def made(google_ffn_dir, fib25_h5, tmp_path_factory) -> tuple[Path, Path]:
    """A 64^3 crop of Google's segmentation agglomerated at 0.4 (merges and pairs apart)."""
    folder = tmp_path_factory.mktemp("cal")
    crop = write_crop(folder / "crop.h5", google_ffn_dir, fib25_h5)
    dest = folder / "agg.ome.zarr"
    agglomerate(open_volume(f"{crop}:seg"), open_volume(f"{crop}:raw"), dest, threshold=0.4)
    return dest, crop


def majority(gt: np.ndarray, where: np.ndarray) -> int:
    g = gt[where & (gt > 0)]
    return int(np.bincount(g).argmax()) if g.size else 0


def test_calibration_is_fitted_on_the_truth_of_the_voxels_and_ranks_the_queue(
    made, tmp_path, capsys
):
    dest, crop = made
    out = tmp_path / "calibration.json"
    assert run("calibrate-queue", dest, f"{crop}:gt", "--out", out, "--quiet") == 0
    printed = json.loads(capsys.readouterr().out)
    # every decision's truth, judged here from the voxels themselves
    with h5py.File(crop, "r") as f:
        gt = f["gt"][:].astype(np.int64)
    sv = np.asarray(open_volume(str(dest / "supervoxels")).data)
    labels = np.asarray(open_volume(str(dest)).data)
    judged = judge_output(dest, open_volume(f"{crop}:gt"))
    cand = judged.candidates
    assert cand.merged.any()
    assert (~cand.merged).any()
    for k in range(len(cand.a)):
        if cand.merged[k]:  # the contact's two supervoxels
            wa, wb = sv == cand.a[k], sv == cand.b[k]
        else:  # the two agglomerated segments
            wa = labels == labels[sv == cand.a[k]][0]
            wb = labels == labels[sv == cand.b[k]][0]
        ba, bb = majority(gt, wa), majority(gt, wb)
        assert judged.same[k] == (ba == bb != 0)
    wrong = np.where(cand.merged, ~judged.same, judged.same)[judged.known]
    assert printed["in_sample"][0]["real_errors"] == int(wrong.sum()) > 5
    assert printed["candidates"] == int(judged.known.sum())
    # the file holds the fit and what it was fitted on; the queue ranks by it
    doc = json.loads(out.read_text())
    assert doc["format"] == "napari-connectome-queue-calibration"
    assert doc["fitted_on"][0]["output"] == str(dest.resolve())
    cal = load_calibration(out)
    assert len(cal.weights) == 6
    assert cal != Calibration()
    queue = ProofreadQueue(dest, calibration=cal)
    shipped = ProofreadQueue(dest)
    assert queue.calibration == cal
    assert [i.p_wrong for i in queue.items] != [i.p_wrong for i in shipped.items]
    # fitted on this truth it ranks this truth's errors better than the shipped one
    assert printed["in_sample"][0]["auc"] > 0.5


def test_ground_truth_of_part_of_the_volume_calibrates_on_what_it_covers(made, tmp_path, capsys):
    dest, crop = made
    with h5py.File(crop, "r") as f:
        gt = f["gt"][:]
    gt[:, :, 32:] = 0  # annotated: the half x < 32
    part = tmp_path / "part.h5"
    with h5py.File(part, "w") as f:
        f["gt"] = gt
    out = tmp_path / "cal.json"
    assert run("calibrate-queue", dest, f"{part}:gt", "--out", out, "--quiet") == 0
    printed = json.loads(capsys.readouterr().out)
    full = judge_output(dest, open_volume(f"{crop}:gt"))
    assert 0 < printed["candidates"] < int(full.known.sum())
    assert printed["left_out"] == len(full.known) - printed["candidates"]


def test_two_outputs_are_also_judged_each_by_a_fit_on_the_other(made, tmp_path, capsys):
    dest, crop = made
    other = tmp_path / "agg-0.65.ome.zarr"  # the same supervoxels agglomerated at 0.65
    assert run("agglomerate", f"{crop}:seg", f"{crop}:raw", other, "--reuse", dest) == 0
    capsys.readouterr()
    out = tmp_path / "cal.json"
    argv = ["calibrate-queue", dest, f"{crop}:gt", other, f"{crop}:gt", "--out", out, "--quiet"]
    assert run(*argv) == 0
    printed = json.loads(capsys.readouterr().out)
    cross = printed["cross_fitted"]
    assert [c["output"] for c in cross] == [str(dest.resolve()), str(other.resolve())]
    for c in cross:  # a fit on the other output alone, or null where it has too few errors
        assert c["figures"] is None or 0 <= c["figures"]["real_errors_first_20"] <= 1
    assert [f["ground_truth"] for f in printed["fitted_on"]] == [f"{crop.resolve()}:gt"] * 2
    # the same pair twice would judge an output by a fit on itself
    argv = ["calibrate-queue", dest, f"{crop}:gt", dest, f"{crop}:gt", "--out", out]
    assert run(*argv, "--overwrite") == 2
    assert "given twice" in capsys.readouterr().err


def test_bad_input_is_refused_and_writes_nothing(made, tmp_path, tmp_path_factory, capsys):
    dest, crop = made
    out = tmp_path / "cal.json"
    assert run("calibrate-queue", dest, "--out", out) == 2  # not a pair
    assert "in pairs" in capsys.readouterr().err
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["gt"] = np.ones((8, 8, 8), np.uint32)
    assert run("calibrate-queue", dest, f"{other}:gt", "--out", out, "--quiet") == 2
    assert "has shape [8, 8, 8]" in capsys.readouterr().err
    one_body = tmp_path / "one.h5"
    with h5py.File(one_body, "w") as f:
        f["gt"] = np.ones((64, 64, 64), np.uint32)  # every decision judged by one body
    assert run("calibrate-queue", dest, f"{one_body}:gt", "--out", out, "--quiet") == 2
    assert "needs at least" in capsys.readouterr().err
    assert run("calibrate-queue", dest, f"{crop}:raw", "--out", out, "--quiet") == 2
    assert "is the EM" in capsys.readouterr().err  # the EM it was made from is no truth
    cremi = tmp_path / "cremi.h5"
    with h5py.File(crop, "r") as f, h5py.File(cremi, "w") as g:
        gt = f["gt"][:].astype(np.uint64)
        gt[:4] = np.uint64(2**64 - 1)  # CREMI's "no label" over the first sections
        g["gt"] = gt
    assert run("calibrate-queue", dest, f"{cremi}:gt", "--out", out, "--quiet") == 2
    assert "--background 18446744073709551615" in capsys.readouterr().err
    missing = tmp_path / "no-such-folder" / "cal.json"
    assert run("calibrate-queue", dest, f"{crop}:gt", "--out", missing, "--quiet") == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    nothing = tmp_path_factory.mktemp("nothing")  # a folder, but no agglomerate output
    assert run("calibrate-queue", nothing, f"{crop}:gt", "--out", out, "--quiet") == 2
    assert "not an agglomerate output" in capsys.readouterr().err
    assert not out.exists()
    # the output never replaces an input, nor a file this command did not write
    assert run("calibrate-queue", dest, f"{crop}:gt", "--out", crop, "--quiet") == 2
    capsys.readouterr()
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert run("calibrate-queue", dest, f"{crop}:gt", "--out", notes) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert run("calibrate-queue", dest, f"{crop}:gt", "--out", notes, "--overwrite") == 2
    assert "replaces only a calibration" in capsys.readouterr().err
    assert notes.read_text() == '{"mine": 1}'
    assert crop.stat().st_size > 0
    with pytest.raises(UserInputError, match="not a queue calibration"):
        load_calibration(notes)
    bad = tmp_path / "bad.json"
    good = {"format": "napari-connectome-queue-calibration", "format_version": 1}
    bad.write_text(json.dumps({**good, "bias": 1, "weights": [1], "features": ["x"]}))
    with pytest.raises(UserInputError, match="not the queue's"):
        load_calibration(bad)


def test_ground_truth_named_like_em_is_warned_about(made, tmp_path, capsys):
    dest, crop = made
    with h5py.File(crop, "r") as f, h5py.File(tmp_path / "other.h5", "w") as g:
        g["volumes/raw"] = f["gt"][:]  # truth here, but named as EM usually is
    argv = ["calibrate-queue", dest, f"{tmp_path / 'other.h5'}:volumes/raw", "--out"]
    assert run(*argv, tmp_path / "cal.json", "--quiet") == 0
    captured = capsys.readouterr()
    assert "is named like EM" in captured.err
    assert json.loads(captured.out)["calibration"] == str((tmp_path / "cal.json").resolve())
