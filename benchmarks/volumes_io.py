"""Volume I/O figures, one JSON line each, ratios measured side by side in one run.

    .venv/bin/python benchmarks/volumes_io.py [--size 256] [--huge 10000]

1. open a 10^12-voxel (huge^3) sparse zarr: seconds, chunk keys read;
2. one 2D plane of it through our dask array vs the same plane read by zarr directly;
3. write_ome_zarr (blockwise, 1 level) vs one in-memory zarr write of the same array, and the
   pyramid's extra cost (full pyramid vs 1 level), for a random uint8 image (size^3) and the
   FIB-25 ground-truth labels (250^3 uint64, from ../shared/data when present).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from napari_connectome.volumes import open_volume, write_ome_zarr


def emit(**fields):
    print(json.dumps(fields), flush=True)


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def huge_volume(tmp: Path, n: int) -> None:
    path = tmp / "huge.zarr"
    arr = zarr.create_array(path, shape=(n, n, n), chunks=(250, 250, 250), dtype=np.uint8)
    arr[:250, :250, :250] = 1
    keys: list[str] = []
    original = LocalStore.get

    async def counting(self, key, *a, **k):
        keys.append(key)
        return await original(self, key, *a, **k)

    LocalStore.get = counting
    try:
        t_cold = timed(lambda: open_volume(path))  # includes the first import of dask.array
        n_keys = len(keys)
        t_warm = timed(lambda: open_volume(path), 3)
        emit(
            figure="open_teravoxel_s",
            value=round(t_warm, 4),
            first_call_s=round(t_cold, 3),
            voxels=n**3,
            keys_read=n_keys,
        )
        vol = open_volume(path)
        direct = zarr.open_array(path, mode="r")
        t_dask = timed(lambda: vol.data[n // 2].compute(), 2)
        t_zarr = timed(lambda: direct[n // 2], 2)
        emit(
            figure="plane_read_dask_over_zarr",
            value=round(t_dask / t_zarr, 2),
            dask_s=round(t_dask, 3),
            zarr_s=round(t_zarr, 3),
            plane=f"{n}x{n}",
        )
    finally:
        LocalStore.get = original


def write_figure(tmp: Path, kind: str, data: np.ndarray) -> None:
    is_labels = kind == "labels"
    count = iter(range(1000))

    def dest() -> Path:
        return tmp / f"{kind}{next(count)}.ome.zarr"

    def plain() -> None:
        zarr.create_array(dest(), data=data, chunks=(64,) * 3, write_data=True)

    def level0() -> None:
        write_ome_zarr(data, dest(), voxel_size_nm=(8, 8, 8), labels=is_labels, levels=1)

    def pyramid() -> None:
        write_ome_zarr(data, dest(), voxel_size_nm=(8, 8, 8), labels=is_labels)

    t_plain, t_one, t_full = timed(plain, 3), timed(level0, 3), timed(pyramid, 3)
    mb = data.nbytes / 2**20
    emit(
        figure=f"write_{kind}_blockwise_over_inmemory",
        value=round(t_one / t_plain, 2),
        blockwise_mb_s=round(mb / t_one, 1),
        inmemory_mb_s=round(mb / t_plain, 1),
        shape=list(data.shape),
        dtype=str(data.dtype),
    )
    emit(
        figure=f"write_{kind}_pyramid_over_level0",
        value=round(t_full / t_one, 2),
        full_pyramid_s=round(t_full, 3),
        level0_s=round(t_one, 3),
    )


def write_figures(tmp: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    write_figure(tmp, "image", rng.integers(0, 255, (size,) * 3, dtype=np.uint8))
    fib25 = Path(__file__).resolve().parents[2] / "shared/data/fib25-training-sample2"
    h5 = fib25 / "fib25_training_sample2.h5"
    if h5.is_file():  # real neuron bodies: mostly uniform 2x2x2 blocks, like any segmentation
        import h5py

        with h5py.File(h5) as f:
            write_figure(tmp, "labels", f["labels"][:])
    else:
        write_figure(tmp, "labels", (np.indices((size,) * 3).sum(0) // 7).astype(np.uint64))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256, help="edge of the write test volumes")
    parser.add_argument("--huge", type=int, default=10_000, help="edge of the sparse volume")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        huge_volume(Path(tmp), args.huge)
        write_figures(Path(tmp), args.size)


if __name__ == "__main__":
    main()
