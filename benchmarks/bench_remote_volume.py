"""Remote (``ssh://``) volume figures through the loopback sshd, one JSON line each
(docs/benchmarks.md, "Remote volumes").

  .venv/bin/python benchmarks/bench_remote_volume.py [--shape 64,1024,1024] [--chunk 64] [--repeat 3]

Needs openssh-server (an sshd is started on 127.0.0.1 with throwaway keys). A segmentation-like
uint64 OME-Zarr (cells ~20 voxels across with wavy borders, so chunks compress like a real
segmentation's, not to nothing) is written to a temporary folder and opened as
``ssh://bench/abs/path``; every plane is read the way napari reads a view (dask's slice fusion
off), all figures in one run:

* ``open_ms``: ``open_volume`` of the URL (metadata only; the login is already made);
* ``first_view_ms``: one level-0 plane (every chunk it crosses read over SFTP into an empty
  chunk cache), median over planes in different chunk rows; with the chunks and bytes moved;
* ``cached_view_ms``: the same plane again (served by the disk cache, no remote call);
* ``new_session_view_ms``: the same plane from a new store over the same cache (each cached chunk
  compared with the remote file by one ``stat``, none read again);
* ``local_view_ms``: the same plane read from the local file (no SSH), for the ratios;
* ``coarse_first_view_ms``: a plane of the coarsest level (what a zoomed-out view reads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def cells(shape: tuple[int, ...], z0: int = 0) -> np.ndarray:
    """Label ids of wavy ~20-voxel cells for planes ``z0 .. z0 + shape[0]``."""
    z, y, x = np.indices(shape, dtype=np.float32)
    z += z0
    wz = z + 4 * np.sin(y / 9.0)
    wy = y + 4 * np.sin(x / 7.0 + z / 11.0)
    wx = x + 4 * np.sin(z / 8.0 + y / 13.0)
    cz, cy, cx = (wz // 20).astype(np.uint64), (wy // 20).astype(np.uint64), (wx // 20)
    return cz * 1_000_000 + cy * 1000 + cx.astype(np.uint64) + 1


def write_volume(path: Path, shape: tuple[int, int, int], chunk: int) -> None:
    """Level 0 slab by slab (never the whole volume in memory), then the pyramid (mode)."""
    from napari_connectome.volumes import create_ome_zarr

    writer = create_ome_zarr(
        path, shape, np.uint64, voxel_size_nm=(8, 8, 8), chunks=chunk, labels=True
    )
    for z in range(0, shape[0], chunk):
        slab = cells((min(chunk, shape[0] - z), *shape[1:]), z)
        writer.write((slice(z, z + slab.shape[0]),), slab)
    writer.build_pyramid()


def plane_ms(volume, level: int, z: int) -> float:
    import dask

    with dask.config.set({"optimization.fuse.active": False}):  # as napari slices
        t = time.perf_counter()
        np.asarray(volume.multiscale[level][z])
        return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="64,1024,1024", help="z,y,x of level 0")
    ap.add_argument("--chunk", type=int, default=64, help="chunk edge (voxels)")
    ap.add_argument("--repeat", type=int, default=3, help="planes per figure (median)")
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))

    work = Path(tempfile.mkdtemp(prefix="nc-bench-remote-volume-"))
    os.environ["NAPARI_CONNECTOME_CONFIG_DIR"] = str(work / "config")
    os.environ["NAPARI_CONNECTOME_CACHE_DIR"] = str(work / "cache-unused")

    from napari_connectome.jobs.profiles import make_profile, save_profile
    from napari_connectome.testing.services import start_sshd
    from napari_connectome.volumes import open_volume
    from napari_connectome.volumes.remote import ChunkCache, close_all, open_store

    path = work / "seg.ome.zarr"
    t = time.perf_counter()
    write_volume(path, shape, args.chunk)
    write_s = time.perf_counter() - t
    level0_files = [p for p in (path / "0" / "c").rglob("*") if p.is_file()]
    common = {
        "shape": list(shape),
        "chunk": args.chunk,
        "dtype": "uint64",
        "stored_chunks": len(level0_files),
        "mean_chunk_kb": round(np.mean([p.stat().st_size for p in level0_files]) / 1e3, 1),
        "cpu": platform.processor() or platform.machine(),
        "load_avg": round(os.getloadavg()[0], 1),
    }
    emit(figure="write_s", value=round(write_s, 2), **common)

    with start_sshd() as server:
        save_profile(
            make_profile(
                {
                    "name": "bench",
                    "host": server.host,
                    "port": server.port,
                    "user": server.user,
                    "key": str(server.client_key),
                    "known_hosts": str(server.known_hosts),
                }
            )
        )
        url = f"ssh://bench{path}"
        local = open_volume(path)
        zs = [min(shape[0] - 1, i * args.chunk + args.chunk // 2) for i in range(args.repeat)]
        zs = [z % shape[0] for z in zs]
        figures: dict[str, list[float]] = {}
        moved = []
        open_store(url, cache=None)  # log in once (the session is shared), not timed
        for i, z in enumerate(zs):
            cache = ChunkCache(work / f"cache-{i}" / "chunks", 10**10)
            t = time.perf_counter()
            store = open_store(url, cache=cache)
            vol = open_volume(url, store=store)
            figures.setdefault("open_ms", []).append((time.perf_counter() - t) * 1000)
            figures.setdefault("first_view_ms", []).append(plane_ms(vol, 0, z))
            moved.append((store.counts["reads"], cache.total_bytes))
            figures.setdefault("cached_view_ms", []).append(plane_ms(vol, 0, z))
            assert store.counts["reads"] == moved[-1][0], "a cached plane was read again"
            fresh = open_store(url, cache=cache)
            vol2 = open_volume(url, store=fresh)
            figures.setdefault("new_session_view_ms", []).append(plane_ms(vol2, 0, z))
            assert fresh.counts["reads"] == 0
            figures.setdefault("local_view_ms", []).append(plane_ms(local, 0, z))
            top = len(vol.multiscale) - 1
            figures.setdefault("coarse_first_view_ms", []).append(plane_ms(vol, top, z // 2**top))
            np.testing.assert_array_equal(
                np.asarray(vol.multiscale[0][z]), np.asarray(local.multiscale[0][z])
            )
            cache.close()
        close_all()

    med = {k: statistics.median(v) for k, v in figures.items()}
    chunks, nbytes = moved[0]
    for name in ("open_ms", "cached_view_ms", "new_session_view_ms", "local_view_ms"):
        emit(figure=name, value=round(med[name], 1), **common)
    emit(
        figure="first_view_ms",
        value=round(med["first_view_ms"], 1),
        chunks_read=chunks,
        mb_moved=round(nbytes / 1e6, 2),
        mb_per_s=round(nbytes / 1e6 / (med["first_view_ms"] / 1000), 1),
        **common,
    )
    emit(figure="coarse_first_view_ms", value=round(med["coarse_first_view_ms"], 1), **common)
    emit(
        figure="first_over_cached",
        value=round(med["first_view_ms"] / med["cached_view_ms"], 2),
        **common,
    )
    emit(
        figure="cached_over_local",
        value=round(med["cached_view_ms"] / med["local_view_ms"], 2),
        **common,
    )
    emit(
        figure="new_session_over_cached",
        value=round(med["new_session_view_ms"] / med["cached_view_ms"], 2),
        **common,
    )


if __name__ == "__main__":
    main()
