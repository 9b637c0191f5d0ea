"""WebKnossos' datasource-properties.json beside our OME-Zarr: categories, largestSegmentId, voxel
size and mags as WebKnossos reads them (through our WebKnossos reader), while we keep reading the
folder as OME-Zarr and --overwrite still knows it is ours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.viewers.webknossos_properties import write_webknossos_properties
from napari_connectome.volumes import discover_volumes, open_volume, write_ome_zarr
from napari_connectome.volumes.output_safety import is_ours
from napari_connectome.volumes.read_webknossos import discover_webknossos, open_webknossos

BIG = 2**60 + 5
VOXEL = (40.0, 8.0, 8.0)


def _image_with_labels(root: Path) -> tuple[np.ndarray, np.ndarray]:
    import zarr

    img = np.random.default_rng(1).integers(0, 255, (20, 64, 48), dtype=np.uint8)
    seg = np.zeros(img.shape, np.uint64)
    seg[2:10, 3:30, 4:40] = BIG
    seg[12:18, 40:60, 10:20] = 3
    write_ome_zarr(img, root, voxel_size_nm=VOXEL, chunks=16)
    labels = zarr.open_group(str(root / "labels"), mode="a", zarr_format=3)
    labels.attrs["ome"] = {"version": "0.5", "labels": ["seg"]}
    write_ome_zarr(seg, root / "labels" / "seg", voxel_size_nm=VOXEL, labels=True, chunks=16)
    return img, seg


def test_image_and_labels_open_in_webknossos_terms(tmp_path, capsys):
    root = tmp_path / "em.ome.zarr"
    img, seg = _image_with_labels(root)
    assert main(["webknossos", str(root)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scale_nm"] == [8.0, 8.0, 40.0]  # x, y, z
    assert [(lay["name"], lay["category"]) for lay in out["layers"]] == [
        ("em", "color"),
        ("seg", "segmentation"),
    ]
    props = json.loads((root / "datasource-properties.json").read_text())
    em, labels = props["dataLayers"]
    assert em["boundingBox"] == {"topLeft": [0, 0, 0], "width": 48, "height": 64, "depth": 20}
    assert em["elementClass"] == "uint8"
    assert labels["elementClass"] == "uint64"
    assert em["dataFormat"] == "zarr3"
    assert em["mags"][0] == {"mag": [1, 1, 1], "path": "./0", "axisOrder": {"z": 0, "y": 1, "x": 2}}
    assert em["mags"][1]["mag"] == [2, 2, 1]  # anisotropic pyramid: x and y first
    assert labels["mags"][0]["path"] == "./labels/seg/0"
    # read as WebKnossos defines the file (our reader of WebKnossos datasets)
    layers = {v.name: v for v in discover_webknossos(root, "")}
    assert not layers["em"].is_labels
    assert layers["seg"].is_labels
    assert layers["seg"].largest_segment_id == BIG  # exact above 2^53
    assert layers["seg"].voxel_size_nm == VOXEL
    np.testing.assert_array_equal(np.asarray(layers["em"].data), img)
    np.testing.assert_array_equal(np.asarray(layers["seg"].data), seg)
    coarse = open_webknossos(root, "seg", level=1)
    assert coarse.voxel_size_nm == (40.0, 16.0, 16.0)
    # napari-connectome itself still reads the folder as the OME-Zarr it is
    vols = discover_volumes(root)
    assert [(v.name, v.format, v.is_labels) for v in vols] == [
        ("em", "ome-zarr-0.5", False),
        ("seg", "ome-zarr-0.5", True),
    ]


def test_a_label_image_of_its_own_and_overwrite(tmp_path, capsys):
    seg = np.zeros((16, 32, 32), np.uint32)
    seg[4:8, 4:20, 4:20] = 41
    root = tmp_path / "seg.ome.zarr"
    write_ome_zarr(seg, root, voxel_size_nm=(30, 6, 6), labels=True, chunks=16)
    assert main(["webknossos", str(root)]) == 0
    capsys.readouterr()
    props = json.loads((root / "datasource-properties.json").read_text())
    (layer,) = props["dataLayers"]
    assert layer["category"] == "segmentation"
    assert layer["largestSegmentId"] == 41
    assert open_volume(root).format == "ome-zarr-0.5"
    assert is_ours(root)  # convert --overwrite may still replace it
    assert main(["webknossos", str(root)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["webknossos", str(root), "--overwrite"]) == 0
    # a properties file someone else wrote is never replaced, and makes the folder theirs
    (root / "datasource-properties.json").write_text(json.dumps({"dataLayers": []}))
    with pytest.raises(UserInputError, match="not written by napari-connectome"):
        write_webknossos_properties(root, overwrite=True)
    assert json.loads((root / "datasource-properties.json").read_text()) == {"dataLayers": []}
    assert not is_ours(root)


def test_a_region_graph_beside_gives_largest_segment_id(tmp_path):
    from napari_connectome.graph import compute_region_graph

    seg = np.zeros((16, 16, 16), np.uint64)
    seg[2:6, 2:6, 2:6] = 9
    seg[8:12, 8:12, 8:12] = BIG
    root = tmp_path / "seg.ome.zarr"
    write_ome_zarr(seg, root, voxel_size_nm=(8, 8, 8), labels=True, chunks=8)
    compute_region_graph(open_volume(root), root / "region_graph")
    props = json.loads(write_webknossos_properties(root).read_text())
    assert props["dataLayers"][0]["largestSegmentId"]["value"] == str(BIG)


def test_not_an_ome_zarr_is_refused(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert main(["webknossos", str(tmp_path / "plain")]) == 2
    assert "not an OME-Zarr" in capsys.readouterr().err
    assert not (tmp_path / "plain" / "datasource-properties.json").exists()
