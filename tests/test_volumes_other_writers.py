"""Files other tools write open right: shape, dtype, values, voxel size, axis order, image/labels.

One fixture per writer, made by the writer itself where it installs from PyPI (cloud-volume,
tensorstore, tifffile, zarr, ome-zarr, wkw); a WebKnossos dataset is made by hand with zarr in the
layout webknossos-py 4.3 writes (checked against its output: `webknossos` pins older click, rich
and networkx than this environment uses, so it is not a test dependency).
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_connectome.cli import main
from napari_connectome.errors import DataWarning, UserInputError
from napari_connectome.volumes import discover_volumes, open_volume, write_ome_zarr

BIG = 2**60  # ids this large must survive exactly


# --------------------------------------------------------------------------------------------
# neuroglancer precomputed, written by cloud-volume with its defaults


def _cloudvolume(
    path: Path,
    data_xyzc: np.ndarray,
    *,
    encoding: str = "raw",
    layer_type: str = "image",
    chunk=(16, 16, 4),
    offset=(10, 20, 3),
    resolution=(4, 5, 40),
    sharded: bool = False,
    **kwargs,
):
    """A precomputed volume written by cloud-volume (defaults: gzip on file://, CHUNK.gz names)."""
    cloudvolume = pytest.importorskip("cloudvolume")
    info = cloudvolume.CloudVolume.create_new_info(
        num_channels=data_xyzc.shape[3],
        layer_type=layer_type,
        data_type=str(data_xyzc.dtype),
        encoding=encoding,
        resolution=list(resolution),
        voxel_offset=list(offset),
        chunk_size=list(chunk),
        volume_size=list(data_xyzc.shape[:3]),
    )
    if sharded:  # one shard with 4 minishards, as cloud-volume's sharding spec writes it
        info["scales"][0]["sharding"] = {
            "@type": "neuroglancer_uint64_sharded_v1",
            "preshift_bits": 0,
            "hash": "identity",
            "minishard_bits": 2,
            "shard_bits": 0,
            "minishard_index_encoding": "gzip",
            "data_encoding": "gzip",
        }
    vol = cloudvolume.CloudVolume(f"file://{path}", info=info, progress=False, **kwargs)
    vol.commit_info()
    vol[:, :, :] = data_xyzc
    return vol


def _zyx(data_xyzc: np.ndarray) -> np.ndarray:
    return data_xyzc[..., 0].transpose(2, 1, 0)


def _chunk_files(path: Path) -> list[str]:
    return sorted(p.name for p in next(p for p in path.iterdir() if p.is_dir()).iterdir())


@pytest.fixture
def image_xyzc():
    rng = np.random.default_rng(0)
    return rng.integers(1, 250, size=(40, 36, 10, 1), dtype=np.uint8)


@pytest.fixture
def labels_xyzc():
    rng = np.random.default_rng(1)
    return (rng.integers(0, 6, size=(40, 36, 10, 1)).astype(np.uint64) + BIG) * (
        rng.random((40, 36, 10, 1)) > 0.2
    )


def test_cloudvolume_gzip_chunks_read_as_written(tmp_path, image_xyzc, capsys):
    """The silent zeros: CHUNK.gz files are read, not taken for missing chunks."""
    path = tmp_path / "em"
    vol = _cloudvolume(path, image_xyzc)
    assert all(n.endswith(".gz") for n in _chunk_files(path))  # the writer's default
    expected = np.asarray(vol[:, :, :])[..., 0].transpose(2, 1, 0)  # as cloud-volume reads it
    np.testing.assert_array_equal(expected, _zyx(image_xyzc))

    em = open_volume(path)
    assert em.format == "precomputed"
    assert em.shape == (10, 36, 40)
    assert em.axes == "zyx"
    assert em.voxel_size_nm == (40.0, 5.0, 4.0)
    assert em.offset_nm == (120.0, 100.0, 40.0)
    assert not em.is_labels
    np.testing.assert_array_equal(em.data.compute(), expected)
    np.testing.assert_array_equal(em.data[3:7, 5:30, 11:33].compute(), expected[3:7, 5:30, 11:33])
    np.testing.assert_array_equal(em.data[4, :, 17].compute(), expected[4, :, 17])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(em.data)).compute(), expected)

    # the command line: convert copies every voxel
    dest = tmp_path / "em.ome.zarr"
    assert main(["convert", str(path), str(dest)]) == 0
    np.testing.assert_array_equal(open_volume(dest).data.compute(), expected)
    capsys.readouterr()
    assert main(["info", f"precomputed://file://{path}"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [10, 36, 40]


def test_cloudvolume_compressed_segmentation_labels_exact(tmp_path, labels_xyzc):
    path = tmp_path / "seg"
    vol = _cloudvolume(
        path, labels_xyzc, encoding="compressed_segmentation", layer_type="segmentation"
    )
    assert all(n.endswith(".gz") for n in _chunk_files(path))
    seg = open_volume(path)
    assert seg.is_labels
    assert seg.dtype == np.uint64
    got = seg.data.compute()
    np.testing.assert_array_equal(got, np.asarray(vol[:, :, :])[..., 0].transpose(2, 1, 0))
    assert got.max() >= BIG
    assert set(np.unique(got)) <= set(np.unique(labels_xyzc))


def test_cloudvolume_sharded_labels_exact(tmp_path, labels_xyzc):
    path = tmp_path / "sharded"
    _cloudvolume(path, labels_xyzc, layer_type="segmentation", sharded=True)
    assert _chunk_files(path) == ["0.shard"]
    seg = open_volume(path)
    assert seg.is_labels
    np.testing.assert_array_equal(seg.data.compute(), _zyx(labels_xyzc))


def test_cloudvolume_jpeg_matches_its_own_decoding(tmp_path):
    path = tmp_path / "jpeg"
    smooth = np.add.outer(np.arange(40), np.arange(36))[:, :, None, None] * 3
    data = np.broadcast_to(smooth, (40, 36, 10, 1)).astype(np.uint8)
    vol = _cloudvolume(path, data, encoding="jpeg")
    theirs = np.asarray(vol[:, :, :])[..., 0].transpose(2, 1, 0).astype(int)
    ours = open_volume(path).data.compute().astype(int)
    assert np.abs(ours - theirs).max() <= 2  # two JPEG decoders
    assert np.abs(ours - _zyx(data)).mean() < 2


@pytest.mark.parametrize("compress", ["br", "zstd", False])
def test_cloudvolume_other_compressions(tmp_path, image_xyzc, compress):
    if compress == "br":
        pytest.importorskip("brotli")
    path = tmp_path / f"em-{compress}"
    _cloudvolume(path, image_xyzc, compress=compress)
    suffix = {"br": ".br", "zstd": ".zstd", False: ""}[compress]
    assert all(n.endswith(suffix) for n in _chunk_files(path))
    np.testing.assert_array_equal(open_volume(path).data.compute(), _zyx(image_xyzc))


def test_cloudvolume_multiscale_multichannel(tmp_path):
    cloudvolume = pytest.importorskip("cloudvolume")
    rng = np.random.default_rng(2)
    full = rng.integers(0, 60000, size=(40, 36, 10, 2)).astype(np.uint16)
    half = rng.integers(0, 60000, size=(20, 18, 10, 2)).astype(np.uint16)
    path = tmp_path / "ms"
    info = cloudvolume.CloudVolume.create_new_info(
        num_channels=2,
        layer_type="image",
        data_type="uint16",
        encoding="raw",
        resolution=[8, 8, 30],
        voxel_offset=[0, 0, 0],
        chunk_size=[16, 16, 4],
        volume_size=[40, 36, 10],
    )
    vol = cloudvolume.CloudVolume(f"file://{path}", info=info, progress=False)
    vol.add_scale((2, 2, 1), chunk_size=[16, 16, 4])
    vol.commit_info()
    vol[:, :, :] = full
    cloudvolume.CloudVolume(f"file://{path}", mip=1, progress=False)[:, :, :] = half

    ms = open_volume(path)
    assert ms.axes == "czyx"
    assert ms.level_voxel_sizes == [(1.0, 30.0, 8.0, 8.0), (1.0, 30.0, 16.0, 16.0)]
    np.testing.assert_array_equal(ms.data.compute(), full.transpose(3, 2, 1, 0))
    np.testing.assert_array_equal(ms.multiscale[1].compute(), half.transpose(3, 2, 1, 0))
    np.testing.assert_array_equal(open_volume(path, level=1).data.compute(), half.T)


def test_neuroglancer_scripts_nested_gz_layout(tmp_path, image_xyzc):
    """neuroglancer-scripts' default layout, KEY/x0-x1/y0-y1/z0-z1.gz, by hand from cloud-volume's
    files (neuroglancer-scripts pulls in nibabel and imagecodecs; checked against version 1.2)."""
    path = tmp_path / "nested"
    _cloudvolume(path, image_xyzc)
    key = json.loads((path / "info").read_text())["scales"][0]["key"]
    for f in sorted((path / key).iterdir()):
        x, y, z = f.name.split("_")
        (path / key / x / y).mkdir(parents=True, exist_ok=True)
        f.rename(path / key / x / y / z)
    assert (path / key / "10-26" / "20-36" / "3-7.gz").is_file()
    np.testing.assert_array_equal(open_volume(path).data.compute(), _zyx(image_xyzc))


def _refused(path: Path, message: str, capsys) -> None:
    with pytest.raises(UserInputError, match=message):
        open_volume(path)
    assert main(["info", str(path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_chunk_files_the_info_file_does_not_describe_are_refused_not_zeros(
    tmp_path, image_xyzc, labels_xyzc, capsys
):
    # an info file edited to another chunk size: the files lie on no chunk of its grid
    path = tmp_path / "edited"
    _cloudvolume(path, image_xyzc, compress=False)
    info = json.loads((path / "info").read_text())
    info["scales"][0]["chunk_sizes"] = [[32, 32, 8]]
    (path / "info").write_text(json.dumps(info))
    _refused(
        path,
        r"chunk files 10-26_20-36_11-13, 10-26_20-36_3-7, .* do not lie on the chunk grid",
        capsys,
    )

    # a compression we cannot undo
    path = tmp_path / "lz4"
    _cloudvolume(path, image_xyzc, compress=False)
    key = json.loads((path / "info").read_text())["scales"][0]["key"]
    first = sorted((path / key).iterdir())[0]
    first.rename(first.with_name(first.name + ".lz4"))
    _refused(path, r"compressed in a way napari-connectome does not know", capsys)

    # shard files gzipped as whole files
    path = tmp_path / "gzshard"
    _cloudvolume(path, labels_xyzc, layer_type="segmentation", sharded=True)
    shard = path / key / "0.shard"
    (path / key / "0.shard.gz").write_bytes(gzip.compress(shard.read_bytes()))
    shard.unlink()
    _refused(path, r"shard files are compressed as whole files \(0\.shard\.gz\)", capsys)

    # sharded files, but the info file lost its sharding entry
    path = tmp_path / "unsharded-info"
    _cloudvolume(path, labels_xyzc, layer_type="segmentation", sharded=True)
    info = json.loads((path / "info").read_text())
    del info["scales"][0]["sharding"]
    (path / "info").write_text(json.dumps(info))
    _refused(path, r"holds shard files \(0\.shard\).*gives no 'sharding'", capsys)


def test_a_damaged_gz_chunk_is_named(tmp_path, image_xyzc):
    path = tmp_path / "em"
    _cloudvolume(path, image_xyzc)
    key = json.loads((path / "info").read_text())["scales"][0]["key"]
    (path / key / "10-26_20-36_3-7.gz").write_bytes(b"\x1f\x8b not gzip")
    vol = open_volume(path)
    with pytest.raises(UserInputError, match=r"chunk file .*10-26_20-36_3-7\.gz cannot be"):
        vol.data.compute()


def test_a_scale_without_chunk_files_says_so(tmp_path, image_xyzc):
    """A scale an info file lists but nobody wrote (not yet downsampled) reads 0, with a warning."""
    cloudvolume = pytest.importorskip("cloudvolume")
    path = tmp_path / "em"
    vol = _cloudvolume(path, image_xyzc)
    vol.add_scale((2, 2, 1))
    vol.commit_info()
    with pytest.warns(DataWarning, match=r"scale 8_10_40 hold no chunk files"):
        em = open_volume(path)
    assert len(em.multiscale) == 2
    assert cloudvolume  # the writer is what made the fixture


# --------------------------------------------------------------------------------------------
# WebKnossos datasets (datasource-properties.json)


def _wk_array(path: Path, data_xyz: np.ndarray, shape_xyz, *, shard=64, chunk=32) -> zarr.Array:
    """A mag as webknossos-py 4.3 writes it: zarr v3, axes c, x, y, z, padded to whole shards,
    sharded (webknossos-py also transposes each chunk to Fortran order: the same voxels)."""
    return zarr.create_array(
        path,
        shape=(1, *shape_xyz),
        chunks=(1, chunk, chunk, chunk),
        shards=(1, shard, shard, shard),
        dtype=data_xyz.dtype,
        dimension_names=["c", "x", "y", "z"],
        fill_value=0,
        zarr_format=3,
    )


def _wk_dataset(tmp_path: Path, *, scale=None) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A WebKnossos dataset by hand in its documented layout: a color layer and a segmentation
    layer (mags 1 and 2-2-1) inside the bounding box topLeft (10, 20, 3), size 70 x 50 x 20."""
    root = tmp_path / "wkds"
    root.mkdir()
    rng = np.random.default_rng(3)
    top, size = (10, 20, 3), (70, 50, 20)
    color = rng.integers(0, 255, size=size, dtype=np.uint8)
    seg = rng.integers(0, 8, size=size).astype(np.uint64) + BIG
    seg2 = seg[::2, ::2, :]  # mag 2-2-1: any content will do, what matters is where it lies
    for name, _data, mags in (
        ("color", color, [((1, 1, 1), "1", color)]),
        ("segmentation", seg, [((1, 1, 1), "1", seg), ((2, 2, 1), "2-2-1", seg2)]),
    ):
        (root / name).mkdir()
        for mag, folder, values in mags:
            arr = _wk_array(root / name / folder, values, (128, 128, 64))
            start = [t // m for t, m in zip(top, mag)]
            arr[(0, *(slice(s, s + n) for s, n in zip(start, values.shape)))] = values
    layer_mags = {
        "color": [{"mag": [1, 1, 1], "path": "./color/1", "axisOrder": _CXYZ}],
        "segmentation": [
            {"mag": [1, 1, 1], "path": "./segmentation/1", "axisOrder": _CXYZ},
            {"mag": [2, 2, 1], "path": "./segmentation/2-2-1", "axisOrder": _CXYZ},
        ],
    }
    bbox = {"topLeft": list(top), "width": size[0], "height": size[1], "depth": size[2]}
    props = {
        "id": {"name": "wkds", "team": ""},
        "scale": scale or {"factor": [11.24, 11.24, 28.0], "unit": "nanometer"},
        "dataLayers": [
            {
                "name": "color",
                "category": "color",
                "boundingBox": bbox,
                "dataFormat": "zarr3",
                "mags": layer_mags["color"],
                "numChannels": 1,
                "elementClass": "uint8",
            },
            {
                "name": "segmentation",
                "category": "segmentation",
                "boundingBox": bbox,
                "dataFormat": "zarr3",
                "mags": layer_mags["segmentation"],
                "largestSegmentId": {"customJsonEncoding": "bigint", "value": str(BIG + 7)},
                "numChannels": 1,
                "elementClass": "uint64",
            },
        ],
        "version": 1,
    }
    (root / "datasource-properties.json").write_text(json.dumps(props))
    # webknossos-py also makes each layer an OME-Zarr 0.5 group (axes c, x, y, z): readers that
    # ignore the properties see the padded 128 x 128 x 64 arrays in x-first order
    zarr.open_group(root, mode="a", zarr_format=3)
    return root, color, seg, seg2


_CXYZ = {"c": 0, "x": 1, "y": 2, "z": 3}


def test_webknossos_dataset_layers_bounding_box_and_categories(tmp_path, capsys):
    root, color, seg, seg2 = _wk_dataset(tmp_path)
    layers = discover_volumes(root)
    assert [(v.name, v.is_labels) for v in layers] == [("color", False), ("segmentation", True)]
    em, labels = layers
    assert em.format == "webknossos"
    assert em.shape == (20, 50, 70)  # the bounding box, not the padded 64 x 128 x 128 arrays
    assert em.axes == "zyx"
    assert em.voxel_size_nm == pytest.approx((28.0, 11.24, 11.24))
    assert em.offset_nm == pytest.approx((3 * 28.0, 20 * 11.24, 10 * 11.24))
    np.testing.assert_array_equal(em.data.compute(), color.T)

    assert labels.dtype == np.uint64
    np.testing.assert_array_equal(labels.data.compute(), seg.T)
    assert labels.largest_segment_id == BIG + 7
    assert [tuple(a.shape) for a in labels.multiscale] == [(20, 50, 70), (20, 25, 35)]
    assert labels.level_voxel_sizes[1] == pytest.approx((28.0, 22.48, 22.48))
    # mag 2 voxel 5 covers mag-1 voxels 10 and 11: its centre is at 10.5
    assert labels.level_offsets_nm[1] == pytest.approx((84.0, 20.5 * 11.24, 10.5 * 11.24))
    np.testing.assert_array_equal(labels.multiscale[1].compute(), seg2.T)

    # a layer, a mag of it, the command line
    np.testing.assert_array_equal(open_volume(root / "color").data.compute(), color.T)
    mag2 = open_volume(root / "segmentation" / "2-2-1")
    np.testing.assert_array_equal(mag2.data.compute(), seg2.T)
    assert main(["info", str(root)]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert [i["is_labels"] for i in infos] == [False, True]
    assert infos[1]["largest_segment_id"] == BIG + 7
    assert infos[0]["shape"] == [20, 50, 70]
    with pytest.raises(UserInputError, match=r"2 layers; name one as .*wkds/LAYER"):
        open_volume(root)
    # a folder kept beside the layers is no layer: it opens as what it is
    zarr.create_array(root / "exports" / "mask.zarr", data=np.ones((4, 8, 8), np.uint8))
    assert open_volume(root / "exports" / "mask.zarr").format == "zarr-v3"
    with pytest.raises(UserInputError, match=r"layer 'colour' does not exist.*color, seg"):
        open_volume(f"{root}:colour")


def test_webknossos_older_scale_forms_and_units(tmp_path):
    root, *_ = _wk_dataset(tmp_path, scale=[4, 4, 35])  # before 2023: a list in nm
    assert open_volume(root / "color").voxel_size_nm == (35.0, 4.0, 4.0)
    shutil.rmtree(root)
    root, *_ = _wk_dataset(tmp_path, scale={"factor": [0.004, 0.004, 0.035], "unit": "micrometer"})
    assert open_volume(root / "color").voxel_size_nm == pytest.approx((35.0, 4.0, 4.0))
    shutil.rmtree(root)
    root, *_ = _wk_dataset(tmp_path, scale={"factor": [1, 1, 1], "unit": "furlong"})
    with pytest.warns(DataWarning, match=r"scale unit 'furlong' is no length unit"):
        assert open_volume(root / "color").voxel_size_nm == (1.0, 1.0, 1.0)


def test_webknossos_wkw_layer_read_with_the_wkw_package(tmp_path):
    """dataFormat wkw: the files are written by the wkw library itself, the properties by hand."""
    wkw = pytest.importorskip("wkw")
    root = tmp_path / "wkwds"
    (root / "segmentation").mkdir(parents=True)
    rng = np.random.default_rng(4)
    seg = rng.integers(0, 5, size=(70, 50, 20)).astype(np.uint64) + BIG  # x, y, z
    with wkw.Dataset.create(
        str(root / "segmentation" / "1"), wkw.Header(np.uint64, file_len=32)
    ) as ds:
        ds.write((10, 20, 3), seg)
    props = {
        "id": {"name": "wkwds", "team": ""},
        "scale": {"factor": [4.0, 4.0, 35.0], "unit": "nanometer"},
        "dataLayers": [
            {
                "name": "segmentation",
                "category": "segmentation",
                "boundingBox": {"topLeft": [10, 20, 3], "width": 70, "height": 50, "depth": 20},
                "dataFormat": "wkw",
                "mags": [{"mag": [1, 1, 1], "path": "./segmentation/1", "cubeLength": 1024}],
                "largestSegmentId": 4,
                "numChannels": 1,
                "elementClass": "uint64",
            }
        ],
    }
    (root / "datasource-properties.json").write_text(json.dumps(props))
    vol = open_volume(root)  # a single layer: the dataset alone names it
    assert vol.is_labels
    assert vol.shape == (20, 50, 70)
    assert vol.voxel_size_nm == (35.0, 4.0, 4.0)
    np.testing.assert_array_equal(vol.data.compute(), seg.T)
    np.testing.assert_array_equal(vol.data[5, 7:40, 3:66].compute(), seg.T[5, 7:40, 3:66])
    # dask workers get the wkw reader by path
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(vol.data)).compute(), seg.T)


def test_ome_zarr_in_x_first_order_is_presented_z_first(tmp_path):
    """A WebKnossos layer folder copied without its dataset is an OME-Zarr with axes c, x, y, z:
    shown z, y, x like every other volume."""
    root, color, *_ = _wk_dataset(tmp_path)
    group = zarr.open_group(root / "color", mode="a", zarr_format=3)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "nanometer"} for a in "xyz"
    ]
    transforms = [{"type": "scale", "scale": [1.0, 11.24, 11.24, 28.0]}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "1", "coordinateTransformations": transforms}]}
        ],
    }
    copy = tmp_path / "color.ome.zarr"
    shutil.copytree(root / "color", copy)
    vol = open_volume(copy)
    assert vol.axes == "czyx"
    assert vol.shape == (1, 64, 128, 128)
    assert vol.voxel_size_nm == pytest.approx((1.0, 28.0, 11.24, 11.24))
    np.testing.assert_array_equal(vol.data[0, 3:23, 20:70, 10:80].compute(), color.T)


# --------------------------------------------------------------------------------------------
# OME-TIFF (tifffile) and voxel sizes nobody gave


def test_ome_tiff_physical_sizes_and_units(tmp_path):
    stack = np.arange(5 * 16 * 24, dtype=np.uint16).reshape(5, 16, 24)
    path = tmp_path / "um.ome.tif"  # OME's default unit: micrometre
    tifffile.imwrite(
        path,
        stack,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.004,
            "PhysicalSizeY": 0.005,
            "PhysicalSizeZ": 0.04,
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        vol = open_volume(path)
    assert vol.voxel_size_nm == pytest.approx((40.0, 5.0, 4.0))
    np.testing.assert_array_equal(vol.data.compute(), stack)

    path = tmp_path / "nm.ome.tif"
    tifffile.imwrite(
        path,
        stack,
        metadata={
            "axes": "ZYX",
            **{f"PhysicalSize{a}": v for a, v in zip("XYZ", (4, 5, 0.4))},
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZUnit": "Å",
        },
    )
    assert open_volume(path).voxel_size_nm == pytest.approx((0.04, 5.0, 4.0))


def test_ome_tiff_channels_between_z_and_y_come_first(tmp_path):
    data = np.arange(5 * 2 * 16 * 24, dtype=np.uint8).reshape(5, 2, 16, 24)  # z, c, y, x
    path = tmp_path / "zc.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "ZCYX", "PhysicalSizeX": 0.01})
    with pytest.warns(DataWarning, match="no z spacing found"):
        vol = open_volume(path)
    assert vol.axes == "czyx"
    assert vol.voxel_size_nm == pytest.approx((1.0, 10.0, 10.0, 10.0))
    np.testing.assert_array_equal(vol.data.compute(), data.transpose(1, 0, 2, 3))


def test_a_voxel_size_we_could_not_find_is_a_warning(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "bare.tif", np.zeros((4, 8, 8), np.uint8))
    zarr.create_array(tmp_path / "bare.zarr", shape=(4, 8, 8), dtype="u1")
    tifffile.imwrite(  # an image editor's default of 72 pixels per inch is no pixel size
        tmp_path / "dpi.tif", np.zeros((4, 8, 8), np.uint8), resolution=(72, 72), resolutionunit=2
    )
    for name in ("bare.tif", "bare.zarr", "dpi.tif"):
        with pytest.warns(DataWarning, match=r"no voxel size found.*1 nm per axis is assumed"):
            assert open_volume(tmp_path / name).voxel_size_nm == (1.0, 1.0, 1.0)
        assert main(["info", str(tmp_path / name)]) == 0
        err = capsys.readouterr().err
        assert f"napari-connectome info: warning: {tmp_path / name}: no voxel size found" in err
    with pytest.warns(DataWarning, match=r"72 or 96 pixels per inch there is an image editor"):
        open_volume(tmp_path / "dpi.tif")
    # a voxel size that is there: no warning
    write_ome_zarr(
        np.zeros((8, 8, 8), np.uint8), tmp_path / "ok.ome.zarr", voxel_size_nm=(30, 4, 4)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        open_volume(tmp_path / "ok.ome.zarr")


# --------------------------------------------------------------------------------------------
# zarr: a stray zarr.json above other folders, arrays without a group (tensorstore)


def test_a_stray_zarr_json_above_changes_nothing(tmp_path, capsys):
    """napari-ome-zarr 0.10 writes a zarr.json two folders above a label image it opens."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    labels = (np.arange(8 * 16 * 16).reshape(8, 16, 16) // 50).astype(np.uint32)
    exp = tmp_path / "data" / "exp"
    (exp / "notes" / "deeper").mkdir(parents=True)
    (exp / "notes" / "todo.txt").write_text("not a volume")
    group = zarr.open_group(exp / "seg.zarr", mode="w", zarr_format=2)
    write_image(labels, group, axes="zyx", fmt=FormatV04(), scale_factors=[])
    group.attrs["image-label"] = {"version": "0.4"}

    def errors() -> list[str]:
        out = []
        for p in (exp / "notes", exp / "notes" / "deeper"):
            assert main(["info", str(p)]) == 2
            out.append(capsys.readouterr().err)
        return out

    before = errors()
    assert all("unknown format" in e for e in before)
    for stray in (tmp_path / "data" / "zarr.json", exp / "zarr.json"):
        stray.write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
        assert errors() == before  # the same message, exit 2, no KeyError traceback
        seg = open_volume(exp / "seg.zarr")
        assert seg.is_labels
        np.testing.assert_array_equal(seg.data.compute(), labels)
        assert [v.name for v in discover_volumes(exp)] == ["seg"]
        stray.unlink()


def test_zarr_v2_arrays_without_a_group_as_tensorstore_writes_them(tmp_path, capsys):
    import tensorstore as ts

    folder = tmp_path / "ts_out"
    raw = np.arange(6 * 20 * 30, dtype=np.uint8).reshape(6, 20, 30)
    seg = (raw // 7).astype(np.uint64) + BIG
    for name, data, driver in (("raw", raw, "zarr"), ("seg/v3", seg, "zarr3")):
        store = ts.open(
            {
                "driver": driver,
                "kvstore": {"driver": "file", "path": str(folder / name)},
                "metadata": {"shape": list(data.shape)}
                | ({"chunks": [3, 10, 10]} if driver == "zarr" else {}),
                "dtype": str(data.dtype),
            },
            create=True,
        ).result()
        store[...] = data
    assert not (folder / ".zgroup").exists()
    assert not (folder / "zarr.json").exists()
    layers = discover_volumes(folder)
    assert [v.name for v in layers] == ["raw", "v3"]
    np.testing.assert_array_equal(layers[0].data.compute(), raw)
    np.testing.assert_array_equal(layers[1].data.compute(), seg)
    with pytest.raises(UserInputError, match=r"folder of 2 zarr arrays.*raw, seg/v3"):
        open_volume(folder)
    np.testing.assert_array_equal(open_volume(f"{folder}:raw").data.compute(), raw)
    assert main(["info", str(folder)]) == 0
    assert [i["name"] for i in json.loads(capsys.readouterr().out)] == ["raw", "v3"]
    shutil.rmtree(folder / "seg")
    assert open_volume(folder).name == "raw"  # one array: the folder names it


def test_chunks_under_other_keys_than_the_metadata_names_are_refused_not_zeros(tmp_path, capsys):
    """zarr-python 2's NestedDirectoryStore wrote chunks 0/0/0 without "dimension_separator" in
    .zarray: zarr reads every chunk as missing. Refused, with the fix; v3 likewise."""
    nested = zarr.create_array(
        tmp_path / "nested.zarr",
        shape=(8, 8, 8),
        chunks=(4, 4, 4),
        dtype="u1",
        zarr_format=2,
        chunk_key_encoding={"name": "v2", "separator": "/"},
        attributes={"resolution_nm_zyx": [30, 4, 4]},
    )
    nested[:] = 7
    meta = json.loads((tmp_path / "nested.zarr" / ".zarray").read_text())
    del meta["dimension_separator"]
    (tmp_path / "nested.zarr" / ".zarray").write_text(json.dumps(meta))
    message = (
        r'stored as .*nested\.zarr/0/\.\.\., .* keys like \'0\.0\.0\'.*"dimension_separator": "/"'
    )
    with pytest.raises(UserInputError, match=message):
        open_volume(tmp_path / "nested.zarr")
    assert main(["info", str(tmp_path / "nested.zarr")]) == 2
    assert "every chunk would read as missing" in capsys.readouterr().err
    meta["dimension_separator"] = "/"  # the fix the message gives
    (tmp_path / "nested.zarr" / ".zarray").write_text(json.dumps(meta))
    assert int(open_volume(tmp_path / "nested.zarr").data.min().compute()) == 7

    v3 = zarr.create_array(tmp_path / "v3.zarr", shape=(8, 8), chunks=(4, 4), dtype="u1")
    v3[:] = 1
    meta = json.loads((tmp_path / "v3.zarr" / "zarr.json").read_text())
    meta["chunk_key_encoding"] = {"name": "v2", "configuration": {"separator": "."}}
    (tmp_path / "v3.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match=r"stored as .*v3\.zarr/c/\.\.\."):
        open_volume(tmp_path / "v3.zarr")


def test_info_into_head_ends_without_a_traceback(tmp_path):
    """`napari-connectome info X | head -1` through a real shell pipe."""
    root, *_ = _wk_dataset(tmp_path)
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f'"{sys.executable}" -m napari_connectome info "{root}" | head -1; '
            'exit "${PIPESTATUS[0]}"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout == "[\n"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "BrokenPipe" not in proc.stderr
    assert proc.returncode in (0, 141)
