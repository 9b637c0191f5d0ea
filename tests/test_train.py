"""Training an FFN the way a user does: `napari-connectome train`, resume, fine-tune, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from napari_connectome.cli import main
from napari_connectome.ffn.checkpoint import load_model, save_model
from napari_connectome.ffn.config import ModelConfig
from napari_connectome.ffn.model import FFNArchitecture, build_model
from napari_connectome.ffn.training import TrainConfig
from napari_connectome.ffn.training.examples import ExampleSlot, permutable_axes
from napari_connectome.ffn.training.partitions import (
    EXCLUDED,
    CoordinateSampler,
    compute_partitions,
)
from napari_connectome.samples import synthetic_em

# A tiny network and FOV so that a few steps take about a second on one CPU core.
TINY = ["--fov", "9,9,9", "--deltas", "2,2,2", "--depth", "1", "--features", "4", "--batch", "2"]
QUICK = ["--threads", "1", "--quiet", "--log-every", "2", "--val-every", "4"]


@pytest.fixture(scope="module")
def sample_h5(tmp_path_factory):
    """A synthetic EM volume with dense ground truth, stored like a user's HDF5 file."""
    em = synthetic_em((40, 48, 64), seed=3)
    path = tmp_path_factory.mktemp("data") / "sample.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = em.image
        f["labels"] = em.labels
        f["labels_float"] = em.labels.astype(np.float32)
        f["labels_short"] = em.labels[:, :, :40]
        f["empty"] = np.zeros_like(em.labels)
    return path


def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_then_resume(sample_h5, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", f"{sample_h5}:raw", f"{sample_h5}:labels", str(run), *TINY, *QUICK]
    assert main([*args, "--steps", "6", "--checkpoint-every", "3", "--min-size", "100"]) == 0

    _model, cfg = load_model(run / "model")
    assert cfg.fov_size == (9, 9, 9)
    assert cfg.provenance["source"] == "napari-connectome train"
    assert cfg.provenance["step"] == 6
    rows = _rows(run)
    assert [r["step"] for r in rows if r["split"] == "train"] == ["2", "4", "6"]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in val] == ["4", "6"]
    assert all(0 <= float(r["precision"]) <= 1 for r in val)
    assert (run / "metrics.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000003",
        "step-00000006",
    ]

    # the same command again is refused: it would overwrite the run
    assert main([*args, "--steps", "6", "--min-size", "100"]) == 2
    assert "already holds a training run" in capsys.readouterr().err

    # resume with more steps, now in bf16: continues from step 6, options left out keep the saved
    # values, and precision is a runtime setting that may change
    resume = ["train", f"{sample_h5}:raw", f"{sample_h5}:labels", str(run), "--resume", *QUICK]
    assert main([*resume, "--steps", "10", "--precision", "bf16"]) == 0
    assert "resumed from step-00000006" in capsys.readouterr().err
    train_rows = [r for r in _rows(run) if r["split"] == "train"]
    assert [int(r["step"]) for r in train_rows] == [2, 4, 6, 8, 10]
    assert all(np.isfinite(float(r["loss"])) for r in train_rows)
    assert load_model(run / "model")[1].provenance["step"] == 10

    # resuming with a different setting names the field and changes nothing
    before = (run / "model" / "model.safetensors").read_bytes()
    assert main([*resume, "--steps", "12", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate=0.001" in err
    assert "learning_rate=0.01" in err
    assert (run / "model" / "model.safetensors").read_bytes() == before


def test_fine_tune_from_an_existing_model(sample_h5, tmp_path, capsys):
    cfg = ModelConfig(
        architecture=FFNArchitecture(depth=1, features=4, fov_size=9, deltas=2),
        image_mean=120.0,
        image_stddev=40.0,
    )
    save_model(tmp_path / "base", build_model(cfg.architecture), cfg)
    run = tmp_path / "tuned"
    args = ["train", f"{sample_h5}:raw", f"{sample_h5}:labels", str(run), *QUICK]
    assert main([*args, "--init", str(tmp_path / "base"), "--steps", "2", "--batch", "2"]) == 0

    _, tuned = load_model(run / "model")
    assert tuned.architecture == cfg.architecture  # taken from the model
    assert (tuned.image_mean, tuned.image_stddev) == (120.0, 40.0)
    assert tuned.provenance["init_model"] == str(tmp_path / "base")

    other = ["--init", str(tmp_path / "base"), "--depth", "3", "--steps", "2"]
    assert (
        main(["train", f"{sample_h5}:raw", f"{sample_h5}:labels", str(tmp_path / "x"), *other]) == 2
    )
    assert "depth=1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("labels_float", "dtype float32"),
        ("labels_short", "labels have shape"),
        ("empty", "too few labelled voxels"),
    ],
)
def test_bad_ground_truth_is_refused_before_writing(sample_h5, tmp_path, capsys, labels, message):
    out = tmp_path / "run"
    args = ["train", f"{sample_h5}:raw", f"{sample_h5}:{labels}", str(out), *TINY, *QUICK]
    assert main([*args, "--steps", "2", "--val-fraction", "0"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_fov_larger_than_the_region_is_refused(sample_h5, tmp_path, capsys):
    args = ["train", f"{sample_h5}:raw", f"{sample_h5}:labels", str(tmp_path / "r"), *QUICK]
    assert main([*args, "--fov", "33,33,33", "--deltas", "8,8,8", "--steps", "1"]) == 2
    assert "smaller than one example" in capsys.readouterr().err


def test_thin_validation_split_says_what_to_do(sample_h5, tmp_path, capsys):
    args = ["train", f"{sample_h5}:raw", f"{sample_h5}:labels", str(tmp_path / "r"), *TINY, *QUICK]
    assert main([*args, "--val-fraction", "0.05", "--steps", "1"]) == 2
    assert "--val-fraction of at least" in capsys.readouterr().err


def test_training_lowers_the_validation_loss(tmp_path):
    """A short run on a synthetic volume must learn something (fixed seeds: deterministic)."""
    from napari_connectome.ffn.training import train

    em = synthetic_em((40, 64, 64), seed=5)
    cfg = TrainConfig(
        fov_size=[9, 9, 9],
        deltas=[2, 2, 2],
        depth=2,
        features=8,
        batch_size=4,
        steps=60,
        learning_rate=3e-3,
        min_size=100,
        val_every=10,
        log_every=10,
        checkpoint_every=60,
        val_examples=16,
        threads=1,
    )
    train(cfg, tmp_path / "run", image=em.image, labels=em.labels)
    val = [float(r["loss"]) for r in _rows(tmp_path / "run") if r["split"] == "val"]
    assert len(val) == 6
    assert min(val[-2:]) < 0.9 * val[0]


def test_partitions_put_interiors_high_and_drop_small_objects():
    labels = np.zeros((30, 30, 30), np.uint64)
    labels[:, :, :15] = 1
    labels[:, :, 15:] = 2
    labels[0:2, 0:2, 0:2] = 3  # 8 voxels: below min_size
    parts = compute_partitions(labels, [0.5, 0.8, 0.95], lom_radius=(3, 3, 3), min_size=20)
    assert parts[0, 0, 0] == EXCLUDED
    assert parts[15, 15, 5] == 3  # deep inside object 1: whole box is object 1
    assert parts[15, 15, 14] == 1  # at the border: about half the box
    sampler = CoordinateSampler(parts, (3, 3, 3), (27, 27, 27))
    assert sampler.partitions == [1, 2, 3]
    rng = np.random.default_rng(0)
    drawn = [parts[sampler.sample(rng)] for _ in range(3000)]
    counts = np.bincount(drawn, minlength=4)[1:]
    assert counts.min() > 800  # each partition about a third, however rare its voxels are


def test_fov_moves_follow_confident_faces():
    cfg = TrainConfig(fov_size=[9, 9, 9], deltas=[2, 2, 2])
    size = cfg.example_size
    slot = ExampleSlot(np.zeros(size, np.float32), np.zeros(size, np.float32), np.ones(size), cfg)
    pos, _image, seed, _, _ = slot.next_fov()
    assert pos == (6, 6, 6)
    assert seed[4, 4, 4] > 2.9  # logit(0.95) at the seed
    assert seed[0, 0, 0] < -2.9  # logit(0.05) elsewhere
    logits = np.full((9, 9, 9), -5.0, np.float32)
    logits[4, 4, 6] = 5.0  # only the +x face is confident
    slot.update(pos, logits)
    assert slot.queue == [(6, 6, 8)]
    assert slot.canvas[6, 6, 8] == 5.0  # the prediction is in the canvas


def test_augmentation_only_swaps_axes_of_equal_size():
    assert permutable_axes(TrainConfig(fov_size=[17, 33, 33], deltas=[4, 8, 8])) == [1, 2]
    assert permutable_axes(TrainConfig(fov_size=[9, 11, 13], deltas=[2, 2, 2])) == []


def test_resume_under_another_world_size_is_refused(sample_h5, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = ["train", f"{sample_h5}:raw", f"{sample_h5}:labels", str(run), *TINY, *QUICK]
    assert main([*args, "--steps", "2"]) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main([*args, "--resume", "--steps", "4"]) == 2
    assert "world_size=1" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(sample_h5, tmp_path):
    """Data-parallel training on CPU with gloo, launched the documented way."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "napari_connectome",
        "train",
        f"{sample_h5}:raw",
        f"{sample_h5}:labels",
        str(run),
        *TINY,
        *QUICK,
        "--steps",
        "4",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run / "train_config.json").read_text())
    assert config["world_size"] == 2
    load_model(run / "model")
    assert [r["step"] for r in _rows(run) if r["split"] == "train"] == ["2", "4"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_says_so(sample_h5, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", f"{sample_h5}:raw", f"{sample_h5}:labels", str(out), *TINY, *QUICK]
    assert main([*args, "--device", "cuda", "--steps", "1"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not out.exists()
