"""Issue 12 scripted again with cases the first fixes did not cover (an attack and fault run
through the real command line): each test does what that run did and checks that nothing outside
the chosen output changed, the exit code is 2 and the message is one line, with no traceback.

- outputs over what they must not replace: our own output once a user put a file in it, a
  ``file.h5:dataset`` written as an output, the data a proofreading project refers to (export,
  mesh), a region graph folder with other files, a model folder with other files, links;
- outputs inside inputs: ``train`` into the image store or the ``--init`` model, ``proofread
  import`` into its ``--region-graph``, ``submit`` into the model folder, ``stream`` into the job's
  output, ``graph`` around its input;
- a tampered replacement journal moves and deletes nothing;
- FIFOs and devices given as volumes are refused instead of blocking the reader for ever;
- names too long, NUL characters, damaged project files, an edit log that is a folder: messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from napari_connectome.cli import main
from napari_connectome.jobs.registry import JobRecord, save_record
from tests.test_jobs_helpers import cells_job_spec, write_cells_volume

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "resources" / "models" / "fib25-small"


def _tree(*roots: Path) -> dict[str, str]:
    """Every entry under ``roots`` (links not followed): its kind and content hash or target."""
    out: dict[str, str] = {}
    for root in roots:
        stack = [root] if root.exists() or root.is_symlink() else []
        while stack:
            p = stack.pop()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p)] = "link " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[str(p)] = "dir"
                stack.extend(p / n for n in os.listdir(p))
            elif stat.S_ISREG(st.st_mode):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p)] = "special"
    return out


def _refused(argv: list[str], capsys, *expect: str) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2, f"exit {rc}\n{captured.err}"
    assert "Traceback" not in captured.err
    lines = [ln for ln in captured.err.splitlines() if "error:" in ln]
    assert len(lines) == 1, captured.err
    for text in expect:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def data(tmp_path) -> Path:
    """A folder with an HDF5 file, OME-Zarr EM and segmentation (ours), and a project that refers
    to both."""
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = rng.integers(0, 255, (24, 24, 24), dtype=np.uint8)
        f["seg"] = rng.integers(1, 5, (24, 24, 24)).astype(np.uint32)
    assert main(["convert", f"{tmp_path}/v.h5:raw", str(tmp_path / "em.ome.zarr")]) == 0
    seg = tmp_path / "seg.ome.zarr"
    assert main(["convert", f"{tmp_path}/v.h5:seg", str(seg), "--labels"]) == 0
    proj = ["proofread", "import", str(seg), str(tmp_path / "proj")]
    assert main([*proj, "--image", str(tmp_path / "em.ome.zarr")]) == 0
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_text("precious")
    return tmp_path


def test_overwrite_refuses_our_own_output_once_a_user_file_sits_in_it(data, capsys):
    out = data / "out.ome.zarr"
    assert main(["convert", f"{data}/v.h5:raw", str(out)]) == 0
    assert main(["convert", f"{data}/v.h5:raw", str(out), "--overwrite"]) == 0  # ours: replaced
    (out / "notes.txt").write_text("which stain this was")
    before = _tree(out)
    put = "other files were put"
    _refused(["convert", f"{data}/v.h5:raw", str(out), "--overwrite"], capsys, put)
    _refused(["proofread", "export", str(data / "proj"), str(out), "--overwrite"], capsys, put)
    spec = cells_job_spec(data / "v.h5", out, workers=1, overwrite=True)
    (data / "job.yaml").write_text(yaml.safe_dump(spec))
    _refused(["run-job", str(data / "job.yaml")], capsys, "did not write")
    (out / "notes.txt").unlink()  # a labels/ group added beside the levels is the user's too
    (out / "labels").mkdir()
    (out / "labels" / "zarr.json").write_text("{}")
    _refused(["convert", f"{data}/v.h5:raw", str(out), "--overwrite"], capsys, put)
    assert (out / "labels" / "zarr.json").read_text() == "{}"
    assert before.keys() - _tree(out).keys() == {str(out / "notes.txt")}


def test_an_output_written_like_a_source_is_the_file(data, capsys):
    before = _tree(data / "v.h5")
    argv = ["convert", f"{data}/v.h5:raw", f"{data}/v.h5:raw", "--overwrite"]
    _refused(argv, capsys, "is the input")
    assert not (data / "v.h5:raw").exists()
    assert _tree(data / "v.h5") == before


def test_export_and_mesh_never_write_into_what_the_project_refers_to(data, capsys):
    proj = data / "proj"
    (data / "alias").symlink_to(data)
    before = _tree(data)
    for dest in ("seg.ome.zarr", "em.ome.zarr", "seg.ome.zarr/x.ome.zarr", "alias/seg.ome.zarr"):
        argv = ["proofread", "export", str(proj), str(data / dest), "--overwrite"]
        _refused(argv, capsys, "input")
    for dest in ("proj", "proj/meshes", "seg.ome.zarr", "seg.ome.zarr/meshes"):
        argv = ["proofread", "mesh", str(proj), "1", str(data / dest), "--overwrite"]
        _refused(argv, capsys, "input")
    assert _tree(data) == before


def test_mesh_overwrite_replaces_only_a_folder_of_meshes(data, capsys):
    proj = data / "proj"
    thesis = data / "d"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("five years")
    (data / "link").symlink_to(data / "outside")
    before = _tree(data)
    mesh = ["proofread", "mesh", str(proj), "1"]
    _refused([*mesh, str(thesis), "--overwrite"], capsys, "refusing to replace")
    _refused([*mesh, str(data / "link"), "--overwrite"], capsys, "is a link")
    _refused([*mesh, str(data / "v.h5"), "--overwrite"], capsys, "refusing to replace")
    _refused([*mesh, str(data / "a" / "b" / "meshes")], capsys, "does not exist")
    assert _tree(data) == before
    assert main([*mesh, str(data / "meshes")]) == 0
    assert main([*mesh, "2", str(data / "meshes"), "--overwrite"]) == 0  # ours: replaced
    assert sorted(p.name for p in (data / "meshes").iterdir()) == ["1.ply", "2.ply"]
    assert (data / "meshes").stat().st_mode & 0o077 == 0o077 & ~_umask()  # not mkdtemp's 0700


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_import_refuses_a_project_in_its_region_graph_a_link_and_a_foreign_stale_build(
    data, capsys
):
    seg = str(data / "seg.ome.zarr")
    graph = data / "proj" / "region_graph"
    (data / "plink").symlink_to(data / "outside" / "nothing")
    (data / ".p2.creating").symlink_to(data / "outside")
    before = _tree(data)
    imp = ["proofread", "import", seg]
    _refused([*imp, str(graph / "p"), "--region-graph", str(graph)], capsys, "lies inside")
    _refused([*imp, str(data / "plink")], capsys, "is a link")
    _refused([*imp, str(data / "p2")], capsys, "is in the way")
    assert _tree(data) == before


def test_graph_never_replaces_user_files_or_wraps_its_input(data, capsys):
    graph = data / "proj" / "region_graph"
    rg = data / "rg"
    assert main(["graph", str(data / "seg.ome.zarr"), str(rg), "--workers", "1"]) == 0
    (rg / "thesis.tex").write_text("mine")
    box = data / "box"
    box.mkdir()
    os.rename(data / "em.ome.zarr", box / "em.ome.zarr")
    (box / "region_graph.json").write_bytes((graph / "region_graph.json").read_bytes())
    (data / "glink").symlink_to(data / "outside")
    before = _tree(data)
    g = ["graph", str(data / "seg.ome.zarr")]
    _refused([*g, str(rg), "--overwrite"], capsys, "other files")
    _refused([*g, str(box), "--image", str(box / "em.ome.zarr"), "--overwrite"], capsys, "contains")
    _refused([*g, str(data / "seg.ome.zarr"), "--overwrite"], capsys, "is the input")
    _refused([*g, str(data / "glink")], capsys, "is a link")
    _refused([*g, str(data / "g2"), "--workers", "100000"], capsys, "cores")
    assert _tree(data) == before
    assert (rg / "region_graph.json").stat().st_mode & 0o044 == 0o044 & ~_umask()  # readable
    beside = ["graph", str(data / "seg.ome.zarr"), str(data / "seg.ome.zarr" / "region_graph")]
    assert main(beside) == 0  # beside the levels, where jobs keep it


def test_train_never_writes_into_its_inputs_or_through_a_link(data, capsys):
    tiny = ["--fov", "9,9,9", "--deltas", "2,2,2", "--depth", "1", "--steps", "1", "--quiet"]
    (data / "tlink").symlink_to(data / "outside" / "nothing")
    before = _tree(data)
    em, seg = str(data / "em.ome.zarr"), str(data / "seg.ome.zarr")
    _refused(["train", em, seg, f"{em}/run", *tiny], capsys, "lies inside")
    _refused(["train", em, seg, f"{seg}/0/run", *tiny], capsys, "lies inside")
    model = data / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model / name).write_bytes((SHIPPED_MODEL / name).read_bytes())
    before = _tree(data)
    init = ["--init", str(model), "--steps", "1", "--quiet"]
    _refused(["train", em, seg, str(model / "run"), *init], capsys, "lies inside")
    _refused(["train", em, seg, str(data / "tlink"), *tiny], capsys, "is a link")
    assert _tree(data) == before


def test_import_checkpoint_overwrite_replaces_only_a_bare_model(tmp_path, capsys):
    from safetensors.numpy import save_file

    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": np.zeros(1, np.float32)}, str(model / "model.safetensors"))
    (model / "config.json").write_text("{}")
    (model / "model.ckpt.index").write_bytes(b"the TensorFlow checkpoint it came from")
    (tmp_path / "mlink").symlink_to(model)
    before = _tree(tmp_path)
    prefix = str(tmp_path / "model" / "model.ckpt")
    imp = ["import-checkpoint", prefix]
    _refused([*imp, str(model), "--overwrite"], capsys, "model.ckpt.index", "refusing")
    _refused([*imp, str(tmp_path / "mlink"), "--overwrite"], capsys, "is a link")
    assert _tree(tmp_path) == before


def test_submit_refuses_an_output_inside_the_model_folder(tmp_path, capsys):
    write_cells_volume(tmp_path / "cells.h5")
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model / name).write_bytes((SHIPPED_MODEL / name).read_bytes())
    spec = cells_job_spec(tmp_path / "cells.h5", model / "out.ome.zarr", workers=1)
    spec["segmenter"] = {"kind": "ffn", "model": str(model)}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    before = _tree(model)
    _refused(["submit", str(tmp_path / "job.yaml")], capsys, "lies inside the input")
    assert _tree(model) == before


def test_a_stream_cache_never_lies_in_or_around_a_local_jobs_output(tmp_path, capsys):
    out = tmp_path / "job" / "out.ome.zarr"
    (out / "_job").mkdir(parents=True)
    (out / "zarr.json").write_text("{}")
    job = f"j-{time.monotonic_ns()}"
    save_record(JobRecord(job, "j", "local", str(out), time.time()))
    (tmp_path / "clink").symlink_to(out)
    (tmp_path / "empty").mkdir()
    (tmp_path / "elink").symlink_to(tmp_path / "empty")  # a link to an empty folder: refused too
    before = _tree(tmp_path / "job")
    for cache in (out, out / "cache", out / "_job" / "cache", tmp_path / "clink" / "c"):
        _refused(["stream", job, str(cache), "--timeout", "5"], capsys, "input")
    _refused(["stream", job, str(tmp_path / "elink"), "--timeout", "5"], capsys, "is a link")
    assert _tree(tmp_path / "job") == before


@pytest.mark.parametrize(
    "old",
    [
        "../outside/vdir",
        "/ABS/outside/vdir",
        "..",
        ".out.ome.zarr.old-\u0000x",
        ".out.ome.zarr.bak",
    ],
)
def test_a_tampered_replace_journal_moves_and_deletes_nothing(old, data, capsys):
    vdir = data / "outside" / "vdir"
    vdir.mkdir()
    (vdir / "thesis.tex").write_text("five years")
    (data / ".out.ome.zarr.bak").mkdir()  # a hidden backup of the user's own
    (data / ".out.ome.zarr.bak" / "keep").write_text("mine")
    old = old.replace("/ABS", str(data))
    journal = data / ".out.ome.zarr.replace.json"
    journal.write_text(json.dumps({"dest": "out.ome.zarr", "old": old, "new": old}))
    before = _tree(data)
    argv = ["convert", f"{data}/v.h5:raw", str(data / "out.ome.zarr"), "--overwrite"]
    _refused(argv, capsys, "cannot be read")
    assert _tree(data) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["info", "{fifo}.h5:raw"],
        ["convert", "{fifo}.tif", "{tmp}/o.ome.zarr"],
        ["proofread", "import", "{fifo}.npy", "{tmp}/p"],
        ["info", "{dev}:raw"],
    ],
    ids=["h5", "tif", "npy", "device"],
)
def test_fifos_and_devices_are_refused_not_waited_for(argv, tmp_path):
    """A FIFO named like a volume would block h5py, tifffile or numpy until a writer comes."""
    for suffix in (".h5", ".tif", ".npy"):
        os.mkfifo(tmp_path / f"fifo{suffix}")
    (tmp_path / "zero.h5").symlink_to("/dev/zero")
    subs = {"fifo": str(tmp_path / "fifo"), "tmp": str(tmp_path), "dev": str(tmp_path / "zero.h5")}
    argv = [a.format(**subs) for a in argv]
    env = {**os.environ, "NAPARI_CONNECTOME_CONFIG_DIR": str(tmp_path / "config")}
    res = subprocess.run(
        [sys.executable, "-m", "napari_connectome", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert res.returncode == 2, res.stderr
    assert "not a regular file" in res.stderr
    assert "Traceback" not in res.stderr


def test_names_too_long_and_nul_characters_are_messages(data, capsys):
    long = "x" * 300
    _refused(["convert", f"{data}/v.h5:raw", f"{data}/{long}.ome.zarr"], capsys, "too long")
    _refused(["info", f"{data}/" + "/".join(["y" * 250] * 20)], capsys, "too long")
    for field, value in (("output", f"{data}/a\0b.ome.zarr"), ("input", f"{data}/v\0.h5:raw")):
        spec = cells_job_spec(data / "v.h5", data / "j.ome.zarr", workers=1)
        spec[field] = value
        (data / "job.yaml").write_text(yaml.safe_dump(spec))
        _refused(["run-job", str(data / "job.yaml")], capsys, "NUL")
    spec = cells_job_spec(data / "v.h5", f"{data}/{long}.ome.zarr", workers=1)
    (data / "job.yaml").write_text(yaml.safe_dump(spec))
    _refused(["run-job", str(data / "job.yaml")], capsys, "too long")


@pytest.mark.parametrize(
    "edit",
    [
        {"fragments": 5},
        {"region_graph": {"path": ["x"]}},
        {"image": {"source": 7}},
        {"shape": "big"},
        {"fragments": {"source": "/tmp/\u0000x"}},
    ],
    ids=["fragments", "region_graph", "image", "shape", "nul"],
)
def test_a_project_json_with_wrong_types_is_a_message(edit, data, capsys):
    p = data / "proj" / "project.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), **edit}))
    _refused(["proofread", "info", str(data / "proj")], capsys, "damaged or was edited by hand")


def test_an_edit_log_that_is_a_folder_is_a_message(data, capsys):
    (data / "proj" / "edits.sqlite").mkdir()
    argv = ["proofread", "export", str(data / "proj"), str(data / "x.ome.zarr")]
    _refused(argv, capsys, "edits.sqlite", "damaged")
    assert not (data / "x.ome.zarr").exists()
