"""``agglomerate`` resegments an over-segmentation with the model that made it (as SEG records
it) by default, every contact nearest the threshold first; one FFN pass is not resegmented by
default, and another model scores only the contacts near the threshold; ``--model none`` never
resegments; a recorded model that is not on this machine is said and skipped, never fetched."""

from __future__ import annotations

import json
import shutil

import pytest

from napari_connectome.agglomerate.seg_model import OWN_BAND, made_by, recorded_model
from napari_connectome.cli import main
from napari_connectome.ffn.segment_volume import COUNTERS_FILE
from tests import test_segment_cli as segment_cli_tests
from tests.test_ffn_claim import segment, write_em

model_dir = segment_cli_tests.model_dir  # the painter model of the CLI's tests


def run(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def made(model_dir, tmp_path):
    """The painter's over-segmentation of the two cubes: (EM file, SEG folder)."""
    em = write_em(tmp_path)
    seg = tmp_path / "seg.ome.zarr"
    flags = ("--oversegment", "--consensus-min-size", "0", "--quiet")  # the cubes touch
    assert run("segment", f"{em}:raw", seg, "--model", model_dir, *flags) == 0
    return em, seg


def agglomerate(capsys, seg, em, dest, *flags) -> tuple[dict, str]:
    rc = run("agglomerate", seg, f"{em}:raw", dest, "--no-fill", "--quiet", *flags)
    err = capsys.readouterr().err
    assert rc == 0, err
    return json.loads((dest / "agglomeration.json").read_text()), err


def test_segment_records_its_model_and_agglomerate_resegments_with_it(made, model_dir, capsys):
    em, seg = made
    report = json.loads((seg / COUNTERS_FILE).read_text())
    assert report["model_folder"] == str(model_dir.resolve())
    rec = recorded_model(seg)
    assert rec is not None
    assert rec.folder == model_dir.resolve()
    assert rec.record == seg / COUNTERS_FILE
    assert rec.oversegment

    meta, err = agglomerate(capsys, seg, em, seg.parent / "own.ome.zarr")
    assert "resegmenting with the model that made SEG" in err
    assert str(model_dir.resolve()) in err
    assert meta["model_made_seg"] is True
    assert meta["band"] == OWN_BAND  # every contact, nearest the threshold first
    assert meta["model_source"] == str(model_dir.resolve())
    assert meta["n_resegmented"] >= 1

    # --model none: the EM evidence and the claim alone, said by nothing
    meta, err = agglomerate(capsys, seg, em, seg.parent / "none.ome.zarr", "--model", "none")
    assert meta["model"] is None
    assert meta["n_resegmented"] == 0
    assert "resegmenting" not in err
    # and resegmentation options without a model are refused, as before
    dest = seg.parent / "refused.ome.zarr"
    rc = run("agglomerate", seg, f"{em}:raw", dest, "--model", "none", "--band", "1", "--quiet")
    assert rc == 2
    assert "--model none" in capsys.readouterr().err
    assert not dest.exists()


def test_another_model_scores_only_the_contacts_near_the_threshold(made, tmp_path, capsys):
    em, seg = made
    other = tmp_path / "other-painter"
    shutil.copytree(recorded_model(seg).folder, other)
    assert made_by(seg, other) is None
    meta, err = agglomerate(capsys, seg, em, tmp_path / "other.ome.zarr", "--model", other)
    assert meta["model_made_seg"] is False
    assert meta["band"] == 0.1
    assert "resegmenting with the model that made SEG" not in err
    # an explicit --band wins over either default
    meta, _ = agglomerate(capsys, seg, em, tmp_path / "b.ome.zarr", "--model", other, "--band", "1")
    assert meta["band"] == 1.0


def test_one_pass_is_not_resegmented_by_default(model_dir, tmp_path, capsys):
    """One pass's errors are mostly merges, which its own model's verdicts add to."""
    em = write_em(tmp_path)
    seg = tmp_path / "seg.ome.zarr"
    assert segment(em, seg, model_dir) == 0
    capsys.readouterr()
    rec = recorded_model(seg)
    assert rec is not None
    assert rec.folder == model_dir.resolve()
    assert not rec.oversegment
    meta, err = agglomerate(capsys, seg, em, tmp_path / "default.ome.zarr")
    assert meta["model"] is None
    assert meta["n_resegmented"] == 0
    assert err == ""
    # asked for, its own model scores the contacts near the threshold only
    meta, _ = agglomerate(capsys, seg, em, tmp_path / "asked.ome.zarr", "--model", model_dir)
    assert meta["model_made_seg"] is True
    assert meta["band"] == 0.1


@pytest.mark.parametrize(
    "recorded",
    ["/nonexistent/models/painter", "google-fib25", "relative/painter", ""],
    ids=["moved folder", "zoo name not cached", "relative path", "empty"],
)
def test_a_recorded_model_that_is_not_here_is_said_and_skipped(
    made, tmp_path, capsys, monkeypatch, recorded
):
    """Nothing is downloaded and no relative path is guessed at: a warning says what to do."""
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    em, seg = made
    report_file = seg / COUNTERS_FILE
    report = json.loads(report_file.read_text())
    report["model_folder"] = report["model"] = recorded
    report_file.write_text(json.dumps(report))
    meta, err = agglomerate(capsys, seg, em, tmp_path / "agg.ome.zarr")
    assert meta["model"] is None
    assert meta["n_resegmented"] == 0
    if recorded:
        assert "SEG is the over-segmentation of" in err
        assert "which is not on this machine" in err
        assert "--model MODEL" in err
    else:
        assert "warning" not in err
    assert not (tmp_path / "empty-cache" / "downloads").exists()


def test_a_jobs_spec_names_the_model_of_its_output(tmp_path):
    from napari_connectome.ffn.zoo import shipped_models

    out = tmp_path / "job-out.ome.zarr"
    (out / "_job").mkdir(parents=True)
    spec = out / "_job" / "spec.yaml"
    spec.write_text(f"input: {tmp_path}/em.h5:raw\noutput: {out}\n")
    rec = recorded_model(out)
    assert rec is not None
    assert rec.name == "default"
    assert rec.record == spec
    assert rec.folder == shipped_models()[0].resolve()
    assert not rec.oversegment
    spec.write_text(f"input: x.h5:raw\noutput: {out}\nsegmenter: {{oversegment: true}}\n")
    assert recorded_model(out).oversegment
    spec.write_text(f"input: {tmp_path}/em.h5:raw\noutput: {out}\nsegmenter: {{kind: watershed}}\n")
    assert recorded_model(out) is None  # no model made it
    spec.write_text("input: [unterminated\n")
    assert recorded_model(out) is None  # not a spec of ours: nothing is taken from it
    assert recorded_model(tmp_path / "google.h5:seg") is None


def test_a_job_resegments_its_over_segmentation_by_default_and_not_one_pass(
    model_dir, tmp_path, capsys
):
    from tests.test_job_claim import job, run_job

    section = {"max_reseg": 5}  # the fill makes the cubes touch
    over = {"kind": "ffn", "model": str(model_dir), "device": "cpu", "oversegment": {"min_size": 0}}
    spec = job(tmp_path, model_dir, agglomerate=section, segmenter=over)
    run_job(tmp_path, spec, capsys)
    meta = json.loads((tmp_path / "job-agglomerated.ome.zarr" / "agglomeration.json").read_text())
    assert meta["model"] == str(model_dir)
    assert meta["model_made_seg"] is True
    assert meta["band"] == OWN_BAND
    assert meta["n_resegmented"] >= 1
    # the command on the job's output does the same by default (the spec says what made it)
    dest = tmp_path / "cmd.ome.zarr"
    flags = ("--max-reseg", "1")
    em = spec["input"].split(":")[0]
    assert run("agglomerate", tmp_path / "job.ome.zarr", f"{em}:raw", dest, *flags, "--quiet") == 0
    err = capsys.readouterr().err
    cmd = json.loads((dest / "agglomeration.json").read_text())
    assert "resegmenting with the model that made SEG" in err
    assert "spec.yaml" in err
    assert cmd["n_resegmented"] == 1
    # one pass: no resegmentation unless the section asks for it
    one = job(tmp_path, model_dir, agglomerate=section, output=str(tmp_path / "one.ome.zarr"))
    run_job(tmp_path, one, capsys, "one.yaml")
    meta = json.loads((tmp_path / "one-agglomerated.ome.zarr" / "agglomeration.json").read_text())
    assert meta["model"] is None
    assert meta["n_resegmented"] == 0
