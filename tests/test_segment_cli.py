"""``napari-connectome segment``: a user segments an HDF5 volume into OME-Zarr labels.

The model is a real model directory (safetensors + config.json) holding the hand-wired "bright
painter" FFN of test_ffn_inference, so the expected labels are known exactly.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from napari_connectome.cli import main
from napari_connectome.ffn.checkpoint import save_model
from napari_connectome.ffn.config import ModelConfig
from napari_connectome.volumes import open_volume
from tests.test_ffn_inference import ARCH, bright_painter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "painter"
    save_model(path, bright_painter(), ModelConfig(architecture=ARCH))
    return path


@pytest.fixture
def em(tmp_path):
    """A 40x40x96 'EM' volume with two bright objects, as HDF5 with 8 nm voxels."""
    raw = np.zeros((40, 40, 96), np.uint8)
    raw[10:20, 10:20, 10:20] = 255
    raw[18:23, 18:23, 40:92] = 255
    path = tmp_path / "em.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("raw", data=raw)
        d.attrs["resolution_nm_zyx"] = [8, 8, 8]
    return f"{path}:raw", raw


def run(*argv) -> int:
    return main([str(a) for a in argv])


def test_segment_with_seeds_writes_labels_and_counters(em, model_dir, tmp_path):
    source, raw = em
    dest = tmp_path / "seg.ome.zarr"
    rc = run(
        "segment", source, dest, "--model", model_dir, "--seed", "20,20,60",
        "--seed", "15,15,15", "--min-segment-size", "50",
    )  # fmt: skip
    assert rc == 0
    labels = open_volume(dest)
    assert labels.is_labels
    seg = np.asarray(labels.data)
    assert seg.dtype == np.uint64
    np.testing.assert_array_equal(seg[18:23, 18:23, 40:92], 1)  # from the first seed
    np.testing.assert_array_equal(seg[10:20, 10:20, 10:20], 2)
    assert np.count_nonzero(seg) == np.count_nonzero(raw)
    assert tuple(labels.voxel_size_nm) == (8.0, 8.0, 8.0)
    report = json.loads((dest / "ffn_counters.json").read_text())
    assert report["counters"]["segments"] == 2
    assert report["counters"]["steps"] > 2
    assert report["objects"]["1"]["start_zyx"] == [20, 20, 60]
    assert report["objects"]["1"]["iters"] > 1
    # auto by default: what ran and why (bf16 only on a CPU with native bf16), also in the counters
    assert report["precision_requested"] == "auto"
    assert report["precision"] == report["counters"]["precision"] in ("fp32", "bf16")
    assert "native bf16" in report["precision_reason"]
    assert report["counters"]["threads"] >= 1


def test_segment_a_roi_with_the_seed_policy(em, model_dir, tmp_path):
    source, _ = em
    dest = tmp_path / "roi.ome.zarr"
    rc = run(
        "segment", source, dest, "--model", model_dir, "--roi", "0:40,0:40,30:96",
        "--seed-policy", "grid", "--min-segment-size", "50",
    )  # fmt: skip
    assert rc == 0
    vol = open_volume(dest)
    seg = np.asarray(vol.data)
    assert seg.shape == (40, 40, 66)
    assert tuple(vol.offset_nm) == (0.0, 0.0, 240.0)  # the ROI keeps its place in the volume
    rod = seg[18:23, 18:23, 10:62]
    assert np.unique(rod).size == 1
    assert rod[0, 0, 0] > 0
    assert not seg[:, :, :8].any()


def test_existing_output_is_refused_and_untouched(em, model_dir, tmp_path, capsys):
    source, _ = em
    dest = tmp_path / "seg.ome.zarr"
    dest.mkdir()
    (dest / "precious.txt").write_text("mine")
    assert run("segment", source, dest, "--model", model_dir, "--seed", "15,15,15") == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["em.h5", "seg.ome.zarr"]
    assert (dest / "precious.txt").read_text() == "mine"


def _h5(tmp_path, name, data):
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=data)
    return f"{path}:raw"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("seed_outside", "outside the volume"),
        ("seed_on_mask", "mask"),
        ("roi_smaller_than_fov", "field of view"),
        ("image_2d", "3D"),
        ("nan_image", "NaN"),
        ("bad_roi", "--roi"),
        ("cuda", "CUDA"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(case, message, em, model_dir, tmp_path, capsys):
    source, raw = em
    dest = tmp_path / "out.ome.zarr"
    extra: list = ["--seed", "15,15,15"]
    if case == "seed_outside":
        extra = ["--seed", "15,15,200"]
    elif case == "seed_on_mask":
        mask = np.zeros(raw.shape, np.uint8)
        mask[10:20, 10:20, 10:20] = 1
        extra += ["--mask", _h5(tmp_path, "mask.h5", mask)]
    elif case == "roi_smaller_than_fov":
        extra = ["--roi", "0:10,0:40,0:96"]
    elif case == "image_2d":
        source = _h5(tmp_path, "flat.h5", np.zeros((40, 96), np.uint8))
        extra = []
    elif case == "nan_image":
        img = raw.astype(np.float32)
        img[5, 5, 5] = np.nan
        source = _h5(tmp_path, "nan.h5", img)
    elif case == "bad_roi":
        extra = ["--roi", "0:40,0:40"]
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        extra += ["--device", "cuda"]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run("segment", source, dest, "--model", model_dir, *extra) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp left
