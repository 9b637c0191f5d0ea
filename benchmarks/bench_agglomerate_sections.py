"""Agglomerate on serial-section-like (anisotropic) EM: distances in nm against distances in voxels.

    nice .venv/bin/python benchmarks/bench_agglomerate_sections.py [--steps 2,4,5] [--threads 1]

FIB-25 training_sample2 (10 nm isotropic) keeps every STEP-th section, so its voxels are
STEP*10 x 10 x 10 nm, like serial-section EM; Google's published segmentation and the ground truth
keep the same sections. Each is agglomerated twice at the defaults, in one run:

* ``nm``: the files say the true voxel size, so the fill's seed distance and the EM smoothing
  count 10 nm voxels (what agglomerate does);
* ``sections``: the files say 10 x 10 x 10 nm, so every section counts as one voxel (what
  agglomerate did before it read the voxel size).

One JSON line per (step, variant): VI / ARAND of the agglomerated labels against the thinned
ground truth (voxels with GT > 0), supervoxels, segments and seconds; and one line per step for
Google's segmentation as published. Writes only under a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agglomerate import GOOGLE, H5, cpu_name, scores


def emit(**kw) -> None:
    print(json.dumps({"bench": "agglomerate_sections", "cpu": cpu_name(), **kw}), flush=True)


def write(path: Path, arrays: dict[str, np.ndarray], nm: list[float]) -> None:
    with h5py.File(path, "w") as f:
        for name, a in arrays.items():
            ds = f.create_dataset(name, data=a, chunks=(min(64, a.shape[0]), 64, 64))
            ds.attrs["resolution_nm_zyx"] = nm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="2,4,5", help="keep every STEP-th section (comma-separated)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from napari_connectome.agglomerate.run import agglomerate
    from napari_connectome.volumes import open_volume

    with h5py.File(H5, "r") as f:
        em, gt = f["raw"][:], f["labels"][:]
    google = np.load(GOOGLE / "sample-training2.npz")["segmentation"].astype(np.uint64)
    with tempfile.TemporaryDirectory() as tmp:
        for step in (int(s) for s in args.steps.split(",")):
            arrays = {"raw": em[::step], "seg": google[::step]}
            truth = gt[::step]
            emit(
                step=step, variant="google", shape=list(truth.shape), **scores(arrays["seg"], truth)
            )
            for variant, nm in (("nm", [10.0 * step, 10.0, 10.0]), ("sections", [10.0] * 3)):
                path = Path(tmp) / f"z{step}-{variant}.h5"
                write(path, arrays, nm)
                dest = Path(tmp) / f"z{step}-{variant}.ome.zarr"
                t = time.perf_counter()
                agglomerate(open_volume(f"{path}:seg"), open_volume(f"{path}:raw"), dest, workers=1)
                seconds = time.perf_counter() - t
                meta = json.loads((dest / "agglomeration.json").read_text())
                labels = np.asarray(open_volume(str(dest)).data)
                emit(
                    step=step,
                    variant=variant,
                    voxel_size_nm=meta["voxel_size_nm"],
                    supervoxels=meta["n_supervoxels"],
                    segments=meta["n_segments"],
                    seconds=round(seconds, 1),
                    **scores(labels, truth),
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
