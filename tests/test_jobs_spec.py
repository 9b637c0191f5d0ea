"""Job specs, generated batch scripts and scheduler command lines, reconciliation rules, and the
local backend driven through the CLI (submit, status, stream, cancel)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
import zarr

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.jobs.reconcile import global_lut, match_overlap
from napari_connectome.jobs.schedulers import Scheduler, batch_script, parse_qstat
from napari_connectome.jobs.spec import load_spec, parse_spec
from tests.test_jobs_helpers import REPO, write_cells_volume

EXAMPLES = sorted((REPO / "examples" / "jobs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.backend.kind in ("local", "dask", "slurm", "pbs")
    assert all(b > 0 for b in spec.block_shape)


def test_examples_cover_every_backend():
    kinds = {load_spec(p).backend.kind for p in EXAMPLES}
    assert kinds == {"local", "dask", "slurm", "pbs"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"blok_shape": [1, 2, 3]}, "blok_shape: unknown field"),
        ({"block_shape": [0, 8, 8]}, "block_shape must be positive"),
        ({"overlap": [-1, 0, 0]}, "overlap must be >= 0"),
        ({"roi": {"start": [5, 0, 0], "stop": [5, 9, 9]}}, "0 <= start < stop"),
        ({"resume": True, "overwrite": True}, "resume and overwrite exclude each other"),
        ({"backend": {"kind": "dask"}}, "needs backend.scheduler"),
        ({"backend": {"kind": "slrum"}}, "backend.kind"),
        ({"segmenter": {"kind": "plugin"}}, "needs factory"),
        ({"name": "a b;c"}, "name must be"),
        (
            {"segmenter": {"inference": {"move_thresh": 0.5}}},
            "segmenter.inference.move_thresh: unknown FFN inference option; valid: init_activation",
        ),
        (
            {"segmenter": {"inference": {"segment_threshold": 0}}},
            "segment_threshold must be a probability strictly between 0 and 1",
        ),
        ({"segmenter": {"inference": {"min_segment_size": "big"}}}, "min_segment_size"),
        ({"segmenter": {"inference": {"seed_policy": "random"}}}, "unknown seed_policy"),
        ({"segmenter": {"inference": [0.5]}}, "inference must be a mapping"),
        ({"segmenter": {"device": "gpu"}}, "device must be auto, cpu, cuda or cuda:N"),
        ({"block_shape": [1, 1, 1]}, "use at least 4 voxels per axis"),
        ({"block_shape": [4, 64, 64]}, r"thinner than match.slab \(8\)"),
        ({"block_shape": [1024, 1024, 1025]}, "at most 1,073,741,824 voxels"),
        ({"backend": {"workers": 100000}}, "more than any node has cores"),
        ({"backend": {"threads_per_worker": 5000}}, "threads_per_worker 5000 per node"),
        (
            {"segmenter": {"kind": "watershed"}, "agglomerate": {"resegment": True}},
            "agglomerate.resegment runs the segmenter's FFN model, but segmenter.kind is "
            "'watershed'",
        ),
        ({"agglomerate": {"band": float("nan")}}, "agglomerate.band.*finite number"),
    ],
)
def test_bad_specs_name_the_field(change, message):
    with pytest.raises(UserInputError, match=message):
        parse_spec({"input": "x.h5:raw", "output": "/tmp/o.zarr", **change}, "job.yaml")


def test_inference_options_are_the_ffn_options_typed():
    """One definition: the spec's inference fields are InferenceOptions' fields; a spec keeps only
    what it sets (the model's own options fill the rest, and the fingerprint stays the same)."""
    from dataclasses import fields

    from napari_connectome.ffn.options import InferenceOptions, options_for_model
    from napari_connectome.jobs.spec import inference_option_names

    assert inference_option_names() == [f.name for f in fields(InferenceOptions)]
    base = {"input": "x.h5:raw", "output": "/tmp/o.zarr"}
    spec = parse_spec({**base, "segmenter": {"inference": {"move_threshold": "0.8"}}})
    assert spec.segmenter.inference_options() == {"move_threshold": 0.8}
    assert spec.model_dump(mode="json")["segmenter"]["inference"] == {"move_threshold": 0.8}
    again = load_spec_text(spec.to_yaml())
    assert again.fingerprint() == spec.fingerprint()
    opts = options_for_model(None, **again.segmenter.inference_options())
    assert (opts.move_threshold, opts.segment_threshold) == (0.8, 0.6)
    assert parse_spec(base).model_dump(mode="json")["segmenter"]["inference"] == {}


def load_spec_text(text: str):
    from napari_connectome.jobs.spec import parse_spec_text

    return parse_spec_text(text, "job.yaml")


def test_spec_file_errors(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_spec(bad)


def test_pbs_polaris_command_line_and_script():
    spec = load_spec(REPO / "examples" / "jobs" / "pbs-polaris.yaml")
    argv = Scheduler("pbs").submit_argv(
        spec, "/lus/x/_job/scheduler/job.sh", "/lus/x/job.out", "/lus/x"
    )
    assert argv[0] == "qsub"
    assert argv[argv.index("-l") + 1] == "select=1:ngpus=4"
    assert "walltime=00:30:00" in argv
    assert "filesystems=home:eagle" in argv
    assert argv[argv.index("-q") + 1] == "debug"
    assert argv[argv.index("-A") + 1] == "MyProject"
    assert argv[-1] == "/lus/x/_job/scheduler/job.sh"
    script = batch_script(spec, "/lus/x/_job/spec.yaml")
    assert "module load conda" in script
    assert script.rstrip().endswith(
        "/lus/eagle/projects/MyProject/envs/connectome/bin/python -m napari_connectome run-job "
        '"$@" /lus/x/_job/spec.yaml'
    )
    assert Scheduler("pbs").cancel_argv("123.polaris-pbs-01") == ["qdel", "123.polaris-pbs-01"]
    assert Scheduler("pbs").status_argvs("7")[0] == ["qstat", "-x", "-f", "-F", "json", "7"]


def test_multi_node_launch_commands():
    from napari_connectome.jobs.pipeline import launch_mode
    from napari_connectome.jobs.schedulers import node_launch_argv

    polaris = load_spec(REPO / "examples" / "jobs" / "pbs-polaris.yaml")
    assert launch_mode(polaris) == "local"  # one node: a LocalCluster with one worker per GPU
    two = polaris.model_copy(deep=True)
    two.backend.resources.nodes = 2
    assert launch_mode(two) == "mpiexec"
    argv = node_launch_argv("mpiexec", 2, "/env/bin/python", "tls://10.0.0.1:8786", 4, 1, "/o/t")
    assert argv[:5] == ["mpiexec", "-n", "2", "--ppn", "1"]
    assert argv[5:8] == ["/env/bin/python", "-m", "napari_connectome.jobs.node"]
    argv = node_launch_argv("srun", 3, "py", "tls://h:1", 4, 2, "/o/t")
    assert argv[:4] == ["srun", "--overlap", "--nodes=3", "--ntasks-per-node=1"]


def test_slurm_command_line():
    spec = load_spec(REPO / "examples" / "jobs" / "slurm-ssh.yaml")
    argv = Scheduler("slurm").submit_argv(spec, "/s/job.sh", "/s/job-%j.out", "/s")
    assert argv[:2] == ["sbatch", "--parsable"]
    for flag in ("--gpus-per-node=4", "--partition=gpu", "--account=my-project", "--time=04:00:00"):
        assert flag in argv
    assert Scheduler("slurm").parse_submit("4242;cluster\n") == "4242"
    assert Scheduler("slurm").parse_status(["squeue"], "RUNNING\n") == "running"
    assert Scheduler("slurm").parse_status(["scontrol"], "JobId=1 JobState=CANCELLED Reason=x") == (
        "cancelled"
    )


def test_qstat_states():
    running = {"Jobs": {"1.pbs": {"job_state": "R"}}}
    assert parse_qstat(json.dumps(running)) == "running"
    assert parse_qstat(json.dumps({"Jobs": {"1": {"job_state": "F", "Exit_status": 0}}})) == "done"
    assert (
        parse_qstat(json.dumps({"Jobs": {"1": {"job_state": "F", "Exit_status": 1}}})) == "failed"
    )
    assert parse_qstat(json.dumps({"Jobs": {"1": {"job_state": "F", "Exit_status": 271}}})) == (
        "cancelled"
    )
    assert parse_qstat("Job Id: 5.server\n    job_state = Q\n") == "pending"


def test_batch_script_keeps_nasty_paths_as_data(tmp_path):
    """A spec path with spaces, quotes, ';' and $( ) reaches run-job intact and runs nothing."""
    nasty = tmp_path / "a b 'c'; touch PWNED $(touch PWNED2)"
    nasty.mkdir()
    write_cells_volume(nasty / "cells.h5", shape=(16, 16, 16), n_cells=4)
    spec_path = nasty / "spec.yaml"
    spec = parse_spec(
        {
            "input": f"{nasty / 'cells.h5'}:raw",
            "output": str(nasty / "out.ome.zarr"),
            "block_shape": [8, 8, 8],
            "segmenter": {"kind": "watershed"},
            "backend": {"kind": "pbs", "resources": {"python": sys.executable}},
        }
    )
    spec_path.write_text(spec.to_yaml())
    script = nasty / "job.sh"
    script.write_text(batch_script(spec, str(spec_path)))
    subprocess.run(["bash", "-n", str(script)], check=True)
    res = subprocess.run(
        ["bash", str(script), "--check"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == {"ok": True, "blocks": 8, "grid": [2, 2, 2]}
    assert not list(tmp_path.rglob("PWNED*"))
    assert shlex.split(script.read_text().splitlines()[-1])[-1] == str(spec_path)


def test_mutual_matching_joins_the_same_object_and_never_fuses_two():
    a = np.zeros((4, 10, 10), np.uint32)
    b = np.zeros_like(a)
    a[:, :, :5], a[:, :, 5:] = 1, 2  # block A: two cells
    b[:, :, :5], b[:, :, 5:] = 7, 7  # block B: fused them into one
    b[:, :1, :] = 9
    pairs = match_overlap(a, b, min_fraction=0.6, min_voxels=5, rule="mutual")
    assert pairs.tolist() == []  # disagreement: neither cell is joined to the fused segment
    b[:, :, 5:] = 8
    pairs = match_overlap(a, b, min_fraction=0.6, min_voxels=5, rule="mutual")
    assert sorted(pairs.tolist()) == [[1, 7], [2, 8]]


def test_contained_matching_joins_every_branch_of_a_segment():
    a = np.zeros((4, 10, 10), np.uint32)
    b = np.zeros_like(a)
    a[:, :, :4], a[:, :, 6:] = 3, 3  # block A: one neuron, both branches
    b[:, :, :4], b[:, :, 6:] = 7, 8  # block B: its branches meet outside B, so two segments
    b[:, 0, 0] = 9  # a few stray voxels join nothing (min_voxels)
    pairs = match_overlap(a, b, min_fraction=0.7, min_voxels=5)
    assert sorted(pairs.tolist()) == [[3, 7], [3, 8]]
    assert match_overlap(a, b, 0.7, 5, rule="mutual").tolist() == []
    b[:, :, 4:6] = 8  # B's segment 8 now spills into A's background: 2/3 of it lies in 3
    assert match_overlap(a, b, 0.7, 5).tolist() == [[3, 7]]
    assert sorted(match_overlap(a, b, 0.6, 5).tolist()) == [[3, 7], [3, 8]]
    with pytest.raises(ValueError, match="contained"):
        match_overlap(a, b, 0.7, 5, rule="nearest")


def test_lookup_table_is_compact_and_order_free():
    edges = np.array([[5, 2], [2, 7], [3, 4]])
    lut = global_lut(7, edges)
    assert lut.tolist() == [0, 1, 2, 3, 3, 2, 4, 2]
    np.testing.assert_array_equal(lut, global_lut(7, edges[::-1, ::-1]))


def test_local_backend_submit_status_stream_cancel(tmp_path, capsys):
    volume = tmp_path / "cells.h5"
    write_cells_volume(volume, shape=(32, 48, 48), n_cells=16)
    spec = {
        "name": "cli",
        "input": f"{volume}:raw",
        "output": str(tmp_path / "seg.ome.zarr"),
        "block_shape": [16, 24, 24],
        "overlap": [4, 4, 4],
        "segmenter": {"kind": "watershed"},
        "backend": {"kind": "local", "workers": 1},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["submit", str(path)]) == 0
    job_id = capsys.readouterr().out.strip()
    cache = tmp_path / "cache.ome.zarr"
    assert main(["stream", job_id, str(cache), "--poll", "0.2", "--timeout", "120"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "done"
    assert main(["status", job_id[:12]]) == 0  # a unique prefix is enough
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "done"
    assert status["blocks_done"] == status["blocks_total"] == 8
    out = zarr.open_array(str(tmp_path / "seg.ome.zarr" / "0"))[:]
    np.testing.assert_array_equal(zarr.open_array(str(cache / "0"))[:], out)
    assert main(["jobs"]) == 0
    assert job_id in capsys.readouterr().out

    # a viewer that closes mid-stream stops it; the next call resumes from the saved offset
    import threading

    from napari_connectome.jobs import load_record, stream_job

    stop, seen = threading.Event(), []

    def close_after_three(event):
        seen.append(event.block)
        if len(seen) == 3:
            stop.set()

    second = tmp_path / "second-cache.ome.zarr"
    first = stream_job(load_record(job_id), second, on_block=close_after_three, stop=stop)
    assert first.state == "stopped"
    assert first.blocks == 3
    rest = stream_job(load_record(job_id), second, on_block=lambda ev: seen.append(ev.block))
    assert rest.state == "done"
    assert len(seen) == 16  # 8 blocks x (segment, relabel), none twice, none missed
    np.testing.assert_array_equal(zarr.open_array(str(second / "0"))[:], out)
    again = stream_job(load_record(job_id), second, timeout_s=30)
    # a finished stream ends at once and copies nothing
    assert (again.state, again.blocks) == ("done", 0)

    # a slow job, cancelled while it runs
    slow = {"kind": "plugin", "factory": "tests.test_jobs_helpers:slow_watershed"}
    slow["options"] = {"delay_s": 2.0}
    path.write_text(yaml.safe_dump({**spec, "segmenter": slow, "output": str(tmp_path / "s.zarr")}))
    assert main(["submit", str(path)]) == 0
    slow_id = capsys.readouterr().out.strip()
    time.sleep(1)
    assert main(["cancel", slow_id]) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        main(["status", slow_id])
        status = json.loads(capsys.readouterr().out)
        if status["state"] != "running":
            break
        time.sleep(0.3)
    assert status["state"] == "cancelled"
    assert status["blocks_done"] < 8
    assert main(["status", "no-such-job"]) == 2
    assert "no submitted job" in capsys.readouterr().err


def test_holes_take_a_neighbours_label_only_for_objects_someone_owns():
    from napari_connectome.jobs.reconcile import fill_holes

    final = np.zeros((4, 4, 4), np.uint64)
    final[:, :, :2] = 5  # the block's own object
    labels = np.zeros((4, 4, 8), np.uint32)  # a neighbour's read region: x 0..8, the block's 2..6
    labels[:, :2, :] = 1  # local 1 -> final 5: the same object, reached further by the neighbour
    labels[:, 2:, :] = 2  # local 2 -> final 9: a segment the neighbour saw only in its context
    table = np.array([0, 5, 9], np.uint64)
    free = final.copy()
    assert fill_holes(free, (0, 0, 2), [((0, 0, 0), labels, table)]) == 4 * 4 * 2
    assert set(np.unique(free[:, :, 2:])) == {5, 9}
    owned = final.copy()
    filled = fill_holes(owned, (0, 0, 2), [((0, 0, 0), labels, table)], np.array([5], np.uint64))
    assert filled == 4 * 2 * 2
    assert (owned[:, :2, 2:] == 5).all()
    assert (owned[:, 2:, 2:] == 0).all()  # no stray id from the neighbour's context
