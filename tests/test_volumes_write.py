"""Writing OME-Zarr 0.5: complete metadata, blockwise copies, pyramids, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from napari_connectome.errors import UserInputError
from napari_connectome.volumes import (
    build_pyramid,
    create_ome_zarr,
    open_volume,
    write_ome_zarr,
)
from napari_connectome.volumes.pyramid import downsample_mean, downsample_mode


class RecordingArray:
    """A user's array-like (e.g. a memory-mapped file) that remembers its largest read."""

    def __init__(self, data):
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.largest_read = 0

    def __getitem__(self, key):
        out = self.data[key]
        self.largest_read = max(self.largest_read, out.nbytes)
        return out


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_image_written_as_ome_zarr_05_with_pyramid(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 70, 90), dtype=np.uint8)
    dest = tmp_path / "em.ome.zarr"

    calls = []
    out = write_ome_zarr(
        image,
        dest,
        voxel_size_nm=(8, 4, 4),
        offset_nm=(80, 0, 40),
        chunks=16,
        progress=lambda done, total, msg="": calls.append((done, total)),
    )

    assert out == dest
    assert _siblings(dest) == ["em.ome.zarr"]  # no temporary left behind
    meta = json.loads((dest / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "nanometer" for a in ms["axes"])
    level0 = json.loads((dest / "0" / "zarr.json").read_text())
    assert level0["dimension_names"] == ["z", "y", "x"]
    assert level0["chunk_grid"]["configuration"]["chunk_shape"] == [16, 16, 16]
    first, second = ms["datasets"][:2]
    assert first["coordinateTransformations"] == [
        {"type": "scale", "scale": [8.0, 4.0, 4.0]},
        {"type": "translation", "translation": [80.0, 0.0, 40.0]},
    ]
    # the 4 nm axes halve first (anisotropic): z keeps 8 nm until y and x catch up
    assert second["coordinateTransformations"][0]["scale"] == [8.0, 8.0, 8.0]
    assert second["coordinateTransformations"][1]["translation"] == [80.0, 2.0, 42.0]

    vol = open_volume(dest)
    assert vol.format == "ome-zarr-0.5"
    assert not vol.is_labels
    assert vol.voxel_size_nm == (8.0, 4.0, 4.0)
    assert vol.offset_nm == (80.0, 0.0, 40.0)
    np.testing.assert_array_equal(vol.data.compute(), image)
    np.testing.assert_array_equal(vol.multiscale[1].compute(), downsample_mean(image, (1, 2, 2)))
    # the pyramid ends when every axis fits in one chunk
    assert max(vol.multiscale[-1].shape) <= 16
    assert calls[-1][0] == calls[-1][1]
    assert calls[-1][1] > 1


def test_labels_use_mode_downsampling_and_image_label_metadata(tmp_path):
    labels = np.zeros((32, 32, 32), dtype=np.uint64)
    labels[:, :, 16:] = 2**40 + 5  # ids beyond 32 bits survive
    labels[::2, ::2, ::2] = 3  # one voxel in 8: mode keeps the majority, striding would not
    dest = tmp_path / "seg.ome.zarr"
    write_ome_zarr(labels, dest, voxel_size_nm=(10, 10, 10), labels=True, chunks=8, levels=2)

    attrs = json.loads((dest / "zarr.json").read_text())["attributes"]["ome"]
    assert attrs["image-label"]["version"] == "0.5"
    vol = open_volume(dest)
    assert vol.is_labels
    coarse = vol.multiscale[1].compute()
    assert coarse.shape == (16, 16, 16)
    assert set(np.unique(coarse)) == {0, 2**40 + 5}
    np.testing.assert_array_equal(coarse, downsample_mode(labels, (2, 2, 2)))


def test_ome_zarr_py_reads_our_image_and_labels(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    image = np.random.default_rng(2).integers(0, 255, (30, 40, 50), dtype=np.uint8)
    write_ome_zarr(image, tmp_path / "img.ome.zarr", voxel_size_nm=(10, 10, 10), chunks=16)
    write_ome_zarr(
        (image > 128).astype(np.uint32),
        tmp_path / "seg.ome.zarr",
        voxel_size_nm=(10, 10, 10),
        labels=True,
        chunks=16,
    )

    nodes = list(Reader(parse_url(str(tmp_path / "img.ome.zarr")))())
    assert any(isinstance(s, Multiscales) for s in nodes[0].specs)
    assert [tuple(d.shape) for d in nodes[0].data] == [(30, 40, 50), (15, 20, 25), (8, 10, 13)]
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), image)
    assert nodes[0].metadata["axes"][0]["name"] == "z"

    seg = next(iter(Reader(parse_url(str(tmp_path / "seg.ome.zarr")))()))
    assert any(isinstance(s, Label) for s in seg.specs)
    np.testing.assert_array_equal(np.asarray(seg.data[0]), image > 128)


def test_copy_is_blockwise_never_the_whole_volume(tmp_path):
    source = RecordingArray(np.random.default_rng(3).integers(0, 60000, (64, 128, 128), np.uint16))
    write_ome_zarr(
        source, tmp_path / "big.ome.zarr", voxel_size_nm=(5, 5, 5), chunks=32, block_bytes=2**18
    )
    total = source.data.nbytes  # 2 MiB
    assert source.largest_read <= 2**18 < total
    np.testing.assert_array_equal(
        open_volume(tmp_path / "big.ome.zarr").data.compute(), source.data
    )


def test_create_then_fill_blocks_then_build_pyramid(tmp_path):
    """The job workflow: create the complete empty result, write blocks as they finish, pyramid."""
    dest = tmp_path / "result.ome.zarr"
    writer = create_ome_zarr(
        dest, (48, 48, 48), np.uint32, voxel_size_nm=(10, 10, 10), chunks=16, labels=True, levels=3
    )
    assert [tuple(a.shape) for a in writer.arrays] == [(48,) * 3, (24,) * 3, (12,) * 3]
    empty = open_volume(dest)
    assert empty.is_labels
    assert int(empty.data.max().compute()) == 0

    expected = np.zeros((48, 48, 48), np.uint32)
    for z in range(0, 48, 16):
        block = np.full((16, 48, 48), z + 1, np.uint32)
        writer.write((slice(z, z + 16), slice(None), slice(None)), block)
        expected[z : z + 16] = z + 1
    writer.build_pyramid()

    vol = open_volume(dest)
    np.testing.assert_array_equal(vol.data.compute(), expected)
    np.testing.assert_array_equal(vol.multiscale[2].compute(), expected[::4, ::4, ::4])

    # build_pyramid by path recomputes coarse levels after an edit of level 0
    zarr.open_array(dest / "0", mode="r+")[:] = 9
    build_pyramid(dest)
    assert set(np.unique(open_volume(dest, level=2).data.compute())) == {9}


def test_channel_axis_is_kept_and_never_downsampled(tmp_path):
    data = np.random.default_rng(4).random((2, 20, 20, 20)).astype(np.float32)
    writer = create_ome_zarr(
        tmp_path / "aff.ome.zarr",
        data.shape,
        data.dtype,
        voxel_size_nm=(1, 8, 8, 8),
        axes="czyx",
        chunks=10,
    )
    writer.write((slice(None),) * 4, data)
    writer.build_pyramid()
    vol = open_volume(tmp_path / "aff.ome.zarr")
    assert vol.axes == "czyx"
    assert vol.storage_chunks == (1, 10, 10, 10)
    assert vol.multiscale[1].shape == (2, 10, 10, 10)
    np.testing.assert_allclose(vol.multiscale[1].compute(), downsample_mean(data, (1, 2, 2, 2)))


def test_existing_output_is_refused_then_replaced_only_when_complete(tmp_path):
    dest = tmp_path / "out.ome.zarr"
    write_ome_zarr(np.ones((8, 8, 8), np.uint8), dest, voxel_size_nm=(1, 1, 1))

    with pytest.raises(UserInputError, match=r"already exists.*--overwrite"):
        write_ome_zarr(np.zeros((8, 8, 8), np.uint8), dest, voxel_size_nm=(1, 1, 1))
    with pytest.raises(UserInputError, match="already exists"):
        create_ome_zarr(dest, (8, 8, 8), np.uint8, voxel_size_nm=(1, 1, 1))

    class FailingArray(RecordingArray):
        def __getitem__(self, key):
            if key[0].start >= 16:
                raise OSError("disk went away")
            return super().__getitem__(key)

    with pytest.raises(OSError, match="disk went away"):
        write_ome_zarr(
            FailingArray(np.full((32, 8, 8), 5, np.uint8)),
            dest,
            voxel_size_nm=(1, 1, 1),
            chunks=8,
            overwrite=True,
            block_bytes=512,
        )
    # the failed overwrite left the old data untouched and no temporary behind
    assert _siblings(dest) == ["out.ome.zarr"]
    np.testing.assert_array_equal(open_volume(dest).data.compute(), np.ones((8, 8, 8)))

    write_ome_zarr(np.full((4, 4, 4), 2, np.uint8), dest, voxel_size_nm=(1, 1, 1), overwrite=True)
    assert _siblings(dest) == ["out.ome.zarr"]
    np.testing.assert_array_equal(open_volume(dest).data.compute(), np.full((4, 4, 4), 2))


def test_write_a_volume_keeps_its_voxel_size_and_offset(tmp_path):
    import h5py

    with h5py.File(tmp_path / "in.h5", "w") as f:
        ds = f.create_dataset("raw", data=np.arange(1000, dtype=np.uint8).reshape(10, 10, 10))
        ds.attrs["resolution"] = [30, 6, 6]
        ds.attrs["offset"] = [300, 60, 0]
    write_ome_zarr(open_volume(f"{tmp_path / 'in.h5'}:raw"), tmp_path / "out.ome.zarr")
    out = open_volume(tmp_path / "out.ome.zarr")
    assert (out.voxel_size_nm, out.offset_nm, out.name) == ((30, 6, 6), (300, 60, 0), "raw")


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_float_or_signed_labels_are_refused_before_writing(tmp_path, dtype):
    dest = tmp_path / "seg.ome.zarr"
    with pytest.raises(UserInputError, match=f"dtype {np.dtype(dtype)}.*unsigned"):
        write_ome_zarr(np.zeros((4, 4, 4), dtype), dest, voxel_size_nm=(1, 1, 1), labels=True)
    assert list(tmp_path.iterdir()) == []


def test_a_2d_image_gets_yx_axes_and_larger_chunks(tmp_path):
    image = np.random.default_rng(5).random((300, 200)).astype(np.float32)
    write_ome_zarr(image, tmp_path / "plane.ome.zarr", voxel_size_nm=(4, 4))
    vol = open_volume(tmp_path / "plane.ome.zarr")
    assert vol.axes == "yx"
    assert vol.storage_chunks == (256, 200)
    assert vol.level_voxel_sizes[1] == (8.0, 8.0)
    np.testing.assert_array_equal(vol.data.compute(), image)
