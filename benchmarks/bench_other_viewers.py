"""Meshes and skeletons of FIB-25 training_sample2's 525 bodies for other viewers: time, size and
checks, one JSON line per figure.

    .venv/bin/python benchmarks/bench_other_viewers.py [--blocks 128]

Figures: ``export_meshes`` (precomputed, every body, single-level HDF5 so level 0), and
``skeletonize`` twice, one block (the whole 250^3) and blocks of ``--blocks`` voxels stitched,
with the fraction of SWC nodes inside their body, the bodies whose skeleton is one tree, and the
cable length of the blockwise run over the single-block one (stitching should neither lose nor
add cable). Needs ../shared/data (see its README).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
H5 = DATA / "fib25-training-sample2" / "fib25_training_sample2.h5"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _swc_checks(folder: Path, labels: np.ndarray, voxel: float) -> dict:
    from napari_connectome.meshing.skeletons import read_swc

    inside = total = trees = bodies = 0
    cable = 0.0
    for path in folder.glob("*.swc"):
        sid = int(path.stem)
        nodes = read_swc(path)
        xyz = np.stack([nodes["x"], nodes["y"], nodes["z"]], 1)
        idx = np.clip(np.floor(xyz / voxel).astype(int), 0, np.array(labels.shape[::-1]) - 1)
        inside += int((labels[idx[:, 2], idx[:, 1], idx[:, 0]] == sid).sum())
        total += len(nodes)
        bodies += 1
        trees += int((nodes["parent"] == -1).sum() == 1)
        row = {int(i): k for k, i in enumerate(nodes["id"])}
        has = nodes["parent"] != -1
        parents = np.array([row[int(p)] for p in nodes["parent"][has]], int)
        cable += float(np.linalg.norm(xyz[has] - xyz[parents], axis=1).sum())
    return {
        "bodies": bodies,
        "nodes": total,
        "nodes_inside_body": round(inside / max(total, 1), 4),
        "one_tree_fraction": round(trees / max(bodies, 1), 4),
        "cable_nm": round(cable),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=128)
    args = ap.parse_args()
    import h5py

    from napari_connectome.meshing.skeletons import skeletonize_volume
    from napari_connectome.meshing.volume_export import export_volume_meshes
    from napari_connectome.volumes import open_volume

    with h5py.File(H5, "r") as f:
        labels = f["labels"][:]
    volume = open_volume(f"{H5}:labels")
    cpu = _cpu()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        m = export_volume_meshes(volume, Path(tmp) / "meshes")
        dt = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (Path(tmp) / "meshes").iterdir())
        print(json.dumps({
            "figure": "export_meshes", "segments": m.segments, "vertices": m.vertices,
            "faces": m.faces, "seconds": round(dt, 1), "segments_per_s": round(m.segments / dt, 2),
            "megabytes": round(size / 2**20, 1), "cpu": cpu,
        }), flush=True)  # fmt: skip
        runs = {}
        for name, block in (("one_block", (256, 256, 256)), ("blocks", (args.blocks,) * 3)):
            t = time.perf_counter()
            s = skeletonize_volume(volume, Path(tmp) / name, block_shape=block)
            dt = time.perf_counter() - t
            checks = _swc_checks(Path(tmp) / name, labels, 10.0)
            runs[name] = checks
            print(json.dumps({
                "figure": f"skeletonize_{name}", "block": list(block), "segments": s.segments,
                "seconds": round(dt, 1), **checks, "cpu": cpu,
            }), flush=True)  # fmt: skip
        print(json.dumps({
            "figure": "skeleton_cable_blocks_over_one_block",
            "ratio": round(runs["blocks"]["cable_nm"] / max(runs["one_block"]["cable_nm"], 1), 3),
            "cpu": cpu,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
