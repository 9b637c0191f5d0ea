"""Every command that writes, run into a read-only folder and onto a full disk, as a user would.

Each must exit 2 with a one-line message saying what is wrong (no traceback, also from Dask
workers), and leave nothing behind in the folder. The read-only folder is a read-only bind mount,
the full disk a 256 KiB tmpfs (tests/services.py); where a command's output is smaller than that,
the disk is filled first so that its first writes fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from napari_connectome.cli import main
from napari_connectome.testing.filesystems import fill
from tests.test_jobs_helpers import cells_job_spec, write_cells_volume

FILLER = ".filler"  # what fill() writes; the only file the full-disk folder may hold afterwards
REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "resources" / "models" / "fib25-small"
TINY_TRAIN = [
    "--fov",
    "9,9,9",
    "--deltas",
    "2,2,2",
    "--depth",
    "2",
    "--features",
    "32",
    "--batch",
    "1",
    "--steps",
    "2",
    "--threads",
    "1",
    "--quiet",
    "--min-size",
    "10",
    "--val-fraction",
    "0",
]  # fmt: skip  (a checkpoint of ~0.6 MB: more than the full disk holds)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Small inputs for every command, on an ordinary disk."""
    from napari_connectome.samples import synthetic_em

    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (72, 72, 72), dtype=np.uint8)  # incompressible: 373 KB
    em = synthetic_em((40, 40, 40), seed=1)
    with h5py.File(root / "noise.h5", "w") as f:
        f["raw"] = noise
    with h5py.File(root / "em.h5", "w") as f:
        f["raw"] = em.image
        f["labels"] = em.labels
    ids = rng.integers(1, 2**40, (48, 48, 48), dtype=np.uint64)  # 884 KB of ids
    np.save(root / "ids.npy", ids)
    write_cells_volume(root / "cells.h5")
    assert main(["proofread", "import", str(root / "ids.npy"), str(root / "project")]) == 0
    return {
        "noise": root / "noise.h5",
        "em": root / "em.h5",
        "ids": root / "ids.npy",
        "cells": root / "cells.h5",
        "project": root / "project",
        "root": root,
    }


def _job_spec(inputs: dict[str, Path], folder: Path, name: str) -> Path:
    """A small watershed job writing into ``folder``; the spec itself lives elsewhere."""
    spec = cells_job_spec(inputs["cells"], folder / "seg.ome.zarr", workers=1)
    path = inputs["root"] / f"{name}-{folder.name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _segment_argv(inputs: dict[str, Path], folder: Path) -> list[str]:
    """The shipped model on a tiny region, a couple of FFN steps."""
    roi = ["--roi", "0:24,0:24,0:24", "--max-steps", "2", "--threads", "1"]
    dest = str(folder / "seg.ome.zarr")
    return ["segment", f"{inputs['em']}:raw", dest, "--model", str(SHIPPED_MODEL), *roi]


# command -> (argv for an output in FOLDER, whether the full disk is filled first)
Case = Callable[[dict[str, Path], Path], list[str]]
CASES: dict[str, tuple[Case, bool]] = {
    "convert": (lambda i, d: ["convert", f"{i['noise']}:raw", str(d / "out.ome.zarr")], False),
    "segment": (_segment_argv, True),  # its labels compress to a few KB: fill the disk first
    "train": (
        lambda i, d: ["train", f"{i['em']}:raw", f"{i['em']}:labels", str(d / "run"), *TINY_TRAIN],
        False,
    ),
    "proofread import": (
        lambda i, d: ["proofread", "import", str(i["ids"]), str(d / "project")],
        False,
    ),
    "proofread export": (
        lambda i, d: ["proofread", "export", str(i["project"]), str(d / "export.ome.zarr")],
        False,
    ),
    "run-job": (lambda i, d: ["run-job", str(_job_spec(i, d, "run-job"))], True),
    "submit": (lambda i, d: ["submit", str(_job_spec(i, d, "submit"))], True),
}


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _run_and_check(argv: list[str], capfd, expect: str) -> str:
    rc = main(argv)
    _, err = capfd.readouterr()
    assert rc == 2, f"exit {rc}\n{err}"
    assert "Traceback" not in err, err
    message = [line for line in err.splitlines() if "error:" in line]
    assert message, err
    assert expect in message[-1], err
    return message[-1]


@pytest.fixture
def jobs_config(tmp_path, monkeypatch):
    """submit records its jobs here, not in the user's config folder."""
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))


@pytest.mark.parametrize("command", list(CASES))
def test_read_only_output_folder(command, inputs, read_only_dir, capfd, jobs_config):
    build, _ = CASES[command]
    _run_and_check(build(inputs, read_only_dir), capfd, "read-only")
    assert _listing(read_only_dir) == []


@pytest.mark.parametrize("command", list(CASES))
def test_full_disk(command, inputs, full_disk_dir, capfd, jobs_config):
    build, fill_first = CASES[command]
    if fill_first:
        fill(full_disk_dir)
    message = _run_and_check(build(inputs, full_disk_dir), capfd, "no space left")
    assert "free some space" in message
    assert set(_listing(full_disk_dir)) <= {FILLER}, _listing(full_disk_dir)


def test_import_checkpoint_read_only_and_full(
    google_ffn_dir, read_only_dir, full_disk_dir, capfd, tmp_path
):
    """Google's checkpoint (2.5 MB of weights) into a read-only folder and onto a full disk."""
    prefix = str(google_ffn_dir / "model.ckpt-27465036")
    message = _run_and_check(
        ["import-checkpoint", prefix, str(read_only_dir / "model")], capfd, "read-only"
    )
    assert str(read_only_dir) in message
    assert _listing(read_only_dir) == []
    message = _run_and_check(
        ["import-checkpoint", prefix, str(full_disk_dir / "model")], capfd, "no space left"
    )
    assert str(full_disk_dir) in message
    assert ".model." not in message  # the user's path, not the hidden one being assembled
    assert _listing(full_disk_dir) == []


def test_a_train_run_that_failed_before_its_first_checkpoint_can_be_rerun(
    inputs, full_disk_dir, capfd, tmp_path
):
    """The config a failed run wrote no longer blocks the same command elsewhere or later."""
    run = full_disk_dir / "run"
    argv = ["train", f"{inputs['em']}:raw", f"{inputs['em']}:labels", str(run), *TINY_TRAIN]
    _run_and_check(argv, capfd, "no space left")
    assert not run.exists()
    os.makedirs(run)  # an empty folder the user made is kept, and emptied again after a failure
    _run_and_check(argv, capfd, "no space left")
    assert run.is_dir()
    assert _listing(run) == []
