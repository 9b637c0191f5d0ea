"""Bad input: one clear UserInputError saying what is wrong and what to do; nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from napari_connectome.errors import UserInputError
from napari_connectome.volumes import (
    create_ome_zarr,
    open_volume,
    require_3d,
    write_ome_zarr,
)


def test_missing_path(tmp_path):
    with pytest.raises(UserInputError, match=r"does not exist; check the path"):
        open_volume(tmp_path / "nope.h5")


def test_unknown_format(tmp_path):
    (tmp_path / "notes.txt").write_text("not a volume")
    with pytest.raises(UserInputError, match=r"unknown format.*OME-Zarr.*HDF5.*TIFF"):
        open_volume(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="unknown format"):
        open_volume(tmp_path / "empty")


def test_missing_dataset_lists_the_ones_that_exist(tmp_path):
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.zeros((4, 4, 4), np.uint8)
        f["seg/labels"] = np.zeros((4, 4, 4), np.uint32)
    with pytest.raises(UserInputError, match=r"dataset 'rwa' does not exist.*raw, seg/labels"):
        open_volume(f"{path}:rwa")
    with pytest.raises(UserInputError, match=r"holds 2 datasets; choose one as .*:DATASET"):
        open_volume(path)


def test_missing_zarr_array_lists_the_ones_that_exist(tmp_path):
    root = zarr.open_group(tmp_path / "s.zarr", mode="w")
    root.create_array("a/raw", shape=(4, 4, 4), dtype="u1")
    root.create_array("b", shape=(4, 4, 4), dtype="u1")
    with pytest.raises(UserInputError, match=r"'a/raw2' does not exist in .*: a/raw, b"):
        open_volume(tmp_path / "s.zarr" / "a" / "raw2")
    with pytest.raises(UserInputError, match=r"zarr group with 2 arrays; name one"):
        open_volume(tmp_path / "s.zarr")


def test_require_3d_refuses_a_2d_image(tmp_path):
    path = tmp_path / "plane.h5"
    with h5py.File(path, "w") as f:
        f["img"] = np.zeros((32, 32), np.uint8)
    vol = open_volume(f"{path}:img")
    with pytest.raises(UserInputError, match=r"is 2D .* but segmentation needs a 3D volume"):
        require_3d(vol, "segmentation")


def test_corrupt_chunk_is_named(tmp_path):
    arr = zarr.create_array(
        tmp_path / "v.zarr", shape=(20, 20, 20), chunks=(10, 10, 10), dtype="u2"
    )
    arr[:] = 3
    (tmp_path / "v.zarr" / "c" / "1" / "0" / "1").write_bytes(b"\x00garbage" * 20)
    vol = open_volume(tmp_path / "v.zarr")
    np.testing.assert_array_equal(vol.data[:10].compute(), 3)  # healthy chunks still read
    with pytest.raises(UserInputError, match=r"chunk '.*v\.zarr/c/1/0/1' of .* cannot be decoded"):
        vol.data.compute()
    with pytest.raises(UserInputError, match=r"c/1/0/1"):
        write_ome_zarr(vol, tmp_path / "out.ome.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.zarr"]


def test_bad_writer_arguments(tmp_path):
    with pytest.raises(UserInputError, match="voxel_size_nm"):
        create_ome_zarr(tmp_path / "a.ome.zarr", (4, 4, 4), np.uint8, voxel_size_nm=(1, 1))
    with pytest.raises(UserInputError, match="axes 'zyx' do not match"):
        create_ome_zarr(tmp_path / "a.ome.zarr", (2, 4, 4, 4), np.uint8, voxel_size_nm=(1, 1, 1))
    with pytest.raises(UserInputError, match=r"folder .* does not exist"):
        create_ome_zarr(tmp_path / "no" / "a.ome.zarr", (4, 4, 4), np.uint8, voxel_size_nm=(1,) * 3)
    with pytest.raises(UserInputError, match="levels must be at least 1"):
        create_ome_zarr(tmp_path / "a.ome.zarr", (4, 4, 4), "u1", voxel_size_nm=(1,) * 3, levels=0)
    write_ome_zarr(np.zeros((4, 4, 4), np.uint8), tmp_path / "b.ome.zarr", levels=1)
    with pytest.raises(UserInputError, match="level 5 does not exist"):
        open_volume(tmp_path / "b.ome.zarr", level=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.ome.zarr"]


def test_corrupt_hdf5_chunk_is_named(tmp_path):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "raw", data=np.ones((20, 20, 20), np.uint8), chunks=(10, 10, 10), compression="gzip"
        )
        damaged = ds.id.get_chunk_info(3)  # the chunk starting at (0, 10, 10)
    with open(path, "r+b") as fh:
        fh.seek(damaged.byte_offset)
        fh.write(b"\xff" * damaged.size)
    vol = open_volume(f"{path}:raw")
    with pytest.raises(
        UserInputError, match=r"'/raw' of .*v\.h5 cannot be read \(chunk at \(0, 10, 10\)\)"
    ):
        vol.data.compute()


def test_damaged_tiff_slice_is_named(tmp_path):
    import tifffile

    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(5):
        tifffile.imwrite(folder / f"s_{i}.tif", np.full((16, 16), i, np.uint8), compression="zlib")
    with tifffile.TiffFile(folder / "s_3.tif") as tif:
        offset, size = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(folder / "s_3.tif", "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * size)
    vol = open_volume(folder)
    np.testing.assert_array_equal(vol.data[2].compute(), 2)
    with pytest.raises(UserInputError, match=r"slice file s_3\.tif of .*slices cannot be decoded"):
        vol.data.compute()


def _damaged_stores(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Stores a crash, a bad copy or a hand edit leaves behind, and what the message must say."""
    cases: dict[str, tuple[Path, str]] = {}
    for name, text, message in (
        ("empty", b"", r"zarr\.json is empty; the zarr store is damaged"),
        ("not-json", b"{not json", r"zarr\.json is not valid JSON \(Expecting property name"),
        ("a-list", b"[]", r"zarr\.json holds a list, not a JSON object"),
        ("null", b"null", r"holds null, not a JSON object"),
        ("no-dtype", b'{"zarr_format": 3, "node_type": "array"}', r"KeyError: 'data_type'"),
    ):
        store = tmp / f"{name}.zarr"
        store.mkdir()
        (store / "zarr.json").write_bytes(text)
        cases[name] = (store, message)
    zarr.create_array(tmp / "v2.zarr", shape=(4, 4, 4), dtype="u1", zarr_format=2)
    (tmp / "v2.zarr" / ".zarray").write_text("{}")
    cases["v2-array-without-keys"] = (tmp / "v2.zarr", r"v2\.zarr: zarr cannot read its metadata")

    group = zarr.open_group(tmp / "group.zarr", mode="w")
    group.create_array("a", shape=(4, 4, 4), dtype="u1")
    group.create_array("b", shape=(4, 4, 4), dtype="u1")
    (tmp / "group.zarr" / "a" / "zarr.json").write_text("{x")
    cases["broken-member"] = (tmp / "group.zarr", r"group\.zarr/a/zarr\.json is not valid JSON")
    cases["broken-member-named"] = (tmp / "group.zarr" / "a", r"a/zarr\.json is not valid JSON")

    write_ome_zarr(np.zeros((16, 16, 16), np.uint8), tmp / "level.ome.zarr", levels=2)
    shutil.rmtree(tmp / "level.ome.zarr" / "0")
    cases["missing-level"] = (
        tmp / "level.ome.zarr",
        r"lists dataset '0' in its multiscales metadata, but it is missing",
    )
    gone = zarr.open_group(tmp / "gone.zarr", mode="w")
    gone.create_array("raw", shape=(4, 4, 4), dtype="u1")
    shutil.rmtree(tmp / "gone.zarr" / "raw")
    cases["missing-member"] = (tmp / "gone.zarr" / "raw", r"'raw' does not exist in .*gone\.zarr")
    zarr.create_array(tmp / "plain.zarr", shape=(4, 4, 4), dtype="u1")
    cases["inside-an-array"] = (
        tmp / "plain.zarr" / "c",
        r"plain\.zarr is a single zarr array; it holds no 'c'",
    )
    (tmp / "header-only.tif").write_bytes(b"II*\x00" + b"\xff" * 100)
    cases["tiff-header-only"] = (tmp / "header-only.tif", r"cannot be read as a TIFF stack")
    (tmp / "text.tif").write_text("this is not a TIFF")
    cases["not-a-tiff"] = (tmp / "text.tif", r"not a TIFF file")
    return cases


DAMAGED = [
    "empty", "not-json", "a-list", "null", "no-dtype", "v2-array-without-keys", "broken-member",
    "broken-member-named", "missing-level", "missing-member", "inside-an-array",
    "tiff-header-only", "not-a-tiff",
]  # fmt: skip


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_store_is_named_by_every_reader(case, tmp_path, capsys):
    """open_volume, discover_volumes and the CLI: one message naming the file, never a
    traceback (JSONDecodeError, KeyError, AttributeError from inside zarr or tifffile)."""
    import re

    from napari_connectome.cli import main
    from napari_connectome.volumes import discover_volumes

    path, message = _damaged_stores(tmp_path)[case]
    with pytest.raises(UserInputError, match=message):
        open_volume(path)
    with pytest.raises(UserInputError, match=message):
        discover_volumes(path)
    for command in (["info", str(path)], ["convert", str(path), str(tmp_path / "o.ome.zarr")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert re.search(message, err), err
    assert not (tmp_path / "o.ome.zarr").exists()
