"""Open our OME-Zarr + datasource-properties.json with the real webknossos library.

webknossos-py pins click, rich, psutil, networkx and protobuf below what napari and Dask use here,
so it is not a test dependency; it installs in its own environment in a few minutes:

    python3 -m venv /tmp/wkvenv && /tmp/wkvenv/bin/pip install webknossos
    .venv/bin/python benchmarks/check_webknossos_library.py --wk-python /tmp/wkvenv/bin/python

Writes an EM image with a uint64 label image (ids above 2^53) under labels/, runs
``napari-connectome webknossos`` on it, then opens it with ``webknossos.Dataset.open`` in that
environment and prints one JSON line: each layer's class, category, largest segment id, bounding
box, mags and whether its finest mag reads back equal to what we wrote; exit 1 if anything
differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BIG = 2**60 + 5

_WK_SCRIPT = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
import webknossos as wk
ds = wk.Dataset.open(sys.argv[1])
from importlib.metadata import version
out = {"webknossos": version("webknossos"), "voxel_size_nm": list(ds.voxel_size), "layers": {}}
for name, layer in ds.layers.items():
    data = layer.get_finest_mag().read()
    np.save(sys.argv[2] + "/" + name + ".npy", np.asarray(data).squeeze())
    out["layers"][name] = {
        "class": type(layer).__name__,
        "category": layer.category,
        "largest_segment_id": getattr(layer, "largest_segment_id", None),
        "size": list(layer.bounding_box.size),
        "mags": [str(m) for m in layer.mags],
    }
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wk-python", required=True, help="a python with webknossos installed")
    args = ap.parse_args()
    import zarr

    from napari_connectome.cli import main as cli
    from napari_connectome.volumes import write_ome_zarr

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "em.ome.zarr"
        img = np.random.default_rng(0).integers(0, 255, (24, 80, 64), dtype=np.uint8)
        seg = np.zeros(img.shape, np.uint64)
        seg[2:12, 5:40, 4:50] = BIG
        seg[14:22, 40:70, 10:30] = 3
        write_ome_zarr(img, root, voxel_size_nm=(40, 8, 8), chunks=16)
        zarr.open_group(str(root / "labels"), mode="a", zarr_format=3).attrs["ome"] = {
            "version": "0.5",
            "labels": ["seg"],
        }
        write_ome_zarr(seg, root / "labels" / "seg", voxel_size_nm=(40, 8, 8), labels=True)
        if cli(["webknossos", str(root)]) != 0:
            return 1
        proc = subprocess.run(
            [args.wk_python, "-c", _WK_SCRIPT, str(root), tmp],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        layers = out["layers"]
        out["em_equal"] = bool(np.array_equal(np.load(Path(tmp) / "em.npy"), img))
        out["seg_equal"] = bool(np.array_equal(np.load(Path(tmp) / "seg.npy"), seg))
        ok = (
            out["em_equal"]
            and out["seg_equal"]
            and layers["em"]["category"] == "color"
            and layers["seg"]["category"] == "segmentation"
            and layers["seg"]["largest_segment_id"] == BIG
            and out["voxel_size_nm"] == [8.0, 8.0, 40.0]
        )
        out["ok"] = ok
        print(json.dumps({"figure": "webknossos_library_opens_our_ome_zarr", **out}))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
