"""Shared pieces for the jobs tests: a small synthetic volume and block segmenters used as plugins
(``segmenter: {kind: plugin, factory: tests.test_jobs_helpers:...}``) by Dask workers and Slurm
jobs."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from napari_connectome.jobs.segmenters import WatershedSegmenter

REPO = Path(__file__).resolve().parents[1]


def write_raw(path: Path, image: np.ndarray) -> Path:
    """``image`` as ``path:raw`` (HDF5), the input of a test job."""
    import h5py

    with h5py.File(path, "w") as f:
        f["raw"] = image
    return path


def write_cells_volume(
    path: Path, shape=(40, 64, 64), n_cells: int = 30, seed: int = 0
) -> np.ndarray:
    """Voronoi cells (bright) with dark 2-voxel membranes, as ``path:raw`` (HDF5, 10 nm); returns
    labels."""
    import h5py
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, 1, (n_cells, 3)) * shape
    _, lab = cKDTree(pts).query(np.indices(shape).reshape(3, -1).T)
    lab = lab.reshape(shape) + 1
    edge = np.zeros(shape, bool)
    for ax in range(3):
        d = np.diff(lab, axis=ax) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= d
        edge[tuple(hi)] |= d
    with h5py.File(path, "w") as f:
        f["raw"] = np.where(edge, 30, 200).astype(np.uint8)
        f["raw"].attrs["resolution_nm_zyx"] = [10, 10, 10]
    return lab


class SlowWatershed:
    """The watershed segmenter, slowed down, recording each start (block hash, pid) in
    ``marker_dir``."""

    def __init__(self, delay_s: float = 0.5, marker_dir: str | None = None, min_shape=(1, 1, 1)):
        self.delay_s = delay_s
        self.marker_dir = marker_dir
        self.min_shape = tuple(min_shape)
        self._ws = WatershedSegmenter()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.marker_dir:
            digest = hashlib.sha1(image.tobytes()).hexdigest()[:12]
            Path(self.marker_dir, f"{digest}-{os.getpid()}-{time.monotonic_ns()}").touch()
        time.sleep(self.delay_s)
        return self._ws(image)


def cells_job_spec(volume, output, *, workers: int = 2, **extra) -> dict:
    """A small watershed job over ``write_cells_volume``'s output; ``extra`` overrides fields."""
    spec = {
        "name": "cells",
        "input": f"{volume}:raw",
        "output": str(output),
        "block_shape": [20, 32, 32],
        "overlap": [6, 6, 6],
        "segmenter": {"kind": "watershed"},
        "backend": {"kind": "local", "workers": workers},
        "pyramid_levels": 2,
    }
    spec.update(extra)
    return spec


def slow_watershed(**options) -> SlowWatershed:
    return SlowWatershed(**options)


class FailingSegmenter:
    """A segmenter that always fails, as a job that dies on the cluster would."""

    min_shape = (1, 1, 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        raise RuntimeError("segmenter exploded on purpose")


def failing_segmenter() -> FailingSegmenter:
    return FailingSegmenter()


class LargeComponents:
    """Bright connected components of at least ``min_size`` voxels in the block's read region: like
    FFN's min_segment_size, a cell that only clips a block is dropped there."""

    min_shape = (1, 1, 1)

    def __init__(self, min_size: int):
        self.min_size = min_size

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import cc3d

        labels = cc3d.connected_components(image >= 128, connectivity=6).astype(np.uint64)
        sizes = np.bincount(labels.ravel())
        labels[sizes[labels] < self.min_size] = 0
        return labels


def large_components(**options) -> LargeComponents:
    return LargeComponents(**options)


class MergesAtItsLowZBorder:
    """Bright connected components, except that every component touching the first z plane of the
    read region becomes one segment: like FFN near the border of what it read, a block can fuse
    cells in its context that the block owning them keeps apart."""

    min_shape = (1, 1, 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import cc3d

        labels = cc3d.connected_components(image >= 128, connectivity=6).astype(np.uint64)
        touching = np.unique(labels[0])
        touching = touching[touching > 0]
        if len(touching) > 1:
            labels[np.isin(labels, touching)] = touching[0]
        return labels


def merges_at_its_low_z_border() -> MergesAtItsLowZBorder:
    return MergesAtItsLowZBorder()
