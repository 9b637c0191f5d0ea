"""``napari-connectome webknossos OME_ZARR``: write WebKnossos' ``datasource-properties.json``
into one of our OME-Zarr folders, so WebKnossos opens it with the right layer categories."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "webknossos",
        help="describe an OME-Zarr for WebKnossos (datasource-properties.json: layer categories, "
        "largestSegmentId, voxel size, mags)",
        description="Write datasource-properties.json into the OME-Zarr folder OME_ZARR: its "
        "image as a color layer, its labels (or the label image itself) as segmentation layers "
        "with largestSegmentId, the voxel size and every pyramid level as a mag. Then add the "
        "folder to WebKnossos (or open it with webknossos-py). napari-connectome keeps reading "
        "the folder as OME-Zarr.",
    )
    p.add_argument(
        "ome_zarr", metavar="OME_ZARR", help="an OME-Zarr folder napari-connectome wrote"
    )
    p.add_argument(
        "--overwrite", action="store_true",
        help="write again over a properties file napari-connectome wrote (never another's)",
    )  # fmt: skip
    p.set_defaults(func=cmd_webknossos)


def cmd_webknossos(args: argparse.Namespace) -> int:
    from napari_connectome.viewers.webknossos_properties import write_webknossos_properties

    path = write_webknossos_properties(args.ome_zarr, overwrite=args.overwrite)
    props = json.loads(path.read_text())
    layers = [
        {"name": lay["name"], "category": lay["category"], "mags": len(lay["mags"])}
        for lay in props["dataLayers"]
    ]
    print(json.dumps({"properties": str(path), "scale_nm": props["scale"]["factor"],
                      "layers": layers}))  # fmt: skip
    return 0
