"""``napari-connectome info`` and ``convert`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from napari_connectome.cli import main
from napari_connectome.volumes import open_volume


@pytest.fixture
def em_h5(tmp_path):
    """An HDF5 file like a lab's: raw EM, a segmentation and odd extras."""
    path = tmp_path / "sample.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        raw = f.create_dataset("raw", data=rng.integers(0, 255, (40, 50, 60), dtype=np.uint8))
        raw.attrs["resolution_nm_zyx"] = [30, 8, 8]
        seg = f.create_dataset("seg", data=rng.integers(0, 5, (40, 50, 60)).astype(np.uint64))
        seg.attrs["resolution_nm_zyx"] = [30, 8, 8]
        f["plane"] = np.zeros((50, 60), np.uint8)
        f["prob"] = np.zeros((40, 50, 60), np.float32)
        f["signed"] = np.zeros((40, 50, 60), np.int64)
    return path


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_info_prints_json(em_h5, capsys):
    assert main(["info", f"{em_h5}:raw"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [40, 50, 60]
    assert info["dtype"] == "uint8"
    assert len(info["chunks"]) == 3
    assert info["voxel_size_nm"] == [30.0, 8.0, 8.0]
    assert info["offset_nm"] == [0.0, 0.0, 0.0]
    assert info["axes"] == "zyx"
    assert info["is_labels"] is False
    assert info["format"] == "hdf5"
    assert info["scales"] == [{"shape": [40, 50, 60], "voxel_size_nm": [30.0, 8.0, 8.0]}]


def test_info_on_a_file_with_several_datasets_lists_each(em_h5, capsys):
    assert main(["info", str(em_h5)]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in infos] == ["prob", "raw", "seg", "signed"]  # the 2D plane is skipped


def test_convert_image_and_labels_then_info_shows_the_pyramid(em_h5, tmp_path, capsys):
    dest = tmp_path / "raw.ome.zarr"
    argv = ["convert", f"{em_h5}:raw", str(dest), "--chunks", "16", "--levels", "3", "--progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "100%" in captured.err  # the tqdm progress bar ran to the end
    assert "wrote image" in captured.out

    assert main(["info", str(dest)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "ome-zarr-0.5"
    assert info["chunks"] == [16, 16, 16]
    assert [s["shape"] for s in info["scales"]] == [[40, 50, 60], [40, 25, 30], [40, 13, 15]]
    # 30 nm z stays until y and x (8 nm) have caught up
    assert [s["voxel_size_nm"] for s in info["scales"]][1:] == [[30, 16, 16], [30, 32, 32]]
    with h5py.File(em_h5) as f:
        np.testing.assert_array_equal(open_volume(dest).data.compute(), f["raw"][:])

    # a uint64 segmentation is detected as labels; --labels says so explicitly
    assert main(["convert", f"{em_h5}:seg", str(tmp_path / "seg.ome.zarr"), "--labels"]) == 0
    seg = open_volume(tmp_path / "seg.ome.zarr")
    assert seg.is_labels
    assert main(["convert", f"{em_h5}:seg", str(tmp_path / "auto.ome.zarr")]) == 0
    assert open_volume(tmp_path / "auto.ome.zarr").is_labels


def test_convert_overwrite(em_h5, tmp_path, capsys):
    dest = tmp_path / "out.ome.zarr"
    zarr.open_group(dest, mode="w").attrs["mine"] = "precious"

    assert main(["convert", f"{em_h5}:raw", str(dest)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert zarr.open_group(dest, mode="r").attrs["mine"] == "precious"

    # a zarr we did not write is not replaced even with --overwrite (see test_output_safety.py)
    assert main(["convert", f"{em_h5}:raw", str(dest), "--overwrite"]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert zarr.open_group(dest, mode="r").attrs["mine"] == "precious"

    ours = tmp_path / "ours.ome.zarr"
    assert main(["convert", f"{em_h5}:seg", str(ours), "--levels", "1"]) == 0
    assert main(["convert", f"{em_h5}:raw", str(ours), "--overwrite"]) == 0
    assert open_volume(ours).shape == (40, 50, 60)
    assert not open_volume(ours).is_labels
    assert _entries(tmp_path) == ["ours.ome.zarr", "out.ome.zarr", "sample.h5"]


@pytest.mark.parametrize(
    ("source", "extra", "message"),
    [
        ("{tmp}/missing.h5:raw", [], "does not exist; check the path"),
        ("{tmp}/sample.h5:nope", [], "dataset 'nope' does not exist in .*; datasets there: plane"),
        ("{tmp}/notes.txt", [], "unknown format"),
        ("{tmp}/sample.h5:plane", [], r"is 2D .* convert needs a 3D volume"),
        ("{tmp}/sample.h5:prob", ["--labels"], r"dtype float32, but labels must be unsigned"),
        ("{tmp}/sample.h5:signed", ["--labels"], r"dtype int64, but labels must be unsigned"),
        ("{tmp}/broken.zarr", [], r"chunk '.*broken\.zarr/c/0/1/0' .* cannot be decoded"),
        ("{tmp}/sample.h5:raw", ["--chunks", "0"], r"--chunks: 0 voxels is too small a chunk"),
        ("{tmp}/sample.h5:raw", ["--chunks", "5000"], r"5000 voxels is too large a chunk"),
        ("{tmp}/sample.h5:raw", ["--levels", "0"], r"--levels: 0 must be 1 or more"),
    ],
)
def test_convert_bad_input_exits_2_and_writes_nothing(
    em_h5, tmp_path, capsys, source, extra, message
):
    import re

    (tmp_path / "notes.txt").write_text("hello")
    broken = zarr.create_array(
        tmp_path / "broken.zarr", shape=(8, 8, 8), chunks=(4, 4, 4), dtype="u1"
    )
    broken[:] = 1
    (tmp_path / "broken.zarr" / "c" / "0" / "1" / "0").write_bytes(b"not zstd at all")
    before = _entries(tmp_path)

    code = main(["convert", source.format(tmp=tmp_path), str(tmp_path / "out.ome.zarr"), *extra])

    err = capsys.readouterr().err
    assert code == 2
    assert re.search(message, err), err
    assert "napari-connectome convert: error: " in err
    assert _entries(tmp_path) == before  # no output, no temporary


def test_info_bad_input_exits_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.realdata
def test_info_on_shared_fib25_via_the_installed_command(fib25_h5):
    exe = Path(sys.executable).with_name("napari-connectome")
    result = subprocess.run(
        [str(exe), "info", f"{fib25_h5}:raw"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["shape"] == [250, 250, 250]
    assert info["dtype"] == "uint8"
    assert info["voxel_size_nm"] == [10.0, 10.0, 10.0]
    assert info["is_labels"] is False


def test_info_on_an_ome_zarr_lists_the_image_and_its_labels(tmp_path, capsys):
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(tmp_path / "img.ome.zarr", mode="w", zarr_format=3)
    image = np.zeros((8, 16, 16), np.uint8)
    write_image(image, root, axes="zyx", scale_factors=[])
    write_labels(image.astype(np.uint32), root, name="cells", axes="zyx", scale_factors=[])

    assert main(["info", str(tmp_path / "img.ome.zarr")]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert [(i["name"], i["is_labels"]) for i in infos] == [("img", False), ("cells", True)]


@pytest.mark.realdata
def test_convert_shared_fib25_labels_keeps_every_id(fib25_h5, tmp_path):
    dest = tmp_path / "fib25_labels.ome.zarr"
    assert main(["convert", f"{fib25_h5}:labels", str(dest), "--levels", "2"]) == 0
    vol = open_volume(dest)
    assert vol.is_labels
    assert vol.voxel_size_nm == (10.0, 10.0, 10.0)
    with h5py.File(fib25_h5) as f:
        np.testing.assert_array_equal(vol.data.compute(), f["labels"][:])
    assert vol.multiscale[1].shape == (125, 125, 125)


def test_convert_background_maps_another_labs_no_label_value_to_0(tmp_path, capsys):
    """CREMI marks 'no label' with 2**64 - 1, other labs with -1 in a signed volume: convert
    --background makes them 0, which agglomerate, evaluate and calibrate-queue count as
    unlabelled; those refuse the raw values with this command in their message."""
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 9, (20, 24, 28)).astype(np.int64)
    ids[:, :5] = -1
    src = tmp_path / "lab.h5"
    with h5py.File(src, "w") as f:
        f["signed"] = ids.astype(np.int32)
        f["signed"].attrs["resolution_nm_zyx"] = [40, 4, 4]
        f["cremi"] = np.where(ids < 0, np.uint64(2**64 - 1), ids.astype(np.uint64))
        f["twice"] = np.where(ids < 0, -1, np.where(ids == 3, -2, ids)).astype(np.int32)
    assert main(["evaluate", f"{src}:cremi", f"{src}:cremi"]) == 2
    assert "--background 18446744073709551615" in capsys.readouterr().err
    for name, value, dtype in (("signed", "-1", np.uint32), ("cremi", str(2**64 - 1), np.uint64)):
        dest = tmp_path / f"{name}.ome.zarr"
        argv = ["convert", f"{src}:{name}", str(dest), "--labels", "--background", value]
        assert main(argv) == 0
        vol = open_volume(dest)
        got = np.asarray(vol.data)
        assert vol.is_labels
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, np.where(ids < 0, 0, ids))
        assert main(["evaluate", str(dest), f"{src}:cremi", "--quiet"]) == 2  # GT not yet fixed
        capsys.readouterr()
    scores = main(["evaluate", str(tmp_path / "signed.ome.zarr"), str(dest), "--quiet"])
    assert scores == 0
    assert json.loads(capsys.readouterr().out)["vi"] == pytest.approx(0.0, abs=1e-9)
    # a second negative value is refused, and nothing is written
    bad = tmp_path / "twice.ome.zarr"
    argv = ["convert", f"{src}:twice", str(bad), "--labels", "--background", "-1"]
    assert main(argv) == 2
    assert "negative ids (-2) besides the background -1" in capsys.readouterr().err
    assert not bad.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    for argv, message in (
        (["convert", f"{src}:signed", str(bad), "--background", "-1", "--image"], "give --labels"),
        (
            ["convert", f"{src}:signed", str(bad), "--labels", "--background", str(2**40)],
            "cannot occur",
        ),
    ):
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not bad.exists()


def test_16_bit_em_named_as_an_image_opens_as_an_image(tmp_path, capsys):
    """Many microscopes write 16-bit EM; without metadata a uint16 volume is labels unless its
    name says image (raw, em, gray, ...) and not labels."""
    import tifffile

    path = tmp_path / "lab.h5"
    data = np.random.default_rng(0).integers(0, 2**16, (8, 16, 16), dtype=np.uint16)
    with h5py.File(path, "w") as f:
        for name in ("volumes/raw", "em_16bit", "seg", "raw_seg", "volumes/labels/ids"):
            f[name] = data
    expect = {"raw": False, "em_16bit": False, "seg": True, "raw_seg": True, "ids": True}
    for name in ("volumes/raw", "em_16bit", "seg", "raw_seg", "volumes/labels/ids"):
        assert main(["info", f"{path}:{name}"]) == 0
        assert json.loads(capsys.readouterr().out)["is_labels"] is expect[name.split("/")[-1]]
    tifffile.imwrite(tmp_path / "grayscale.tif", data)
    assert open_volume(str(tmp_path / "grayscale.tif")).is_labels is False
    zarr.create_array(str(tmp_path / "em.zarr"), data=data)
    assert open_volume(str(tmp_path / "em.zarr")).is_labels is False
    zarr.create_array(str(tmp_path / "cells.zarr"), data=data)
    assert open_volume(str(tmp_path / "cells.zarr")).is_labels is True
