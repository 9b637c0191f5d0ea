"""Every format we read opens lazily with the right data, voxel size, offset and axes."""

from __future__ import annotations

import json

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import zarr

from napari_connectome.volumes import discover_volumes, open_volume


def assert_aligned(vol):
    """Every dask chunk boundary falls on a storage chunk boundary (no chunk read by two tasks)."""
    for bounds, step, size in zip(vol.data.chunks, vol.storage_chunks, vol.shape):
        edges = np.cumsum(bounds)[:-1]
        assert all(e % step == 0 for e in edges), (vol.data.chunks, vol.storage_chunks)
        assert sum(bounds) == size


@pytest.fixture
def zyx():
    """A small anisotropic test volume with distinct values everywhere."""
    return np.arange(6 * 20 * 30, dtype=np.uint16).reshape(6, 20, 30)


def test_hdf5_dataset_with_resolution_attribute(tmp_path, zyx):
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("em/raw", data=zyx.astype(np.uint8), chunks=(2, 10, 10))
        ds.attrs["resolution_nm_zyx"] = [40, 8, 8]
        f.create_dataset("seg", data=zyx.astype(np.uint32)).attrs["element_size_um"] = [
            0.04,
            0.008,
            0.008,
        ]

    raw = open_volume(f"{path}:em/raw")
    assert isinstance(raw.data, da.Array)
    assert raw.storage_chunks == (2, 10, 10)
    assert_aligned(raw)
    np.testing.assert_array_equal(raw.data.compute(), zyx.astype(np.uint8))
    assert raw.voxel_size_nm == (40.0, 8.0, 8.0)
    assert raw.axes == "zyx"
    assert not raw.is_labels
    assert raw.format == "hdf5"

    seg = open_volume(f"{path}:seg")
    assert seg.voxel_size_nm == pytest.approx((40.0, 8.0, 8.0))
    assert seg.is_labels  # uint32: labels by the dtype rule

    names = sorted(v.name for v in discover_volumes(path))
    assert names == ["raw", "seg"]


def test_hdf5_cremi_style_resolution_and_offset(tmp_path, zyx):
    path = tmp_path / "cremi.hdf"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("volumes/raw", data=zyx)
        ds.attrs["resolution"] = [40.0, 4.0, 4.0]
        ds.attrs["offset"] = [80.0, 0.0, 4.0]
    vol = open_volume(f"{path}:volumes/raw")
    assert vol.voxel_size_nm == (40.0, 4.0, 4.0)
    assert vol.offset_nm == (80.0, 0.0, 4.0)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_array_inside_group(tmp_path, zyx, zarr_format):
    store = tmp_path / "plain.zarr"
    root = zarr.open_group(store, mode="w", zarr_format=zarr_format)
    arr = root.create_array("volumes/raw", shape=zyx.shape, chunks=(3, 10, 10), dtype=zyx.dtype)
    arr[:] = zyx
    arr.attrs["resolution"] = [30, 5, 5]

    vol = open_volume(f"{store}/volumes/raw")
    np.testing.assert_array_equal(vol.data.compute(), zyx)
    assert vol.storage_chunks == (3, 10, 10)
    assert_aligned(vol)
    assert vol.voxel_size_nm == (30.0, 5.0, 5.0)
    assert vol.format == f"zarr-v{zarr_format}"
    # the colon form names the same array
    assert open_volume(f"{store}:volumes/raw").shape == zyx.shape
    # the store root holds one array: open it, and discover it
    assert open_volume(store).name == "raw"
    assert [v.name for v in discover_volumes(store)] == ["raw"]


def _write_ome_with_ome_zarr_py(path, image, labels, fmt):
    """An image + labels/cells pyramid in micrometre units, the way ome-zarr-py users write them."""
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    common = {
        "axes": "zyx",
        "fmt": fmt,
        "scale": {"z": 0.04, "y": 0.008, "x": 0.008},
        "axes_units": dict.fromkeys("zyx", "micrometer"),
        "scale_factors": [{"z": 1, "y": 2, "x": 2}],
    }
    write_image(image, root, name="img", **common)
    write_labels(labels, root, name="cells", method="nearest", **common)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_image_with_labels_written_by_ome_zarr_py(tmp_path, zyx, version):
    from ome_zarr.format import FormatV04, FormatV05

    fmt = FormatV04() if version == "0.4" else FormatV05()
    path = tmp_path / "img.ome.zarr"
    labels = (zyx // 100).astype(np.uint32)
    _write_ome_with_ome_zarr_py(path, zyx.astype(np.uint8), labels, fmt)

    image = open_volume(path)
    assert image.format == f"ome-zarr-{version}"
    assert image.voxel_size_nm == pytest.approx((40.0, 8.0, 8.0))  # micrometer units -> nm
    assert image.level_voxel_sizes[1] == pytest.approx((40.0, 16.0, 16.0))
    assert [tuple(a.shape) for a in image.multiscale] == [(6, 20, 30), (6, 10, 15)]
    assert not image.is_labels
    np.testing.assert_array_equal(image.data.compute(), zyx.astype(np.uint8))

    layers = discover_volumes(path)
    assert [(v.name, v.is_labels) for v in layers] == [("img", False), ("cells", True)]
    np.testing.assert_array_equal(layers[1].data.compute(), labels)
    # one level of the label pyramid, named by its inner path, keeps the pyramid's metadata
    level0 = sorted(zarr.open_group(path / "labels" / "cells", mode="r").array_keys())[0]
    cells = open_volume(f"{path}/labels/cells/{level0}")
    assert cells.is_labels
    assert cells.voxel_size_nm == pytest.approx((40.0, 8.0, 8.0))


def test_tiff_multipage_file_imagej_spacing(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (7, 32, 48), dtype=np.uint8)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        stack,
        imagej=True,
        resolution=(1 / 0.008, 1 / 0.008),
        metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"},
    )
    vol = open_volume(path)
    assert vol.shape == (7, 32, 48)
    assert vol.storage_chunks == (1, 32, 48)  # one page per chunk: a slice reads one page
    assert_aligned(vol)
    assert vol.voxel_size_nm == pytest.approx((50.0, 8.0, 8.0))
    np.testing.assert_array_equal(vol.data[3].compute(), stack[3])
    np.testing.assert_array_equal(vol.data.compute(), stack)


def test_tiff_folder_of_slices_in_natural_order(tmp_path):
    stack = np.random.default_rng(1).integers(0, 60000, (12, 16, 20), dtype=np.uint16)
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, plane in enumerate(stack):
        tifffile.imwrite(folder / f"slice_{i}.tif", plane)  # slice_10 must come after slice_9
    vol = open_volume(folder)
    assert vol.format == "tiff-folder"
    np.testing.assert_array_equal(vol.data.compute(), stack)


def test_n5_dataset_written_by_tensorstore(tmp_path, zyx):
    import tensorstore as ts

    root = tmp_path / "data.n5"
    ds_path = root / "volumes" / "raw"
    # N5 lists dimensions x-first; the array's (z, y, x) is written transposed
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(ds_path)},
            "metadata": {
                "dimensions": list(zyx.shape[::-1]),
                "blockSize": [16, 8, 4],
                "dataType": "uint16",
                "compression": {"type": "gzip"},
            },
        },
        create=True,
    ).result()
    store[...] = zyx.T
    (root / "attributes.json").write_text(json.dumps({"n5": "4.0.0"}))
    attrs = json.loads((ds_path / "attributes.json").read_text())
    attrs["resolution"] = [4, 5, 40]  # x, y, z
    (ds_path / "attributes.json").write_text(json.dumps(attrs))

    vol = open_volume(ds_path)
    assert vol.format == "n5"
    assert vol.shape == zyx.shape
    assert vol.voxel_size_nm == (40.0, 5.0, 4.0)
    assert vol.storage_chunks == (4, 8, 16)
    assert_aligned(vol)
    np.testing.assert_array_equal(vol.data.compute(), zyx)
    assert [v.source for v in discover_volumes(root)] == [f"{root}/volumes/raw"]


def test_neuroglancer_precomputed_multiscale_written_by_tensorstore(tmp_path, zyx):
    import tensorstore as ts

    path = tmp_path / "seg"
    labels = (zyx % 7).astype(np.uint32)
    spec = {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": f"{path}/"}}
    full = ts.open(
        {
            **spec,
            "multiscale_metadata": {
                "type": "segmentation",
                "data_type": "uint32",
                "num_channels": 1,
            },
            "scale_metadata": {
                "size": list(zyx.shape[::-1]),
                "encoding": "raw",
                "chunk_size": [16, 8, 2],
                "resolution": [4, 4, 40],
                "voxel_offset": [10, 20, 3],
            },
        },
        create=True,
    ).result()
    full[...] = labels.T[..., None]
    half = ts.open(
        {
            **spec,
            "scale_metadata": {
                "size": [15, 10, 6],
                "encoding": "raw",
                "chunk_size": [16, 8, 2],
                "resolution": [8, 8, 40],
                "voxel_offset": [5, 10, 3],
            },
        },
        create=True,
    ).result()
    half[...] = labels[:, ::2, ::2].T[..., None]

    vol = open_volume(path)
    assert vol.format == "precomputed"
    assert vol.is_labels
    assert vol.axes == "zyx"
    assert vol.voxel_size_nm == (40.0, 4.0, 4.0)
    assert vol.offset_nm == (120.0, 80.0, 40.0)
    assert [tuple(a.shape) for a in vol.multiscale] == [(6, 20, 30), (6, 10, 15)]
    np.testing.assert_array_equal(vol.data.compute(), labels)
    coarse = open_volume(f"precomputed://{path}", level=1)
    assert coarse.voxel_size_nm == (40.0, 8.0, 8.0)
    np.testing.assert_array_equal(coarse.data.compute(), labels[:, ::2, ::2])


@pytest.mark.realdata
def test_shared_fib25_h5_opens_lazily_at_10nm(fib25_h5):
    raw = open_volume(f"{fib25_h5}:raw")
    assert raw.shape == (250, 250, 250)
    assert raw.dtype == np.uint8
    assert raw.voxel_size_nm == (10.0, 10.0, 10.0)
    assert raw.storage_chunks == (64, 64, 64)
    assert_aligned(raw)
    labels = open_volume(f"{fib25_h5}:labels")
    assert labels.is_labels
    assert {v.name for v in discover_volumes(fib25_h5)} == {"raw", "labels", "fragments"}


def test_every_format_survives_pickling_for_dask_workers(tmp_path, zyx):
    """Distributed jobs send volumes to worker processes: no open file handle may travel."""
    import pickle

    import tensorstore as ts

    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = zyx
    zarr.create_array(tmp_path / "v.zarr", data=zyx, chunks=(3, 10, 10))
    tifffile.imwrite(tmp_path / "v.tif", zyx)
    n5 = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp_path / "v.n5")},
            "metadata": {
                "dimensions": list(zyx.shape[::-1]),
                "blockSize": [8, 8, 8],
                "dataType": "uint16",
                "compression": {"type": "raw"},
            },
        },
        create=True,
    ).result()
    n5[...] = zyx.T
    for source in ("v.h5:raw", "v.zarr", "v.tif", "v.n5"):
        data = pickle.loads(pickle.dumps(open_volume(f"{tmp_path}/{source}").data))
        np.testing.assert_array_equal(data.compute(), zyx, err_msg=source)
