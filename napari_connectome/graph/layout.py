"""Where a region graph keeps its files (the layout docs/file-formats.md describes).

```
DEST/region_graph.json     written last: format, geometry, fingerprint, counts, "complete": true
DEST/fragments/            zarr v3 group: id (uint64, sorted), count (int64), lo, hi (int64, (n, 3))
DEST/edges/                u, v (uint64, sorted by (u, v), u < v), area (int64), weight (float64)
DEST/adjacency/            indptr (int64, n + 1), edge (int64, 2E): edge indices grouped by row
DEST/chunks/               digest (uint8, grid + (16,)), present (bool, grid)
DEST/pass.json             while a pass runs: what it computes (a resume must match it)
DEST/blocks/Z_Y_X.npz      while a pass runs: one finished block's partial result
```
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from napari_connectome.volumes.atomic import atomic_write_bytes

FORMAT = "napari-connectome-region-graph"
FORMAT_VERSION = 1
META = "region_graph.json"
PASS = "pass.json"
BLOCKS = "blocks"
FRAGMENTS = "fragments"
EDGES = "edges"
ADJACENCY = "adjacency"
CHUNKS = "chunks"
ROW_CHUNK = 65536  # rows per stored chunk of the per-fragment and per-edge columns


def block_name(index: tuple[int, ...]) -> str:
    return "_".join(str(i) for i in index)


def block_file(dest: Path, index: tuple[int, ...]) -> Path:
    return Path(dest) / BLOCKS / f"{block_name(index)}.npz"


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(dest: str | os.PathLike) -> bool:
    """True when ``dest`` holds a finished region graph of a format this version reads."""
    meta = read_json(Path(dest) / META)
    return bool(
        meta
        and meta.get("complete") is True
        and meta.get("format") == FORMAT
        and meta.get("format_version") == FORMAT_VERSION
    )
