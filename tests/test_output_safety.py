"""Outputs never destroy data (issue 12, items 5, 6, 7, 9 and 10): not the input, not a folder we
did not write, not by overlapping an input, not by a crash between two renames, not by a full disk.

Each test does what a user (or a crash) does: CLI commands on files on disk, a real killed process,
a real full filesystem.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
import zarr

from napari_connectome.cli import main
from napari_connectome.volumes import open_volume
from tests.test_jobs_helpers import cells_job_spec, write_cells_volume


def _digest(path: Path) -> str:
    """Every file name and byte under ``path``: any change to the input shows."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path.parent)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def lab_h5(tmp_path) -> Path:
    """An HDF5 file with EM and other datasets a lab cares about."""
    path = tmp_path / "in" / "v.h5"
    path.parent.mkdir()
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["raw"] = rng.integers(0, 255, (24, 24, 24), dtype=np.uint8)
        f["seg"] = rng.integers(0, 4, (24, 24, 24)).astype(np.uint32)
        f["notes"] = np.frombuffer(b"years of work", np.uint8)
    return path


@pytest.fixture
def good_zarr(tmp_path, lab_h5) -> Path:
    """An OME-Zarr input (written by us, so only the overlap rule protects it)."""
    dest = tmp_path / "in" / "good.zarr"
    assert main(["convert", f"{lab_h5}:raw", str(dest), "--levels", "1"]) == 0
    return dest


@pytest.fixture
def thesis(tmp_path) -> Path:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "thesis.tex").write_text("\\chapter{Five years}")
    return folder


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))


def _write_spec(tmp_path: Path, spec: dict, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


# -- 5: output = input --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "segment"])
def test_output_equal_to_the_hdf5_input_is_refused(command, lab_h5, capsys):
    before = _digest(lab_h5)
    assert main([command, f"{lab_h5}:raw", str(lab_h5), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert _digest(lab_h5) == before
    with h5py.File(lab_h5, "r") as f:
        assert sorted(f) == ["notes", "raw", "seg"]


def test_segment_output_equal_to_its_mask_is_refused(lab_h5, tmp_path, capsys):
    mask = tmp_path / "mask.zarr"
    assert main(["convert", f"{lab_h5}:seg", str(mask), "--levels", "1"]) == 0
    before = _digest(mask)
    argv = ["segment", f"{lab_h5}:raw", str(mask), "--mask", str(mask), "--overwrite"]
    assert main(argv) == 2
    assert "is the input" in capsys.readouterr().err
    assert _digest(mask) == before


@pytest.fixture
def cells(tmp_path) -> Path:
    path = tmp_path / "cells.h5"
    write_cells_volume(path)
    return path


def test_job_whose_output_is_its_input_store_is_refused_before_anything_is_deleted(
    cells, tmp_path, capsys
):
    em = tmp_path / "em.ome.zarr"
    assert main(["convert", f"{cells}:raw", str(em), "--levels", "1"]) == 0
    before = _digest(em)
    spec = cells_job_spec(em, em, workers=1, input=str(em), overwrite=True)
    assert main(["run-job", _write_spec(tmp_path, spec)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert main(["submit", _write_spec(tmp_path, spec, "submit.yaml")]) == 2
    assert "is the input" in capsys.readouterr().err
    assert _digest(em) == before
    # the mask is an input too
    spec = cells_job_spec(cells, em, workers=1, mask=str(em), overwrite=True)
    assert main(["run-job", _write_spec(tmp_path, spec)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert _digest(em) == before
    assert open_volume(em).shape == (40, 64, 64)


# -- 6: --overwrite only replaces what we wrote -------------------------------------------------


@pytest.fixture
def project(tmp_path) -> Path:
    np.save(tmp_path / "seg.npy", np.repeat(np.arange(1, 5, dtype=np.uint32), 64).reshape(4, 8, 8))
    proj = tmp_path / "proj"
    assert main(["proofread", "import", str(tmp_path / "seg.npy"), str(proj)]) == 0
    return proj


@pytest.mark.parametrize("command", ["convert", "segment", "export"])
def test_overwrite_refuses_a_folder_we_did_not_write(
    command, lab_h5, thesis, tmp_path, project, capsys
):
    argv = {
        "convert": ["convert", f"{lab_h5}:raw", str(thesis), "--overwrite"],
        "segment": ["segment", f"{lab_h5}:raw", str(thesis), "--overwrite"],
        "export": ["proofread", "export", str(project), str(thesis), "--overwrite"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to replace" in err
    assert "did not write" in err
    assert _entries(thesis) == ["thesis.tex"]
    assert (thesis / "thesis.tex").read_text() == "\\chapter{Five years}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_refuses_a_file_and_a_foreign_zarr(lab_h5, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["convert", f"{lab_h5}:raw", str(notes), "--overwrite"]) == 2
    assert "is a file napari-connectome did not write" in capsys.readouterr().err
    assert notes.read_text() == "mine"
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(foreign, mode="w").create_array("0", shape=(4,), dtype="u1")
    before = _digest(foreign)
    assert main(["convert", f"{lab_h5}:raw", str(foreign), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert _digest(foreign) == before


def test_overwrite_replaces_our_outputs_an_empty_folder_and_older_ones_laid_out_like_ours(
    lab_h5, tmp_path, project, capsys
):
    out = tmp_path / "out.ome.zarr"
    assert main(["convert", f"{lab_h5}:raw", str(out)]) == 0
    marker = json.loads((out / "zarr.json").read_text())["attributes"]["napari_connectome"]
    assert marker["written_by"]
    assert marker["version"]
    assert main(["convert", f"{lab_h5}:seg", str(out), "--overwrite"]) == 0
    assert open_volume(out).is_labels
    # proofread export replaces its own earlier export
    assert main(["proofread", "export", str(project), str(tmp_path / "e.zarr")]) == 0
    assert main(["proofread", "export", str(project), str(tmp_path / "e.zarr"), "--overwrite"]) == 0
    # an empty folder holds nothing to lose
    (tmp_path / "empty").mkdir()
    assert main(["convert", f"{lab_h5}:raw", str(tmp_path / "empty"), "--overwrite"]) == 0
    # an output of an older version (no marker) whose layout is exactly ours is replaced ...
    meta = json.loads((out / "zarr.json").read_text())
    del meta["attributes"]["napari_connectome"]
    (out / "zarr.json").write_text(json.dumps(meta))
    assert main(["convert", f"{lab_h5}:raw", str(out), "--overwrite"]) == 0
    assert not open_volume(out).is_labels
    # ... but not once anything else sits in it
    (out / "zarr.json").write_text(json.dumps(meta))
    (out / "labels").mkdir()
    (out / "labels" / "notes.md").write_text("mine")
    assert main(["convert", f"{lab_h5}:seg", str(out), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (out / "labels" / "notes.md").read_text() == "mine"


def test_job_overwrite_refuses_a_zarr_we_did_not_write(cells, tmp_path, capsys):
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(foreign, mode="w").attrs["lab"] = "precious"
    spec = cells_job_spec(cells, foreign, workers=1, overwrite=True)
    assert main(["run-job", _write_spec(tmp_path, spec)]) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert main(["submit", _write_spec(tmp_path, spec, "s.yaml")]) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert zarr.open_group(foreign, mode="r").attrs["lab"] == "precious"


# -- 7: no output inside an input, no input inside the output ------------------------------------


def test_convert_into_or_around_its_input_is_refused_also_through_a_link(
    good_zarr, lab_h5, tmp_path, capsys
):
    before = _digest(good_zarr)
    assert main(["convert", str(good_zarr), str(good_zarr / "out.ome.zarr")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert main(["convert", f"{good_zarr}/0", str(good_zarr / "out.ome.zarr")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    link = tmp_path / "link"
    link.symlink_to(good_zarr)
    assert main(["convert", str(good_zarr), str(link / "x.ome.zarr")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert _digest(good_zarr) == before
    # the input inside the output: the folder holding v.h5 is not the output either
    assert main(["convert", f"{lab_h5}:raw", str(lab_h5.parent), "--overwrite"]) == 2
    assert "contains the input" in capsys.readouterr().err
    assert sorted(_entries(lab_h5.parent)) == ["good.zarr", "v.h5"]


def test_segment_into_its_input_store_is_refused(good_zarr, capsys):
    before = _digest(good_zarr)
    assert main(["segment", f"{good_zarr}/0", str(good_zarr / "seg.ome.zarr")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert _digest(good_zarr) == before


def test_job_output_inside_its_input_is_refused(cells, tmp_path, capsys):
    em = tmp_path / "em.ome.zarr"
    assert main(["convert", f"{cells}:raw", str(em), "--levels", "1"]) == 0
    before = _digest(em)
    spec = cells_job_spec(em, em / "seg.ome.zarr", workers=1, input=str(em))
    assert main(["run-job", _write_spec(tmp_path, spec)]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert main(["submit", _write_spec(tmp_path, spec, "s.yaml")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert _digest(em) == before


def test_proofread_import_into_its_input_store_is_refused(good_zarr, tmp_path, capsys):
    seg = tmp_path / "seg.zarr"
    zarr.open_array(seg, mode="w", shape=(8, 8, 8), dtype="u4")[:] = 1
    before = _digest(seg), _digest(good_zarr)
    assert main(["proofread", "import", str(seg), str(seg / "project")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    argv = ["proofread", "import", str(seg), str(good_zarr / "p"), "--image", str(good_zarr)]
    assert main(argv) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert (_digest(seg), _digest(good_zarr)) == before


@pytest.mark.ssh
def test_remote_job_output_over_its_input_is_refused_before_the_cluster_deletes_it(
    cells, tmp_path, sshd_server, capsys
):
    """A slurm job over SSH: the paths are compared on the cluster, links resolved there."""
    ssh = {
        "host": sshd_server.host,
        "port": sshd_server.port,
        "user": sshd_server.user,
        "key": str(sshd_server.client_key),
        "known_hosts": str(sshd_server.known_hosts),
    }
    (tmp_path / "alias").symlink_to(tmp_path)
    before = _digest(cells)
    for output in (cells, tmp_path / "alias" / cells.name, tmp_path / "alias"):
        backend = {"kind": "slurm", "ssh": ssh, "resources": {"python": sys.executable}}
        spec = cells_job_spec(cells, output, backend=backend, overwrite=True)
        assert main(["submit", _write_spec(tmp_path, spec)]) == 2
        err = capsys.readouterr().err
        assert "is the input" in err or "contains the input" in err
    assert _digest(cells) == before


# -- 9: a crash between the two renames of a replacement ----------------------------------------

CRASHING_CONVERT = textwrap.dedent(
    """
    import os, signal, sys
    from napari_connectome.volumes import atomic

    def crash(step):
        if step == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no cleanup, no finally

    atomic._crash_point = crash
    from napari_connectome.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def _crash_convert(step: str, *argv: str) -> int:
    cmd = [sys.executable, "-c", CRASHING_CONVERT, step, "convert", *argv]
    return subprocess.run(cmd, capture_output=True, check=False, timeout=120).returncode


def _values(dest: Path) -> set[int]:
    return set(np.unique(np.asarray(open_volume(dest).data)).tolist())


@pytest.fixture
def two_volumes(tmp_path) -> tuple[str, str]:
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as f:
        f["old"] = np.full((16, 16, 16), 1, np.uint8)
        f["new"] = np.full((16, 16, 16), 2, np.uint8)
    return f"{path}:old", f"{path}:new"


def test_crash_between_the_renames_is_undone_by_the_next_run(two_volumes, tmp_path, capsys):
    old, new = two_volumes
    out = tmp_path / "out" / "v.ome.zarr"
    out.parent.mkdir()
    assert main(["convert", old, str(out)]) == 0
    assert _crash_convert("moved-aside", new, str(out), "--overwrite") == -9
    # the crash left neither output in place, only hidden siblings and the journal
    assert not out.exists()
    assert ".v.ome.zarr.replace.json" in _entries(out.parent)
    # reading the output brings the old one back and cleans up
    assert _values(out) == {1}
    assert _entries(out.parent) == ["v.ome.zarr"]
    # crash again, then rerun the same command: it completes
    assert _crash_convert("moved-aside", new, str(out), "--overwrite") == -9
    assert main(["convert", new, str(out), "--overwrite"]) == 0
    assert _values(out) == {2}
    assert _entries(out.parent) == ["v.ome.zarr"]


def test_crash_after_the_second_rename_is_completed_by_the_next_run(two_volumes, tmp_path, capsys):
    old, new = two_volumes
    out = tmp_path / "v.ome.zarr"
    assert main(["convert", old, str(out)]) == 0
    assert _crash_convert("moved-in", new, str(out), "--overwrite") == -9
    assert _values(out) == {2}  # the new one is in place, the old one still beside it
    assert any(name.startswith(".v.ome.zarr.old-") for name in _entries(tmp_path))
    assert main(["convert", old, str(out)]) == 2  # refused (exists), but finishes the cleanup
    assert "already exists" in capsys.readouterr().err
    assert _values(out) == {2}
    assert not [name for name in _entries(tmp_path) if name.startswith(".v.ome.zarr")]


# -- 10: a full disk ----------------------------------------------------------------------------


def test_convert_onto_a_full_disk_says_so_and_leaves_nothing(tmp_path, full_disk_dir, capsys):
    src = tmp_path / "big.h5"
    with h5py.File(src, "w") as f:  # 2 MiB of incompressible voxels on a 256 KiB disk
        f["raw"] = np.random.default_rng(0).integers(0, 255, (128, 128, 128), dtype=np.uint8)
    for _ in range(3):  # every attempt cleans up after itself (late writes raced the cleanup)
        argv = ["convert", f"{src}:raw", str(full_disk_dir / "out.ome.zarr"), "--chunks", "32"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no space left" in err
        assert "Traceback" not in err
        assert os.listdir(full_disk_dir) == []
